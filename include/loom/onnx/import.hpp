#pragma once
/// \file import.hpp
/// An ONNX graph as a loom Sequential, for onnx.hpp's load_onnx: the chains
/// of operators that PyTorch's torch.onnx.export and loom's own save_onnx
/// write for the layers loom has. Every operator, attribute and value the
/// reader does not take is refused with one line naming it (FormatError),
/// and every size it reads is bounded before anything is allocated.
///
/// Layout: loom's images are NHWC. A graph whose input is NCHW (PyTorch's)
/// becomes a model that takes the same images as NHWC (OnnxInfo says which
/// the file had); the kernels are turned to Keras's layout, and where the
/// graph flattens NCHW images (C, then H, then W), the Dense after it gets
/// its rows reordered to loom's H, W, C order, so the outputs are the
/// graph's. A graph that starts by transposing NHWC to NCHW (loom's own
/// files) takes NHWC as it is.
///
/// Operators read (opset 7 to 21, the default domain): Conv (grouped and
/// dilated too), BatchNormalization (inference), MaxPool, Relu, Softmax,
/// Flatten, Reshape to (batch, -1), Gemm, MatMul with Add, Transpose
/// between NCHW and NHWC, Pad (zeros on height and width), Dropout,
/// Identity, Constant. The model comes back uncompiled: compile it to
/// fine-tune.

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../loom.hpp"

namespace loom {

/// What load_onnx found beside the model.
struct OnnxInfo {
  std::string input_name, output_name;
  /// The layout of the file's image input: "NCHW" (PyTorch's: transpose
  /// such images to NHWC for the model) or "NHWC" (loom's own files); empty
  /// for a model of vectors.
  std::string input_layout;
  std::int64_t opset = 0;
  std::string producer;  ///< producer_name and version, as the file says
};

namespace onnx_format {

/// Bounds on what a file may ask for, checked before allocating.
constexpr std::int64_t kMaxDim = 1 << 16;           ///< one dimension of the input or a weight
constexpr std::int64_t kMaxElements = 1LL << 28;    ///< one tensor's values (1 GiB of float32)
constexpr int kMaxNodes = 100000;

namespace detail {

[[noreturn]] inline void refuse(const std::string& what, const std::string& why) {
  throw FormatError(what + ": " + why);
}

/// A constant tensor of the file (an initializer or a Constant node), its values as double.
struct Constant {
  std::vector<std::int64_t> dims;
  std::vector<double> values;
  std::int64_t size() const { return static_cast<std::int64_t>(values.size()); }
};

/// The number of values `dims` hold (any range of int64), refused when a
/// dimension is negative or the count exceeds kMaxElements.
template <class Dims>
std::int64_t element_count(const Dims& dims, const std::string& what) {
  std::int64_t n = 1;
  for (std::int64_t d : dims) {
    if (d < 0 || d > kMaxElements) refuse(what, loom::detail::str("dimension ", d, " out of range"));
    n *= d;
    if (n > kMaxElements) refuse(what, loom::detail::str("more than ", kMaxElements, " values"));
  }
  return n;
}

template <class V>
void read_raw(const std::string& raw, std::int64_t n, std::vector<double>& out) {
  out.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    V v;
    std::memcpy(&v, raw.data() + i * std::int64_t(sizeof(V)), sizeof(V));  // little-endian files on little-endian x86
    out[std::size_t(i)] = static_cast<double>(v);
  }
}

/// A TensorProto's values: float, double, int64 or int32, raw or typed, its size checked against its dims.
inline Constant constant_of(const ::onnx::TensorProto& t, const std::string& what) {
  Constant c;
  const std::int64_t n = element_count(t.dims(), what);
  c.dims.assign(t.dims().begin(), t.dims().end());
  if (t.data_location() == ::onnx::TensorProto::EXTERNAL || t.external_data_size() > 0) {
    refuse(what, "its values are in an external file (loom reads models whose weights are inside the file)");
  }
  const auto check = [&](std::int64_t have, const char* field) {
    if (have != n) refuse(what, loom::detail::str(field, " holds ", have, " values where its dims ask ", n));
  };
  const bool raw = t.has_raw_data();
  switch (t.data_type()) {
    case ::onnx::TensorProto::FLOAT:
      if (raw) {
        check(std::int64_t(t.raw_data().size() / 4), "raw_data");
        if (t.raw_data().size() % 4) refuse(what, "raw_data is not whole float32 values");
        read_raw<float>(t.raw_data(), n, c.values);
      } else {
        check(t.float_data_size(), "float_data");
        c.values.assign(t.float_data().begin(), t.float_data().end());
      }
      break;
    case ::onnx::TensorProto::DOUBLE:
      if (raw) {
        check(std::int64_t(t.raw_data().size() / 8), "raw_data");
        if (t.raw_data().size() % 8) refuse(what, "raw_data is not whole float64 values");
        read_raw<double>(t.raw_data(), n, c.values);
      } else {
        check(t.double_data_size(), "double_data");
        c.values.assign(t.double_data().begin(), t.double_data().end());
      }
      break;
    case ::onnx::TensorProto::INT64:
      if (raw) {
        check(std::int64_t(t.raw_data().size() / 8), "raw_data");
        if (t.raw_data().size() % 8) refuse(what, "raw_data is not whole int64 values");
        read_raw<std::int64_t>(t.raw_data(), n, c.values);
      } else {
        check(t.int64_data_size(), "int64_data");
        for (std::int64_t v : t.int64_data()) c.values.push_back(static_cast<double>(v));
      }
      break;
    case ::onnx::TensorProto::INT32:
      if (raw) {
        check(std::int64_t(t.raw_data().size() / 4), "raw_data");
        if (t.raw_data().size() % 4) refuse(what, "raw_data is not whole int32 values");
        read_raw<std::int32_t>(t.raw_data(), n, c.values);
      } else {
        check(t.int32_data_size(), "int32_data");
        for (std::int32_t v : t.int32_data()) c.values.push_back(v);
      }
      break;
    default:
      refuse(what, loom::detail::str("values of ONNX data type ", t.data_type(),
                                     " (loom reads float, double, int64 and int32)"));
  }
  return c;
}

/// One node's attributes, each read once and checked.
class Attributes {
 public:
  Attributes(const ::onnx::NodeProto& node, std::string where) : where_(std::move(where)) {
    for (const auto& a : node.attribute()) by_name_[a.name()] = &a;
  }
  std::int64_t integer(const std::string& name, std::int64_t fallback) {
    const ::onnx::AttributeProto* a = take(name);
    if (!a) return fallback;
    if (a->type() != ::onnx::AttributeProto::INT) refuse(where_, "attribute " + name + " is not an integer");
    return a->i();
  }
  double real(const std::string& name, double fallback) {
    const ::onnx::AttributeProto* a = take(name);
    if (!a) return fallback;
    if (a->type() != ::onnx::AttributeProto::FLOAT) refuse(where_, "attribute " + name + " is not a float");
    return a->f();
  }
  std::string text(const std::string& name, const std::string& fallback) {
    const ::onnx::AttributeProto* a = take(name);
    if (!a) return fallback;
    if (a->type() != ::onnx::AttributeProto::STRING) refuse(where_, "attribute " + name + " is not a string");
    return a->s();
  }
  std::vector<std::int64_t> integers(const std::string& name, std::vector<std::int64_t> fallback) {
    const ::onnx::AttributeProto* a = take(name);
    if (!a) return fallback;
    if (a->type() != ::onnx::AttributeProto::INTS) refuse(where_, "attribute " + name + " is not a list of integers");
    if (a->ints_size() > 16) refuse(where_, "attribute " + name + " has more than 16 values");
    return {a->ints().begin(), a->ints().end()};
  }
  const ::onnx::AttributeProto* tensor(const std::string& name) { return take(name); }
  /// Refuses any attribute not read.
  void done() const {
    for (const auto& [name, a] : by_name_) {
      if (!taken_.count(name)) refuse(where_, "attribute " + name + " is not supported");
    }
  }

