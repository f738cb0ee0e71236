#pragma once
// The notebook's CNN_FMNST_model(), written with loom. Shared by the
// examples, the benchmarks and the tests, so that all of them measure and
// check the same model.
//
//   model.add(Conv2D(75, (3, 3), strides=1, padding="same", activation="relu", input_shape=(28, 28, 1)))
//   model.add(BatchNormalization())
//   model.add(MaxPool2D((2, 2), strides=2, padding="same"))
//   model.add(Conv2D(50, (3, 3), strides=1, padding="same", activation="relu"))
//   model.add(Dropout(0.2))
//   model.add(BatchNormalization())
//   model.add(MaxPool2D((2, 2), strides=2, padding="same"))
//   model.add(Conv2D(25, (3, 3), strides=1, padding="same", activation="relu"))
//   model.add(BatchNormalization())
//   model.add(MaxPool2D((2, 2), strides=2, padding="same"))
//   model.add(Flatten())
//   model.add(Dense(units=512, activation="relu"))
//   model.add(Dropout(0.3))
//   model.add(Dense(units=num_categories, activation="softmax"))

#include <loom/loom.hpp>

namespace loom::examples {

/// Variations the tests and the distributed experiment need; the defaults are the notebook's.
struct NotebookModelOptions {
  double dropout1 = 0.2, dropout2 = 0.3;
  bool synchronized_batch_norm = false;  ///< BatchNormalization(synchronized=True), for data parallelism
  /// Augmentation in front of the notebook's layers (the improved recipe
  /// uses the flip alone): RandomFlip("horizontal"), then
  /// RandomTranslation(translation, translation) unless translation is 0,
  /// then RandomErasing(factor=erasing, fill_value=0) unless erasing is 0.
  /// They act in training only, so the model predicts exactly as the
  /// notebook's does.
  bool augment = false;
  double translation = 0;
  double erasing = 0;
};

template <class T>
Sequential<T> notebook_model(std::uint64_t seed = 0, Index num_categories = 10, const NotebookModelOptions& opt = {}) {
  const auto conv = [](Index filters) {
    return Conv2D<T>(Conv2DOptions(filters, {3, 3}).strides({1, 1}).padding(Padding::Same).activation(Activation::ReLU));
  };
  const auto pool = [] { return MaxPool2D<T>(MaxPool2DOptions({2, 2}).strides(Size2{2, 2}).padding(Padding::Same)); };
  const auto bn = [&] { return BatchNormalization<T>(BatchNormalizationOptions().synchronized(opt.synchronized_batch_norm)); };
  Sequential<T> model(seed);
  if (opt.augment) {
    model.add(RandomFlip<T>("horizontal"), Shape{28, 28, 1});
    if (opt.translation > 0) model.add(RandomTranslation<T>(opt.translation, opt.translation));
    if (opt.erasing > 0) model.add(RandomErasing<T>(RandomErasingOptions().factor(opt.erasing).fill_value(0.0)));
    model.add(conv(75));
  } else {
    model.add(conv(75), Shape{28, 28, 1});
  }
  model.add(bn());
  model.add(pool());
  model.add(conv(50));
  model.add(Dropout<T>(opt.dropout1));
  model.add(bn());
  model.add(pool());
  model.add(conv(25));
  model.add(bn());
  model.add(pool());
  model.add(Flatten<T>());
  model.add(Dense<T>(DenseOptions(512).activation(Activation::ReLU)));
  model.add(Dropout<T>(opt.dropout2));
  model.add(Dense<T>(DenseOptions(num_categories).activation(Activation::Softmax)));
  return model;
}

}  // namespace loom::examples
