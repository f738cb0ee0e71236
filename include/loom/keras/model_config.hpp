#pragma once
/// \file model_config.hpp
/// Keras's JSON model configs, both ways: a Sequential (or straight-chain
/// Functional) config of Keras 2.1 to 3.x becomes a loom `Sequential<T>`, and
/// a loom model becomes the config Keras 3 writes. Also the compile config
/// (loss, optimizer, metrics). Weights are not here: see h5_format.hpp and
/// keras_format.hpp.
///
/// Which Keras layer becomes which loom layer, and what is refused, is listed
/// in docs/keras.md. Needs nlohmann-json (Debian's nlohmann-json3-dev).

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../layers/activation.hpp"
#include "../layers/augmentation.hpp"
#include "../layers/batch_normalization.hpp"
#include "../layers/conv2d.hpp"
#include "../layers/dense.hpp"
#include "../layers/dropout.hpp"
#include "../layers/flatten.hpp"
#include "../layers/max_pool2d.hpp"
#include "../losses.hpp"
#include "../model/sequential.hpp"
#include "../optimizers.hpp"
#include "../version.hpp"

namespace loom::keras {

using json = nlohmann::json;

/// The Keras version loom's files say they follow (the format, not the code).
inline constexpr const char* kKerasFormatVersion = "3.0.0";

namespace impl {

/// The layer classes loom reads, for messages.
inline const char* supported_layers() {
  return "InputLayer, Conv2D, MaxPooling2D, BatchNormalization, Dropout, Flatten, Dense, Activation, ReLU, Softmax, "
         "RandomFlip, RandomTranslation, RandomErasing, ZeroPadding2D";
}

/// Reads a JSON document, turning every parse error into a FormatError.
inline json parse_json(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(what + ": malformed JSON: " + e.what());
  }
}

/// Checked access to a JSON config: every type error names the layer and key.
class Fields {
 public:
  Fields(const json& object, std::string where) : o_(object), where_(std::move(where)) {
    if (!o_.is_object()) throw FormatError(where_ + ": expected a JSON object");
  }
  Fields(const json&&, std::string) = delete;  // it keeps a reference: never to a temporary
  bool has(const char* key) const { return o_.contains(key) && !o_.at(key).is_null(); }
  const json& at(const char* key) const {
    if (!o_.contains(key)) throw FormatError(where_ + ": no '" + key + "'");
    return o_.at(key);
  }
  std::string text(const char* key) const {
    const json& v = at(key);
    if (!v.is_string()) bad(key, "a string");
    return v.get<std::string>();
  }
  std::string text(const char* key, const std::string& otherwise) const { return has(key) ? text(key) : otherwise; }
  long long integer(const char* key) const {
    const json& v = at(key);
    if (!v.is_number_integer()) bad(key, "an integer");
    return v.get<long long>();
  }
  long long integer(const char* key, long long otherwise) const { return has(key) ? integer(key) : otherwise; }
  double real(const char* key) const {
    const json& v = at(key);
    if (!v.is_number()) bad(key, "a number");
    return v.get<double>();
  }
  double real(const char* key, double otherwise) const { return has(key) ? real(key) : otherwise; }
  bool flag(const char* key, bool otherwise) const {
    if (!has(key)) return otherwise;
    const json& v = at(key);
    if (!v.is_boolean()) bad(key, "true or false");
    return v.get<bool>();
  }
  /// An int n (meaning (n, n)) or a list of two ints, each in [1, 2^20].
  Size2 size2(const char* key) const {
    const json& v = at(key);
    auto one = [&](const json& e) {
      if (!e.is_number_integer() || e.get<long long>() < 1 || e.get<long long>() > (1 << 20)) bad(key, "positive integers");
      return static_cast<Index>(e.get<long long>());
    };
    if (v.is_number_integer()) return Size2{one(v), one(v)};
    if (!v.is_array() || v.size() != 2) bad(key, "an integer or a list of two");
    return Size2{one(v[0]), one(v[1])};
  }
  [[noreturn]] void bad(const char* key, const char* expected) const {
    throw FormatError(where_ + ": '" + key + "' should be " + expected + ", got " + o_.at(key).dump());
  }
  [[noreturn]] void refuse(const std::string& what) const {
    throw FormatError(where_ + ": " + what + " is not supported by loom");
  }
  const std::string& where() const { return where_; }

