// ONNX files in and out of loom models, and the cases that check them.
//
//   onnx_tool convert MODEL OUT.onnx   a model saved by loom (.loom) or Keras (.keras, .h5) as ONNX
//   onnx_tool convert MODEL.onnx OUT.loom   an ONNX file read by loom, saved in loom's format
//   onnx_tool predict MODEL.onnx IN.npy OUT.npy   loom's predictions for the file's inputs (float32 .npy
//                                       in the file's layout: NCHW images are turned to NHWC for loom)
//   onnx_tool finetune MODEL.onnx       a Fashion-MNIST classifier (pixels in [0, 1], softmax output):
//                                       its test accuracy, one epoch of training in loom (Adam, 1e-4,
//                                       batch 32), its test accuracy again, as a JSON line
//   onnx_tool cases DIR                 writes DIR/<case>.onnx, <case>.input.npy and <case>.output.npy
//                                       (loom's predict) for every case below
//
// The cases are the notebook's model as each of its four variants trains it
// (pixels in [0, 1] or 0..255, integer or one-hot labels), the improved
// recipe's (with its augmentation layers), and small models that together
// hold every layer loom writes, each attribute variant of each (paddings,
// strides, kernel shapes, activations, biases or none), each ending in a
// softmax. Every model takes a few training steps first, so that its moving
// statistics are its own.
// tests/onnx/onnx_check.py reads them: ONNX's checker, then a numpy
// evaluator of the graph (the main tests), ONNX Runtime and OpenVINO (the
// reference checks), each against loom's outputs.
#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <loom/data/encoding.hpp>
#include <loom/data/fashion_mnist.hpp>
#include <loom/keras.hpp>
#include <loom/onnx.hpp>

#include "experiment_options.hpp"
#include "notebook_model.hpp"

namespace {

using loom::Index;
using loom::Shape;
using loom::Tensor;

/// A float32 .npy file (format 1.0) of `t`.
void write_npy(const std::string& path, const Tensor<float>& t) {
  std::string dims;
  for (int d = 0; d < t.rank(); ++d) dims += std::to_string(t.dim(d)) + (t.rank() == 1 || d + 1 < t.rank() ? "," : "");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(t.data()), sizeof(float) * std::size_t(t.size()));
  loom::write_file_atomically(path, bytes);
}

/// A float32, C-order .npy file (format 1 or 2), its shape checked against its size.
Tensor<float> read_npy(const std::string& path) {
  const std::string bytes = loom::detail::read_whole_file<std::string>(path, std::uint64_t(1) << 32, "an .npy file");
  const auto bad = [&](const std::string& why) -> loom::FormatError { return loom::FormatError(path + ": " + why); };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw bad("not an .npy file");
  const int major = static_cast<unsigned char>(bytes[6]);
  std::size_t len = 0, start = 0;
  if (major == 1) {
    len = static_cast<unsigned char>(bytes[8]) | std::size_t(static_cast<unsigned char>(bytes[9])) << 8;
    start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw bad("truncated header");
    for (int i = 0; i < 4; ++i) len |= std::size_t(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    start = 12;
  } else {
    throw bad("unknown .npy version");
  }
  if (start + len > bytes.size()) throw bad("truncated header");
  const std::string header = bytes.substr(start, len);
  if (header.find("'descr': '<f4'") == std::string::npos) throw bad("not float32 (descr '<f4')");
  if (header.find("'fortran_order': False") == std::string::npos) throw bad("not in C order");
  const auto open = header.find('(', header.find("'shape'")), close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) throw bad("no shape");
  std::vector<Index> dims;
  std::string dim;
  for (std::size_t i = open + 1; i <= close; ++i) {
    if (std::isdigit(static_cast<unsigned char>(header[i]))) {
      dim += header[i];
    } else if (!dim.empty()) {
      if (dim.size() > 9) throw bad("a dimension too large");
      dims.push_back(std::stol(dim));
      dim.clear();
    }
  }
  if (dims.empty() || dims.size() > 5) throw bad("rank out of range");
  double count = 1;
  for (Index d : dims) count *= double(d);
  if (double(bytes.size() - start - len) != 4.0 * count) throw bad("its data does not match its shape");
  Shape shape;
  for (Index d : dims) shape.push_back(d);
  Tensor<float> t(shape);
  std::memcpy(t.data(), bytes.data() + start + len, sizeof(float) * std::size_t(t.size()));
  return t;
}

