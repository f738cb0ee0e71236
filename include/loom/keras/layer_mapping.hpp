#pragma once
/// \file layer_mapping.hpp
/// How a loom layer maps to a Keras layer, both ways: `LayerMapping` says a
/// layer's Keras class name and how each key of its Keras config becomes a
/// key of its loom Config (import, then the layer is made through loom's own
/// registry) and back (export). One registration per layer:
///
///     LOOM_REGISTER(ScaleShift)                                 // loom's registry
///     LOOM_KERAS_MAPPING(keras::LayerMapping("ScaleShift")      // Keras's class name
///                            .real("scale").real("shift", 0.0))  // both ways
///
/// and the layer reads from and writes to .keras and .h5 files. loom's own
/// layers are mapped in keras/layers.hpp. Steps run in the order given:
/// import reads (and checks) the Keras keys in that order, export writes
/// each step's keys into Keras's config beside name, trainable and dtype.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../layers/layer.hpp"
#include "../registry.hpp"
#include "json.hpp"
#include "mapping.hpp"

namespace loom::keras {

/// Keras's name for a loom activation; nullptr for the two Keras has no
/// name for (GELUTanh, HardSigmoidKeras2).
inline const char* keras_activation(Activation a) {
  if (a == Activation::GELUTanh || a == Activation::HardSigmoidKeras2) return nullptr;
  return to_string(a);
}
/// The activation names loom reads from Keras, for messages.
inline std::string keras_activation_list() {
  std::string list;
  for (const auto& n : loom::detail::kActivationNames) {
    if (!keras_activation(n.activation)) continue;
    list += list.empty() ? "" : ", ";
    list += n.name;
  }
  return list;
}
/// Keras's name of the activation a loom config holds under "activation"
/// (FormatError for one Keras has no name for).
inline std::string keras_activation_of(const Config& c) {
  const Activation a = activation_from(c.text("activation"));
  if (const char* name = keras_activation(a)) return name;
  throw FormatError(std::string("activation '") + to_string(a) + "' has no Keras name (Keras's gelu is the exact " +
                    "one; its hard_sigmoid is Keras 3's relu6(x + 3) / 6)");
}

/// A Keras activation: "relu", a serialized function ({"class_name":
/// "function", "config": "softmax_v2"}), or null for linear. "hard_sigmoid"
/// is read as the Keras that saved the file defines it (tf.keras 2's
/// clip(0.2 x + 0.5, 0, 1) or Keras 3's relu6(x + 3) / 6).
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
  if (name == "hard_sigmoid" && keras_major_version(f.keras_version()) == 2) return Activation::HardSigmoidKeras2;
  for (const auto& n : detail::kActivationNames) {
    if (name == n.name && keras_activation(n.activation)) return n.activation;
  }
  f.refuse("activation '" + name + "' (loom has " + keras_activation_list() + ")");
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

/// A random layer's `seed` (null: none).
inline std::optional<std::uint64_t> seed_of(const Fields& f) {
  if (!f.has("seed")) return std::nullopt;
  const long long s = f.integer("seed");
  if (s < 0) f.bad("seed", "a non-negative integer");
  return static_cast<std::uint64_t>(s);
}

/// One loom layer class's Keras counterpart and how its config maps both ways.
class LayerMapping : public MappingNames {
 public:
  /// Keras config -> loom Config (throwing FormatError through `Fields` for
  /// what loom cannot represent).
  using In = std::function<void(const Fields& keras, Config& loom)>;
  /// A check of the Keras config against the shape of the layer's input
  /// (per sample), once the model is built.
  using InputCheck = std::function<void(const Fields& keras, const Shape& input)>;
  /// loom Config -> Keras config (which already holds name, trainable, dtype).
  using Out = std::function<void(const Config& loom, json& keras)>;

  /// `keras_class` is Keras's class name; `loom_class` the name the layer is
  /// registered under in loom (its `type()`), by default the same.
  explicit LayerMapping(std::string keras_class, std::string loom_class = {})
      : MappingNames(std::move(keras_class), std::move(loom_class)) {}