 private:
  const json& o_;
  std::string where_;
};

/// A Keras activation: "relu", a serialized function ({"class_name":
/// "function", "config": "softmax_v2"}), or null for linear.
inline Activation activation_of(const Fields& f, const char* key = "activation") {
  if (!f.has(key)) return Activation::None;
  const json& v = f.at(key);
  std::string name;
  if (v.is_string()) {
    name = v.get<std::string>();
  } else if (v.is_object() && v.contains("config") && v.at("config").is_string()) {
    name = v.at("config").get<std::string>();
  } else {
    f.bad(key, "an activation name");
  }
  if (name.size() > 3 && name.compare(name.size() - 3, 3, "_v2") == 0) name.resize(name.size() - 3);
  if (name == "relu") return Activation::ReLU;
  if (name == "softmax") return Activation::Softmax;
  if (name == "linear") return Activation::None;
  f.refuse("activation '" + name + "' (loom has relu, softmax and linear)");
}

inline Padding padding_of(const Fields& f) {
  const std::string p = f.text("padding", "valid");
  if (p == "valid") return Padding::Valid;
  if (p == "same") return Padding::Same;
  f.refuse("padding '" + p + "'");
}

inline void require_channels_last(const Fields& f) {
  const std::string format = f.text("data_format", "channels_last");
  if (format != "channels_last") f.refuse("data_format '" + format + "' (loom is channels_last, NHWC)");
}

/// The per-sample input shape in `batch_shape` / `batch_input_shape`
/// ([null, 28, 28, 1] gives (28, 28, 1)), if the config has one.
inline std::optional<Shape> input_shape_of(const Fields& f) {
  const char* key = f.has("batch_shape") ? "batch_shape" : f.has("batch_input_shape") ? "batch_input_shape" : nullptr;
  if (!key) return std::nullopt;
  const json& v = f.at(key);
  if (!v.is_array() || v.size() < 2 || v.size() > static_cast<std::size_t>(Shape::max_rank) + 1) {
    f.bad(key, "a list [None, dims...]");
  }
  Shape s;
  Index total = 1;
  for (std::size_t i = 1; i < v.size(); ++i) {
    if (!v[i].is_number_integer() || v[i].get<long long>() < 1 || v[i].get<long long>() > (1 << 24)) {
      f.bad(key, "a list of known, positive dimensions after the batch");
    }
    s.push_back(static_cast<Index>(v[i].get<long long>()));
    total *= s.back();
    if (total > (Index{1} << 31)) f.bad(key, "a shape of at most 2^31 values");
  }
  return s;
}

/// Keras's snake_case of a class name (keras/src/utils/naming.py): the stem
/// of automatic layer names and of `.keras` weight paths.
inline std::string snake_case(const std::string& name) {
  std::string a;  // "(.)([A-Z][a-z]+)" -> "\1_\2"
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (i > 0 && std::isupper(static_cast<unsigned char>(name[i])) && i + 1 < name.size() &&
        std::islower(static_cast<unsigned char>(name[i + 1]))) {
      a += '_';
    }
    a += name[i];
  }
  std::string b;  // "([a-z])([A-Z])" -> "\1_\2"
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (i > 0 && std::isupper(static_cast<unsigned char>(a[i])) && std::islower(static_cast<unsigned char>(a[i - 1]))) {
      b += '_';
    }
    b += static_cast<char>(std::tolower(static_cast<unsigned char>(a[i])));
  }
  return b;
}

/// The name Keras gives an optimizer of class `type` by default, which also
/// prefixes its variables: the snake_case of the class, but "adamw" for AdamW
/// (keras/src/optimizers/adamw.py: name="adamw").
inline std::string keras_optimizer_name(const std::string& type) {
  return type == "AdamW" ? std::string("adamw") : snake_case(type);
}

/// A random layer's `seed` (null: none).
inline std::optional<std::uint64_t> seed_of(const Fields& f) {
  if (!f.has("seed")) return std::nullopt;
  const long long s = f.integer("seed");
  if (s < 0) f.bad("seed", "a non-negative integer");
  return static_cast<std::uint64_t>(s);
}

/// RandomTranslation's factor: a number f ([-f, f]) or [lower, upper].
inline Factor factor_of(const Fields& f, const char* key) {
  const json& v = f.at(key);
  if (v.is_number()) return Factor(v.get<double>());
  if (v.is_array() && v.size() == 2 && v[0].is_number() && v[1].is_number()) {
    return Factor(v[0].get<double>(), v[1].get<double>());
  }
  f.bad(key, "a number or a list of two");
}

/// ZeroPadding2D's padding: p, [h, w] or [[top, bottom], [left, right]].
template <class T>
std::unique_ptr<Layer<T>> zero_padding_of(const Fields& f) {
  const json& v = f.has("padding") ? f.at("padding") : json(1);
  const auto one = [&](const json& e) {
    if (!e.is_number_integer() || e.get<long long>() < 0 || e.get<long long>() > (1 << 20)) {
      f.bad("padding", "non-negative integers");
    }
    return static_cast<Index>(e.get<long long>());
  };
  if (v.is_number_integer()) return std::make_unique<ZeroPadding2D<T>>(one(v));
  if (v.is_array() && v.size() == 2 && v[0].is_array() && v[1].is_array() && v[0].size() == 2 && v[1].size() == 2) {
    return std::make_unique<ZeroPadding2D<T>>(one(v[0][0]), one(v[0][1]), one(v[1][0]), one(v[1][1]));
  }
  if (v.is_array() && v.size() == 2) {
    const Index h = one(v[0]), w = one(v[1]);
    return std::make_unique<ZeroPadding2D<T>>(h, h, w, w);
  }
  f.bad("padding", "an integer, two, or two pairs");
}