 private:
  const ::onnx::AttributeProto* take(const std::string& name) {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) return nullptr;
    taken_[name] = true;
    return it->second;
  }
  std::string where_;
  std::map<std::string, const ::onnx::AttributeProto*> by_name_;
  std::map<std::string, bool> taken_;
};

/// One loom layer to be, with the weights it takes once built.
template <class T>
struct Pending {
  std::unique_ptr<Layer<T>> layer;
  std::vector<std::vector<double>> weights;  ///< in the order of layer->parameters(), loom's layouts
  std::string conv_or_dense;                 ///< "conv" or "dense" while its activation may still be set
  Conv2DOptions conv{1, {1, 1}};
  DenseOptions dense{1};
};

/// Walks the graph, a chain from its input to its output.
template <class T>
class Importer {
 public:
  Importer(const ::onnx::ModelProto& model, std::string what) : model_(model), what_(std::move(what)) {}

  Sequential<T> run(OnnxInfo& info) {
    read_header(info);
    const ::onnx::GraphProto& g = model_.graph();
    if (g.node_size() > kMaxNodes) refuse(what_, loom::detail::str("more than ", kMaxNodes, " nodes"));
    for (const auto& t : g.initializer()) constants_[t.name()] = constant_of(t, where_tensor(t.name()));
    read_input(info);
    for (int i = 0; i < g.node_size(); ++i) node(g.node(i), i);
    if (g.output_size() != 1) refuse(what_, loom::detail::str("the graph has ", g.output_size(), " outputs (loom reads one)"));
    info.output_name = g.output(0).name();
    if (info.output_name != current_) {
      refuse(what_, "the graph's output '" + info.output_name + "' is not the end of its chain of nodes ('" + current_ + "')");
    }
    if (flattened_nchw_) refuse(what_, "the graph ends with NCHW images flattened; loom flattens in NHWC order");
    if (pending_.empty()) refuse(what_, "the graph has no layer loom reads");
    return build(info);
  }

 private:
  std::string where_tensor(const std::string& name) const { return what_ + ": tensor '" + name + "'"; }
  std::string where_node(const ::onnx::NodeProto& n, int i) const {
    return what_ + ": node " + std::to_string(i) + " (" + n.op_type() + (n.name().empty() ? "" : " '" + n.name() + "'") + ")";
  }

  void read_header(OnnxInfo& info) {
    info.producer = model_.producer_name() + (model_.producer_version().empty() ? "" : " " + model_.producer_version());
    bool found = false;
    for (const auto& o : model_.opset_import()) {
      if (o.domain().empty() || o.domain() == "ai.onnx") {
        info.opset = o.version();
        found = true;
      }
    }
    if (!found) refuse(what_, "the model imports no opset of ONNX's default domain");
    opset_ = info.opset;
    if (info.opset < 7 || info.opset > 21) {
      refuse(what_, loom::detail::str("opset ", info.opset, " (loom reads opsets 7 to 21)"));
    }
    if (!model_.has_graph()) refuse(what_, "the file holds no graph");
  }

  void read_input(OnnxInfo& info) {
    const ::onnx::GraphProto& g = model_.graph();
    const ::onnx::ValueInfoProto* input = nullptr;
    for (const auto& v : g.input()) {
      if (constants_.count(v.name())) continue;  // (older files list their initializers as inputs too)
      if (input) refuse(what_, "the graph has more than one input (loom reads one)");
      input = &v;
    }
    if (!input) refuse(what_, "the graph has no input");
    info.input_name = input->name();
    const std::string where = what_ + ": input '" + input->name() + "'";
    if (!input->type().has_tensor_type()) refuse(where, "is not a tensor");
    const auto& tt = input->type().tensor_type();
    if (tt.elem_type() != ::onnx::TensorProto::FLOAT) refuse(where, "is not float32");
    if (!tt.has_shape()) refuse(where, "has no shape");
    std::vector<Index> dims;
    for (int d = 1; d < tt.shape().dim_size(); ++d) {
      const auto& dim = tt.shape().dim(d);
      if (!dim.has_dim_value() || dim.dim_value() < 1 || dim.dim_value() > kMaxDim) {
        refuse(where, loom::detail::str("dimension ", d, " is not a size from 1 to ", kMaxDim, " (only the batch may be free)"));
      }
      dims.push_back(dim.dim_value());
    }
    double total = 1;
    for (Index d : dims) total *= double(d);
    if (total > double(kMaxElements)) refuse(where, "is too large");
    current_ = input->name();
    if (dims.size() == 3) {
      // NCHW unless the first node transposes NHWC to NCHW (loom's own files).
      const bool nhwc = g.node_size() > 0 && g.node(0).op_type() == "Transpose" && g.node(0).input_size() == 1 &&
                        g.node(0).input(0) == current_ && perm_of(g.node(0)) == std::vector<std::int64_t>{0, 3, 1, 2};
      info.input_layout = nhwc ? "NHWC" : "NCHW";
      input_shape_ = nhwc ? Shape{dims[0], dims[1], dims[2]} : Shape{dims[1], dims[2], dims[0]};
      nchw_ = !nhwc;
    } else if (dims.size() == 1) {
      input_shape_ = Shape{dims[0]};
    } else {
      refuse(where, loom::detail::str("has rank ", dims.size() + 1, " (loom reads images, rank 4, or vectors, rank 2)"));
    }
    shape_ = input_shape_;
  }

