// ONNX files out of loom (loom/onnx.hpp). The graphs' numbers are checked
// against runtimes that are not loom by tests/onnx/onnx_check.py (ctest
// onnx_exports_numpy; ONNX Runtime and OpenVINO in scripts/run-reference-checks);
// these tests check the file's structure, its layout and its refusals.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <loom/onnx.hpp>

#include "notebook_model.hpp"
#include "test_support.hpp"

using namespace loom;
using loom::testing::TempDir;

namespace {

::onnx::ModelProto parse(const std::string& bytes) {
  ::onnx::ModelProto proto;
  REQUIRE(proto.ParseFromString(bytes));
  return proto;
}

std::vector<std::string> op_types(const ::onnx::ModelProto& proto) {
  std::vector<std::string> ops;
  for (const auto& node : proto.graph().node()) ops.push_back(node.op_type());
  return ops;
}

const ::onnx::TensorProto& initializer(const ::onnx::ModelProto& proto, const std::string& name) {
  for (const auto& t : proto.graph().initializer()) {
    if (t.name() == name) return t;
  }
  FAIL("no initializer " << name);
  throw 0;
}

float float_at(const ::onnx::TensorProto& t, std::size_t i) {
  float v;
  std::memcpy(&v, t.raw_data().data() + 4 * i, 4);
  return v;
}

std::vector<std::int64_t> dims(const ::onnx::ValueInfoProto& v) {
  std::vector<std::int64_t> d;
  for (const auto& dim : v.type().tensor_type().shape().dim()) d.push_back(dim.has_dim_param() ? -1 : dim.dim_value());
  return d;
}

/// A layer of a type nobody mapped to ONNX: the identity.
class Unmapped : public Layer<float> {
 public:
  std::string type() const override { return "Unmapped"; }
  std::string base_name() const override { return "unmapped"; }

 protected:
  Shape build_impl(const Shape& in, Rng&) override { return in; }
  const Tensor<float>& forward_impl(const Tensor<float>& x, Mode) override { return x; }
  const Tensor<float>& backward_impl(const Tensor<float>& dy) override { return dy; }
};

}  // namespace

TEST_CASE("the notebook's model as ONNX: opset 17, loom's NHWC input and output, Dropout gone, Keras's kernels transposed") {
  auto model = examples::notebook_model<float>(3);
  const ::onnx::ModelProto proto = parse(onnx_bytes(model));
  CHECK(proto.opset_import(0).version() == 17);
  CHECK(proto.producer_name() == "loom");
  REQUIRE(proto.graph().input_size() == 1);
  REQUIRE(proto.graph().output_size() == 1);
  CHECK(proto.graph().input(0).name() == "input");
  CHECK(dims(proto.graph().input(0)) == std::vector<std::int64_t>{-1, 28, 28, 1});
  CHECK(proto.graph().output(0).name() == "output");
  CHECK(dims(proto.graph().output(0)) == std::vector<std::int64_t>{-1, 10});
  const std::vector<std::string> expected{"Transpose", "Conv", "Relu", "BatchNormalization", "MaxPool",
                                          "Conv", "Relu", "BatchNormalization", "MaxPool",
                                          "Conv", "Relu", "BatchNormalization", "MaxPool",
                                          "Transpose", "Flatten", "Gemm", "Relu", "Gemm", "Softmax"};
  CHECK(op_types(proto) == expected);
  // conv2: Keras's kernel [3, 3, 75, 50] is ONNX's [50, 75, 3, 3].
  const Layer<float>& conv2 = *model.layers()[3];
  REQUIRE(conv2.type() == "Conv2D");
  const Tensor<float>& k = *const_cast<Layer<float>&>(conv2).parameters()[0].value;
  const ::onnx::TensorProto& w = initializer(proto, conv2.name() + ".kernel");
  CHECK(std::vector<std::int64_t>(w.dims().begin(), w.dims().end()) == std::vector<std::int64_t>{50, 75, 3, 3});
  for (const auto& [i, j, c, f] : std::vector<std::array<Index, 4>>{{0, 0, 0, 0}, {2, 1, 74, 49}, {1, 2, 13, 7}}) {
    CHECK(float_at(w, std::size_t(((f * 75 + c) * 3 + i) * 3 + j)) == k(i, j, c, f));
  }
  // MaxPool 'same' on 7x7 pads one row and column after, none before, as Keras.
  for (const auto& node : proto.graph().node()) {
    if (node.op_type() != "MaxPool" || node.name() != model.layers()[12]->name()) continue;
    for (const auto& a : node.attribute()) {
      if (a.name() == "pads") CHECK(std::vector<std::int64_t>(a.ints().begin(), a.ints().end()) == std::vector<std::int64_t>{0, 0, 1, 1});
    }
  }
}

