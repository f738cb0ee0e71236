// ONNX files out of loom (loom/onnx.hpp). The graphs' numbers are checked
// against runtimes that are not loom by tests/onnx/onnx_check.py (ctest
// onnx_exports_numpy; ONNX Runtime and OpenVINO in scripts/run-reference-checks);
// these tests check the file's structure, its layout and its refusals.
#include <doctest/doctest.h>

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
