#pragma once
// The models of the export corpus (export_corpus.cpp): every layer loom maps
// to Keras with each of its options, every activation, both paddings; and,
// compiled, every optimizer with its options, every loss with its options,
// every learning-rate schedule, the three gradient clippings and weight
// decay. Each case is small (most take 28x28x1 images) so that real Keras
// checks the whole corpus in seconds.
//
// A compiled case states its loss and optimizer once, in Keras's terms
// ({"class": "SGD", "config": {...}, "schedule": {...}}): the program makes
// loom's loss and optimizer from that through loom's own registry, and the
// checker expects Keras to read the same back from the exported file.

#include <functional>
#include <string>
#include <vector>

#include <loom/keras.hpp>

namespace corpus {

using loom::Activation;
using loom::Padding;
using loom::Shape;
using json = nlohmann::json;
using Model = loom::Sequential<float>;

struct Case {
  std::string name;
  std::vector<std::string> covers;     // what the case is there for
  std::function<Model()> model;        // built, weights from its seed
  json compile = nullptr;              // {"loss": ..., "optimizer": ...}, or null: not compiled
  std::string no_h5 = {};              // why the case has no legacy .h5 (empty: it has one)
};

namespace detail {

using namespace loom;

inline const Shape kImage{28, 28, 1};

/// Conv2D -> Flatten -> Dense(6) -> Dense(4): the small model the compiled
/// cases train. With `batch_norm`, each of the first two is followed by
/// BatchNormalization and ReLU and has no bias (one before BatchNormalization
/// would get a zero gradient, and an update that is rounding noise).
inline Model trainable(const std::string& name, Activation out, bool batch_norm = false) {
  Model m(11, name);
  if (batch_norm) {
    m.add(Conv2D<float>(Conv2DOptions(2, {3, 3}).strides({3, 3}).use_bias(false)), kImage);
    m.add(BatchNormalization<float>(BatchNormalizationOptions().momentum(0.8)));
    m.add(ReLU<float>());
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(6).use_bias(false)));
    m.add(BatchNormalization<float>());
    m.add(ReLU<float>());
  } else {
    m.add(Conv2D<float>(Conv2DOptions(2, {3, 3}).strides({3, 3}).activation(Activation::ReLU)), kImage);
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(6).activation(Activation::ReLU)));
  }
  m.add(Dense<float>(DenseOptions(4).activation(out)));
  return m;
}

inline json loss(const std::string& cls, bool from_logits = false, double label_smoothing = 0) {
  json l = {{"class", cls}, {"from_logits", from_logits}};
  if (label_smoothing != 0) l["label_smoothing"] = label_smoothing;
  return l;
}
inline json optimizer(const std::string& cls, json config, json schedule = nullptr) {
  json o = {{"class", cls}, {"config", std::move(config)}};
  if (!schedule.is_null()) o["schedule"] = std::move(schedule);
  return o;
}
inline json schedule(const std::string& cls, json config) { return {{"class", cls}, {"config", std::move(config)}}; }

}  // namespace detail