  /// Another class name Keras reads for it ("Convolution2D" for Conv2D).
  LayerMapping& alias(std::string name) {
    aliases_.push_back(std::move(name));
    return *this;
  }
  /// A step of one's own: `in` on import, `out` on export (either may be empty).
  LayerMapping& step(In in, Out out = {}) {
    steps_.push_back({std::move(in), std::move(out)});
    return *this;
  }
  /// A key Keras always writes with the same value (and loom ignores on import).
  LayerMapping& constant(const std::string& key, json value) {
    return step({}, [key, value](const Config&, json& k) { k[key] = value; });
  }
  /// A number under the same key both ways; required unless `otherwise` is given.
  LayerMapping& real(const std::string& key, std::optional<double> otherwise = std::nullopt) {
    return step([key, otherwise](const Fields& f, Config& c) {
      c.set(key, otherwise ? f.real(key.c_str(), *otherwise) : f.real(key.c_str()));
    }, [key, otherwise](const Config& c, json& k) { k[key] = otherwise ? c.real(key, *otherwise) : c.real(key); });
  }
  /// An integer in [1, `max`] under the same key both ways (required).
  LayerMapping& positive_integer(const std::string& key, long long max) {
    return step([key, max](const Fields& f, Config& c) {
      const long long v = f.integer(key.c_str());
      if (v < 1 || v > max) f.bad(key.c_str(), "a positive integer");
      c.set(key, v);
    }, [key](const Config& c, json& k) { k[key] = c.integer(key); });
  }
  /// true or false under the same key both ways, `otherwise` when absent.
  LayerMapping& flag(const std::string& key, bool otherwise) {
    return step([key, otherwise](const Fields& f, Config& c) { c.set(key, f.flag(key.c_str(), otherwise)); },
                [key, otherwise](const Config& c, json& k) { k[key] = c.flag(key, otherwise); });
  }
  /// A string under the same key both ways; required unless `otherwise` is given.
  LayerMapping& text(const std::string& key, std::optional<std::string> otherwise = std::nullopt) {
    return step([key, otherwise](const Fields& f, Config& c) {
      c.set(key, otherwise ? f.text(key.c_str(), *otherwise) : f.text(key.c_str()));
    }, [key](const Config& c, json& k) { k[key] = c.text(key); });
  }
  /// A pair (Keras: n or [a, b]; loom: Size2) under the same key both ways;
  /// required unless `otherwise` is given.
  LayerMapping& size2(const std::string& key, std::optional<Size2> otherwise = std::nullopt) {
    return step([key, otherwise](const Fields& f, Config& c) {
      c.set(key, otherwise && !f.has(key.c_str()) ? *otherwise : f.size2(key.c_str()));
    }, [key](const Config& c, json& k) { k[key] = impl::pair_json(c.size2(key)); });
  }
  /// Keras's `activation` both ways (keras_activation_list). A legacy .h5
  /// gets no hard_sigmoid: tf.keras 2, which reads .h5 files, defines it
  /// otherwise (a .keras file carries it).
  LayerMapping& activation() {
    h5_check([](const Config& c) {
      if (activation_from(c.text("activation")) == Activation::HardSigmoid) {
        throw FormatError("activation 'hard_sigmoid' is not written to a legacy .h5: tf.keras 2 reads it as "
                          "clip(0.2 x + 0.5, 0, 1), not Keras 3's relu6(x + 3) / 6 (save as .keras)");
      }
    });
    return step([](const Fields& f, Config& c) { c.set("activation", to_string(activation_of(f))); },
                [](const Config& c, json& k) { k["activation"] = keras_activation_of(c); });
  }
  /// A check of a loom config that may refuse it (FormatError) in a legacy
  /// .h5 only.
  LayerMapping& h5_check(std::function<void(const Config&)> check) {
    h5_checks_.push_back(std::move(check));
    return *this;
  }
  /// A key Keras 3 writes as `keras3_key` and tf.keras 2 as `h5_key` (Keras 3
  /// reads both): the legacy .h5 gets the latter.
  LayerMapping& h5_key(std::string keras3_key, std::string h5_key) {
    h5_keys_.emplace_back(std::move(keras3_key), std::move(h5_key));
    return *this;
  }
  /// Keras's `padding` (valid, same) both ways.
  LayerMapping& padding() {
    return step([](const Fields& f, Config& c) { c.set("padding", to_string(padding_of(f))); },
                [](const Config& c, json& k) { k["padding"] = c.text("padding"); });
  }
  /// Keras's `data_format`: channels_last only (loom is NHWC).
  LayerMapping& channels_last() {
    return step([](const Fields& f, Config&) { require_channels_last(f); },
                [](const Config&, json& k) { k["data_format"] = "channels_last"; });
  }
  /// A random layer's `seed` both ways (null: none).
  LayerMapping& seed() {
    return step([](const Fields& f, Config& c) {
      if (const auto s = seed_of(f)) c.set("seed", *s);
    }, [](const Config& c, json& k) { k["seed"] = c.has("seed") ? json(c.u64("seed")) : json(nullptr); });
  }
  /// A key Keras 3 writes that tf.keras 2's layer of the same class does not
  /// take (it refuses the whole config): written to .keras files, left out
  /// of the legacy .h5, which tf.keras 2 reads too (and Keras 3, with the
  /// key's default).
  LayerMapping& keras3_only(std::string key) {
    keras3_only_.push_back(std::move(key));
    return *this;
  }
  /// A check of the Keras config that needs the layer's input shape, run on
  /// import once the model is built.
  LayerMapping& input_check(InputCheck check) {
    input_checks_.push_back(std::move(check));
    return *this;
  }
  /// The Keras layer is not a loom layer: it configures the model (InputLayer).
  LayerMapping& model_input() {
    makes_layer_ = false;
    return *this;
  }
  /// loom knows the class but refuses to map it, both ways, because `reason`.
  LayerMapping& refuse(std::string reason) {
    refusal_ = std::move(reason);
    return *this;
  }