/// NCHW images as NHWC.
Tensor<float> to_nhwc(const Tensor<float>& x) {
  const Index n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  Tensor<float> y(Shape{n, h, w, c});
  for (Index b = 0; b < n; ++b)
    for (Index k = 0; k < c; ++k)
      for (Index i = 0; i < h; ++i)
        for (Index j = 0; j < w; ++j) y(b, i, j, k) = x(b, k, i, j);
  return y;
}

/// n random samples of `shape` in [0, scale), from Rng(seed).
Tensor<float> random_inputs(Index n, const Shape& shape, float scale, std::uint64_t seed) {
  Tensor<float> x(shape.with_batch(n));
  loom::Rng rng(seed);
  for (float& v : x) v = scale * static_cast<float>(rng.uniform());
  return x;
}

/// Trains `model` (built) a few steps on random data of its input shape, so
/// that BatchNormalization's statistics move, then writes the case.
void write_case(const std::string& dir, const std::string& name, loom::Sequential<float>& model, float scale,
                bool one_hot, std::uint64_t seed) {
  const Shape in = model.layers().front()->input_shape();
  const Index classes = model.layers().back()->output_shape().back();
  if (!model.compiled()) model.compile(one_hot ? "categorical_crossentropy" : "sparse_categorical_crossentropy");
  const Tensor<float> x = random_inputs(32, in, scale, seed);
  Tensor<float> y;
  if (one_hot) {
    y = Tensor<float>(Shape{32, classes});
    for (Index i = 0; i < 32; ++i) y(i, i % classes) = 1;
  } else {
    y = Tensor<float>(Shape{32});
    for (Index i = 0; i < 32; ++i) y[i] = static_cast<float>(i % classes);
  }
  for (int step = 0; step < 3; ++step) model.train_step(x, y);
  const Tensor<float> probe = random_inputs(16, in, scale, seed + 2);
  loom::save_onnx(model, dir + "/" + name + ".onnx");
  write_npy(dir + "/" + name + ".input.npy", probe);
  write_npy(dir + "/" + name + ".output.npy", model.predict(probe, 16));
  std::printf("%s: %zu layers, input %s\n", name.c_str(), model.layers().size(), in.str("N").c_str());
}

using Model = loom::Sequential<float>;

