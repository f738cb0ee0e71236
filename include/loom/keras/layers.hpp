#pragma once
/// \file layers.hpp
/// loom's own layers in Keras's terms: one LayerMapping per layer class (see
/// layer_mapping.hpp), registered in the order the supported list names them.
/// Adding a loom layer to Keras's import and export is one entry here (or,
/// for a layer of one's own, one LOOM_KERAS_MAPPING beside it).
/// docs/keras.md lists what each entry reads and refuses.

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "../layers/activation.hpp"
#include "../layers/augmentation.hpp"
#include "../layers/average_pool2d.hpp"
#include "../layers/batch_normalization.hpp"
#include "../layers/conv2d.hpp"
#include "../layers/conv2d_transpose.hpp"
#include "../layers/depthwise_conv2d.hpp"
#include "../layers/cropping2d.hpp"
#include "../layers/dense.hpp"
#include "../layers/dropout.hpp"
#include "../layers/flatten.hpp"
#include "../layers/gaussian_noise.hpp"
#include "../layers/global_pooling2d.hpp"
#include "../layers/identity.hpp"
#include "../layers/layer_normalization.hpp"
#include "../layers/max_pool2d.hpp"
#include "../layers/merge.hpp"
#include "../layers/rescaling.hpp"
#include "../layers/reshape.hpp"
#include "../layers/spatial_dropout2d.hpp"
#include "layer_mapping.hpp"