/// One Keras layer config turned into a loom layer (nullptr for InputLayer).
template <class T>
std::unique_ptr<Layer<T>> layer_from_keras(const std::string& cls, const Fields& f) {
  const std::string name = f.text("name", "");
  std::unique_ptr<Layer<T>> layer;
  if (cls == "InputLayer") {
    if (f.flag("sparse", false) || f.flag("ragged", false)) f.refuse("a sparse or ragged input");
    return nullptr;
  } else if (cls == "Conv2D" || cls == "Convolution2D") {
    require_channels_last(f);
    if (f.has("dilation_rate") && !(f.size2("dilation_rate") == Size2{1, 1})) f.refuse("dilation_rate other than 1");
    if (f.integer("groups", 1) != 1) f.refuse("groups other than 1");
    const long long filters = f.integer("filters");
    if (filters < 1 || filters > (1 << 20)) f.bad("filters", "a positive integer");
    layer = std::make_unique<Conv2D<T>>(Conv2DOptions(static_cast<Index>(filters), f.size2("kernel_size"))
                                            .strides(f.has("strides") ? f.size2("strides") : Size2{1, 1})
                                            .padding(padding_of(f))
                                            .activation(activation_of(f))
                                            .use_bias(f.flag("use_bias", true)));
  } else if (cls == "Dense") {
    const long long units = f.integer("units");
    if (units < 1 || units > (1 << 24)) f.bad("units", "a positive integer");
    layer = std::make_unique<Dense<T>>(
        DenseOptions(static_cast<Index>(units)).activation(activation_of(f)).use_bias(f.flag("use_bias", true)));
  } else if (cls == "MaxPooling2D" || cls == "MaxPool2D") {
    require_channels_last(f);
    const Size2 pool = f.has("pool_size") ? f.size2("pool_size") : Size2{2, 2};
    layer = std::make_unique<MaxPool2D<T>>(
        MaxPool2DOptions(pool).strides(f.has("strides") ? f.size2("strides") : pool).padding(padding_of(f)));
  } else if (cls == "BatchNormalization") {
    if (f.flag("renorm", false)) f.refuse("BatchNormalization with renorm");
    if (f.has("axis")) {  // the last axis: -1, or its index counted with the batch
      const json& a = f.at("axis");
      const json& one = a.is_array() && a.size() == 1 ? a[0] : a;
      if (!one.is_number_integer()) f.bad("axis", "an integer");
      if (one.get<long long>() != -1 && one.get<long long>() < 1) f.refuse("BatchNormalization over an axis other than the last");
      // A positive axis is checked against the input's rank when the model is built.
    }
    layer = std::make_unique<BatchNormalization<T>>(BatchNormalizationOptions()
                                                        .momentum(f.real("momentum", 0.99))
                                                        .epsilon(f.real("epsilon", 1e-3))
                                                        .center(f.flag("center", true))
                                                        .scale(f.flag("scale", true))
                                                        .synchronized(f.flag("synchronized", false)));
  } else if (cls == "Dropout") {
    if (f.has("noise_shape")) f.refuse("Dropout with a noise_shape");
    const double rate = f.real("rate");
    if (!(rate >= 0 && rate < 1)) f.bad("rate", "a number in [0, 1)");
    layer = std::make_unique<Dropout<T>>(rate);
  } else if (cls == "Flatten") {
    require_channels_last(f);
    layer = std::make_unique<Flatten<T>>();
  } else if (cls == "Activation") {
    layer = std::make_unique<ActivationLayer<T>>(activation_of(f));
  } else if (cls == "ReLU") {
    if (f.has("max_value") || f.real("negative_slope", 0) != 0 || f.real("threshold", 0) != 0) {
      f.refuse("ReLU with max_value, negative_slope or threshold");
    }
    layer = std::make_unique<ReLU<T>>();
  } else if (cls == "Softmax") {
    if (f.has("axis") && !(f.at("axis").is_number_integer() && f.at("axis").get<long long>() == -1)) {
      f.refuse("Softmax over an axis other than the last");
    }
    layer = std::make_unique<Softmax<T>>();
  } else if (cls == "RandomFlip") {
    require_channels_last(f);
    layer = std::make_unique<RandomFlip<T>>(f.text("mode", "horizontal_and_vertical"), seed_of(f));
  } else if (cls == "RandomTranslation") {
    require_channels_last(f);
    layer = std::make_unique<RandomTranslation<T>>(factor_of(f, "height_factor"), factor_of(f, "width_factor"),
                                                   RandomTranslationOptions()
                                                       .fill_mode(f.text("fill_mode", "reflect"))
                                                       .interpolation(f.text("interpolation", "bilinear"))
                                                       .fill_value(f.real("fill_value", 0.0))
                                                       .seed(seed_of(f)));
  } else if (cls == "ZeroPadding2D") {
    require_channels_last(f);
    layer = zero_padding_of<T>(f);
  } else if (cls == "RandomErasing") {
    require_channels_last(f);
    RandomErasingOptions o;
    const auto pair = [&](const char* key, double a, double b, auto set) {
      if (!f.has(key)) return set(a, b);
      const json& v = f.at(key);
      if (v.is_number()) return set(std::max(-v.get<double>(), 0.0), v.get<double>());
      if (v.is_array() && v.size() == 2 && v[0].is_number() && v[1].is_number()) return set(v[0].get<double>(), v[1].get<double>());
      f.bad(key, "a number or a list of two");
    };
    pair("factor", 0.0, 1.0, [&](double a, double b) { o.factor(a, b); });
    pair("scale", 0.02, 0.33, [&](double a, double b) { o.scale(a, b); });
    pair("value_range", 0.0, 255.0, [&](double a, double b) { o.value_range(a, b); });
    if (f.has("fill_value")) {
      if (!f.at("fill_value").is_number()) f.refuse("RandomErasing with a fill_value per channel");
      o.fill_value(f.real("fill_value"));
    }
    layer = std::make_unique<RandomErasing<T>>(o.seed(seed_of(f)));
  } else if (cls == "RandomCrop") {
    f.refuse("RandomCrop (Keras resizes in inference where loom takes the central window, so the model would "
             "predict differently)");
  } else {
    throw FormatError(f.where() + ": layer class '" + cls + "' is not supported: loom reads " + supported_layers());
  }
  if (!name.empty()) layer->set_name(name);
  return layer;
}