  static std::vector<std::int64_t> perm_of(const ::onnx::NodeProto& n) {
    for (const auto& a : n.attribute()) {
      if (a.name() == "perm") return {a.ints().begin(), a.ints().end()};
    }
    return {};
  }

  /// The node's input `k` as a constant (an initializer or a Constant's output).
  const Constant& constant_input(const ::onnx::NodeProto& n, int k, const std::string& where, const char* role) {
    if (n.input_size() <= k || n.input(k).empty()) refuse(where, std::string("has no ") + role);
    auto it = constants_.find(n.input(k));
    if (it == constants_.end()) refuse(where, std::string("its ") + role + " '" + n.input(k) + "' is not a constant of the file");
    return it->second;
  }
  bool has_input(const ::onnx::NodeProto& n, int k) const { return n.input_size() > k && !n.input(k).empty(); }

  void node(const ::onnx::NodeProto& n, int i) {
    const std::string where = where_node(n, i);
    if (!n.domain().empty() && n.domain() != "ai.onnx") refuse(where, "operator of domain '" + n.domain() + "'");
    const std::string& op = n.op_type();
    if (op == "Constant") return constant_node(n, where);
    if (all_inputs_constant(n)) return fold(n, where);
    if (n.input_size() < 1 || n.input(0) != current_) {
      refuse(where, "does not take the previous node's output: loom reads chains of layers (no branches or merges yet)");
    }
    if (n.output_size() < 1) refuse(where, "has no output");
    Attributes a(n, where);
    if (op == "Conv") conv(n, a, where);
    else if (op == "BatchNormalization") batch_normalization(n, a, where);
    else if (op == "MaxPool") max_pool(n, a, where);
    else if (op == "Relu") activation(Activation::ReLU, where);
    else if (op == "Softmax") softmax(n, a, where);
    else if (op == "Flatten") flatten(a, where);
    else if (op == "Reshape") reshape(n, a, where);
    else if (op == "Gemm") gemm(n, a, where);
    else if (op == "MatMul") matmul(n, where);
    else if (op == "Add") add_bias(n, where);
    else if (op == "Transpose") transpose(a, where);
    else if (op == "Pad") pad(n, a, where);
    else if (op == "Dropout") dropout(n, a, where);
    else if (op == "Identity") {
    } else {
      refuse(where, "operator " + op + " is not read by loom (it reads Conv, BatchNormalization, MaxPool, Relu, "
                    "Softmax, Flatten, Reshape, Gemm, MatMul, Add after MatMul, Transpose, Pad, Dropout, Identity, Constant)");
    }
    a.done();
    // (Dropout and MaxPool refuse their optional second output themselves.)
    if (n.output_size() != 1 && op != "Dropout" && op != "MaxPool") refuse(where, "has more than one output");
    double size = 1;
    for (Index d : shape_) size *= double(d);
    if (size > double(kMaxElements)) refuse(where, loom::detail::str("its output would hold more than ", kMaxElements, " values a sample"));
    current_ = n.output(0);
  }

  void constant_node(const ::onnx::NodeProto& n, const std::string& where) {
    Attributes a(n, where);
    const ::onnx::AttributeProto* value = a.tensor("value");
    if (!value || value->type() != ::onnx::AttributeProto::TENSOR) refuse(where, "is not a Constant with a tensor 'value'");
    a.done();
    if (n.output_size() != 1) refuse(where, "has other than one output");
    constants_[n.output(0)] = constant_of(value->t(), where);
  }

  bool all_inputs_constant(const ::onnx::NodeProto& n) const {
    if (n.input_size() == 0) return false;
    for (const auto& i : n.input()) {
      if (!i.empty() && !constants_.count(i)) return false;
    }
    return true;
  }

