#pragma once
/// \file export.hpp
/// A loom model as an ONNX graph (onnx::ModelProto, opset 17), for
/// onnx.hpp's save_onnx. (The namespace is loom::onnx_format, not
/// loom::onnx: ONNX's own messages live in ::onnx, and code that says
/// `using namespace loom;` could not name either.) The graph computes the model's inference: what
/// predict computes.
///
/// Layout: loom's images are NHWC, ONNX's Conv and pooling NCHW. The graph
/// takes loom's input as it is (`input`, [batch, H, W, C] for images),
/// transposes it to NCHW before the first layer that needs it, and back to
/// NHWC before a Flatten (whose order the Dense after it was trained on) and
/// at the output; so the ONNX model is called with what predict is called
/// with and returns what it returns. Kernels go from Keras's [kh, kw, Cin,
/// Cout] to ONNX's [Cout, Cin, kh, kw]; a Dense is a Gemm with its kernel
/// [in, units] as B. Dropout and the random augmentations, the identity in
/// inference, write no node; RandomCrop writes its central crop (Slice).
/// Values are written as float32 whatever T (ONNX Runtime's CPU kernels are
/// float32's).

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <cstring>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../loom.hpp"
#include "../version.hpp"

namespace loom::onnx_format {

/// The opset written: 17 (LayerNormalization's), read by ONNX Runtime,
/// OpenVINO and Debian's onnx 1.12.
constexpr int kOpset = 17;

namespace detail {

/// Builds the graph node by node, tracking the current tensor's name, its
/// per-sample shape in loom's layout, and whether it is in NCHW now.
template <class T>
class Exporter {
 public:
  explicit Exporter(::onnx::GraphProto& graph) : graph_(graph) {}

  void input(const Shape& per_sample) {
    shape_ = per_sample;
    current_ = "input";
    value_info(graph_.add_input(), "input", per_sample);
  }

  void output() {
    to_nhwc();
    // The last node's output takes the graph output's name.
    if (graph_.node_size() == 0) {
      node("Identity", {current_}, "output");
    } else {
      ::onnx::NodeProto& last = *graph_.mutable_node(graph_.node_size() - 1);
      last.set_output(0, "output");
    }
    value_info(graph_.add_output(), "output", shape_);
  }

  void layer(const Layer<T>& layer) {
    const std::string type = layer.type(), name = layer.name();
    if (const auto* conv = dynamic_cast<const Conv2D<T>*>(&layer)) return conv2d(*conv);
    if (const auto* dense = dynamic_cast<const Dense<T>*>(&layer)) return this->dense(*dense);
    if (const auto* bn = dynamic_cast<const BatchNormalization<T>*>(&layer)) return batch_normalization(*bn);
    if (const auto* pool = dynamic_cast<const MaxPool2D<T>*>(&layer)) return max_pool(*pool);
    if (dynamic_cast<const Flatten<T>*>(&layer)) return flatten(name);
    if (dynamic_cast<const ZeroPadding2D<T>*>(&layer)) return zero_padding(layer);
    if (dynamic_cast<const RandomCrop<T>*>(&layer)) return central_crop(layer);
    if (const auto* relu = dynamic_cast<const ReLU<T>*>(&layer); relu && !relu->plain()) {
      throw ConfigError(loom::detail::str("save_onnx: layer '", name,
                                          "' (ReLU with max_value, negative_slope or threshold) has no ONNX mapping yet"));
    }
    if (dynamic_cast<const ActivationLayer<T>*>(&layer)) return activation(layer.activation(), name);
    if (dynamic_cast<const Dropout<T>*>(&layer) || dynamic_cast<const RandomFlip<T>*>(&layer) ||
        dynamic_cast<const RandomTranslation<T>*>(&layer) || dynamic_cast<const RandomErasing<T>*>(&layer)) {
      return;  // the identity in inference
    }
    throw ConfigError(loom::detail::str("save_onnx: layer '", name, "' of type ", type,
                                 " has no ONNX mapping (loom writes ", kSupported, ")"));
  }

  static constexpr const char* kSupported =
      "Conv2D, Dense, BatchNormalization, MaxPooling2D, Flatten, ZeroPadding2D, Activation, ReLU, Softmax, "
      "RandomCrop, and drops Dropout, RandomFlip, RandomTranslation and RandomErasing";

