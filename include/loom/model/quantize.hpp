#pragma once
/// \file model/quantize.hpp
/// `loom::quantize(model, calibration)`: post-training int8 quantization of
/// a trained float model, for inference on CPUs with VNNI.
///
/// It returns a new model (the trained one is left as it is) in which
///
/// - each Conv2D with one group (the first layer of an image model too:
///   its windows read in place from the image's bytes, it beats the float
///   direct kernel), and each Dense, becomes a QuantizedConv2D or QuantizedDense (layers/quantized.hpp):
///   weights in int8 with one symmetric scale per output channel, the input
///   in uint8 with a scale and zero point from the range it took on the
///   calibration images (its minimum and maximum, widened to hold 0);
/// - a BatchNormalization after such a layer (with a ReLU or no
///   activation), right after it or past layers that do nothing in
///   inference (Dropout), is folded into it: its inference affine runs in
///   the product's epilogue, after the activation;
/// - every other layer is copied as it is, in float: pooling, Flatten,
///   grouped convolutions; Dropout and the augmentation layers do nothing
///   in inference.
///
/// The result is a Sequential for inference (predict, evaluate, a Predictor;
/// fit refuses its int8 layers), saved and loaded like any loom model. It is
/// refused, with one line, for a double model, a functional model, and where
/// the build or CPU has no VNNI.

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../kernels/int8_gemm.hpp"
#include "../layers/batch_normalization.hpp"
#include "../layers/conv2d.hpp"
#include "../layers/dense.hpp"
#include "../layers/quantized.hpp"
#include "sequential.hpp"

