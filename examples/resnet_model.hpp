#pragma once
// A small residual network for Fashion-MNIST, written with loom's functional
// API: the example of a model that is not a chain (scripts/run-experiment
// --model resnet). In Keras:
//
//   x = inputs = keras.Input((28, 28, 1))
//   x = RandomFlip("horizontal")(x)                       # training only
//   x = RandomTranslation(0.1, 0.1)(x)                    # training only
//   x = ReLU()(BatchNormalization()(Conv2D(32, 3, padding="same", use_bias=False)(x)))
//   for filters, stride in [(32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]:
//       y = Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
//       y = ReLU()(BatchNormalization()(y))
//       y = BatchNormalization()(Conv2D(filters, 3, padding="same", use_bias=False)(y))
//       if stride != 1 or x.shape[-1] != filters:          # a projection where the shape changes
//           x = BatchNormalization()(Conv2D(filters, 1, strides=stride, use_bias=False)(x))
//       x = ReLU()(Add()([x, y]))
//   x = GlobalAveragePooling2D()(x)
//   outputs = Dense(10, activation="softmax")(x)
//
// Three stages of two residual blocks (28x28 with 32 channels, 14x14 with
// 64, 7x7 with 128), each block two 3x3 convolutions with BatchNormalization
// and a shortcut, as He et al.'s ResNet for CIFAR; 698,282 parameters. The
// augmentation layers are the experiment's (--recipe improved, which
// --model resnet implies: flips, and a translation by up to 10 %);
// bench/reference/keras_resnet.py builds this network in Keras itself.

#include <loom/loom.hpp>

namespace loom::examples {

struct ResNetOptions {
  Index width = 32;     ///< the first stage's channels; each later stage doubles them
  int blocks = 2;       ///< residual blocks per stage
  int stages = 3;
  bool augment = true;  ///< RandomFlip("horizontal") in front (training only)
  double translation = 0;  ///< RandomTranslation's factor after the flip; 0: none
};

template <class T>
Functional<T> resnet_model(std::uint64_t seed = 0, Index num_categories = 10, const ResNetOptions& opt = {}) {
  const auto conv = [](Index filters, Index kernel, Index stride) {
    return Conv2D<T>(Conv2DOptions(filters, {kernel, kernel})
                         .strides({stride, stride})
                         .padding(Padding::Same)
                         .use_bias(false));
  };
  const auto bn = [] { return BatchNormalization<T>(); };
  Symbol<T> inputs = Input<T>({28, 28, 1});
  Symbol<T> x = inputs;
  if (opt.augment) {
    x = call(RandomFlip<T>("horizontal"), x);
    if (opt.translation > 0) x = call(RandomTranslation<T>(opt.translation, opt.translation), x);
  }
  x = call(ReLU<T>(), call(bn(), call(conv(opt.width, 3, 1), x)));
  Index filters = opt.width;
  for (int stage = 0; stage < opt.stages; ++stage, filters *= 2) {
    for (int block = 0; block < opt.blocks; ++block) {
      const Index stride = stage > 0 && block == 0 ? 2 : 1;
      Symbol<T> y = call(ReLU<T>(), call(bn(), call(conv(filters, 3, stride), x)));
      y = call(bn(), call(conv(filters, 3, 1), y));
      Symbol<T> shortcut = x;
      if (stride != 1 || x.shape()[2] != filters) shortcut = call(bn(), call(conv(filters, 1, stride), x));
      x = call(ReLU<T>(), call(Add<T>(), {shortcut, y}));
    }
  }
  x = call(GlobalAveragePooling2D<T>(), x);
  Symbol<T> outputs = call(Dense<T>(DenseOptions(num_categories).activation(Activation::Softmax)), x);
  return Functional<T>(inputs, outputs, seed, "resnet");
}

}  // namespace loom::examples