/// The layer entries of a model config, checked to form a straight chain.
/// Keras 2.1's Sequential config is a bare list; later ones hold "layers".
inline const json& layer_list(const json& model, const std::string& what, std::string& model_name, bool& functional) {
  Fields top(model, what + ": model config");
  const std::string cls = top.text("class_name");
  functional = cls == "Functional" || cls == "Model";
  if (cls != "Sequential" && !functional) {
    throw FormatError(what + ": model class '" + cls + "' is not supported: loom reads Sequential and straight-chain "
                      "Functional models");
  }
  const json& config = top.at("config");
  if (config.is_array()) return config;  // Keras 2.1
  Fields c(config, what + ": model config");
  model_name = c.text("name", "sequential");
  const json& layers = c.at("layers");
  if (!layers.is_array()) c.bad("layers", "a list");
  return layers;
}

/// The names of the layers a Functional layer entry takes its input from,
/// in Keras 2 ([[["conv2d", 0, 0, {}]]]) and Keras 3 ({"args": [keras
/// tensors with "keras_history"]}) form.
inline void inbound_names(const json& node, std::vector<std::string>& out) {
  if (node.is_object()) {
    if (node.contains("keras_history") && node.at("keras_history").is_array() && !node.at("keras_history").empty() &&
        node.at("keras_history")[0].is_string()) {
      out.push_back(node.at("keras_history")[0].get<std::string>());
      return;
    }
    for (const auto& item : node.items()) inbound_names(item.value(), out);
  } else if (node.is_array()) {
    if (node.size() >= 3 && node[0].is_string() && node[1].is_number_integer()) {  // Keras 2: [name, node, tensor, kwargs]
      out.push_back(node[0].get<std::string>());
      return;
    }
    for (const auto& item : node) inbound_names(item, out);
  }
}

}  // namespace impl

/// A loom model from a Keras model config (the JSON of `model.to_json()`,
/// `model_config` in a .h5, config.json in a .keras), with fresh weights.
/// FormatError naming the layer for anything loom cannot represent.
///
/// `max_values_per_layer` caps what any one layer may allocate for its
/// parameters: loaders pass what the file could hold, so that a config cannot
/// ask for more memory than its weights could fill.
template <class T>
Sequential<T> model_from_config(const json& model, const std::string& what = "Keras model",
                                Index max_values_per_layer = std::numeric_limits<Index>::max()) {
  std::string model_name = "sequential";
  bool functional = false;
  const json& layers = impl::layer_list(model, what, model_name, functional);
  Sequential<T> out(0, model_name);
  std::optional<Shape> input_shape;
  std::string previous;  // for a Functional model: the layer the next one must read
  std::size_t index = 0;
  for (const json& entry : layers) {
    ++index;
    impl::Fields e(entry, loom::detail::str(what, ": layer ", index));
    const std::string cls = e.text("class_name");
    impl::Fields f(e.at("config"), loom::detail::str(what, ": layer ", index, " (", cls, ")"));
    const std::string name = f.text("name", e.text("name", ""));
    impl::Fields lf(e.at("config"), loom::detail::str(what, ": layer '", name, "' (", cls, ")"));
    if (functional) {
      std::vector<std::string> inputs;
      if (e.has("inbound_nodes")) impl::inbound_names(e.at("inbound_nodes"), inputs);
      const bool first = previous.empty();
      if ((first && !inputs.empty()) || (!first && (inputs.size() != 1 || inputs[0] != previous))) {
        throw FormatError(lf.where() + ": takes its input from " + (inputs.empty() ? "nothing" : "'" + inputs[0] + "'") +
                          (inputs.size() > 1 ? " and more" : "") +
                          ": loom reads Functional models only when each layer feeds the next (a straight chain)");
      }
      previous = name;
    }
    if (auto s = impl::input_shape_of(lf)) {
      if (input_shape && *input_shape != *s) throw FormatError(lf.where() + ": a second, different input shape");
      input_shape = s;
    }
    auto layer = impl::layer_from_keras<T>(cls, lf);
    if (!layer) continue;
    layer->limit_parameter_values(max_values_per_layer);
    try {
      out.add(std::move(layer), out.layers().empty() ? input_shape : std::nullopt);
    } catch (const Error& err) {
      throw FormatError(lf.where() + ": " + err.what());
    }
  }
  if (out.layers().empty()) throw FormatError(what + ": the model has no layers loom can run");
  if (!input_shape) {  // Keras 3 .keras: the model's build_config
    impl::Fields top(model, what);
    if (top.has("build_config")) {
      impl::Fields b(top.at("build_config"), what + ": build_config");
      if (b.has("input_shape")) {
        const json wrapped = {{"batch_shape", b.at("input_shape")}};
        input_shape = impl::input_shape_of(impl::Fields(wrapped, what + ": build_config"));
      }
    }
    if (!input_shape) throw FormatError(what + ": the config gives no input shape");
    try {
      out.build(*input_shape);
    } catch (const Error& err) {
      throw FormatError(what + ": " + err.what());
    }
  }
  return out;
}