 private:
  void conv2d(const Conv2D<T>& conv) {
    to_nchw(conv.name());
    const Conv2DOptions& o = conv.options();
    const Shape in = conv.input_shape(), out = conv.output_shape();
    const auto [kh, kw] = o.kernel_size();
    const auto [sh, sw] = o.strides();
    const auto [dh, dw] = o.dilation_rate();
    const Index eh = (kh - 1) * dh + 1, ew = (kw - 1) * dw + 1;  // the window, dilated
    const auto rows = loom::detail::window_axis(in[0], eh, sh, o.padding());
    const auto cols = loom::detail::window_axis(in[1], ew, sw, o.padding());
    const Index cin = in[2] / o.groups(), cout = o.filters();  // a group's input channels
    // Keras's [kh, kw, cin, cout] to ONNX's [cout, cin, kh, kw] (cin a group's, for both).
    const Tensor<T>& k = value_of(const_cast<Conv2D<T>&>(conv), "kernel");
    std::vector<float> w(static_cast<std::size_t>(k.size()));
    for (Index i = 0; i < kh; ++i)
      for (Index j = 0; j < kw; ++j)
        for (Index c = 0; c < cin; ++c)
          for (Index f = 0; f < cout; ++f) w[std::size_t(((f * cin + c) * kh + i) * kw + j)] = float(k(i, j, c, f));
    std::vector<std::string> inputs{current_, weight(conv.name() + ".kernel", {cout, cin, kh, kw}, w)};
    if (o.use_bias()) inputs.push_back(weight(conv.name() + ".bias", {cout}, floats(value_of(const_cast<Conv2D<T>&>(conv), "bias"))));
    ::onnx::NodeProto& n = node("Conv", inputs, conv.name());
    ints(n, "kernel_shape", {kh, kw});
    ints(n, "strides", {sh, sw});
    ints(n, "pads", {rows.pad_before, cols.pad_before, pad_after(in[0], eh, sh, rows),
                     pad_after(in[1], ew, sw, cols)});
    ints(n, "dilations", {dh, dw});
    if (o.groups() > 1) ints(n, "group", {o.groups()}, true);
    shape_ = out;
    activation(o.activation(), conv.name() + ".activation");
  }

  void dense(const Dense<T>& dense) {
    to_nhwc();
    if (shape_.rank() != 1) throw ConfigError("save_onnx: Dense '" + dense.name() + "' on input of rank > 1");
    auto& d = const_cast<Dense<T>&>(dense);
    const Tensor<T>& k = value_of(d, "kernel");
    std::vector<std::string> inputs{current_, weight(dense.name() + ".kernel", {k.dim(0), k.dim(1)}, floats(k))};
    if (dense.options().use_bias()) inputs.push_back(weight(dense.name() + ".bias", {k.dim(1)}, floats(value_of(d, "bias"))));
    node("Gemm", inputs, dense.name());
    shape_ = dense.output_shape();
    activation(dense.options().activation(), dense.name() + ".activation");
  }

  void batch_normalization(const BatchNormalization<T>& bn) {
    if (shape_.rank() == 3) to_nchw(bn.name());
    if (shape_.rank() != 1 && shape_.rank() != 3) {
      throw ConfigError("save_onnx: BatchNormalization '" + bn.name() + "' on input of rank " +
                        std::to_string(shape_.rank()) + " (loom writes it on features or images)");
    }
    auto& b = const_cast<BatchNormalization<T>&>(bn);
    const Index c = shape_.back();
    // gamma and beta are absent without scale or center: 1 and 0 then.
    std::vector<float> gamma(std::size_t(c), 1.0f), beta(std::size_t(c), 0.0f);
    if (bn.options().scale()) gamma = floats(value_of(b, "gamma"));
    if (bn.options().center()) beta = floats(value_of(b, "beta"));
    ::onnx::NodeProto& n = node("BatchNormalization",
                                {current_, weight(bn.name() + ".gamma", {c}, gamma), weight(bn.name() + ".beta", {c}, beta),
                                 weight(bn.name() + ".moving_mean", {c}, floats(value_of(b, "moving_mean"))),
                                 weight(bn.name() + ".moving_variance", {c}, floats(value_of(b, "moving_variance")))},
                                bn.name());
    real(n, "epsilon", bn.options().epsilon());
    real(n, "momentum", bn.options().momentum());
  }

  void max_pool(const MaxPool2D<T>& pool) {
    to_nchw(pool.name());
    const Shape in = pool.input_shape();
    const auto [kh, kw] = pool.options().pool_size();
    const auto [sh, sw] = pool.strides();
    const auto rows = loom::detail::window_axis(in[0], kh, sh, pool.options().padding());
    const auto cols = loom::detail::window_axis(in[1], kw, sw, pool.options().padding());
    ::onnx::NodeProto& n = node("MaxPool", {current_}, pool.name());
    ints(n, "kernel_shape", {kh, kw});
    ints(n, "strides", {sh, sw});
    ints(n, "pads", {rows.pad_before, cols.pad_before, pad_after(in[0], kh, sh, rows), pad_after(in[1], kw, sw, cols)});
    shape_ = pool.output_shape();
  }