TEST_CASE("a model onnx cannot write is refused with one line naming the layer, and no file is written") {
  TempDir dir;
  Sequential<float> model;
  model.add(std::make_unique<Flatten<float>>(), Shape{4, 4, 1});
  model.add(std::make_unique<Unmapped>());
  model.add(std::make_unique<Dense<float>>(DenseOptions(3)));
  model.build(Shape{4, 4, 1});
  const std::string path = dir.file("model.onnx");
  {
    std::ofstream old(path);
    old << "the old file";
  }
  CHECK(testing::error_of([&] { save_onnx(model, path); }).find("layer 'unmapped' of type Unmapped has no ONNX mapping") !=
        std::string::npos);
  std::ifstream kept(path);
  std::string text((std::istreambuf_iterator<char>(kept)), std::istreambuf_iterator<char>());
  CHECK(text == "the old file");
  CHECK(dir.count() == 1);  // no temporary left
  Sequential<float> empty;
  CHECK_THROWS_AS(save_onnx(empty, path), ConfigError);
  // Activations with no ONNX mapping yet, as an option and as layers.
  Sequential<float> gelu;
  gelu.add(Dense<float>(DenseOptions(3).activation(Activation::GELU)), Shape{4});
  CHECK(testing::error_of([&] { save_onnx(gelu, path); }).find("activation 'gelu' has no ONNX mapping yet") !=
        std::string::npos);
  Sequential<float> clipped;
  clipped.add(ReLU<float>(6.0), Shape{4});
  CHECK(testing::error_of([&] { save_onnx(clipped, path); }).find("(ReLU with max_value") != std::string::npos);
  Sequential<float> leaky;
  leaky.add(LeakyReLU<float>(), Shape{4});
  CHECK(testing::error_of([&] { save_onnx(leaky, path); }).find("of type LeakyReLU has no ONNX mapping") !=
        std::string::npos);
}