/// The small models that hold every layer loom writes, with their variants.
std::vector<std::pair<std::string, Model>> layer_cases() {
  using namespace loom;
  std::vector<std::pair<std::string, Model>> cases;
  {
    Model m(0, "convolutions");
    m.add(std::make_unique<Conv2D<float>>(Conv2DOptions(8, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)));   // direct
    m.add(std::make_unique<Conv2D<float>>(Conv2DOptions(12, {3, 3}).padding(Padding::Same)));                              // Winograd
    m.add(std::make_unique<Conv2D<float>>(Conv2DOptions(10, {5, 3}).strides({2, 1}).padding(Padding::Same).use_bias(false)));
    m.add(std::make_unique<Conv2D<float>>(Conv2DOptions(9, {2, 2}).strides({2, 2}).activation(Activation::ReLU)));      // valid
    m.add(std::make_unique<Conv2D<float>>(Conv2DOptions(6, {3, 3}).strides({2, 2}).padding(Padding::Same).activation(Activation::Softmax)));
    m.add(std::make_unique<Flatten<float>>());
    m.add(std::make_unique<Dense<float>>(DenseOptions(5).activation(Activation::Softmax)));
    m.build(Shape{17, 15, 3});
    cases.emplace_back("convolutions", std::move(m));
  }
  {
    Model m(0, "grouped_and_dilated");
    m.add(std::make_unique<Conv2D<float>>(Conv2DOptions(8, {3, 3}).padding(Padding::Same)));
    m.add(std::make_unique<Conv2D<float>>(Conv2DOptions(8, {3, 3}).groups(4).padding(Padding::Same).activation(Activation::ReLU)));
    m.add(std::make_unique<Conv2D<float>>(Conv2DOptions(6, {2, 2}).groups(2).dilation_rate({2, 2})));               // valid
    m.add(std::make_unique<Conv2D<float>>(Conv2DOptions(4, {3, 3}).dilation_rate({2, 1}).padding(Padding::Same)));  // same
    m.add(std::make_unique<Conv2D<float>>(Conv2DOptions(4, {3, 1}).groups(2).strides({2, 2}).padding(Padding::Same)));
    m.add(std::make_unique<Flatten<float>>());
    m.add(std::make_unique<Dense<float>>(DenseOptions(5).activation(Activation::Softmax)));
    m.build(Shape{13, 12, 3});
    cases.emplace_back("grouped_and_dilated", std::move(m));
  }
  {
    Model m(0, "pooling_and_padding");
    m.add(std::make_unique<ZeroPadding2D<float>>(1, 2, 0, 3));
    m.add(std::make_unique<MaxPool2D<float>>(MaxPool2DOptions().pool_size({3, 3}).strides(Size2{2, 2}).padding(Padding::Same)));
    m.add(std::make_unique<MaxPool2D<float>>(MaxPool2DOptions().pool_size({2, 3}).padding(Padding::Valid)));
    m.add(std::make_unique<RandomCrop<float>>(3, 2));
    m.add(std::make_unique<ActivationLayer<float>>(Activation::Softmax));
    m.add(std::make_unique<Flatten<float>>());
    m.add(std::make_unique<Dense<float>>(DenseOptions(4).use_bias(false).activation(Activation::Softmax)));
    m.build(Shape{14, 13, 2});
    cases.emplace_back("pooling_and_padding", std::move(m));
  }
  {
    Model m(0, "normalization_and_dense");
    m.add(std::make_unique<BatchNormalization<float>>(BatchNormalizationOptions().center(false).epsilon(1e-2)));
    m.add(std::make_unique<Conv2D<float>>(Conv2DOptions(4, {1, 1})));
    m.add(std::make_unique<BatchNormalization<float>>(BatchNormalizationOptions().scale(false)));
    m.add(std::make_unique<ReLU<float>>());
    m.add(std::make_unique<MaxPool2D<float>>(MaxPool2DOptions()));
    m.add(std::make_unique<Dropout<float>>(0.5));
    m.add(std::make_unique<Flatten<float>>());
    m.add(std::make_unique<Dense<float>>(DenseOptions(16).activation(Activation::ReLU)));
    m.add(std::make_unique<BatchNormalization<float>>(BatchNormalizationOptions().momentum(0.9)));
    m.add(std::make_unique<Dense<float>>(DenseOptions(7)));
    m.add(std::make_unique<Softmax<float>>());
    m.build(Shape{6, 8, 5});
    cases.emplace_back("normalization_and_dense", std::move(m));
  }
  {
    Model m(0, "features");  // no images: Dense and BatchNormalization on vectors
    m.add(std::make_unique<Dense<float>>(DenseOptions(12).activation(Activation::ReLU)));
    m.add(std::make_unique<BatchNormalization<float>>(BatchNormalizationOptions()));
    m.add(std::make_unique<ActivationLayer<float>>(Activation::None));
    m.add(std::make_unique<Dense<float>>(DenseOptions(3).activation(Activation::Softmax)));
    m.build(Shape{9});
    cases.emplace_back("features", std::move(m));
  }
  return cases;
}