  /// A node of constants only (PyTorch writes such subgraphs, for Pad's
  /// pads say): its output computed here, a constant too.
  void fold(const ::onnx::NodeProto& n, const std::string& where) {
    if (n.output_size() != 1) refuse(where, "a node of constants with other than one output");
    Attributes a(n, where);
    const std::string& op = n.op_type();
    const auto in = [&](int k) -> const Constant& { return constant_input(n, k, where, "input"); };
    Constant out;
    if (op == "Identity") {
      out = in(0);
    } else if (op == "Cast") {
      const std::int64_t to = a.integer("to", ::onnx::TensorProto::FLOAT);
      a.integer("saturate", 1);
      out = in(0);
      if (to == ::onnx::TensorProto::INT64 || to == ::onnx::TensorProto::INT32) {
        for (double& v : out.values) v = std::trunc(v);
      } else if (to != ::onnx::TensorProto::FLOAT && to != ::onnx::TensorProto::DOUBLE) {
        refuse(where, loom::detail::str("Cast to ONNX data type ", to));
      }
    } else if (op == "ConstantOfShape") {
      double value = 0;
      if (const ::onnx::AttributeProto* v = a.tensor("value")) {
        if (v->type() != ::onnx::AttributeProto::TENSOR) refuse(where, "value is not a tensor");
        const Constant c = constant_of(v->t(), where);
        if (c.size() != 1) refuse(where, "value is not one value");
        value = c.values[0];
      }
      out.dims = integers_of(in(0), where);
      out.values.assign(static_cast<std::size_t>(element_count(out.dims, where)), value);
    } else if (op == "Reshape") {
      a.integer("allowzero", 0);
      out = in(0);
      std::vector<std::int64_t> dims = integers_of(in(1), where);
      std::int64_t known = 1, infer = -1;
      for (std::size_t d = 0; d < dims.size(); ++d) {
        if (dims[d] == 0) {
          if (d >= out.dims.size()) refuse(where, "a 0 past the input's rank");
          dims[d] = in(0).dims[d];
        }
        if (dims[d] == -1) {
          if (infer >= 0) refuse(where, "two -1 in its shape");
          infer = std::int64_t(d);
        } else if (dims[d] < 0 || dims[d] > kMaxElements) {
          refuse(where, "a dimension out of range");
        } else {
          known *= std::max<std::int64_t>(dims[d], 1);
          if (known > kMaxElements) refuse(where, "too large");
        }
      }
      if (infer >= 0) dims[std::size_t(infer)] = known ? out.size() / known : 0;
      if (element_count(dims, where) != out.size()) refuse(where, "a shape of another size");
      out.dims = dims;
    } else if (op == "Concat") {
      const std::int64_t rank = std::int64_t(in(0).dims.size());
      std::int64_t axis = a.integer("axis", 0);
      if (axis < 0) axis += rank;
      if (axis < 0 || axis >= rank) refuse(where, "axis out of range");
      out.dims = in(0).dims;
      out.dims[std::size_t(axis)] = 0;
      std::int64_t outer = 1;
      for (std::int64_t d = 0; d < axis; ++d) outer *= out.dims[std::size_t(d)];
      for (int k = 0; k < n.input_size(); ++k) {
        const Constant& c = in(k);
        if (std::int64_t(c.dims.size()) != rank) refuse(where, "inputs of different ranks");
        for (std::int64_t d = 0; d < rank; ++d) {
          if (d != axis && c.dims[std::size_t(d)] != in(0).dims[std::size_t(d)]) refuse(where, "inputs of different shapes");
        }
        out.dims[std::size_t(axis)] += c.dims[std::size_t(axis)];
      }
      element_count(out.dims, where);
      for (std::int64_t o = 0; o < outer; ++o) {
        for (int k = 0; k < n.input_size(); ++k) {
          const Constant& c = in(k);
          const std::int64_t block = outer ? c.size() / outer : 0;
          out.values.insert(out.values.end(), c.values.begin() + o * block, c.values.begin() + (o + 1) * block);
        }
      }
    } else if (op == "Transpose") {
      const Constant& c = in(0);
      const std::int64_t rank = std::int64_t(c.dims.size());
      std::vector<std::int64_t> perm = a.integers("perm", {});
      if (perm.empty()) for (std::int64_t d = rank - 1; d >= 0; --d) perm.push_back(d);
      if (std::int64_t(perm.size()) != rank) refuse(where, "perm of another rank");
      std::vector<bool> seen(std::size_t(rank), false);
      for (std::int64_t p : perm) {
        if (p < 0 || p >= rank || seen[std::size_t(p)]) refuse(where, "perm is not a permutation");
        seen[std::size_t(p)] = true;
      }
      for (std::int64_t p : perm) out.dims.push_back(c.dims[std::size_t(p)]);
      out.values.resize(c.values.size());
      gather(c, out.dims, [&](const std::vector<std::int64_t>& index, std::vector<std::int64_t>& from) {
        for (std::int64_t d = 0; d < rank; ++d) from[std::size_t(perm[std::size_t(d)])] = index[std::size_t(d)];
      }, out.values);
    } else if (op == "Slice") {
      const Constant& c = in(0);
      const std::int64_t rank = std::int64_t(c.dims.size());
      const std::vector<std::int64_t> starts = integers_of(in(1), where), ends = integers_of(in(2), where);
      std::vector<std::int64_t> axes, steps;
      if (has_input(n, 3)) axes = integers_of(in(3), where);
      else for (std::size_t d = 0; d < starts.size(); ++d) axes.push_back(std::int64_t(d));
      if (has_input(n, 4)) steps = integers_of(in(4), where);
      else steps.assign(starts.size(), 1);
      if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size()) {
        refuse(where, "starts, ends, axes and steps of different lengths");
      }
      std::vector<std::int64_t> first(std::size_t(rank), 0), step(std::size_t(rank), 1);
      out.dims = c.dims;
      for (std::size_t k = 0; k < starts.size(); ++k) {
        std::int64_t axis = axes[k] < 0 ? axes[k] + rank : axes[k];
        if (axis < 0 || axis >= rank || steps[k] == 0) refuse(where, "an axis out of range or a step of 0");
        const std::int64_t dim = c.dims[std::size_t(axis)];
        auto clamp = [&](std::int64_t v, std::int64_t lo, std::int64_t hi) {
          if (v < 0) v += dim;
          return std::max(lo, std::min(hi, v));
        };
        // A step longer than the axis takes its first element: the same as one of dim + 1.
        const std::int64_t st = std::max(-dim - 1, std::min(dim + 1, steps[k]));
        const std::int64_t b = st > 0 ? clamp(starts[k], 0, dim) : clamp(starts[k], -1, dim - 1);
        const std::int64_t e = st > 0 ? clamp(ends[k], 0, dim) : clamp(ends[k], -1, dim - 1);
        const std::int64_t len = st > 0 ? std::max<std::int64_t>(0, (e - b + st - 1) / st)
                                        : std::max<std::int64_t>(0, (b - e - st - 1) / -st);
        first[std::size_t(axis)] = b;
        step[std::size_t(axis)] = st;
        out.dims[std::size_t(axis)] = len;
      }
      out.values.resize(std::size_t(element_count(out.dims, where)));
      gather(c, out.dims, [&](const std::vector<std::int64_t>& index, std::vector<std::int64_t>& from) {
        for (std::int64_t d = 0; d < rank; ++d) from[std::size_t(d)] = first[std::size_t(d)] + index[std::size_t(d)] * step[std::size_t(d)];
      }, out.values);
    } else if (op == "Unsqueeze" || op == "Squeeze") {
      out = in(0);
      std::vector<std::int64_t> axes = has_input(n, 1) ? integers_of(in(1), where) : a.integers("axes", {});
      const std::int64_t rank = std::int64_t(out.dims.size()) + (op == "Unsqueeze" ? std::int64_t(axes.size()) : 0);
      for (std::int64_t& x : axes) {
        if (x < 0) x += rank;
        if (x < 0 || x >= rank) refuse(where, "an axis out of range");
      }
      std::sort(axes.begin(), axes.end());
      if (std::adjacent_find(axes.begin(), axes.end()) != axes.end()) refuse(where, "an axis given twice");
      if (op == "Unsqueeze") {
        for (std::int64_t x : axes) {
          if (x > std::int64_t(out.dims.size())) refuse(where, "an axis out of range");
          out.dims.insert(out.dims.begin() + x, 1);
        }
      } else {
        if (axes.empty()) for (std::int64_t d = 0; d < std::int64_t(out.dims.size()); ++d) if (out.dims[std::size_t(d)] == 1) axes.push_back(d);
        for (auto it = axes.rbegin(); it != axes.rend(); ++it) {
          if (out.dims[std::size_t(*it)] != 1) refuse(where, "squeezes a dimension other than 1");
          out.dims.erase(out.dims.begin() + *it);
        }
      }
    } else {
      refuse(where, "operator " + op + " on constants is not computed by loom's reader");
    }
    a.done();
    constants_[n.output(0)] = std::move(out);
  }