namespace impl {

inline json shape_json(const Shape& s) {
  json v = json::array({nullptr});
  for (Index d : s) v.push_back(d);
  return v;
}
inline json pair_json(const Size2& s) { return json::array({s[0], s[1]}); }

/// A Keras 3 object reference: {"module", "class_name", "config", "registered_name"}.
inline json keras_object(const char* module, const char* cls, json config) {
  return {{"module", module}, {"class_name", cls}, {"config", std::move(config)}, {"registered_name", nullptr}};
}

/// Keras 3's config for one loom layer (FormatError for a layer Keras has no
/// counterpart for, such as a user's own).
template <class T>
json layer_to_keras(Layer<T>& layer) {
  const Config c = layer.config();
  const std::string type = layer.type();
  json k = {{"name", layer.name()}, {"trainable", true}, {"dtype", "float32"}};
  auto initializers = [&](json& cfg) {
    cfg["kernel_initializer"] = keras_object("keras.initializers", "GlorotUniform", {{"seed", nullptr}});
    cfg["bias_initializer"] = keras_object("keras.initializers", "Zeros", json::object());
    for (const char* key : {"kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                            "bias_constraint"}) {
      cfg[key] = nullptr;
    }
  };
  if (type == "Conv2D") {
    k["filters"] = c.integer("filters");
    k["kernel_size"] = pair_json(c.size2("kernel_size"));
    k["strides"] = pair_json(c.size2("strides"));
    k["padding"] = c.text("padding");
    k["data_format"] = "channels_last";
    k["dilation_rate"] = json::array({1, 1});
    k["groups"] = 1;
    k["activation"] = c.text("activation");
    k["use_bias"] = c.flag("use_bias");
    initializers(k);
  } else if (type == "Dense") {
    k["units"] = c.integer("units");
    k["activation"] = c.text("activation");
    k["use_bias"] = c.flag("use_bias");
    initializers(k);
  } else if (type == "MaxPooling2D") {
    k["pool_size"] = pair_json(c.size2("pool_size"));
    k["padding"] = c.text("padding");
    k["strides"] = pair_json(c.size2("strides"));
    k["data_format"] = "channels_last";
  } else if (type == "BatchNormalization") {
    k["axis"] = -1;
    k["momentum"] = c.real("momentum");
    k["epsilon"] = c.real("epsilon");
    k["center"] = c.flag("center", true);
    k["scale"] = c.flag("scale", true);
    k["synchronized"] = c.flag("synchronized", false);
  } else if (type == "Dropout") {
    k["rate"] = c.real("rate");
    k["seed"] = nullptr;
    k["noise_shape"] = nullptr;
  } else if (type == "Flatten") {
    k["data_format"] = "channels_last";
  } else if (type == "Activation") {
    k["activation"] = c.text("activation");
  } else if (type == "ReLU") {
    k["max_value"] = nullptr;
    k["negative_slope"] = 0.0;
    k["threshold"] = 0.0;
  } else if (type == "Softmax") {
    k["axis"] = -1;
  } else if (type == "RandomFlip" || type == "RandomTranslation") {
    k["seed"] = c.has("seed") ? json(c.u64("seed")) : json(nullptr);
    k["data_format"] = "channels_last";
    if (type == "RandomFlip") {
      k["mode"] = c.text("mode");
    } else {
      k["height_factor"] = c.reals("height_factor");
      k["width_factor"] = c.reals("width_factor");
      k["fill_mode"] = c.text("fill_mode");
      k["interpolation"] = c.text("interpolation");
      k["fill_value"] = c.real("fill_value");
    }
  } else if (type == "RandomErasing") {
    k["factor"] = c.reals("factor");
    k["scale"] = c.reals("scale");
    k["fill_value"] = c.has("fill_value") ? json(c.real("fill_value")) : json(nullptr);
    k["value_range"] = c.reals("value_range");
    k["seed"] = c.has("seed") ? json(c.u64("seed")) : json(nullptr);
    k["data_format"] = "channels_last";
  } else if (type == "ZeroPadding2D") {
    const std::vector<double> p = c.reals("padding");
    k["padding"] = json::array({json::array({static_cast<long long>(p[0]), static_cast<long long>(p[1])}),
                                json::array({static_cast<long long>(p[2]), static_cast<long long>(p[3])})});
    k["data_format"] = "channels_last";
  } else if (type == "RandomCrop") {
    throw FormatError("layer '" + layer.name() + "' (RandomCrop) is not written for Keras: Keras's resizes in "
                      "inference where loom's takes the central window, so the model would predict differently");
  } else {
    throw FormatError("layer '" + layer.name() + "' (" + type + ") has no Keras counterpart loom can write");
  }
  return k;
}

}  // namespace impl

/// Keras 3's config of a built loom model. `keras_v3` adds what `.keras`
/// files carry (module, registered_name, build_config); without it the
/// entries are as Keras 3 writes them into a legacy .h5 (model_config).
template <class T>
json model_to_config(const Sequential<T>& model, bool keras_v3) {
  if (!model.built()) throw ConfigError("keras: model '" + model.name() + "' is not built: build or fit it first");
  json layers = json::array();
  auto entry = [&](const char* cls, json config, const Shape* input) {
    json e = {{"class_name", cls}, {"config", std::move(config)}};
    if (keras_v3) {
      e = impl::keras_object("keras.layers", cls, e["config"]);
      if (input) e["build_config"] = {{"input_shape", impl::shape_json(*input)}};
    }
    return e;
  };
  const Shape input = model.input_shape();
  layers.push_back(entry("InputLayer",
                         {{"batch_shape", impl::shape_json(input)}, {"dtype", "float32"}, {"sparse", false},
                          {"name", "input_layer"}},
                         nullptr));
  for (const auto& l : model.layers()) {
    const std::string type = l->type();
    const Shape in = l->input_shape();
    layers.push_back(entry(type.c_str(), impl::layer_to_keras(*l), &in));
  }
  json config = {{"name", model.name()}, {"trainable", true}, {"dtype", "float32"}, {"layers", std::move(layers)}};
  if (!keras_v3) return {{"class_name", "Sequential"}, {"config", std::move(config)}};
  json top = impl::keras_object("keras", "Sequential", std::move(config));
  top["build_config"] = {{"input_shape", impl::shape_json(input)}};
  return top;
}

// ---- Compile configs ---------------------------------------------------------

namespace impl {

/// A loss from Keras's "sparse_categorical_crossentropy", or
/// {"class_name": "SparseCategoricalCrossentropy", "config": {...}}.
template <class T>
std::unique_ptr<Loss<T>> loss_from_keras(const json& v, const std::string& what) {
  std::string name;
  Config config;
  if (v.is_string()) {
    name = v.get<std::string>();
  } else if (v.is_object()) {
    Fields f(v, what + ": loss");
    name = f.text("class_name");
    if (f.has("config")) {
      Fields c(f.at("config"), what + ": loss");
      if (c.flag("from_logits", false)) config.set("from_logits", true);
      if (c.real("label_smoothing", 0) != 0) config.set("label_smoothing", c.real("label_smoothing"));
      if (c.has("axis") && !(c.at("axis").is_number_integer() && c.at("axis").get<long long>() == -1)) c.refuse("a loss over an axis other than the last");
    }
  } else {
    throw FormatError(what + ": the loss should be a name or an object, got " + v.dump());
  }
  if (!Registry<Loss<T>>::global().has(name)) {
    throw FormatError(what + ": loss '" + name + "' is not supported (loom has categorical_crossentropy and "
                      "sparse_categorical_crossentropy)");
  }
  return make_loss<T>(name, config);
}

/// A Keras learning-rate schedule, {"class_name": "CosineDecay", "config":
/// {...}} (Keras 3 adds "module"), into `config` as loom's optimizer
/// configs hold one ("learning_rate_schedule" and its keys behind
/// "learning_rate_schedule.").
inline void schedule_from_keras(const json& v, const std::string& what, Config& config) {
  Fields f(v, what + ": learning-rate schedule");
  const std::string cls = f.text("class_name");
  if (!Registry<LearningRateSchedule>::global().has(cls)) {
    throw FormatError(what + ": learning-rate schedule '" + cls +
                      "' is not supported (loom has ExponentialDecay, PiecewiseConstantDecay and CosineDecay)");
  }
  const json settings = f.has("config") ? f.at("config") : json::object();
  Fields c(settings, what + ": learning-rate schedule " + cls);
  Config sc;
  for (const auto& item : settings.items()) {
    const std::string& key = item.key();
    const json& value = item.value();
    if (key == "name" || value.is_null()) continue;
    if (value.is_boolean()) {
      sc.set(key, value.get<bool>());
    } else if (value.is_number()) {
      sc.set(key, value.get<double>());
    } else if (value.is_array()) {
      std::vector<double> list;
      for (const auto& e : value) {
        if (!e.is_number()) c.bad(key.c_str(), "a list of numbers");
        list.push_back(e.get<double>());
      }
      sc.set_reals(key, list);
    } else {
      c.bad(key.c_str(), "a number, a flag or a list of numbers");
    }
  }
  try {
    make_schedule(cls, sc);  // its own checks, named here
  } catch (const Error& e) {
    throw FormatError(what + ": learning-rate schedule " + cls + ": " + e.what());
  }
  config.set("learning_rate_schedule", cls);
  for (const auto& [k, text] : sc.entries()) config.set("learning_rate_schedule." + k, text);
}

/// An optimizer from a name ("adam") or {"class_name": "Adam" (or
/// "Custom>Adam"), "config": {...}}, with Keras's defaults for what is
/// missing. Settings loom does not implement are refused by name.
/// Whether a Keras version string ("2.4.0", "3.10.0") is older than 2.11,
/// whose optimizers put RMSprop's epsilon outside the square root. An empty
/// or unreadable version counts as today's.
inline bool keras_before_2_11(const std::string& version) {
  int major = 0, minor = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &major, &minor) != 2) return false;
  return major < 2 || (major == 2 && minor < 11);
}