namespace loom::keras::impl {

/// A Keras weight regularizer under `key` (Dense's kernel_regularizer, ...):
/// null or absent for none; L1, L2 and L1L2 as Keras 3 writes them
/// ({"module", "class_name", "config", "registered_name"}) and tf.keras 2
/// ({"class_name", "config"}), with Keras's defaults for a factor left out;
/// any other (OrthogonalRegularizer, a custom one, a name) is refused.
inline Regularizer regularizer_of(const Fields& f, const char* key) {
  if (!f.has(key)) return {};
  const json& v = f.at(key);
  const std::string cls = v.is_object() && v.contains("class_name") && v.at("class_name").is_string()
                              ? v.at("class_name").get<std::string>()
                              : std::string();
  if (cls.empty()) f.bad(key, "a regularizer object ({\"class_name\": \"L2\", \"config\": {\"l2\": ...}}) or null");
  const json config = v.contains("config") && v.at("config").is_object() ? v.at("config") : json::object();
  const Fields c(config, f.where() + ": " + key);
  double l1 = 0, l2 = 0;
  if (cls == "L1" || cls == "l1") {
    l1 = c.real("l1", 0.01);
  } else if (cls == "L2" || cls == "l2") {
    l2 = c.real("l2", 0.01);
  } else if (cls == "L1L2" || cls == "l1_l2") {
    l1 = c.real("l1", 0.0);
    l2 = c.real("l2", 0.0);
  } else {
    f.refuse(std::string(key) + " '" + cls + "' (loom has L1, L2 and L1L2)");
  }
  if (!(l1 >= 0 && std::isfinite(l1) && l2 >= 0 && std::isfinite(l2))) f.bad(key, "a regularizer with factors >= 0");
  return Regularizer(l1, l2);
}

/// Keras's serialized regularizer (null for none): L1, L2 or L1L2, in the
/// form Keras 3 writes, which tf.keras 2 reads too.
inline json regularizer_json(const Regularizer& r) {
  if (!r.active()) return nullptr;
  if (r.l2() == 0) return keras_object("keras.regularizers", "L1", {{"l1", r.l1()}});
  if (r.l1() == 0) return keras_object("keras.regularizers", "L2", {{"l2", r.l2()}});
  return keras_object("keras.regularizers", "L1L2", {{"l1", r.l1()}, {"l2", r.l2()}});
}

/// Dense's and Conv2D's kernel_regularizer and bias_regularizer, read into
/// loom's config; an activity_regularizer (a penalty on the layer's output,
/// which loom does not have) is refused.
inline void kernel_and_bias_regularizers(const Fields& f, Config& c) {
  if (f.has("activity_regularizer")) f.refuse("an activity_regularizer (loom regularizes weights only)");
  set_regularizer(c, "kernel_regularizer", regularizer_of(f, "kernel_regularizer"));
  set_regularizer(c, "bias_regularizer", regularizer_of(f, "bias_regularizer"));
}

/// The initializer, regularizer and constraint keys Keras 3 writes for a
/// layer with a kernel and a bias (loom's initializers are Keras's defaults;
/// the regularizers are the layer's).
inline void kernel_and_bias_defaults(const Config& c, json& k) {
  k["kernel_initializer"] = keras_object("keras.initializers", "GlorotUniform", {{"seed", nullptr}});
  k["bias_initializer"] = keras_object("keras.initializers", "Zeros", json::object());
  k["kernel_regularizer"] = regularizer_json(regularizer_from(c, "kernel_regularizer"));
  k["bias_regularizer"] = regularizer_json(regularizer_from(c, "bias_regularizer"));
  for (const char* key : {"activity_regularizer", "kernel_constraint", "bias_constraint"}) k[key] = nullptr;
}

/// BatchNormalization's and LayerNormalization's gamma_regularizer and
/// beta_regularizer, both ways.
inline void gamma_and_beta_regularizers(const Fields& f, Config& c) {
  set_regularizer(c, "gamma_regularizer", regularizer_of(f, "gamma_regularizer"));
  set_regularizer(c, "beta_regularizer", regularizer_of(f, "beta_regularizer"));
}
inline void gamma_and_beta_regularizers_json(const Config& c, json& k) {
  k["gamma_regularizer"] = regularizer_json(regularizer_from(c, "gamma_regularizer"));
  k["beta_regularizer"] = regularizer_json(regularizer_from(c, "beta_regularizer"));
}

/// Keras 3's LoRA (`lora_rank`, on Dense and Conv2D): loom has no low-rank
/// adapters, and a legacy .h5 holds them beside the kernel.
inline void refuse_lora(const Fields& f, Config&) {
  if (f.has("lora_rank")) f.refuse("LoRA ('lora_rank')");
}

/// BatchNormalization's `axis`: an integer, or a list of one (tf.keras 2).
inline long long batch_normalization_axis(const Fields& f) {
  const json& a = f.at("axis");
  const json& one = a.is_array() && a.size() == 1 ? a[0] : a;
  if (!one.is_number_integer()) f.bad("axis", "an integer");
  return one.get<long long>();
}

/// A Keras pair of reals: a number f ([-f, f]; `from_zero`: [max(-f, 0), f])
/// or [lower, upper]; `otherwise` when absent (none: required).
inline std::vector<double> real_pair(const Fields& f, const char* key, bool from_zero = false,
                                     std::optional<std::vector<double>> otherwise = std::nullopt) {
  if (otherwise && !f.has(key)) return *otherwise;
  const json& v = f.at(key);
  if (v.is_number()) return {from_zero ? std::max(-v.get<double>(), 0.0) : -v.get<double>(), v.get<double>()};
  if (v.is_array() && v.size() == 2 && v[0].is_number() && v[1].is_number()) return {v[0].get<double>(), v[1].get<double>()};
  f.bad(key, "a number or a list of two");
}

/// ZeroPadding2D's padding and Cropping2D's cropping (`key`, `otherwise`
/// when absent): p, [h, w] or [[top, bottom], [left, right]], as loom's
/// (top, bottom, left, right).
inline std::vector<Index> sides_of(const Fields& f, const char* key, long long otherwise) {
  const json& v = f.has(key) ? f.at(key) : json(otherwise);
  const auto one = [&](const json& e) {
    if (!e.is_number_integer() || e.get<long long>() < 0 || e.get<long long>() > (1 << 20)) {
      f.bad(key, "non-negative integers");
    }
    return static_cast<Index>(e.get<long long>());
  };
  if (v.is_number_integer()) {
    const Index p = one(v);
    return {p, p, p, p};
  }
  if (v.is_array() && v.size() == 2 && v[0].is_array() && v[1].is_array() && v[0].size() == 2 && v[1].size() == 2) {
    return {one(v[0][0]), one(v[0][1]), one(v[1][0]), one(v[1][1])};
  }
  if (v.is_array() && v.size() == 2) {
    const Index h = one(v[0]), w = one(v[1]);
    return {h, h, w, w};
  }
  f.bad(key, "an integer, two, or two pairs");
}

/// Keras's ((top, bottom), (left, right)) of loom's (top, bottom, left, right).
template <class V>
json sides_json(const std::vector<V>& s) {
  return json::array({json::array({static_cast<long long>(s[0]), static_cast<long long>(s[1])}),
                      json::array({static_cast<long long>(s[2]), static_cast<long long>(s[3])})});
}

/// A convolution's dilation_rate both ways: loom's config has it only when
/// it is not (1, 1).
inline void dilation_in(const Fields& f, Config& c) {
  if (!f.has("dilation_rate")) return;
  const Size2 d = f.size2("dilation_rate");
  if (d[0] < 1 || d[1] < 1) f.bad("dilation_rate", "positive integers");
  if (!(d == Size2{1, 1})) c.set("dilation_rate", d);
}
inline void dilation_out(const Config& c, json& k) {
  k["dilation_rate"] = pair_json(c.has("dilation_rate") ? c.size2("dilation_rate") : Size2{1, 1});
}

/// Conv2DTranspose's output_padding: null, an int n (n, n) or a list of
/// two, each >= 0; in loom's configuration only when given.
inline void output_padding_in(const Fields& f, Config& c) {
  if (!f.has("output_padding")) return;
  const json& v = f.at("output_padding");
  auto one = [&](const json& e) {
    if (!e.is_number_integer() || e.get<long long>() < 0 || e.get<long long>() > (1 << 20)) {
      f.bad("output_padding", "null, or integers >= 0");
    }
    return static_cast<Index>(e.get<long long>());
  };
  if (v.is_number_integer()) {
    c.set("output_padding", Size2{one(v), one(v)});
  } else if (v.is_array() && v.size() == 2) {
    c.set("output_padding", Size2{one(v[0]), one(v[1])});
  } else {
    f.bad("output_padding", "null, an integer or a list of two");
  }
}
inline void output_padding_out(const Config& c, json& k) {
  k["output_padding"] = c.has("output_padding") ? pair_json(c.size2("output_padding")) : json(nullptr);
}

/// Conv2D's groups: in loom's configuration only when more than one.
inline void groups_in(const Fields& f, Config& c) {
  if (!f.has("groups")) return;
  const Index g = f.integer("groups");
  if (g < 1) f.bad("groups", "a positive integer");
  if (g > 1) c.set("groups", g);
}
inline void groups_out(const Config& c, json& k) { k["groups"] = c.has("groups") ? c.integer("groups") : Index(1); }

/// The initializer, regularizer and constraint keys Keras 3 writes for a
/// DepthwiseConv2D (`pointwise`: a SeparableConv2D).
inline json depthwise_defaults(const Config&, json& k, bool pointwise) {
  k["depthwise_initializer"] = keras_object("keras.initializers", "GlorotUniform", {{"seed", nullptr}});
  if (pointwise) k["pointwise_initializer"] = keras_object("keras.initializers", "GlorotUniform", {{"seed", nullptr}});
  k["bias_initializer"] = keras_object("keras.initializers", "Zeros", json::object());
  for (const char* key : {"depthwise_regularizer", "bias_regularizer", "activity_regularizer", "depthwise_constraint",
                          "bias_constraint"}) {
    k[key] = nullptr;
  }
  if (pointwise) k["pointwise_regularizer"] = k["pointwise_constraint"] = nullptr;
  return k;
}

/// DepthwiseConv2D's and SeparableConv2D's common keys (Keras's order).
inline LayerMapping depthwise_mapping(const char* keras_class, bool separable) {
  LayerMapping m(keras_class);
  m.channels_last().step([](const Fields& f, Config&) {
    if (f.integer("groups", 1) != 1) f.refuse("groups other than 1");
  });
  if (separable) m.positive_integer("filters", 1 << 20);
  m.size2("kernel_size")
      .size2("strides", Size2{1, 1})
      .padding()
      .positive_integer("depth_multiplier", 1 << 16)
      .step([](const Fields& f, Config& c) { c.set("dilation_rate", f.has("dilation_rate") ? f.size2("dilation_rate") : Size2{1, 1}); },
            [](const Config& c, json& k) { k["dilation_rate"] = pair_json(c.size2("dilation_rate")); })
      .activation()
      .flag("use_bias", true)
      .step({}, [separable](const Config& c, json& k) { depthwise_defaults(c, k, separable); });
  return m;
}

/// Reshape's target_shape and Permute's dims: a list of integers.
inline std::vector<Index> integer_list(const Fields& f, const char* key) {
  const json& v = f.at(key);
  if (!v.is_array()) f.bad(key, "a list of integers");
  std::vector<Index> out;
  for (const json& e : v) {
    if (!e.is_number_integer() || e.get<long long>() < -(1LL << 31) || e.get<long long>() > (1LL << 31)) {
      f.bad(key, "a list of integers");
    }
    out.push_back(static_cast<Index>(e.get<long long>()));
  }
  return out;
}

/// Rescaling's scale or offset: a number, a list of numbers (one per
/// channel), or Keras 3's serialized numpy array of either.
inline std::vector<double> numbers_of(const Fields& f, const char* key, std::optional<double> otherwise) {
  if (otherwise && !f.has(key)) return {*otherwise};
  const json* v = &f.at(key);
  if (v->is_object() && v->contains("class_name") && v->at("class_name") == "__numpy__" && v->contains("config") &&
      v->at("config").is_object() && v->at("config").contains("value")) {
    v = &v->at("config").at("value");
  }
  const std::string refused = std::string("Rescaling with a '") + key + "' that is neither a number nor a list of numbers";
  if (v->is_number()) return {v->get<double>()};
  if (!v->is_array() || v->empty()) f.refuse(refused);
  std::vector<double> out;
  for (const json& e : *v) {
    if (!e.is_number()) f.refuse(refused);
    out.push_back(e.get<double>());
  }
  return out;
}

/// One number as Keras writes it, or a list of them.
inline json numbers_json(const std::vector<double>& v) { return v.size() == 1 ? json(v[0]) : json(v); }

/// MaxPooling2D's and AveragePooling2D's mapping: pool_size (default 2x2),
/// strides (default the pool size) and padding.
inline LayerMapping window_pooling(const char* keras_class, const char* alias) {
  return LayerMapping(keras_class)
      .alias(alias)
      .channels_last()
      .step([](const Fields& f, Config& c) {
        const Size2 pool = f.has("pool_size") ? f.size2("pool_size") : Size2{2, 2};
        c.set("pool_size", pool).set("strides", f.has("strides") ? f.size2("strides") : pool);
      }, [](const Config& c, json& k) {
        k["pool_size"] = pair_json(c.size2("pool_size"));
        k["strides"] = pair_json(c.size2("strides"));
      })
      .padding();
}

}  // namespace loom::keras::impl