  /// out[index] = c[from(index)] over every index of `dims`, in order.
  template <class From>
  static void gather(const Constant& c, const std::vector<std::int64_t>& dims, From&& from_of, std::vector<double>& out) {
    const std::size_t rank = dims.size();
    std::vector<std::int64_t> index(rank, 0), from(c.dims.size(), 0), stride(c.dims.size(), 1);
    for (std::size_t d = c.dims.size(); d-- > 1;) stride[d - 1] = stride[d] * c.dims[d];
    for (std::size_t o = 0; o < out.size(); ++o) {
      from_of(index, from);
      std::int64_t at = 0;
      for (std::size_t d = 0; d < from.size(); ++d) at += from[d] * stride[d];
      out[o] = c.values[std::size_t(at)];
      for (std::size_t d = rank; d-- > 0;) {
        if (++index[d] < dims[d]) break;
        index[d] = 0;
      }
    }
  }

  static std::vector<std::int64_t> integers_of(const Constant& c, const std::string& where) {
    if (c.size() > 64) refuse(where, "more than 64 integers where a few are expected");
    std::vector<std::int64_t> v;
    for (double x : c.values) {
      // (int64's range, and Slice's INT64_MAX "to the end", which double rounds to 2^63)
      if (!(std::abs(x) <= 9.3e18) || x != std::trunc(x)) refuse(where, "a value that is not an integer");
      if (std::abs(x) >= 9.2e18) x = x > 0 ? 9.2e18 : -9.2e18;
      v.push_back(static_cast<std::int64_t>(x));
    }
    return v;
  }


  /// The spatial paddings of a window op as Keras's 'valid' or 'same', or nullopt.
  static std::optional<Padding> keras_padding(Index in, Index k, Index s, std::int64_t before, std::int64_t after,
                                              bool ceil_mode, bool max_pool) {
    const Index span = in + before + after - k;
    if (span < 0) return std::nullopt;
    const Index out = ceil_mode ? (span + s - 1) / s + 1 : span / s + 1;
    const auto valid = loom::detail::window_axis(in, k, s, Padding::Valid);
    const auto same = loom::detail::window_axis(in, k, s, Padding::Same);
    if (before == 0 && out == valid.out && (after == 0 || max_pool || (out - 1) * s + k <= in)) return Padding::Valid;
    if (before == same.pad_before && out == same.out) {
      // The padding after must be Keras's, or for max pooling (padding never wins) reach as far.
      const Index keras_after = std::max<Index>((same.out - 1) * s + k - in - same.pad_before, 0);
      if (after == keras_after || max_pool) return Padding::Same;
    }
    return std::nullopt;
  }

  void conv(const ::onnx::NodeProto& n, Attributes& a, const std::string& where) {
    to_images(where);
    const Constant& w = constant_input(n, 1, where, "weight W");
    if (w.dims.size() != 4) refuse(where, "W is not of rank 4");
    const Index cout = w.dims[0], cin = w.dims[1], kh = w.dims[2], kw = w.dims[3];
    // group g: W's cin is a group's channels, cout the filters of all groups (Conv2D's groups).
    const std::int64_t groups = a.integer("group", 1);
    if (groups < 1 || groups > kMaxDim || cout % groups != 0) refuse(where, "group must be >= 1 and divide W's output channels");
    if (cin * groups != shape_[2]) {
      refuse(where, loom::detail::str("W has ", cin, " input channels per group (", groups, " groups), its input ", shape_[2]));
    }
    const auto ks = a.integers("kernel_shape", {kh, kw});
    if (ks != std::vector<std::int64_t>{kh, kw}) refuse(where, "kernel_shape does not match W");
    const auto st = a.integers("strides", {1, 1});
    if (st.size() != 2 || st[0] < 1 || st[1] < 1 || st[0] > kMaxDim || st[1] > kMaxDim) refuse(where, "strides must be two sizes >= 1");
    const auto dil = a.integers("dilations", {1, 1});
    if (dil.size() != 2 || dil[0] < 1 || dil[1] < 1 || dil[0] > kMaxDim || dil[1] > kMaxDim) {
      refuse(where, "dilations must be two sizes >= 1");
    }
    if ((dil[0] > 1 || dil[1] > 1) && (st[0] > 1 || st[1] > 1)) {
      refuse(where, "dilations with strides > 1 (Keras's Conv2D, and loom's, take one or the other)");
    }
    const Index eh = (kh - 1) * dil[0] + 1, ew = (kw - 1) * dil[1] + 1;  // the window, dilated
    const std::string auto_pad = a.text("auto_pad", "NOTSET");
    std::vector<std::int64_t> pads = a.integers("pads", {0, 0, 0, 0});
    if (pads.size() != 4) refuse(where, "pads must hold 4 values");
    for (std::int64_t p : pads) {
      if (p < 0 || p > kMaxDim) refuse(where, "pads out of range");
    }
    std::optional<Padding> rows, cols;
    if (auto_pad == "VALID") {
      rows = cols = Padding::Valid;
    } else if (auto_pad == "SAME_UPPER") {
      rows = cols = Padding::Same;
    } else if (auto_pad != "NOTSET") {
      refuse(where, "auto_pad " + auto_pad + " (loom reads NOTSET, VALID and SAME_UPPER)");
    } else {
      rows = keras_padding(shape_[0], eh, st[0], pads[0], pads[2], false, false);
      cols = keras_padding(shape_[1], ew, st[1], pads[1], pads[3], false, false);
    }
    Padding padding = Padding::Valid;
    if (rows && cols && *rows == *cols) {
      padding = *rows;
    } else {  // zeros around, then a 'valid' convolution
      if (auto_pad != "NOTSET") refuse(where, "auto_pad with these sizes");
      add_zero_padding(pads[0], pads[2], pads[1], pads[3], where);
    }
    const bool bias = has_input(n, 2);
    Pending<T> p;
    p.conv = Conv2DOptions(cout, {kh, kw})
                 .strides({st[0], st[1]})
                 .padding(padding)
                 .use_bias(bias)
                 .dilation_rate({dil[0], dil[1]})
                 .groups(groups);
    p.conv_or_dense = "conv";
    // ONNX's [cout, cin, kh, kw] to Keras's [kh, kw, cin, cout].
    std::vector<double> k(static_cast<std::size_t>(w.size()));
    for (Index f = 0; f < cout; ++f)
      for (Index c = 0; c < cin; ++c)
        for (Index i = 0; i < kh; ++i)
          for (Index j = 0; j < kw; ++j) k[std::size_t(((i * kw + j) * cin + c) * cout + f)] = w.values[std::size_t(((f * cin + c) * kh + i) * kw + j)];
    p.weights.push_back(std::move(k));
    if (bias) p.weights.push_back(vector_of(constant_input(n, 2, where, "bias B"), cout, where, "B"));
    const auto oh = loom::detail::window_axis(shape_[0], eh, st[0], padding), ow = loom::detail::window_axis(shape_[1], ew, st[1], padding);
    if (oh.out < 1 || ow.out < 1) refuse(where, "its output would be empty");
    shape_ = Shape{oh.out, ow.out, cout};
    pending_.push_back(std::move(p));
  }