TEST_CASE("a model written is a file ONNX's own parser reads back, written through a temporary file") {
  TempDir dir;
  auto model = examples::notebook_model<float>(1);
  save_onnx(model, dir.file("m.onnx"));
  CHECK(dir.count() == 1);
  std::ifstream in(dir.file("m.onnx"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(bytes == onnx_bytes(model));
  CHECK(parse(bytes).graph().initializer_size() == 3 * 2 + 3 * 4 + 2 * 2);  // conv, bn, dense tensors
  CHECK_THROWS_AS(save_onnx(model, dir.file("missing/m.onnx")), IOError);
}

// ---- Reading ONNX files ----------------------------------------------------

namespace {

/// The largest difference between two tensors of the same shape.
float worst_difference(const Tensor<float>& a, const Tensor<float>& b) {
  REQUIRE(a.shape() == b.shape());
  float d = 0;
  for (Index i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

Tensor<float> random_images(Index n, const Shape& shape, std::uint64_t seed) {
  Tensor<float> x(shape.with_batch(n));
  Rng rng(seed);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  return x;
}

}  // namespace

TEST_CASE("loom's own ONNX file reads back as the model: same layers, predictions to float rounding") {
  auto model = examples::notebook_model<float>(4);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  Tensor<float> x = random_images(32, Shape{28, 28, 1}, 5), y(Shape{32});
  for (Index i = 0; i < 32; ++i) y[i] = float(i % 10);
  model.train_step(x, y);
  OnnxInfo info;
  auto back = load_onnx_from_bytes<float>(onnx_bytes(model), "notebook.onnx", &info);
  CHECK(info.input_layout == "NHWC");
  CHECK(info.input_name == "input");
  CHECK(info.opset == 17);
  CHECK(info.producer.rfind("loom", 0) == 0);
  // Dropout is gone (the file holds inference); every other layer is there, with its weights.
  std::vector<std::string> types;
  for (const auto& l : back.layers()) types.push_back(l->type());
  CHECK(types == std::vector<std::string>{"Conv2D", "BatchNormalization", "MaxPooling2D", "Conv2D", "BatchNormalization",
                                          "MaxPooling2D", "Conv2D", "BatchNormalization", "MaxPooling2D", "Flatten",
                                          "Dense", "Dense"});
  CHECK(back.count_params() == model.count_params());
  const Tensor<float> probe = random_images(16, Shape{28, 28, 1}, 6);
  CHECK(worst_difference(back.predict(probe), model.predict(probe)) == 0);
  // It fine-tunes: compiled, a step moves it.
  back.compile("sparse_categorical_crossentropy", {"accuracy"});
  CHECK(std::isfinite(back.train_step(x, y)));
}

TEST_CASE("grouped and dilated convolutions go to ONNX (group, dilations) and come back as themselves") {
  Sequential<float> model(3, "grouped");
  model.add(Conv2D<float>(Conv2DOptions(8, {3, 3}).padding(Padding::Same)), Shape{11, 10, 2});
  model.add(Conv2D<float>(Conv2DOptions(6, {3, 3}).groups(2).dilation_rate({2, 2}).padding(Padding::Same).activation(Activation::ReLU)));
  model.add(Conv2D<float>(Conv2DOptions(6, {2, 3}).groups(3).strides({2, 1})));
  model.add(Flatten<float>());
  model.add(Dense<float>(DenseOptions(4)));
  auto back = load_onnx_from_bytes<float>(onnx_bytes(model), "grouped.onnx");
  REQUIRE(back.layers().size() == model.layers().size());
  for (std::size_t i = 0; i < 3; ++i) CHECK(back.layers()[i]->config() == model.layers()[i]->config());
  CHECK(back.layers()[1]->config().integer("groups") == 2);
  CHECK(back.layers()[1]->config().size2("dilation_rate") == Size2{2, 2});
  const Tensor<float> probe = random_images(4, Shape{11, 10, 2}, 7);
  CHECK(worst_difference(back.predict(probe), model.predict(probe)) == 0);
}

TEST_CASE("an ONNX graph in PyTorch's NCHW layout becomes a model of NHWC images with the graph's outputs") {
  // Written by hand as torch.onnx.export writes a small CNN: NCHW input,
  // Conv with symmetric pads, MaxPool with ceil_mode (Keras's 'same'),
  // Flatten of NCHW images, then Gemm with transB=1 (nn.Linear).
  ::onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto& g = *m.mutable_graph();
  auto* in = g.add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(::onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("N");
  for (int d : {2, 5, 5}) tt->mutable_shape()->add_dim()->set_dim_value(d);  // C=2, H=5, W=5
  Rng rng(3);
  const auto init = [&](const std::string& name, std::vector<std::int64_t> dims) {
    auto* t = g.add_initializer();
    t->set_name(name);
    t->set_data_type(::onnx::TensorProto::FLOAT);
    std::int64_t n = 1;
    for (auto d : dims) t->add_dims(d), n *= d;
    for (std::int64_t i = 0; i < n; ++i) t->add_float_data(static_cast<float>(rng.uniform() - 0.5));
  };
  init("w", {3, 2, 3, 3});
  init("b", {3});
  init("fc.w", {4, 3 * 3 * 3});  // [out, in]: nn.Linear's
  init("fc.b", {4});
  const auto node = [&](const std::string& op, std::vector<std::string> inputs, const std::string& out) {
    auto* n = g.add_node();
    n->set_op_type(op);
    for (auto& i : inputs) n->add_input(i);
    n->add_output(out);
    return n;
  };
  const auto ints = [](::onnx::NodeProto* n, const std::string& name, std::vector<std::int64_t> v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(::onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  };
  const auto integer = [](::onnx::NodeProto* n, const std::string& name, std::int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(::onnx::AttributeProto::INT);
    a->set_i(v);
  };
  auto* c = node("Conv", {"x", "w", "b"}, "c");
  ints(c, "kernel_shape", {3, 3});
  ints(c, "pads", {1, 1, 1, 1});
  node("Relu", {"c"}, "r");
  auto* p = node("MaxPool", {"r"}, "p");
  ints(p, "kernel_shape", {2, 2});
  ints(p, "strides", {2, 2});
  integer(p, "ceil_mode", 1);
  integer(node("Flatten", {"p"}, "f"), "axis", 1);
  integer(node("Gemm", {"f", "fc.w", "fc.b"}, "out"), "transB", 1);
  auto* out = g.add_output();
  out->set_name("out");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(::onnx::TensorProto::FLOAT);

  OnnxInfo info;
  auto model = onnx_format::from_model_proto<float>(m, "cnn.onnx", &info);
  CHECK(info.input_layout == "NCHW");
  CHECK(model.layers().front()->input_shape() == Shape{5, 5, 2});
  // The graph's output by hand, in NCHW, from the same weights.
  const Tensor<float> x_nchw = random_images(3, Shape{2, 5, 5}, 9);
  const auto f = [&](const std::string& name) {
    for (const auto& t : g.initializer()) {
      if (t.name() == name) return std::vector<float>(t.float_data().begin(), t.float_data().end());
    }
    return std::vector<float>{};
  };
  const auto w = f("w"), b = f("b"), fw = f("fc.w"), fb = f("fc.b");
  Tensor<float> expected(Shape{3, 4}), x_nhwc(Shape{3, 5, 5, 2});
  for (Index s = 0; s < 3; ++s) {
    for (Index ch = 0; ch < 2; ++ch)
      for (Index i = 0; i < 5; ++i)
        for (Index j = 0; j < 5; ++j) x_nhwc(s, i, j, ch) = x_nchw(s, ch, i, j);
    double conv[3][5][5];
    for (Index o = 0; o < 3; ++o)
      for (Index i = 0; i < 5; ++i)
        for (Index j = 0; j < 5; ++j) {
          double acc = b[std::size_t(o)];
          for (Index ch = 0; ch < 2; ++ch)
            for (Index di = 0; di < 3; ++di)
              for (Index dj = 0; dj < 3; ++dj) {
                const Index ii = i + di - 1, jj = j + dj - 1;
                if (ii < 0 || jj < 0 || ii >= 5 || jj >= 5) continue;
                acc += double(w[std::size_t(((o * 2 + ch) * 3 + di) * 3 + dj)]) * x_nchw(s, ch, ii, jj);
              }
          conv[o][i][j] = std::max(acc, 0.0);
        }
    std::vector<double> flat;  // C, H, W order: the graph's Flatten of NCHW
    for (Index o = 0; o < 3; ++o)
      for (Index i = 0; i < 3; ++i)
        for (Index j = 0; j < 3; ++j) {
          double m = -1e30;  // ceil_mode: the last window is cut at the border
          for (Index di = 0; di < 2; ++di)
            for (Index dj = 0; dj < 2; ++dj)
              if (2 * i + di < 5 && 2 * j + dj < 5) m = std::max(m, conv[o][2 * i + di][2 * j + dj]);
          flat.push_back(m);
        }
    for (Index u = 0; u < 4; ++u) {
      double acc = fb[std::size_t(u)];
      for (Index k = 0; k < 27; ++k) acc += double(fw[std::size_t(u * 27 + k)]) * flat[std::size_t(k)];
      expected(s, u) = float(acc);
    }
  }
  CHECK(worst_difference(model.predict(x_nhwc), expected) < 1e-5f);
}

TEST_CASE("what the ONNX reader does not take is refused with one line naming it") {
  auto model = examples::notebook_model<float>(1);
  ::onnx::ModelProto good;
  REQUIRE(good.ParseFromString(onnx_bytes(model)));
  const auto error_with = [&](auto&& edit) {
    ::onnx::ModelProto m = good;
    edit(m);
    return testing::error_of([&] { onnx_format::from_model_proto<float>(m, "m.onnx"); });
  };
  CHECK(testing::error_of([] { load_onnx_from_bytes<float>("not a model", "x.onnx"); }) ==
        "x.onnx: not an ONNX model (protobuf cannot parse it)");
  CHECK(error_with([](auto& m) { m.mutable_graph()->mutable_node(1)->set_op_type("AveragePool"); })
            .find("node 1 (AveragePool 'conv2d'): operator AveragePool is not read by loom") != std::string::npos);
  CHECK(error_with([](auto& m) {
          auto* a = m.mutable_graph()->mutable_node(1)->add_attribute();
          a->set_name("group");
          a->set_type(::onnx::AttributeProto::INT);
          a->set_i(2);
        }).find("group must be >= 1 and divide W's output channels") != std::string::npos);  // 75 filters
  CHECK(error_with([](auto& m) { m.mutable_opset_import(0)->set_version(99); }) ==
        "m.onnx: opset 99 (loom reads opsets 7 to 21)");
  CHECK(error_with([](auto& m) { m.mutable_graph()->mutable_node(2)->set_input(0, "elsewhere"); })
            .find("loom reads chains of layers") != std::string::npos);
  CHECK(error_with([](auto& m) {  // a weight whose values do not fill its dims
          m.mutable_graph()->mutable_initializer(0)->mutable_raw_data()->resize(12);
        }).find("raw_data holds 3 values where its dims ask 675") != std::string::npos);
  CHECK(error_with([](auto& m) {
          m.mutable_graph()->mutable_initializer(0)->set_dims(0, std::int64_t(1) << 40);
        }).find("out of range") != std::string::npos);
  CHECK(error_with([](auto& m) {
          m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_value(1 << 20);
        }).find("dimension 1 is not a size from 1 to 65536") != std::string::npos);
}