/// `keras_version` is the version that saved the file, when it says: an
/// RMSprop saved by Keras before 2.11, or marked is_legacy_optimizer, keeps
/// its rule (epsilon outside the square root).
template <class T>
std::unique_ptr<Optimizer<T>> optimizer_from_keras(const json& v, const std::string& what,
                                                   const std::string& keras_version = {}) {
  if (v.is_string()) {
    std::string n = v.get<std::string>();
    if (!Registry<Optimizer<T>>::global().has(n)) {
      throw FormatError(what + ": optimizer '" + n + "' is not supported (loom has SGD, RMSprop and Adam)");
    }
    Config config;
    if (Registry<Optimizer<T>>::global().canonical(n) == "RMSprop" && keras_before_2_11(keras_version)) {
      config.set("epsilon_inside_sqrt", false);
    }
    return make_optimizer<T>(n, config);
  }
  Fields f(v, what + ": optimizer");
  std::string cls = f.text("class_name");
  if (cls.rfind("Custom>", 0) == 0) cls = cls.substr(7);
  const json settings = f.has("config") ? f.at("config") : json::object();  // Fields keeps a reference: not a temporary
  Fields c(settings, what + ": optimizer " + cls);
  if (!Registry<Optimizer<T>>::global().has(cls)) {
    throw FormatError(what + ": optimizer '" + cls + "' is not supported (loom has SGD, RMSprop and Adam)");
  }
  for (const char* key : {"loss_scale_factor", "gradient_accumulation_steps"}) {
    if (c.has(key) && !(c.at(key).is_number() && c.at(key).get<double>() == 0)) c.refuse(std::string("'") + key + "'");
  }
  if (c.flag("use_ema", false)) c.refuse("use_ema");
  if (c.flag("amsgrad", false)) c.refuse("amsgrad");
  if (c.flag("centered", false)) c.refuse("centered RMSprop");
  if (c.real("decay", 0) != 0) c.refuse("a learning-rate 'decay'");
  if (cls == "RMSprop" && c.real("momentum", 0) != 0) c.refuse("RMSprop with momentum");
  // Every hyperparameter loom's optimizer has, from Keras's config when it is
  // there (Keras 2.1 says lr for learning_rate); the rest keep their defaults.
  Config config;
  for (const auto& entry : make_optimizer<T>(cls)->config().entries()) {
    const std::string& key = entry.first;
    const char* k = key == "learning_rate" && !c.has("learning_rate") ? "lr" : key.c_str();
    if (key == "epsilon_inside_sqrt") {  // not a Keras setting: the version or the legacy mark tells
      if (keras_before_2_11(keras_version) || c.flag("is_legacy_optimizer", false)) config.set(key, false);
      continue;
    }
    if (!c.has(k)) continue;
    if (key == "learning_rate" && c.at(k).is_object()) {
      schedule_from_keras(c.at(k), what, config);
      continue;
    }
    if (c.at(k).is_boolean()) {
      config.set(key, c.flag(k, false));
    } else {
      config.set(key, c.real(k));
    }
  }
  // Keras 3's base optimizer options (null: not set).
  for (const char* key : {"weight_decay", "clipnorm", "global_clipnorm", "clipvalue"}) {
    if (c.has(key)) config.set(key, c.real(key));
  }
  try {
    return make_optimizer<T>(cls, config);
  } catch (const ConfigError& e) {
    throw FormatError(what + ": optimizer " + cls + ": " + e.what());
  }
}