  void add_zero_padding(std::int64_t top, std::int64_t bottom, std::int64_t left, std::int64_t right, const std::string&) {
    Pending<T> p;
    p.layer = std::make_unique<ZeroPadding2D<T>>(top, bottom, left, right);
    shape_ = Shape{shape_[0] + top + bottom, shape_[1] + left + right, shape_[2]};
    pending_.push_back(std::move(p));
  }

  std::vector<double> vector_of(const Constant& c, Index n, const std::string& where, const char* role) {
    if (c.size() != n) refuse(where, loom::detail::str(role, " has ", c.size(), " values where ", n, " are needed"));
    return c.values;
  }

  void batch_normalization(const ::onnx::NodeProto& n, Attributes& a, const std::string& where) {
    const Index c = shape_.back();
    if (shape_.rank() == 3 && !nchw_) refuse(where, "on NHWC images (ONNX normalizes axis 1)");
    const double epsilon = a.real("epsilon", 1e-5), momentum = a.real("momentum", 0.9);
    if (a.integer("training_mode", 0) != 0) refuse(where, "training_mode=1");
    if (a.integer("spatial", 1) != 1) refuse(where, "spatial=0 (per activation; loom normalizes per channel)");
    if (flattened_nchw_) refuse(where, "on NCHW images flattened: loom normalizes its features in NHWC order");
    if (!(epsilon > 0 && epsilon < 1) || !(momentum >= 0 && momentum < 1)) refuse(where, "epsilon or momentum out of range");
    Pending<T> p;
    p.layer = std::make_unique<BatchNormalization<T>>(BatchNormalizationOptions().epsilon(epsilon).momentum(momentum));
    for (int k = 1; k <= 4; ++k) {
      static const char* roles[] = {"", "scale", "B", "input_mean", "input_var"};
      p.weights.push_back(vector_of(constant_input(n, k, where, roles[k]), c, where, roles[k]));
    }
    for (double v : p.weights[3]) {
      if (!(v >= 0)) refuse(where, "a variance is negative or NaN");
    }
    pending_.push_back(std::move(p));
  }

  void max_pool(const ::onnx::NodeProto& n, Attributes& a, const std::string& where) {
    to_images(where);
    if (n.output_size() > 1 && !n.output(1).empty()) refuse(where, "its Indices output is not read by loom");
    const auto ks = a.integers("kernel_shape", {});
    const auto st = a.integers("strides", {1, 1});
    const auto pads = a.integers("pads", {0, 0, 0, 0});
    const bool ceil_mode = a.integer("ceil_mode", 0) != 0;
    if (a.integer("storage_order", 0) != 0) refuse(where, "storage_order 1");
    for (std::int64_t d : a.integers("dilations", {1, 1})) {
      if (d != 1) refuse(where, "dilations other than 1");
    }
    if (a.text("auto_pad", "NOTSET") != "NOTSET") refuse(where, "auto_pad (loom reads explicit pads)");
    if (ks.size() != 2 || st.size() != 2 || pads.size() != 4) refuse(where, "kernel_shape, strides or pads of the wrong length");
    for (std::int64_t v : {ks[0], ks[1], st[0], st[1]}) {
      if (v < 1 || v > kMaxDim) refuse(where, "kernel_shape and strides must be sizes >= 1");
    }
    for (std::int64_t p : pads) {
      if (p < 0 || p > kMaxDim) refuse(where, "pads out of range");
    }
    const auto rows = keras_padding(shape_[0], ks[0], st[0], pads[0], pads[2], ceil_mode, true);
    const auto cols = keras_padding(shape_[1], ks[1], st[1], pads[1], pads[3], ceil_mode, true);
    if (!rows || !cols || *rows != *cols) {
      refuse(where, loom::detail::str("pads (", pads[0], ", ", pads[1], ", ", pads[2], ", ", pads[3], ") with ceil_mode ",
                                      ceil_mode, " are neither Keras's 'valid' nor 'same' for this input"));
    }
    Pending<T> p;
    p.layer = std::make_unique<MaxPool2D<T>>(
        MaxPool2DOptions().pool_size({ks[0], ks[1]}).strides(Size2{st[0], st[1]}).padding(*rows));
    shape_ = Shape{loom::detail::window_axis(shape_[0], ks[0], st[0], *rows).out,
                   loom::detail::window_axis(shape_[1], ks[1], st[1], *rows).out, shape_[2]};
    pending_.push_back(std::move(p));
  }