  void flatten(const std::string& name) {
    to_nhwc();  // loom flattens in H, W, C order
    if (shape_.rank() == 1) return;
    ::onnx::NodeProto& n = node("Flatten", {current_}, name);
    ints(n, "axis", {1}, true);
    Index size = 1;
    for (Index d : shape_) size *= d;
    shape_ = Shape{size};
  }

  void zero_padding(const Layer<T>& layer) {
    to_nchw(layer.name());
    const Shape in = layer.input_shape(), out = layer.output_shape();
    const std::vector<double> p = layer.config().reals("padding");  // top, bottom, left, right
    const std::vector<std::int64_t> pads{0, 0, std::int64_t(p[0]), std::int64_t(p[2]),
                                         0, 0, std::int64_t(p[1]), std::int64_t(p[3])};
    node("Pad", {current_, int64s(layer.name() + ".pads", pads)}, layer.name());
    shape_ = out;
    (void)in;
  }

  void central_crop(const Layer<T>& layer) {
    to_nchw(layer.name());
    const Shape in = layer.input_shape(), out = layer.output_shape();
    const Index top = (in[0] - out[0]) / 2, left = (in[1] - out[1]) / 2;  // RandomCrop's inference window
    node("Slice",
         {current_, int64s(layer.name() + ".starts", {top, left}),
          int64s(layer.name() + ".ends", {top + out[0], left + out[1]}), int64s(layer.name() + ".axes", {2, 3})},
         layer.name());
    shape_ = out;
  }

  void activation(Activation a, const std::string& name) {
    if (a == Activation::None) return;
    if (a == Activation::ReLU) {
      node("Relu", {current_}, name);
      return;
    }
    if (a != Activation::Softmax) {
      throw ConfigError(loom::detail::str("save_onnx: '", name, "': activation '", to_string(a),
                                          "' has no ONNX mapping yet (loom writes relu and softmax)"));
    }
    // Softmax over loom's last axis: the channels, axis 1 in NCHW.
    ::onnx::NodeProto& n = node("Softmax", {current_}, name);
    ints(n, "axis", {nchw_ ? 1 : -1}, true);
  }

  /// Transposes the current images to NCHW, if they are not.
  void to_nchw(const std::string& layer) {
    if (nchw_) return;
    if (shape_.rank() != 3) {
      throw ConfigError("save_onnx: layer '" + layer + "' needs images (H, W, C), got " + shape_.str("N"));
    }
    ::onnx::NodeProto& n = node("Transpose", {current_}, layer + ".to_nchw");
    ints(n, "perm", {0, 3, 1, 2});
    nchw_ = true;
  }
  /// Back to loom's NHWC, if in NCHW.
  void to_nhwc() {
    if (!nchw_) return;
    ::onnx::NodeProto& n = node("Transpose", {current_}, current_ + ".to_nhwc");
    ints(n, "perm", {0, 2, 3, 1});
    nchw_ = false;
  }

  static Index pad_after(Index in, Index window, Index stride, const loom::detail::AxisGeometry& g) {
    return std::max<Index>((g.out - 1) * stride + window - in - g.pad_before, 0);
  }

  /// The layer's parameter whose name ends in "/<what>".
  static const Tensor<T>& value_of(Layer<T>& layer, const std::string& what) {
    for (const auto& p : layer.parameters()) {
      if (p.name.size() > what.size() && p.name.compare(p.name.size() - what.size(), what.size(), what) == 0 &&
          p.name[p.name.size() - what.size() - 1] == '/') {
        return *p.value;
      }
    }
    throw Error("save_onnx: layer '" + layer.name() + "' has no parameter '" + what + "'");
  }

  static std::vector<float> floats(const Tensor<T>& t) {
    std::vector<float> v(static_cast<std::size_t>(t.size()));
    for (Index i = 0; i < t.size(); ++i) v[std::size_t(i)] = static_cast<float>(t[i]);
    return v;
  }

  /// A node with one output named `name`, which becomes the current tensor.
  ::onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs, const std::string& name) {
    ::onnx::NodeProto& n = *graph_.add_node();
    n.set_op_type(op);
    n.set_name(name);
    for (const auto& i : inputs) n.add_input(i);
    n.add_output(name);
    current_ = name;
    return n;
  }