/// Every case, inference-only ones first.
inline std::vector<Case> cases() {
  using namespace loom;
  using namespace detail;
  std::vector<Case> out;

  out.push_back({"conv_same_pool", {"Conv2D padding same, relu", "MaxPooling2D default strides, same padding on an odd map", "Dense softmax"}, [] {
    Model m(1, "conv_same_pool");
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)), kImage);
    m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2}).padding(Padding::Same)));
    m.add(Conv2D<float>(Conv2DOptions(2, {3, 3}).padding(Padding::Same)));
    m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2}).padding(Padding::Same)));  // 14 -> 7
    m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2}).padding(Padding::Same)));  // 7 -> 4: one padded row and column
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(5).activation(Activation::Softmax)));
    return m;
  }});

  out.push_back({"conv_valid_options", {"Conv2D padding valid", "Conv2D strides (2, 1) and a (3, 2) kernel", "Conv2D use_bias false",
                                        "Conv2D softmax and linear", "MaxPooling2D pool 3, strides 2, valid", "Dense use_bias false, relu and linear"}, [] {
    Model m(2, "conv_valid_options");
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 2}).strides({2, 1}).use_bias(false)), kImage);
    m.add(Conv2D<float>(Conv2DOptions(2, {1, 1}).activation(Activation::Softmax)));
    m.add(MaxPool2D<float>(MaxPool2DOptions({3, 3}).strides(Size2{2, 2})));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(6).activation(Activation::ReLU).use_bias(false)));
    m.add(Dense<float>(DenseOptions(3)));
    return m;
  }});

  out.push_back({"pool_options", {"MaxPooling2D non-square pool (2, 3), strides (1, 2), same", "MaxPooling2D strides larger than the pool, valid"}, [] {
    Model m(3, "pool_options");
    m.add(Conv2D<float>(Conv2DOptions(2, {2, 2}).activation(Activation::ReLU)), kImage);
    m.add(MaxPool2D<float>(MaxPool2DOptions({2, 3}).strides(Size2{1, 2}).padding(Padding::Same)));
    m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2}).strides(Size2{3, 3})));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(4).activation(Activation::Softmax)));
    return m;
  }});

  out.push_back({"pooling_layers", {"AveragePooling2D valid and same (3x3 / 2 on 14x14)", "GlobalAveragePooling2D keepdims",
                                    "GlobalMaxPooling2D"}, [] {
    Model m(5, "pooling_layers");
    m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)), kImage);
    m.add(AveragePool2D<float>(AveragePool2DOptions({2, 2})));
    m.add(AveragePool2D<float>(AveragePool2DOptions({3, 3}).strides(Size2{2, 2}).padding(Padding::Same)));
    m.add(GlobalAveragePooling2D<float>(true));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
    return m;
  }});

  out.push_back({"graph_merges", {"a functional graph: a residual Add, Concatenate on the last axis and on axis 1",
                                  "Subtract, Multiply, Average, Maximum", "a Dense called twice (shared weights)",
                                  "GlobalMaxPooling2D"}, [] {
    Symbol<float> in = Input<float>(kImage);
    Symbol<float> x = call(Conv2D<float>(Conv2DOptions(4, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)), in);
    Symbol<float> y = call(BatchNormalization<float>(), call(Conv2D<float>(Conv2DOptions(4, {3, 3}).padding(Padding::Same)), x));
    x = call(ReLU<float>(), call(Add<float>(), {x, y}));
    Symbol<float> a = call(Conv2D<float>(Conv2DOptions(3, {3, 3}).strides({2, 2}).padding(Padding::Same)), x);
    Symbol<float> b = call(Conv2D<float>(Conv2DOptions(3, {1, 1}).strides({2, 2})), x);
    x = call(Concatenate<float>(), {call(Maximum<float>(), {a, b}), call(Multiply<float>(), {a, b}),
                                    call(Subtract<float>(), {a, b})});
    Symbol<float> g = call(GlobalMaxPooling2D<float>(), x);
    x = call(Flatten<float>(), call(MaxPool2D<float>(MaxPool2DOptions({2, 2})), x));
    auto shared_dense = shared(Dense<float>(DenseOptions(5).activation(Activation::ReLU)));
    Symbol<float> h = call(Average<float>(), {call(shared_dense, call(Dense<float>(DenseOptions(5)), x)),
                                              call(shared_dense, call(Dense<float>(DenseOptions(5)), g))});
    return Model(Functional<float>(in, call(Dense<float>(DenseOptions(4).activation(Activation::Softmax)),
                                            call(Concatenate<float>(1), {h, g})), 6, "graph_merges"));
  }});

  out.push_back({"batch_norm_options", {"BatchNormalization after Conv2D and after Dense", "BatchNormalization momentum and epsilon",
                                        "BatchNormalization center false, scale false, both false", "BatchNormalization synchronized"}, [] {
    Model m(4, "batch_norm_options");
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).strides({2, 2})), kImage);
    m.add(BatchNormalization<float>(BatchNormalizationOptions().momentum(0.9).epsilon(1e-2)));
    m.add(BatchNormalization<float>(BatchNormalizationOptions().center(false)));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(6)));
    m.add(BatchNormalization<float>(BatchNormalizationOptions().scale(false).synchronized(true)));
    m.add(BatchNormalization<float>(BatchNormalizationOptions().center(false).scale(false)));
    m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
    return m;
  }});

  out.push_back({"depthwise_separable", {"Conv2D dilation_rate", "DepthwiseConv2D depth_multiplier, strides, dilation_rate, use_bias false",
                                         "SeparableConv2D depth_multiplier, strides, dilation_rate, use_bias false"}, [] {
    Model m(5, "depthwise_separable");
    m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).dilation_rate(Size2{2, 2}).padding(Padding::Same).activation(Activation::ReLU)),
          kImage);
    m.add(DepthwiseConv2D<float>(DepthwiseConv2DOptions({3, 3}).depth_multiplier(2).strides(Size2{2, 2}).padding(Padding::Same)));
    m.add(DepthwiseConv2D<float>(DepthwiseConv2DOptions({3, 2}).dilation_rate(Size2{2, 1}).use_bias(false).activation(Activation::ReLU6)));
    m.add(SeparableConv2D<float>(SeparableConv2DOptions(6, {3, 3}).depth_multiplier(2).padding(Padding::Same).activation(Activation::ReLU)));
    m.add(SeparableConv2D<float>(SeparableConv2DOptions(5, {2, 3}).strides(Size2{2, 2}).use_bias(false)));
    m.add(SeparableConv2D<float>(SeparableConv2DOptions(4, {3, 3}).dilation_rate(Size2{2, 2})));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(4)));
    return m;
  }});
  out.push_back({"grouped_conv", {"Conv2D groups, with same and valid padding, strides, dilation_rate, use_bias false"}, [] {
    Model m(5, "grouped_conv");
    m.add(Conv2D<float>(Conv2DOptions(8, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)), kImage);
    m.add(Conv2D<float>(Conv2DOptions(8, {3, 3}).groups(4).padding(Padding::Same).activation(Activation::ReLU)));
    m.add(Conv2D<float>(Conv2DOptions(6, {3, 2}).groups(2).strides(Size2{2, 2}).use_bias(false)));
    m.add(Conv2D<float>(Conv2DOptions(6, {3, 3}).groups(3).dilation_rate(Size2{2, 2}).padding(Padding::Same)));
    m.add(GlobalAveragePooling2D<float>());
    m.add(Dense<float>(DenseOptions(4)));
    return m;
  }});
  out.push_back({"conv_transpose_output_padding", {"Conv2DTranspose output_padding, valid and same, 0, per axis"}, [] {
    Model m(5, "conv_transpose_output_padding");
    m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).strides(Size2{2, 2})), kImage);
    m.add(Conv2DTranspose<float>(Conv2DOptions(3, {3, 3}).strides(Size2{2, 2}).activation(Activation::ReLU), Size2{1, 1}));
    m.add(Conv2DTranspose<float>(Conv2DOptions(3, {3, 3}).strides(Size2{2, 2}).padding(Padding::Same), Size2{0, 0}));
    m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).strides(Size2{3, 3})));
    m.add(Conv2DTranspose<float>(Conv2DOptions(2, {3, 2}).strides(Size2{2, 3}).padding(Padding::Same).use_bias(false),
                                 Size2{1, 2}));
    m.add(GlobalAveragePooling2D<float>());
    m.add(Dense<float>(DenseOptions(4)));
    return m;
  }});
  out.push_back({"conv_transpose", {"Conv2DTranspose valid and same, strides, dilation_rate, use_bias false"}, [] {
    Model m(5, "conv_transpose");
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).strides(Size2{3, 3})), kImage);
    m.add(Conv2DTranspose<float>(Conv2DOptions(3, {3, 3}).strides(Size2{2, 2}).activation(Activation::ReLU)));
    m.add(Conv2DTranspose<float>(Conv2DOptions(2, {2, 3}).strides(Size2{3, 1}).padding(Padding::Same).use_bias(false)));
    m.add(Conv2DTranspose<float>(Conv2DOptions(2, {3, 3}).dilation_rate(Size2{2, 2})));
    m.add(GlobalAveragePooling2D<float>());
    m.add(Dense<float>(DenseOptions(4)));
    return m;
  }});
  out.push_back({"activation_functions", {"every activation Keras names, but hard_sigmoid: in Conv2D, Dense and Activation"}, [] {
    Model m(5, "activation_functions");
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).strides({2, 2}).activation(Activation::GELU)), kImage);
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).activation(Activation::SiLU)));
    for (Activation a : {Activation::SELU, Activation::ELU, Activation::Softplus, Activation::ReLU6,
                         Activation::LeakyReLU, Activation::Softsign}) {
      m.add(ActivationLayer<float>(a));
    }
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).strides({2, 2}).activation(Activation::Tanh)));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(8).activation(Activation::Sigmoid)));
    m.add(Dense<float>(DenseOptions(8).activation(Activation::ReLU6)));
    m.add(Dense<float>(DenseOptions(4).activation(Activation::Softmax)));
    return m;
  }});
  out.push_back({"hard_sigmoid", {"Keras 3's hard_sigmoid, in Dense and Activation"}, [] {
    Model m(5, "hard_sigmoid");
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).strides({3, 3})), kImage);
    m.add(ActivationLayer<float>(Activation::HardSigmoid));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(4).activation(Activation::HardSigmoid)));
    return m;
  }, nullptr, "tf.keras 2's hard_sigmoid is another function, and loom writes it to no .h5"});
  out.push_back({"activation_layers_with_parameters", {"LeakyReLU", "ELU alpha", "ReLU max_value, negative_slope, threshold",
                                                       "PReLU per channel (Constant) and per element"}, [] {
    Model m(5, "activation_layers_with_parameters");
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).strides({2, 2})), kImage);
    m.add(LeakyReLU<float>(0.2));
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3})));
    m.add(ELU<float>(0.6));
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3})));
    m.add(ReLU<float>(1.0, 0.1, 0.05));
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3})));
    m.add(PReLU<float>({1, 2}, 0.25));
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).strides({2, 2})));
    m.add(PReLU<float>());
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(4)));
    return m;
  }});

  out.push_back({"activation_layers", {"Activation relu, linear and softmax", "ReLU", "Softmax (axis -1)", "Dropout as the identity in inference"}, [] {
    Model m(5, "activation_layers");
    m.add(Conv2D<float>(Conv2DOptions(2, {3, 3}).strides({2, 2})), kImage);
    m.add(ActivationLayer<float>(Activation::ReLU));
    m.add(Dropout<float>(0.4));
    m.add(Conv2D<float>(Conv2DOptions(2, {3, 3}).strides({2, 2})));
    m.add(ReLU<float>());
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(5)));
    m.add(ActivationLayer<float>(Activation::None));
    m.add(Dropout<float>(0.2));
    m.add(Dense<float>(DenseOptions(4)));
    m.add(ActivationLayer<float>(Activation::Softmax));
    m.add(Dense<float>(DenseOptions(3)));
    m.add(Softmax<float>());
    return m;
  }});

  out.push_back({"augmentation", {"RandomFlip horizontal, vertical, horizontal_and_vertical with a seed", "RandomTranslation reflect/bilinear, constant with a fill value/nearest, nearest",
                                  "ZeroPadding2D symmetric and ((top, bottom), (left, right))", "augmentation layers as the identity in inference"}, [] {
    Model m(6, "augmentation");
    m.add(RandomFlip<float>("horizontal"), kImage);
    m.add(RandomFlip<float>("vertical"));
    m.add(RandomFlip<float>("horizontal_and_vertical", 42));
    m.add(RandomTranslation<float>(0.1, Factor(-0.2, 0.1)));
    m.add(RandomTranslation<float>(0.2, 0.2, RandomTranslationOptions().fill_mode("constant").fill_value(0.5).interpolation("nearest").seed(7)));
    m.add(RandomTranslation<float>(Factor(0.0, 0.1), 0.1, RandomTranslationOptions().fill_mode("nearest")));
    m.add(ZeroPadding2D<float>(1));
    m.add(ZeroPadding2D<float>(1, 0, 2, 1));
    m.add(Conv2D<float>(Conv2DOptions(2, {3, 3}).strides({3, 3}).activation(Activation::ReLU)));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(4).activation(Activation::Softmax)));
    return m;
  }});

  out.push_back({"random_erasing", {"RandomErasing as the identity in inference (factor, scale, value_range, fill_value, seed)"}, [] {
    Model m(7, "random_erasing");
    m.add(RandomErasing<float>(RandomErasingOptions().factor(0.5).scale(0.1, 0.2).value_range(0, 1).fill_value(0.25).seed(5)), kImage);
    m.add(RandomErasing<float>());
    m.add(Conv2D<float>(Conv2DOptions(2, {3, 3}).strides({3, 3})));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
    return m;
  }});

  out.push_back({"flat_inputs", {"rank-1 inputs straight into Dense", "Dense relu, linear and softmax"}, [] {
    Model m(8, "flat_inputs");
    m.add(Dense<float>(DenseOptions(8).activation(Activation::ReLU)), Shape{20});
    m.add(Dense<float>(DenseOptions(6)));
    m.add(Dense<float>(DenseOptions(4).activation(Activation::Softmax)));
    return m;
  }});

  out.push_back({"notebook_small", {"the notebook's architecture, narrower: (Conv2D same relu, BatchNormalization, MaxPooling2D 2/2 same) x 3 with Dropout, Flatten, Dense relu, Dropout, Dense softmax",
                                    "rank-2 (28, 28) images flattened"}, [] {
    Model m(9, "notebook_small");
    m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)), kImage);
    m.add(BatchNormalization<float>());
    m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2}).strides(Size2{2, 2}).padding(Padding::Same)));
    m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)));
    m.add(Dropout<float>(0.2));
    m.add(BatchNormalization<float>());
    m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2}).strides(Size2{2, 2}).padding(Padding::Same)));
    m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)));
    m.add(BatchNormalization<float>());
    m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2}).strides(Size2{2, 2}).padding(Padding::Same)));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(8).activation(Activation::ReLU)));
    m.add(Dropout<float>(0.3));
    m.add(Dense<float>(DenseOptions(10).activation(Activation::Softmax)));
    return m;
  }});

  out.push_back({"flatten_rank2", {"rank-2 (28, 28) inputs into Flatten"}, [] {
    Model m(10, "flatten_rank2");
    m.add(Flatten<float>(), Shape{28, 28});
    m.add(Dense<float>(DenseOptions(5).activation(Activation::Softmax)));
    return m;
  }});

  // Compiled: trained a few steps, exported, then one more step.
  const auto compiled = [&](const std::string& name, std::vector<std::string> covers, Activation out_activation, json loss_spec,
                            json optimizer_spec, bool batch_norm = false) {
    out.push_back({name, std::move(covers), [=] { return trainable(name, out_activation, batch_norm); },
                   {{"loss", std::move(loss_spec)}, {"optimizer", std::move(optimizer_spec)}}});
  };
  compiled("sgd", {"SGD without momentum", "CategoricalCrossentropy"}, Activation::Softmax,
           loss("CategoricalCrossentropy"), optimizer("SGD", {{"learning_rate", 0.1}}));
  compiled("sgd_momentum_clipnorm", {"SGD momentum", "clipnorm", "SparseCategoricalCrossentropy"}, Activation::Softmax,
           loss("SparseCategoricalCrossentropy"), optimizer("SGD", {{"learning_rate", 0.05}, {"momentum", 0.8}, {"clipnorm", 0.05}}));
  compiled("sgd_nesterov_staircase", {"SGD nesterov", "ExponentialDecay staircase", "SparseCategoricalCrossentropy from_logits"},
           Activation::None, loss("SparseCategoricalCrossentropy", true),
           optimizer("SGD", {{"momentum", 0.9}, {"nesterov", true}},
                     schedule("ExponentialDecay", {{"initial_learning_rate", 0.1}, {"decay_steps", 2}, {"decay_rate", 0.5}, {"staircase", true}})));
  compiled("rmsprop_clipvalue", {"RMSprop rho and epsilon", "clipvalue", "ExponentialDecay", "CategoricalCrossentropy label_smoothing"},
           Activation::Softmax, loss("CategoricalCrossentropy", false, 0.1),
           optimizer("RMSprop", {{"rho", 0.8}, {"epsilon", 1e-6}, {"clipvalue", 0.005}},
                     schedule("ExponentialDecay", {{"initial_learning_rate", 0.01}, {"decay_steps", 3}, {"decay_rate", 0.7}, {"staircase", false}})));
  compiled("rmsprop_default_batch_norm", {"RMSprop with Keras's defaults (compile's default optimizer)", "BatchNormalization trained after Conv2D and Dense", "ReLU"},
           Activation::Softmax, loss("CategoricalCrossentropy"), optimizer("RMSprop", json::object()), true);
  compiled("adam_global_clipnorm", {"Adam beta_1, beta_2, epsilon", "global_clipnorm", "PiecewiseConstantDecay", "SparseCategoricalCrossentropy"},
           Activation::Softmax, loss("SparseCategoricalCrossentropy"),
           optimizer("Adam", {{"beta_1", 0.8}, {"beta_2", 0.99}, {"epsilon", 1e-6}, {"global_clipnorm", 0.05}},
                     schedule("PiecewiseConstantDecay", {{"boundaries", {2, 5}}, {"values", {0.02, 0.01, 0.005}}})));
  compiled("adam_weight_decay", {"Adam weight_decay", "CosineDecay with alpha", "CategoricalCrossentropy from_logits and label_smoothing"},
           Activation::None, loss("CategoricalCrossentropy", true, 0.2),
           optimizer("Adam", {{"weight_decay", 0.1}}, schedule("CosineDecay", {{"initial_learning_rate", 0.02}, {"decay_steps", 10}, {"alpha", 0.1}})));
  compiled("adamw_cosine_warmup", {"AdamW", "CosineDecay with warmup", "CategoricalCrossentropy from_logits"},
           Activation::None, loss("CategoricalCrossentropy", true),
           optimizer("AdamW", {{"weight_decay", 0.05}},
                     schedule("CosineDecay", {{"initial_learning_rate", 0.0}, {"decay_steps", 10}, {"alpha", 0.0}, {"warmup_target", 0.02}, {"warmup_steps", 5}})));
  compiled("sgd_weight_decay", {"SGD weight_decay", "SparseCategoricalCrossentropy from_logits"}, Activation::None,
           loss("SparseCategoricalCrossentropy", true), optimizer("SGD", {{"learning_rate", 0.05}, {"momentum", 0.5}, {"weight_decay", 0.02}}));
  // The shape layers, trained: Keras's step checks their gradients too.
  out.push_back({"shape_layers", {"Rescaling by one number and per channel", "Cropping2D ((top, bottom), (left, right)), (h, w) and one number",
                                  "Permute on rank 3 and rank 2", "Reshape with and without -1", "Identity", "a Conv2D after a Reshape"}, [] {
    Model m(12, "shape_layers");
    m.add(Rescaling<float>(2.0, -1.0), kImage);
    m.add(Cropping2D<float>(1, 3, 2, 0));                                              // 24 x 26
    m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).strides({2, 2}).activation(Activation::ReLU)));  // 11 x 12 x 4
    m.add(Rescaling<float>({0.5, 1.0, 2.0, -1.0}, {0.0, 0.1, -0.1, 0.2}));
    m.add(Cropping2D<float>(1, 0));                                                    // 9 x 12 x 4
    m.add(Cropping2D<float>(1));                                                       // 7 x 10 x 4
    m.add(Permute<float>({2, 1, 3}));                                                  // 10 x 7 x 4
    m.add(Reshape<float>({10, -1}));                                                   // 10 x 28
    m.add(Permute<float>({2, 1}));                                                     // 28 x 10
    m.add(Identity<float>());
    m.add(Reshape<float>({7, 4, 10}));
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).activation(Activation::ReLU)));       // 5 x 2 x 3
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(4).activation(Activation::Softmax)));
    return m;
  }, {{"loss", loss("CategoricalCrossentropy")}, {"optimizer", optimizer("SGD", {{"learning_rate", 0.1}, {"momentum", 0.5}})}}});
  // LayerNormalization over the last axis, and the random layers as the identity in inference.
  out.push_back({"normalization_and_noise", {"LayerNormalization on images and on features: epsilon, center false, scale false",
                                             "SpatialDropout2D with and without a seed", "GaussianNoise with and without a seed",
                                             "SpatialDropout2D and GaussianNoise as the identity in inference"}, [] {
    Model m(13, "normalization_and_noise");
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).strides({2, 2}).activation(Activation::ReLU)), kImage);
    m.add(SpatialDropout2D<float>(0.3));
    m.add(SpatialDropout2D<float>(0.2, 5));
    m.add(GaussianNoise<float>(0.5));
    m.add(GaussianNoise<float>(0.1, 3));
    m.add(LayerNormalization<float>());
    m.add(LayerNormalization<float>(LayerNormalizationOptions().center(false).epsilon(0.01)));
    m.add(Flatten<float>());
    m.add(LayerNormalization<float>(LayerNormalizationOptions().scale(false).epsilon(1e-5)));
    m.add(Dense<float>(DenseOptions(4).activation(Activation::Softmax)));
    return m;
  }});
  out.push_back({"layer_normalization_axes", {"LayerNormalization over the last two axes without center, over the last three without scale"}, [] {
    Model m(15, "layer_normalization_axes");
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).strides({2, 2}).activation(Activation::ReLU)), kImage);
    m.add(LayerNormalization<float>(LayerNormalizationOptions().axis({2, 3}).center(false).epsilon(0.01)));
    m.add(LayerNormalization<float>(LayerNormalizationOptions().axis({-3, -2, -1}).scale(false)));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(4).activation(Activation::Softmax)));
    return m;
  }});
  // Keras's weight regularizers, trained: Keras's step checks the penalties' gradients, and its
  // train_on_batch the loss loom reports with them. (No bias before the BatchNormalization: its
  // gradient there is rounding noise, whose sign L1 would make a step.)
  out.push_back({"regularizers", {"Conv2D kernel_regularizer L2", "BatchNormalization gamma_regularizer L2 and beta_regularizer L1L2",
                                  "LayerNormalization trained, gamma_regularizer L1 and beta_regularizer L2",
                                  "Dense kernel_regularizer L1L2 and L2, bias_regularizer L1 and L2"}, [] {
    Model m(14, "regularizers");
    m.add(Conv2D<float>(Conv2DOptions(2, {3, 3}).strides({3, 3}).use_bias(false).kernel_regularizer(L2(0.01))), kImage);
    m.add(BatchNormalization<float>(BatchNormalizationOptions().gamma_regularizer(L2(0.01)).beta_regularizer(L1L2(0.001, 0.01))));
    m.add(ReLU<float>());
    m.add(Flatten<float>());
    m.add(LayerNormalization<float>(LayerNormalizationOptions().gamma_regularizer(L1(0.001)).beta_regularizer(L2(0.01))));
    m.add(Dense<float>(DenseOptions(6).activation(Activation::ReLU).kernel_regularizer(L1L2(0.001, 0.01)).bias_regularizer(L1(0.001))));
    m.add(Dense<float>(DenseOptions(4).activation(Activation::Softmax).kernel_regularizer(L2(0.05)).bias_regularizer(L2(0.01))));
    return m;
  }, {{"loss", loss("SparseCategoricalCrossentropy")}, {"optimizer", optimizer("SGD", {{"learning_rate", 0.1}})}}});
  return out;
}

}  // namespace corpus