  void activation(Activation act, const std::string& where) {
    if (flattened_nchw_ && act == Activation::Softmax) {
      refuse(where, "over NCHW images flattened: loom needs a Gemm or MatMul there, to reorder");
    }
    if (!pending_.empty() && !pending_.back().conv_or_dense.empty()) {
      Pending<T>& last = pending_.back();
      if (last.conv_or_dense == "conv" && last.conv.activation() == Activation::None) {
        last.conv.activation(act);
        return;
      }
      if (last.conv_or_dense == "dense" && last.dense.activation() == Activation::None) {
        last.dense.activation(act);
        return;
      }
    }
    Pending<T> p;
    p.layer = act == Activation::ReLU ? std::unique_ptr<Layer<T>>(std::make_unique<ReLU<T>>())
                                      : std::unique_ptr<Layer<T>>(std::make_unique<Softmax<T>>());
    pending_.push_back(std::move(p));
  }

  void softmax(const ::onnx::NodeProto&, Attributes& a, const std::string& where) {
    const std::int64_t rank = shape_.rank() + 1;
    std::int64_t axis = a.integer("axis", -1);
    if (axis < 0) axis += rank;
    // loom's softmax runs over its last axis: the channels (axis 1 in NCHW) or the features.
    const std::int64_t channels = shape_.rank() == 3 && nchw_ ? 1 : rank - 1;
    if (axis != channels) refuse(where, loom::detail::str("over axis ", axis, " (loom's Softmax is over the channels or features)"));
    if (shape_.rank() == 3 && nchw_ && opset_ < 13) refuse(where, "on images before opset 13 (it flattens them)");
    activation(Activation::Softmax, where);
  }



  void flatten(Attributes& a, const std::string& where) {
    if (a.integer("axis", 1) != 1) refuse(where, "axis other than 1");
    make_flatten(where);
  }

  void reshape(const ::onnx::NodeProto& n, Attributes& a, const std::string& where) {
    const Constant& s = constant_input(n, 1, where, "shape");
    a.integer("allowzero", 0);
    Index size = 1;
    for (Index d : shape_) size *= d;
    // (batch, -1), (0, -1), (-1, size), (0, size): a Flatten.
    const bool flat = s.size() == 2 && (s.values[0] == 0 || s.values[0] == -1 || s.values[0] > 0) &&
                      (s.values[1] == -1 || s.values[1] == double(size)) && !(s.values[0] == -1 && s.values[1] == -1) &&
                      !(s.values[0] > 0 && s.values[1] == -1);
    if (!flat) refuse(where, "a Reshape other than to (batch, -1): loom has no Reshape layer yet");
    make_flatten(where);
  }

  void make_flatten(const std::string& where) {
    if (shape_.rank() == 1) return;
    Pending<T> p;
    p.layer = std::make_unique<Flatten<T>>();
    pending_.push_back(std::move(p));
    if (nchw_) flattened_nchw_ = true, flat_chw_ = shape_;
    Index size = 1;
    for (Index d : shape_) size *= d;
    shape_ = Shape{size};
    nchw_ = false;
    (void)where;
  }

  /// A Dense from B [in, units] in loom's layout (rows reordered when NCHW images were flattened).
  void dense(std::vector<double> kernel, Index in, Index units, std::optional<std::vector<double>> bias, const std::string& where) {
    if (shape_.rank() != 1 || shape_[0] != in) refuse(where, loom::detail::str("its input has ", shape_[0], " features, its weight ", in));
    if (flattened_nchw_) {  // rows in C, H, W order -> H, W, C
      const Index h = flat_chw_[0], w = flat_chw_[1], c = flat_chw_[2];
      std::vector<double> hwc(kernel.size());
      for (Index ci = 0; ci < c; ++ci)
        for (Index hi = 0; hi < h; ++hi)
          for (Index wi = 0; wi < w; ++wi) {
            const Index from = (ci * h + hi) * w + wi, to = (hi * w + wi) * c + ci;
            std::copy_n(kernel.begin() + from * units, units, hwc.begin() + to * units);
          }
      kernel = std::move(hwc);
      flattened_nchw_ = false;
    }
    Pending<T> p;
    p.dense = DenseOptions(units).use_bias(bias.has_value());
    p.conv_or_dense = "dense";
    p.weights.push_back(std::move(kernel));
    if (bias) p.weights.push_back(std::move(*bias));
    shape_ = Shape{units};
    pending_.push_back(std::move(p));
  }

  void gemm(const ::onnx::NodeProto& n, Attributes& a, const std::string& where) {
    if (a.real("alpha", 1.0) != 1.0 || a.real("beta", 1.0) != 1.0) refuse(where, "alpha or beta other than 1");
    if (a.integer("transA", 0) != 0) refuse(where, "transA=1");
    const bool trans_b = a.integer("transB", 0) != 0;
    const Constant& b = constant_input(n, 1, where, "B");
    if (b.dims.size() != 2 || b.dims[0] < 1 || b.dims[1] < 1) refuse(where, "B is not a matrix");
    const Index in = trans_b ? b.dims[1] : b.dims[0], units = trans_b ? b.dims[0] : b.dims[1];
    std::vector<double> kernel(b.values.size());
    for (Index r = 0; r < in; ++r)
      for (Index u = 0; u < units; ++u) kernel[std::size_t(r * units + u)] = trans_b ? b.values[std::size_t(u * in + r)] : b.values[std::size_t(r * units + u)];
    std::optional<std::vector<double>> bias;
    if (has_input(n, 2)) bias = vector_of(constant_input(n, 2, where, "C"), units, where, "C (a bias of one value per unit)");
    dense(std::move(kernel), in, units, std::move(bias), where);
  }

  void matmul(const ::onnx::NodeProto& n, const std::string& where) {
    const Constant& b = constant_input(n, 1, where, "B");
    if (b.dims.size() != 2 || b.dims[0] < 1 || b.dims[1] < 1) refuse(where, "B is not a matrix");
    dense(b.values, b.dims[0], b.dims[1], std::nullopt, where);
  }