namespace loom {

namespace detail {

/// The uint8 quantization of values in [lo, hi] (widened to hold 0, so
/// that zero, the convolutions' padding, is exact).
inline Int8Input int8_input_for(double lo, double hi) {
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  const double scale = hi > lo ? (hi - lo) / 255 : 1.0;
  return {static_cast<float>(scale), static_cast<float>(std::clamp(std::nearbyint(-lo / scale), 0.0, 255.0))};
}

}  // namespace detail

/// The int8 model of `model` (float, a chain of layers, built), calibrated
/// on `calibration` (a few hundred training images, as predict takes them).
template <class T>
Sequential<T> quantize(Sequential<T>& model, const Tensor<T>& calibration) {
  if constexpr (!std::is_same_v<T, float>) {
    throw ConfigError("quantize: int8 quantization is for float models, not double ones");
  } else {
    if (!detail::int8_supported()) {
      throw ConfigError("quantize: int8 inference cannot run here: " + detail::int8_unsupported_reason());
    }
    model.require_built("quantize");
    const auto& layers = model.layers();
    for (const auto& l : layers) {
      if (l->type() == "Functional") throw ConfigError("quantize: it takes a chain of layers, not a functional model");
    }
    if (calibration.rank() < 1 || calibration.dim(0) == 0 ||
        calibration.shape().without_batch() != model.input_shape()) {
      throw ShapeError(detail::str("quantize: the calibration images must be (N, ", model.input_shape().str(),
                                   ") with N >= 1, got ", calibration.shape()));
    }
    // Which layers become int8, and whether the BatchNormalization after each is folded in.
    const auto quantizable = [&](std::size_t i) {
      if (const auto* c = dynamic_cast<const Conv2D<T>*>(layers[i].get())) {
        return c->options().groups() == 1;
      }
      return dynamic_cast<const Dense<T>*>(layers[i].get()) != nullptr;
    };
    // The BatchNormalization folded into layer i, if any: the first layer after it past identities.
    const auto folded_into = [&](std::size_t i) -> std::size_t {
      const Activation a = layers[i]->activation();
      if (!quantizable(i) || (a != Activation::None && a != Activation::ReLU)) return 0;
      std::size_t j = i + 1;
      while (j < layers.size() && layers[j]->fusion_traits().identity_in_inference) ++j;
      return j < layers.size() && dynamic_cast<const BatchNormalization<T>*>(layers[j].get()) != nullptr ? j : 0;
    };
    // The range each quantized layer's input takes on the calibration images, in inference.
    std::vector<double> lo(layers.size(), std::numeric_limits<double>::infinity());
    std::vector<double> hi(layers.size(), -std::numeric_limits<double>::infinity());
    const Index n = calibration.dim(0), batch = 32;
    Tensor<T> xb;
    for (Index b0 = 0; b0 < n; b0 += batch) {
      const Index b1 = std::min(n, b0 + batch), per = calibration.size() / n;
      xb.resize_for_overwrite(model.input_shape().with_batch(b1 - b0));
      std::copy(calibration.data() + b0 * per, calibration.data() + b1 * per, xb.data());
      const Tensor<T>* x = &xb;
      for (std::size_t i = 0; i < layers.size(); ++i) {
        if (quantizable(i)) {
          const auto [mn, mx] = std::minmax_element(x->begin(), x->end());
          lo[i] = std::min(lo[i], double(*mn));
          hi[i] = std::max(hi[i], double(*mx));
        }
        x = &layers[i]->forward(*x, Mode::Inference);
      }
    }
    Sequential<T> out(model.seed(), model.name());
    std::vector<std::pair<Layer<T>*, std::size_t>> made;  // each new layer and the layer it copies (or quantizes)
    std::vector<std::size_t> folded(layers.size(), 0);      // the BatchNormalization folded into each layer
    std::vector<bool> in_epilogue(layers.size(), false);
    for (std::size_t i = 0; i < layers.size(); ++i) {
      Layer<T>& l = *layers[i];
      if (in_epilogue[i]) continue;
      std::unique_ptr<Layer<T>> q;
      folded[i] = folded_into(i);
      const bool fold = folded[i] != 0;
      if (fold) in_epilogue[folded[i]] = true;
      const detail::Int8Input in = detail::int8_input_for(lo[i], hi[i]);
      if (quantizable(i)) {
        if (const auto* c = dynamic_cast<const Conv2D<T>*>(&l)) {
          const Conv2DOptions& o = c->options();
          q = std::make_unique<QuantizedConv2D<T>>(o.filters(), o.kernel_size(), o.strides(), o.padding(),
                                                   o.dilation_rate(), o.activation(), in, fold);
        } else {
          const auto& d = dynamic_cast<const Dense<T>&>(l);
          q = std::make_unique<QuantizedDense<T>>(d.options().units(), d.options().activation(), in, fold);
        }
        q->set_name(l.name());
      } else {
        q = l.inference_copy();  // its type and config, through the registry
        if (!q) throw ConfigError("quantize: layer '" + l.name() + "' (" + l.type() + ") is not registered");
        q->set_name(l.name());
      }
      Layer<T>* raw = q.get();
      out.add(std::move(q), i == 0 ? std::optional<Shape>(model.input_shape()) : std::nullopt);
      made.emplace_back(raw, i);
    }
    for (auto& [copy, i] : made) {
      Layer<T>& l = *layers[i];
      auto* q = dynamic_cast<QuantizedLayer<T>*>(copy);
      if (q == nullptr) {  // a float layer: its values as they are
        auto from = l.parameters(), to = copy->parameters();
        for (std::size_t p = 0; p < from.size(); ++p) *to[p].value = *from[p].value;
        continue;
      }
      const auto params = l.parameters();
      const Tensor<T>* bias = params.size() > 1 ? params[1].value : nullptr;
      std::vector<T> scale, shift;
      if (q->has_affine()) {
        const auto& bn = dynamic_cast<const BatchNormalization<T>&>(*layers[folded[i]]);
        const Index cols = bn.output_shape().back();
        scale.resize(static_cast<std::size_t>(cols));
        shift.resize(static_cast<std::size_t>(cols));
        bn.inference_affine(scale.data(), shift.data());
      }
      q->set_weights(params[0].value->data(), bias ? bias->data() : nullptr, scale.empty() ? nullptr : scale.data(),
                     shift.empty() ? nullptr : shift.data());
    }
    return out;
  }
}

}  // namespace loom
