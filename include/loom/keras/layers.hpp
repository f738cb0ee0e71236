#pragma once
/// \file layers.hpp
/// loom's own layers in Keras's terms: one LayerMapping per layer class (see
/// layer_mapping.hpp), registered in the order the supported list names them.
/// Adding a loom layer to Keras's import and export is one entry here (or,
/// for a layer of one's own, one LOOM_KERAS_MAPPING beside it).
/// docs/keras.md lists what each entry reads and refuses.

#include <algorithm>
#include <vector>

#include "../layers/activation.hpp"
#include "../layers/augmentation.hpp"
#include "../layers/average_pool2d.hpp"
#include "../layers/batch_normalization.hpp"
#include "../layers/conv2d.hpp"
#include "../layers/dense.hpp"
#include "../layers/dropout.hpp"
#include "../layers/flatten.hpp"
#include "../layers/global_pooling2d.hpp"
#include "../layers/max_pool2d.hpp"
#include "../layers/merge.hpp"
#include "layer_mapping.hpp"

namespace loom::keras::impl {

/// The initializer, regularizer and constraint keys Keras 3 writes for a
/// layer with a kernel and a bias (loom's initializers are Keras's defaults).
inline void kernel_and_bias_defaults(const Config&, json& k) {
  k["kernel_initializer"] = keras_object("keras.initializers", "GlorotUniform", {{"seed", nullptr}});
  k["bias_initializer"] = keras_object("keras.initializers", "Zeros", json::object());
  for (const char* key : {"kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                          "bias_constraint"}) {
    k[key] = nullptr;
  }
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

/// ZeroPadding2D's padding: p, [h, w] or [[top, bottom], [left, right]], as loom's (top, bottom, left, right).
inline std::vector<double> zero_padding_of(const Fields& f) {
  const json& v = f.has("padding") ? f.at("padding") : json(1);
  const auto one = [&](const json& e) {
    if (!e.is_number_integer() || e.get<long long>() < 0 || e.get<long long>() > (1 << 20)) {
      f.bad("padding", "non-negative integers");
    }
    return static_cast<double>(e.get<long long>());
  };
  if (v.is_number_integer()) {
    const double p = one(v);
    return {p, p, p, p};
  }
  if (v.is_array() && v.size() == 2 && v[0].is_array() && v[1].is_array() && v[0].size() == 2 && v[1].size() == 2) {
    return {one(v[0][0]), one(v[0][1]), one(v[1][0]), one(v[1][1])};
  }
  if (v.is_array() && v.size() == 2) {
    const double h = one(v[0]), w = one(v[1]);
    return {h, h, w, w};
  }
  f.bad("padding", "an integer, two, or two pairs");
}

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
        .step([](const Fields& f, Config&) {
          if (f.has("dilation_rate") && !(f.size2("dilation_rate") == Size2{1, 1})) f.refuse("dilation_rate other than 1");
          if (f.integer("groups", 1) != 1) f.refuse("groups other than 1");
        })
        .constant("dilation_rate", json::array({1, 1}))
        .constant("groups", 1)
        .positive_integer("filters", 1 << 20)
        .size2("kernel_size")
        .size2("strides", Size2{1, 1})
        .padding()
        .activation()
        .flag("use_bias", true)
        .step({}, impl::kernel_and_bias_defaults))

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
                       .step({}, impl::kernel_and_bias_defaults))

LOOM_KERAS_MAPPING(LayerMapping("Activation").activation())

LOOM_KERAS_MAPPING(LayerMapping("ReLU")
                       .step([](const Fields& f, Config&) {
                         if (f.has("max_value") || f.real("negative_slope", 0) != 0 || f.real("threshold", 0) != 0) {
                           f.refuse("ReLU with max_value, negative_slope or threshold");
                         }
                       })
                       .constant("max_value", nullptr)
                       .constant("negative_slope", 0.0)
                       .constant("threshold", 0.0))

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
                       .step([](const Fields& f, Config& c) { c.set_reals("padding", impl::zero_padding_of(f)); },
                             [](const Config& c, json& k) {
                               const std::vector<double> p = c.reals("padding");
                               k["padding"] = json::array(
                                   {json::array({static_cast<long long>(p[0]), static_cast<long long>(p[1])}),
                                    json::array({static_cast<long long>(p[2]), static_cast<long long>(p[3])})});
                             }))

LOOM_KERAS_MAPPING(LayerMapping("RandomCrop").refuse(
    "Keras resizes in inference where loom takes the central window, so the model would predict differently"))

}  // namespace loom::keras