  /// An Add right after a MatMul, of a vector: the Dense's bias.
  void add_bias(const ::onnx::NodeProto& n, const std::string& where) {
    if (pending_.empty() || pending_.back().conv_or_dense != "dense" || pending_.back().dense.use_bias() ||
        pending_.back().dense.activation() != Activation::None) {
      refuse(where, "an Add other than a MatMul's bias: loom reads chains of layers (no residual merges yet)");
    }
    Pending<T>& d = pending_.back();
    d.weights.push_back(vector_of(constant_input(n, 1, where, "bias"), d.dense.units(), where, "the bias"));
    d.dense.use_bias(true);
  }

  void transpose(Attributes& a, const std::string& where) {
    const auto perm = a.integers("perm", {});
    if (shape_.rank() == 3 && !nchw_ && perm == std::vector<std::int64_t>{0, 3, 1, 2}) {
      nchw_ = true;
    } else if (shape_.rank() == 3 && nchw_ && perm == std::vector<std::int64_t>{0, 2, 3, 1}) {
      nchw_ = false;
    } else {
      refuse(where, "a Transpose other than between NCHW and NHWC images");
    }
  }

  void pad(const ::onnx::NodeProto& n, Attributes& a, const std::string& where) {
    to_images(where);
    if (a.text("mode", "constant") != "constant") refuse(where, "a mode other than constant");
    std::vector<std::int64_t> pads;
    if (opset_ < 11) {
      pads = a.integers("pads", {});
      if (a.real("value", 0.0) != 0.0) refuse(where, "a value other than 0");
    } else {
      for (double v : constant_input(n, 1, where, "pads").values) pads.push_back(static_cast<std::int64_t>(v));
      if (has_input(n, 2)) {
        const Constant& value = constant_input(n, 2, where, "constant_value");
        if (value.size() != 1 || value.values[0] != 0) refuse(where, "a value other than 0");
      }
      if (has_input(n, 3)) refuse(where, "axes (loom reads pads of all four axes)");
    }
    if (pads.size() != 8 || pads[0] || pads[1] || pads[4] || pads[5]) refuse(where, "padding other than on height and width");
    for (std::int64_t p : pads) {
      if (p < 0 || p > kMaxDim) refuse(where, "pads out of range (negative pads crop)");
    }
    add_zero_padding(pads[2], pads[6], pads[3], pads[7], where);
  }

  void dropout(const ::onnx::NodeProto& n, Attributes& a, const std::string& where) {
    double rate = a.real("ratio", 0.5);
    if (has_input(n, 1)) {
      const Constant& r = constant_input(n, 1, where, "ratio");
      if (r.size() != 1) refuse(where, "ratio is not one value");
      rate = r.values[0];
    }
    if (has_input(n, 2)) refuse(where, "training_mode input");
    if (n.output_size() > 1 && !n.output(1).empty()) refuse(where, "its mask output is not read by loom");
    a.integer("is_test", 1);
    if (!(rate >= 0 && rate < 1)) refuse(where, "ratio outside [0, 1)");
    Pending<T> p;
    p.layer = std::make_unique<Dropout<T>>(rate);
    pending_.push_back(std::move(p));
  }

  void to_images(const std::string& where) {
    if (shape_.rank() != 3) refuse(where, "needs images, its input is " + shape_.str("N"));
    if (!nchw_) refuse(where, "on NHWC images (ONNX's convolution and pooling are NCHW)");
  }

  Sequential<T> build(const OnnxInfo&) {
    Sequential<T> model(0, model_.graph().name().empty() ? "sequential" : sanitized(model_.graph().name()));
    Index values = 0;
    for (auto& p : pending_) {
      if (p.conv_or_dense == "conv") p.layer = std::make_unique<Conv2D<T>>(p.conv);
      if (p.conv_or_dense == "dense") p.layer = std::make_unique<Dense<T>>(p.dense);
      for (const auto& w : p.weights) values += static_cast<Index>(w.size());
    }
    std::vector<std::vector<double>*> weights;
    for (auto& p : pending_) {
      p.layer->limit_parameter_values(values);
      model.add(std::move(p.layer));
    }
    model.build(input_shape_);
    for (std::size_t l = 0; l < pending_.size(); ++l) {
      auto params = model.layers()[l]->parameters();
      const auto& w = pending_[l].weights;
      if (w.empty()) continue;
      // BatchNormalization: gamma, beta, mean, variance, as ONNX orders them and loom too.
      if (params.size() != w.size()) {
        throw Error(loom::detail::str(what_, ": layer ", l, " takes ", params.size(), " tensors, the file gave ", w.size()));
      }
      for (std::size_t k = 0; k < w.size(); ++k) {
        Tensor<T>& t = *params[k].value;
        if (t.size() != static_cast<Index>(w[k].size())) {
          throw Error(loom::detail::str(what_, ": ", params[k].name, " takes ", t.size(), " values, the file gave ", w[k].size()));
        }
        for (Index e = 0; e < t.size(); ++e) t[e] = static_cast<T>(w[k][std::size_t(e)]);
      }
    }
    return model;
  }

  static std::string sanitized(const std::string& name) {
    std::string s;
    for (char c : name) s += (std::isalnum(static_cast<unsigned char>(c)) || c == '_') ? c : '_';
    return s.substr(0, 64);
  }

  const ::onnx::ModelProto& model_;
  std::string what_;
  std::int64_t opset_ = 0;   ///< the default domain's opset (read_header)
  std::map<std::string, Constant> constants_;
  std::vector<Pending<T>> pending_;
  std::string current_;
  Shape input_shape_, shape_;     ///< shape_: the current tensor per sample, in loom's layout
  bool nchw_ = false;             ///< the graph's current tensor is NCHW images
  bool flattened_nchw_ = false;   ///< flattened from NCHW images: the next Dense reorders its rows
  Shape flat_chw_;                ///< (H, W, C) of those images
};

}  // namespace detail

/// A loom model from an ONNX ModelProto; `what` names it in errors.
template <class T>
Sequential<T> from_model_proto(const ::onnx::ModelProto& proto, const std::string& what, OnnxInfo* info = nullptr) {
  OnnxInfo local;
  detail::Importer<T> importer(proto, what);
  Sequential<T> model = importer.run(info ? *info : local);
  return model;
}

}  // namespace onnx_format
}  // namespace loom