  static void ints(::onnx::NodeProto& n, const std::string& name, const std::vector<Index>& values, bool single = false) {
    ::onnx::AttributeProto& a = *n.add_attribute();
    a.set_name(name);
    if (single) {
      a.set_type(::onnx::AttributeProto::INT);
      a.set_i(values.at(0));
      return;
    }
    a.set_type(::onnx::AttributeProto::INTS);
    for (Index v : values) a.add_ints(v);
  }
  static void real(::onnx::NodeProto& n, const std::string& name, double value) {
    ::onnx::AttributeProto& a = *n.add_attribute();
    a.set_name(name);
    a.set_type(::onnx::AttributeProto::FLOAT);
    a.set_f(static_cast<float>(value));
  }

  /// A float32 initializer; returns its name.
  std::string weight(const std::string& name, const std::vector<Index>& dims, const std::vector<float>& values) {
    ::onnx::TensorProto& t = *graph_.add_initializer();
    t.set_name(name);
    t.set_data_type(::onnx::TensorProto::FLOAT);
    for (Index d : dims) t.add_dims(d);
    t.set_raw_data(little_endian(values.data(), values.size()));
    return name;
  }
  /// An int64 initializer (Pad's and Slice's operands); returns its name.
  std::string int64s(const std::string& name, const std::vector<std::int64_t>& values) {
    ::onnx::TensorProto& t = *graph_.add_initializer();
    t.set_name(name);
    t.set_data_type(::onnx::TensorProto::INT64);
    t.add_dims(static_cast<std::int64_t>(values.size()));
    t.set_raw_data(little_endian(values.data(), values.size()));
    return name;
  }
  template <class V>
  static std::string little_endian(const V* values, std::size_t n) {
    static_assert(sizeof(V) == 4 || sizeof(V) == 8, "4- or 8-byte values");
    std::string bytes(n * sizeof(V), '\0');
    for (std::size_t i = 0; i < n; ++i) {
      typename std::conditional<sizeof(V) == 4, std::uint32_t, std::uint64_t>::type u;
      std::memcpy(&u, &values[i], sizeof(V));
      for (std::size_t b = 0; b < sizeof(V); ++b) bytes[i * sizeof(V) + b] = static_cast<char>((u >> (8 * b)) & 0xff);
    }
    return bytes;
  }

  /// A float32 value of loom's per-sample shape with a free batch dimension.
  static void value_info(::onnx::ValueInfoProto* v, const std::string& name, const Shape& per_sample) {
    v->set_name(name);
    ::onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(::onnx::TensorProto::FLOAT);
    ::onnx::TensorShapeProto* s = t->mutable_shape();
    s->add_dim()->set_dim_param("batch");
    for (Index d : per_sample) s->add_dim()->set_dim_value(d);
  }

  ::onnx::GraphProto& graph_;
  std::string current_;
  Shape shape_;        ///< per sample, in loom's layout (H, W, C) even while the graph holds NCHW
  bool nchw_ = false;  ///< the current tensor is in NCHW
};

}  // namespace detail

/// ONNX's own checks of a model: its checker (the graph, the operators and
/// their attributes against the opset) and, strictly, its shape inference
/// (every node's input shapes and types). FormatError naming what fails.
inline void check(const ::onnx::ModelProto& proto, const std::string& what) {
  try {
    ::onnx::checker::check_model(proto);
    ::onnx::ModelProto inferred = proto;
    ::onnx::shape_inference::InferShapes(inferred, ::onnx::OpSchemaRegistry::Instance(),
                                         ::onnx::ShapeInferenceOptions(/*check_type=*/true, /*strict=*/1));
  } catch (const std::exception& e) {
    throw FormatError(what + ": ONNX's checker refuses the model: " + e.what());
  }
}

/// The model (built) as an ONNX ModelProto.
template <class T>
::onnx::ModelProto to_model_proto(const Sequential<T>& model) {
  model.require_built("save_onnx");
  ::onnx::ModelProto proto;
  proto.set_ir_version(8);  // ONNX 1.10-1.12's, the newest Debian's onnx 1.12 checks
  proto.set_producer_name("loom");
  proto.set_producer_version(loom::version);
  ::onnx::OperatorSetIdProto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  ::onnx::GraphProto& graph = *proto.mutable_graph();
  graph.set_name(model.name());
  detail::Exporter<T> exporter(graph);
  exporter.input(model.layers().front()->input_shape());
  for (const auto& layer : model.layers()) exporter.layer(*layer);
  exporter.output();
  return proto;
}

}  // namespace loom::onnx_format