namespace loom::keras {

LOOM_KERAS_MAPPING(LayerMapping("InputLayer").model_input().step([](const Fields& f, Config&) {
  if (f.flag("sparse", false) || f.flag("ragged", false)) f.refuse("a sparse or ragged input");
}))

LOOM_KERAS_MAPPING(
    LayerMapping("Conv2D")
        .alias("Convolution2D")
        .channels_last()
        .step(impl::refuse_lora)
        .step(impl::dilation_in, impl::dilation_out)
        .step(impl::groups_in, impl::groups_out)
        .positive_integer("filters", 1 << 20)
        .size2("kernel_size")
        .size2("strides", Size2{1, 1})
        .padding()
        .activation()
        .flag("use_bias", true)
        .step(impl::kernel_and_bias_regularizers, impl::kernel_and_bias_defaults))

LOOM_KERAS_MAPPING(LayerMapping("Conv2DTranspose")
                       .alias("Convolution2DTranspose")
                       .channels_last()
                       .step(impl::refuse_lora)
                       .step([](const Fields& f, Config&) {
                         if (f.integer("groups", 1) != 1) f.refuse("groups other than 1");
                       })
                       .positive_integer("filters", 1 << 20)
                       .size2("kernel_size")
                       .size2("strides", Size2{1, 1})
                       .padding()
                       .step(impl::output_padding_in, impl::output_padding_out)
                       .step([](const Fields& f, Config& c) {
                         c.set("dilation_rate", f.has("dilation_rate") ? f.size2("dilation_rate") : Size2{1, 1});
                       }, [](const Config& c, json& k) { k["dilation_rate"] = impl::pair_json(c.size2("dilation_rate")); })
                       .activation()
                       .flag("use_bias", true)
                       .step({}, impl::kernel_and_bias_defaults))
LOOM_KERAS_MAPPING(impl::depthwise_mapping("DepthwiseConv2D", false))
LOOM_KERAS_MAPPING(impl::depthwise_mapping("SeparableConv2D", true))

LOOM_KERAS_MAPPING(impl::window_pooling("MaxPooling2D", "MaxPool2D"))
LOOM_KERAS_MAPPING(impl::window_pooling("AveragePooling2D", "AvgPool2D"))

LOOM_KERAS_MAPPING(LayerMapping("GlobalAveragePooling2D").alias("GlobalAvgPool2D").channels_last().flag("keepdims", false))
LOOM_KERAS_MAPPING(LayerMapping("GlobalMaxPooling2D").alias("GlobalMaxPool2D").channels_last().flag("keepdims", false))

// The merge layers (a functional model's joins).
LOOM_KERAS_MAPPING(LayerMapping("Add"))
LOOM_KERAS_MAPPING(LayerMapping("Subtract"))
LOOM_KERAS_MAPPING(LayerMapping("Multiply"))
LOOM_KERAS_MAPPING(LayerMapping("Average"))
LOOM_KERAS_MAPPING(LayerMapping("Maximum"))
LOOM_KERAS_MAPPING(LayerMapping("Concatenate").step(
    [](const Fields& f, Config& c) {
      const long long axis = f.integer("axis", -1);
      if (axis == 0) f.refuse("Concatenate over the batch (axis 0)");
      c.set("axis", axis);
    },
    [](const Config& c, json& k) { k["axis"] = c.signed_integer("axis"); }))

LOOM_KERAS_MAPPING(LayerMapping("BatchNormalization")
                       .step([](const Fields& f, Config&) {
                         if (f.flag("renorm", false)) f.refuse("BatchNormalization with renorm");
                         if (f.has("axis")) {  // the last axis: -1, or its index counted with the batch
                           const long long axis = impl::batch_normalization_axis(f);
                           if (axis != -1 && axis < 1) f.refuse("BatchNormalization over an axis other than the last");
                         }
                       })
                       .input_check([](const Fields& f, const Shape& input) {
                         if (!f.has("axis")) return;
                         const long long axis = impl::batch_normalization_axis(f);
                         if (axis != -1 && axis != input.rank()) {
                           f.refuse(loom::detail::str("BatchNormalization over axis ", axis, " of its input ",
                                                      input.str("None"), " (loom normalizes over the last axis)"));
                         }
                       })
                       .constant("axis", -1)
                       .real("momentum", 0.99)
                       .real("epsilon", 1e-3)
                       .flag("center", true)
                       .flag("scale", true)
                       .flag("synchronized", false)
                       .step(impl::gamma_and_beta_regularizers, impl::gamma_and_beta_regularizers_json)
                       // Not a Keras setting but a rule that changed: tf.keras 2.x's fused kernel (its
                       // default for NHWC images, but not in float64 or with fused=False) updated the
                       // moving variance with the unbiased batch variance; Keras 3 uses the biased one.
                       .step([](const Fields& f, Config& c) {
                         const int major = keras_major_version(f.keras_version());
                         const bool fused = f.flag("fused", true) && dtype_name(f) != "float64";
                         c.set("unbiased_moving_variance", major != 0 && major < 3 && fused);
                       }))

LOOM_KERAS_MAPPING(LayerMapping("Dropout")
                       .step([](const Fields& f, Config& c) {
                         if (f.has("noise_shape")) f.refuse("Dropout with a noise_shape");
                         const double rate = f.real("rate");
                         if (!(rate >= 0 && rate < 1)) f.bad("rate", "a number in [0, 1)");
                         c.set("rate", rate);  // Keras's seed is not read: loom seeds Dropout from the model
                       }, [](const Config& c, json& k) { k["rate"] = c.real("rate"); })
                       .constant("seed", nullptr)
                       .constant("noise_shape", nullptr))

LOOM_KERAS_MAPPING(LayerMapping("Flatten").channels_last())

LOOM_KERAS_MAPPING(LayerMapping("Dense")
                       .step(impl::refuse_lora)
                       .positive_integer("units", 1 << 24)
                       .activation()
                       .flag("use_bias", true)
                       .step(impl::kernel_and_bias_regularizers, impl::kernel_and_bias_defaults))

LOOM_KERAS_MAPPING(LayerMapping("Activation").activation())

LOOM_KERAS_MAPPING(LayerMapping("ReLU").step(
    [](const Fields& f, Config& c) {
      if (f.has("max_value")) {
        const double max_value = f.real("max_value");
        if (!(max_value >= 0)) f.bad("max_value", "a number >= 0 or null");
        c.set("max_value", max_value);
      }
      const double slope = f.real("negative_slope", 0), threshold = f.real("threshold", 0);
      if (!(slope >= 0)) f.bad("negative_slope", "a number >= 0");
      if (!(threshold >= 0 && std::isfinite(threshold))) f.bad("threshold", "a finite number >= 0");
      if (c.has("max_value") || slope != 0 || threshold != 0) c.set("negative_slope", slope).set("threshold", threshold);
    },
    [](const Config& c, json& k) {
      k["max_value"] = c.has("max_value") ? json(c.real("max_value")) : json(nullptr);
      k["negative_slope"] = c.real("negative_slope", 0);
      k["threshold"] = c.real("threshold", 0);
    }))

// Keras 3 says negative_slope, tf.keras 2 alpha (which Keras 3 reads too).
LOOM_KERAS_MAPPING(LayerMapping("LeakyReLU")
                       .step([](const Fields& f, Config& c) {
                         const char* key = f.has("negative_slope") ? "negative_slope" : "alpha";
                         const double slope = f.real(key, 0.3);
                         if (!(slope >= 0)) f.bad(key, "a number >= 0");
                         c.set("negative_slope", slope);
                       }, [](const Config& c, json& k) { k["negative_slope"] = c.real("negative_slope"); })
                       .h5_key("negative_slope", "alpha"))

LOOM_KERAS_MAPPING(LayerMapping("ELU").step([](const Fields& f, Config& c) {
  const double alpha = f.real("alpha", 1.0);
  if (!std::isfinite(alpha)) f.bad("alpha", "a finite number");
  c.set("alpha", alpha);
}, [](const Config& c, json& k) { k["alpha"] = c.real("alpha"); }))

// The initializer matters only to a model made from its config alone: a
// file's alpha is read from its weights.
LOOM_KERAS_MAPPING(LayerMapping("PReLU").step(
    [](const Fields& f, Config& c) {
      for (const char* key : {"alpha_regularizer", "alpha_constraint"}) {
        if (f.has(key)) f.refuse(std::string("PReLU with an ") + key);
      }
      if (f.has("alpha_initializer")) {
        const json& init = f.at("alpha_initializer");
        const std::string cls = init.is_string() ? init.get<std::string>()
                                : init.is_object() && init.contains("class_name") && init.at("class_name").is_string()
                                    ? init.at("class_name").get<std::string>()
                                    : std::string();
        if (cls == "Constant" || cls == "constant") {
          const json& v = init.contains("config") && init.at("config").is_object() && init.at("config").contains("value")
                              ? init.at("config").at("value")
                              : json(nullptr);
          if (!v.is_number()) f.bad("alpha_initializer", "Zeros or Constant with a number");
          c.set("initial_alpha", v.get<double>());
        } else if (cls != "Zeros" && cls != "zeros") {
          f.refuse("PReLU's alpha_initializer '" + cls + "' (loom starts alpha at Zeros or a Constant)");
        }
      }
      if (f.has("shared_axes")) {
        const json& a = f.at("shared_axes");
        std::vector<Index> axes;
        for (const json& v : a.is_array() ? a : json::array({a})) {
          if (!v.is_number_integer() || v.get<long long>() < 1 || v.get<long long>() > 5) {
            f.bad("shared_axes", "axes from 1 (the first after the batch)");
          }
          axes.push_back(static_cast<Index>(v.get<long long>()));
        }
        if (!axes.empty()) c.set_integers("shared_axes", axes);
      }
    },
    [](const Config& c, json& k) {
      k["alpha_initializer"] =
          c.has("initial_alpha")
              ? impl::keras_object("keras.initializers", "Constant", {{"value", c.real("initial_alpha")}})
              : impl::keras_object("keras.initializers", "Zeros", json::object());
      k["alpha_regularizer"] = nullptr;
      k["alpha_constraint"] = nullptr;
      if (c.has("shared_axes")) {
        json axes = json::array();
        for (Index a : c.integers("shared_axes")) axes.push_back(a);
        k["shared_axes"] = axes;
      } else {
        k["shared_axes"] = nullptr;
      }
    }))

LOOM_KERAS_MAPPING(LayerMapping("Softmax")
                       .step([](const Fields& f, Config&) {
                         if (f.has("axis") && !(f.at("axis").is_number_integer() && f.at("axis").get<long long>() == -1)) {
                           f.refuse("Softmax over an axis other than the last");
                         }
                       })
                       .constant("axis", -1))

// tf.keras 2's RandomFlip and RandomTranslation are channels_last only and take no data_format.
LOOM_KERAS_MAPPING(
    LayerMapping("RandomFlip").channels_last().keras3_only("data_format").text("mode", "horizontal_and_vertical").seed())

LOOM_KERAS_MAPPING(LayerMapping("RandomTranslation")
                       .channels_last()
                       .keras3_only("data_format")
                       .step([](const Fields& f, Config& c) {
                         c.set_reals("height_factor", impl::real_pair(f, "height_factor"))
                             .set_reals("width_factor", impl::real_pair(f, "width_factor"));
                       }, [](const Config& c, json& k) {
                         k["height_factor"] = c.reals("height_factor");
                         k["width_factor"] = c.reals("width_factor");
                       })
                       .text("fill_mode", "reflect")
                       .text("interpolation", "bilinear")
                       .real("fill_value", 0.0)
                       .seed())

LOOM_KERAS_MAPPING(LayerMapping("RandomErasing")
                       .channels_last()
                       .step([](const Fields& f, Config& c) {
                         c.set_reals("factor", impl::real_pair(f, "factor", true, std::vector<double>{0.0, 1.0}))
                             .set_reals("scale", impl::real_pair(f, "scale", true, std::vector<double>{0.02, 0.33}))
                             .set_reals("value_range", impl::real_pair(f, "value_range", true, std::vector<double>{0.0, 255.0}));
                         if (f.has("fill_value")) {
                           if (!f.at("fill_value").is_number()) f.refuse("RandomErasing with a fill_value per channel");
                           c.set("fill_value", f.real("fill_value"));
                         }
                       }, [](const Config& c, json& k) {
                         k["factor"] = c.reals("factor");
                         k["scale"] = c.reals("scale");
                         k["value_range"] = c.reals("value_range");
                         k["fill_value"] = c.has("fill_value") ? json(c.real("fill_value")) : json(nullptr);
                       })
                       .seed())

LOOM_KERAS_MAPPING(LayerMapping("ZeroPadding2D")
                       .channels_last()
                       .step([](const Fields& f, Config& c) {
                         const std::vector<Index> p = impl::sides_of(f, "padding", 1);
                         c.set_reals("padding", std::vector<double>(p.begin(), p.end()));
                       }, [](const Config& c, json& k) { k["padding"] = impl::sides_json(c.reals("padding")); }))

LOOM_KERAS_MAPPING(LayerMapping("RandomCrop").refuse(
    "Keras resizes in inference where loom takes the central window, so the model would predict differently"))

LOOM_KERAS_MAPPING(LayerMapping("Cropping2D")
                       .channels_last()
                       .step([](const Fields& f, Config& c) {
                         c.set_integers("cropping", impl::sides_of(f, "cropping", 0));
                       }, [](const Config& c, json& k) { k["cropping"] = impl::sides_json(c.integers("cropping")); }))

LOOM_KERAS_MAPPING(LayerMapping("Reshape").step(
    [](const Fields& f, Config& c) {
      const std::vector<Index> s = impl::integer_list(f, "target_shape");
      if (!Reshape<float>::valid_target_shape(s)) {
        f.bad("target_shape", "1 to 5 sizes, each positive or one of them -1");
      }
      c.set_integers("target_shape", s);
    },
    [](const Config& c, json& k) { k["target_shape"] = c.integers("target_shape"); }))

LOOM_KERAS_MAPPING(LayerMapping("Permute").step(
    [](const Fields& f, Config& c) {
      const std::vector<Index> d = impl::integer_list(f, "dims");
      if (!Permute<float>::valid_dims(d)) f.bad("dims", "a permutation of 1..n, n from 1 to 5");
      c.set_integers("dims", d);
    },
    [](const Config& c, json& k) { k["dims"] = c.integers("dims"); }))

// Keras 3 writes a list (one number per channel) as a list, a numpy array as {"class_name": "__numpy__", ...}.
LOOM_KERAS_MAPPING(LayerMapping("Rescaling").step(
    [](const Fields& f, Config& c) {
      const std::vector<double> scale = impl::numbers_of(f, "scale", std::nullopt);
      const std::vector<double> offset = impl::numbers_of(f, "offset", 0.0);
      if (scale.size() > 1 && offset.size() > 1 && scale.size() != offset.size()) {
        f.refuse(loom::detail::str("Rescaling with ", scale.size(), " scales and ", offset.size(), " offsets"));
      }
      c.set_reals("scale", scale).set_reals("offset", offset);
    },
    [](const Config& c, json& k) {
      k["scale"] = impl::numbers_json(c.reals("scale"));
      k["offset"] = impl::numbers_json(c.reals("offset"));
    }))

LOOM_KERAS_MAPPING(LayerMapping("Identity"))

// Keras's axis is an integer or a list (Keras 3 writes [-1] once built, tf.keras 2 the positive index,
// counted with the batch); loom's build refuses axes that are not the last ones. tf.keras 2 has no
// rms_scaling (Keras 3's deprecated variance scaling, refused).
LOOM_KERAS_MAPPING(LayerMapping("LayerNormalization")
                       .step([](const Fields& f, Config& c) {
                         const json& a = f.has("axis") ? f.at("axis") : json(-1);
                         std::vector<Index> axes;
                         for (const json& v : a.is_array() ? a : json::array({a})) {
                           if (!v.is_number_integer() || v.get<long long>() == 0 || v.get<long long>() < -5 ||
                               v.get<long long>() > 5) {
                             f.bad("axis", "an axis after the batch or a list of them");
                           }
                           axes.push_back(static_cast<Index>(v.get<long long>()));
                         }
                         if (axes.empty()) f.bad("axis", "an axis after the batch or a list of them");
                         c.set_integers("axis", axes);
                         const double epsilon = f.real("epsilon", 1e-3);
                         if (!(epsilon > 0)) f.bad("epsilon", "a number > 0");
                         c.set("epsilon", epsilon);
                         if (f.flag("rms_scaling", false)) f.refuse("LayerNormalization with rms_scaling");
                       }, [](const Config& c, json& k) {
                         k["axis"] = c.integers("axis");
                         k["epsilon"] = c.real("epsilon");
                       })
                       .flag("center", true)
                       .flag("scale", true)
                       .constant("rms_scaling", false)
                       .keras3_only("rms_scaling")
                       .step(impl::gamma_and_beta_regularizers, [](const Config& c, json& k) {
                         k["beta_initializer"] = impl::keras_object("keras.initializers", "Zeros", json::object());
                         k["gamma_initializer"] = impl::keras_object("keras.initializers", "Ones", json::object());
                         impl::gamma_and_beta_regularizers_json(c, k);
                         k["beta_constraint"] = k["gamma_constraint"] = nullptr;
                       }))

// Keras 3's SpatialDropout2D takes no `trainable` (its constructor has no **kwargs): it is left out.
LOOM_KERAS_MAPPING(LayerMapping("SpatialDropout2D")
                       .channels_last()
                       .step([](const Fields& f, Config& c) {
                         const double rate = f.real("rate");
                         if (!(rate >= 0 && rate < 1)) f.bad("rate", "a number in [0, 1)");
                         c.set("rate", rate);
                       }, [](const Config& c, json& k) {
                         k["rate"] = c.real("rate");
                         k.erase("trainable");
                       })
                       .seed())

// Keras 3 takes a stddev from 0 to 1 (tf.keras 2 any): a larger one is not written.
LOOM_KERAS_MAPPING(LayerMapping("GaussianNoise")
                       .step([](const Fields& f, Config& c) {
                         const double stddev = f.real("stddev");
                         if (!(stddev >= 0 && std::isfinite(stddev))) f.bad("stddev", "a finite number >= 0");
                         c.set("stddev", stddev);
                       }, [](const Config& c, json& k) {
                         const double stddev = c.real("stddev");
                         if (stddev > 1) {
                           throw FormatError(loom::detail::str("GaussianNoise's stddev ", stddev,
                                                               " is not written: Keras 3 takes 0 to 1"));
                         }
                         k["stddev"] = stddev;
                       })
                       .seed())

}  // namespace loom::keras