  bool makes_layer() const { return makes_layer_; }

  /// The loom config of a Keras layer config (`f`'s own checks run).
  Config config_from_keras(const Fields& f) const {
    if (!refusal_.empty()) f.refuse(keras_class_ + " (" + refusal_ + ")");
    Config c;
    for (const auto& s : steps_) {
      if (s.in) s.in(f, c);
    }
    return c;
  }
  /// Runs the input checks of the Keras config `f` of a layer whose input is `input`.
  void check_input(const Fields& f, const Shape& input) const {
    for (const auto& c : input_checks_) c(f, input);
  }
  /// Keras's config entries of a loom config, into `k`: Keras 3's for a
  /// .keras file (`keras_v3`), those tf.keras 2 takes too for a legacy .h5.
  void config_to_keras(const Config& c, json& k, bool keras_v3) const {
    for (const auto& s : steps_) {
      if (s.out) s.out(c, k);
    }
    if (!keras_v3) {
      for (const auto& check : h5_checks_) check(c);
      for (const auto& key : keras3_only_) k.erase(key);
      for (const auto& [from, to] : h5_keys_) {
        if (!k.contains(from)) continue;
        k[to] = k[from];
        k.erase(from);
      }
    }
  }

 private:
  struct Step {
    In in;
    Out out;
  };
  std::vector<Step> steps_;
  std::vector<std::string> keras3_only_;
  std::vector<std::function<void(const Config&)>> h5_checks_;
  std::vector<std::pair<std::string, std::string>> h5_keys_;
  std::vector<InputCheck> input_checks_;
  bool makes_layer_ = true;
};

/// The Keras layer classes loom reads and writes, in registration order.
inline std::vector<std::string> supported_layers() { return Mappings<LayerMapping>::global().supported(); }

/// The Keras class name loom writes for a layer of loom class `type` (the
/// type itself for a layer with no mapping).
inline std::string keras_layer_class(const std::string& type) {
  const auto m = Mappings<LayerMapping>::global().from_loom(type);
  return m ? m->keras_class() : type;
}

namespace impl {

/// Refuses a layer Keras 3 quantized (`model.quantize("int8")`): its dtype
/// policy is a QuantizedDTypePolicy (or says "int8_from_float32") and it
/// stores integer weights with their scales, which loom does not have.
inline void refuse_quantized(const Fields& f) {
  if (f.has("quantization_config")) f.refuse("a quantized layer ('quantization_config')");
  if (!f.has("dtype")) return;
  const json& d = f.at("dtype");
  std::string policy;
  if (d.is_string()) policy = d.get<std::string>();
  if (d.is_object() && d.contains("class_name") && d.at("class_name").is_string()) {
    policy = d.at("class_name").get<std::string>();
  }
  if (policy.find("Quantized") != std::string::npos || policy.find("_from_") != std::string::npos) {
    f.refuse("a quantized layer (dtype policy " + policy + ")");
  }
}

/// One Keras layer config turned into a loom layer (nullptr for a layer that
/// only configures the model, InputLayer), made by loom's layer registry from
/// the config its mapping gives.
template <class T>
std::unique_ptr<Layer<T>> layer_from_keras(const std::string& cls, const Fields& f) {
  const std::string name = f.text("name", "");
  const auto& mappings = Mappings<LayerMapping>::global();
  const auto m = mappings.from_keras(cls);
  if (!m) {
    throw FormatError(f.where() + ": layer class '" + cls + "' is not supported: loom reads " +
                      mappings.supported_list());
  }
  refuse_quantized(f);
  const Config config = m->config_from_keras(f);
  if (!m->makes_layer()) return nullptr;
  std::unique_ptr<Layer<T>> layer = Registry<Layer<T>>::global().create(m->loom_class(), config);
  if (!name.empty()) layer->set_name(name);
  return layer;
}

/// The input checks of the mapping of Keras class `cls`, on the config `f`
/// of a layer whose input (per sample) is `input`.
inline void check_layer_input(const std::string& cls, const Fields& f, const Shape& input) {
  if (const auto m = Mappings<LayerMapping>::global().from_keras(cls)) m->check_input(f, input);
}

/// A layer's "dtype" for Keras: its precision as Keras's dtype policy
/// (the DTypePolicy object of a .keras file, the policy's name in an .h5,
/// which Keras 3 and tf.keras both read).
inline json dtype_policy_json(Precision p, bool keras_v3) {
  if (p == Precision::Float32) return "float32";
  if (!keras_v3) return to_string(p);
  return {{"module", "keras"},
          {"class_name", "DTypePolicy"},
          {"config", {{"name", to_string(p)}}},
          {"registered_name", nullptr}};
}

/// Keras 3's config for one loom layer, for a .keras file (`keras_v3`) or a
/// legacy .h5 (FormatError for a layer Keras has no counterpart for, or that
/// loom refuses to write).
template <class T>
json layer_to_keras(Layer<T>& layer, bool keras_v3) {
  const std::string type = layer.type();
  const auto m = Mappings<LayerMapping>::global().from_loom(type);
  if (!m) {
    throw FormatError("layer '" + layer.name() + "' (" + type + ") has no Keras counterpart loom can write");
  }
  if (!m->refusal().empty()) {
    throw FormatError("layer '" + layer.name() + "' (" + type + ") is not written for Keras: " + m->refusal());
  }
  json k = {{"name", layer.name()}, {"trainable", true}, {"dtype", dtype_policy_json(layer.precision(), keras_v3)}};
  try {
    m->config_to_keras(layer.config(), k, keras_v3);
  } catch (const FormatError& e) {
    throw FormatError("layer '" + layer.name() + "' (" + type + "): " + e.what());
  }
  return k;
}

}  // namespace impl
}  // namespace loom::keras