int write_cases(const std::string& dir) {
  for (const auto& spec : loom::examples::notebook_models()) {
    Model model = loom::examples::notebook_model<float>(100 + std::uint64_t(spec.id));
    model.compile(spec.loss(), {"accuracy"});
    const std::string name = "notebook_model_" + std::to_string(spec.id);
    write_case(dir, name, model, spec.normalized ? 1.0f : 255.0f, spec.one_hot, std::uint64_t(spec.id));
  }
  {
    loom::examples::NotebookModelOptions opt;
    opt.augment = true;
    opt.translation = 0.1;
    opt.erasing = 0.25;
    Model model = loom::examples::notebook_model<float>(7, 10, opt);
    write_case(dir, "improved_recipe_model", model, 1.0f, false, 7);
  }
  std::uint64_t seed = 20;
  for (auto& [name, model] : layer_cases()) write_case(dir, name, model, 1.0f, true, seed++);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage =
      "usage: onnx_tool convert MODEL OUT.onnx   (MODEL: .loom, .keras or .h5)\n"
      "       onnx_tool convert MODEL.onnx OUT.loom\n"
      "       onnx_tool predict MODEL.onnx IN.npy OUT.npy\n"
      "       onnx_tool finetune MODEL.onnx\n"
      "       onnx_tool cases DIR\n";
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    const auto ends_with = [](const std::string& s, const std::string& end) {
      return s.size() >= end.size() && s.compare(s.size() - end.size(), end.size(), end) == 0;
    };
    if (args.size() == 3 && args[0] == "convert" && ends_with(args[1], ".onnx")) {
      loom::OnnxInfo info;
      Model model = loom::load_onnx<float>(args[1], &info);
      model.save(args[2]);
      std::printf("%s (input %s%s) -> %s\n", args[1].c_str(), model.layers().front()->input_shape().str("N").c_str(),
                  info.input_layout == "NCHW" ? ", NHWC where the file's is NCHW" : "", args[2].c_str());
      return 0;
    }
    if (args.size() == 4 && args[0] == "predict") {
      loom::OnnxInfo info;
      Model model = loom::load_onnx<float>(args[1], &info);
      Tensor<float> x = read_npy(args[2]);
      if (info.input_layout == "NCHW") {
        if (x.rank() != 4) throw loom::ShapeError(args[2] + ": the model takes NCHW images, this is " + x.shape().str());
        x = to_nhwc(x);
      }
      write_npy(args[3], model.predict(x));
      return 0;
    }
    if (args.size() == 2 && args[0] == "finetune") {
      Model model = loom::load_onnx<float>(args[1]);
      auto data = loom::datasets::fashion_mnist::load<float>();
      Tensor<float> x_train = loom::data::scaled(data.x_train, 1.0 / 255), x_test = loom::data::scaled(data.x_test, 1.0 / 255);
      loom::data::add_channel_axis(x_train);
      loom::data::add_channel_axis(x_test);
      model.compile(loom::SparseCategoricalCrossentropy<float>(), loom::Adam<float>(loom::AdamOptions().learning_rate(1e-4)),
                    {"accuracy"});
      const double before = model.evaluate(x_test, data.y_test).accuracy;
      model.fit(x_train, data.y_train, loom::FitOptions<float>().epochs(1).batch_size(32).verbose(0).seed(1));
      const double after = model.evaluate(x_test, data.y_test).accuracy;
      std::printf("JSON: {\"before\": %.6f, \"after\": %.6f}\n", before, after);
      return 0;
    }
    if (args.size() == 3 && args[0] == "convert") {
      const std::string& in = args[1];
      const bool keras = ends_with(in, ".h5") || ends_with(in, ".keras");
      Model model = keras ? loom::keras::load_model<float>(in) : Model::load(in);
      loom::save_onnx(model, args[2]);
      std::printf("%s -> %s\n", in.c_str(), args[2].c_str());
      return 0;
    }
    if (args.size() == 2 && args[0] == "cases") return write_cases(args[1]);
    std::cerr << usage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "onnx_tool: " << e.what() << "\n";
    return 1;
  }
}