/// The single loss of a training config: a name, an object, or a
/// one-output dict or list of them.
inline const json& single_loss(const json& loss, const std::string& what) {
  if (loss.is_array() && loss.size() == 1) return loss[0];
  if (loss.is_object() && !loss.contains("class_name") && loss.size() == 1) return loss.begin().value();
  if (loss.is_array() || (loss.is_object() && !loss.contains("class_name"))) {
    throw FormatError(what + ": a loss per output is not supported (loom models have one output)");
  }
  return loss;
}

/// Whether Keras's metrics list asks for accuracy (in any of its spellings).
inline bool wants_accuracy(const json& metrics) {
  std::vector<std::string> names;
  std::function<void(const json&)> walk = [&](const json& m) {
    if (m.is_string()) names.push_back(m.get<std::string>());
    if (m.is_array()) {
      for (const auto& x : m) walk(x);
    }
    if (m.is_object()) {
      if (m.contains("config") && m.at("config").is_object() && m.at("config").contains("name") &&
          m.at("config").at("name").is_string()) {
        names.push_back(m.at("config").at("name").get<std::string>());
      }
    }
  };
  walk(metrics);
  return std::any_of(names.begin(), names.end(), [](const std::string& n) {
    return n == "accuracy" || n == "acc" || n == "sparse_categorical_accuracy" || n == "categorical_accuracy";
  });
}

}  // namespace impl

/// Compiles `model` as Keras's compile config says: `loss`, `optimizer` (null
/// or absent: Keras's default, RMSprop) and `metrics` (accuracy, when asked).
template <class T>
void compile_from_keras(Sequential<T>& model, const json& loss, const json* optimizer, const json* metrics,
                        const std::string& what, const std::string& keras_version = {}) {
  auto l = impl::loss_from_keras<T>(loss, what);
  auto o = optimizer && !optimizer->is_null()
               ? impl::optimizer_from_keras<T>(*optimizer, what, keras_version)
               : impl::optimizer_from_keras<T>(json("rmsprop"), what, keras_version);
  std::vector<std::string> m;
  if (metrics && impl::wants_accuracy(*metrics)) m.push_back("accuracy");
  model.compile(std::move(l), std::move(o), m);
}

/// Keras's names for a compiled loom model's loss and optimizer.
template <class T>
json loss_to_keras(const Loss<T>& loss) {
  const bool sparse = loss.targets() == Targets::Sparse;
  if (sparse && loss.label_smoothing() != 0) {
    throw FormatError("SparseCategoricalCrossentropy with label_smoothing has no Keras counterpart (Keras's sparse "
                      "loss has no label_smoothing): use one-hot targets and CategoricalCrossentropy to export it");
  }
  if (!loss.from_logits() && loss.label_smoothing() == 0) return impl::snake_case(loss.type());  // "sparse_categorical_crossentropy"
  json cfg = {{"name", impl::snake_case(loss.type())}, {"reduction", "sum_over_batch_size"},
              {"from_logits", loss.from_logits()}};
  if (sparse) {
    cfg["ignore_class"] = nullptr;
  } else {
    cfg["label_smoothing"] = loss.label_smoothing();
    cfg["axis"] = -1;
  }
  return impl::keras_object("keras.losses", loss.type().c_str(), std::move(cfg));
}
template <class T>
json optimizer_to_keras(const Optimizer<T>& optimizer, bool keras_v3) {
  const Config c = optimizer.config();
  json cfg = {{"name", impl::keras_optimizer_name(optimizer.type())}};
  if (const LearningRateSchedule* s = optimizer.learning_rate_schedule()) {
    json sc = {{"name", s->type()}};
    const Config scfg = s->config();
    for (const auto& [key, value] : scfg.entries()) {
      if (key == "staircase") {
        sc[key] = scfg.flag(key);
      } else if (key == "boundaries" || key == "values") {
        sc[key] = scfg.reals(key);
      } else {
        sc[key] = scfg.real(key);
      }
    }
    cfg["learning_rate"] = keras_v3 ? impl::keras_object("keras.optimizers.schedules", s->type().c_str(), std::move(sc))
                                    : json{{"class_name", s->type()}, {"config", std::move(sc)}};
  }
  for (const auto& [key, value] : c.entries()) {
    if (key == "epsilon_inside_sqrt") continue;  // Keras has one RMSprop rule (docs/keras-compat.md)
    if (key.rfind("learning_rate_schedule", 0) == 0) continue;  // written above
    if (key == "exclude_from_weight_decay") {
      throw FormatError(optimizer.type() + ": exclude_from_weight_decay is not part of a Keras optimizer's config; "
                        "Keras would decay every variable, so the model is not exported");
    }
    if (key == "nesterov") {
      cfg[key] = c.flag(key);
    } else {
      cfg[key] = c.real(key);
    }
  }
  if (!keras_v3) return {{"class_name", optimizer.type()}, {"config", std::move(cfg)}};
  return impl::keras_object("keras.optimizers", optimizer.type().c_str(), std::move(cfg));
}

}  // namespace loom::keras
