#pragma once
/// \file random_translation.hpp
/// RandomTranslation, Keras's preprocessing layer of that name, with its
/// Factor (a range of translation) and options (see augmentation.hpp).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "layer.hpp"
#include "random_augmentation.hpp"

namespace loom {

/// A range of translation as a fraction of the image's size: Keras's
/// `height_factor=0.1` is Factor(0.1), i.e. [-0.1, 0.1]; `(-0.1, 0.2)` is
/// Factor(-0.1, 0.2). Both ends lie in [-1, 1].
struct Factor {
  double lower = 0, upper = 0;
  Factor(double f) : lower(-f), upper(f) {}  // NOLINT: implicit, as Keras takes a bare float
  Factor(double lo, double hi) : lower(lo), upper(hi) {}
};

class RandomTranslationOptions {
 public:
  RandomTranslationOptions() = default;
  /// "reflect" (Keras's default: d c b a | a b c d | d c b a), "constant"
  /// (fill_value) or "nearest" (the edge pixel). Keras's "wrap" is not here.
  LOOM_OPTION(std::string, fill_mode, "reflect")
  /// "bilinear" (Keras's default) or "nearest".
  LOOM_OPTION(std::string, interpolation, "bilinear")
  LOOM_OPTION(double, fill_value, 0.0)
  LOOM_OPTION(std::optional<std::uint64_t>, seed, std::nullopt)
};

/// Keras's RandomTranslation: in training each image moves by
/// uniform(height_factor) x H rows and uniform(width_factor) x W columns (a
/// fraction of a pixel too, with bilinear interpolation); what comes in at
/// the edges follows `fill_mode`. As TensorFlow's ImageProjectiveTransformV3
/// computes it: output pixel (i, j) reads the input at (i - dy, j - dx),
/// that coordinate mapped into the image by the fill mode, then
/// interpolated from its neighbours; a neighbour outside the image reads
/// fill_value.
template <class T>
class RandomTranslation : public detail::RandomAugmentation<T> {
 public:
  static constexpr const char* class_name = "RandomTranslation";
  RandomTranslation(Factor height_factor, Factor width_factor, RandomTranslationOptions options = {})
      : detail::RandomAugmentation<T>(options.seed()),
        h_(height_factor),
        w_(width_factor),
        opt_(std::move(options)),
        fill_(opt_.fill_mode() == "constant" ? Fill::Constant : opt_.fill_mode() == "nearest" ? Fill::Nearest : Fill::Reflect),
        nearest_(opt_.interpolation() == "nearest") {
    for (const Factor& f : {h_, w_}) {
      if (!(f.lower >= -1 && f.upper <= 1 && f.lower <= f.upper)) {
        throw ConfigError(detail::str("RandomTranslation: a factor must be a range [lower, upper] within [-1, 1], got [",
                                      f.lower, ", ", f.upper, "]"));
      }
    }
    const std::string& m = opt_.fill_mode();
    if (m != "reflect" && m != "constant" && m != "nearest") {
      throw ConfigError("RandomTranslation: fill_mode must be reflect, constant or nearest, got \"" + m + "\"");
    }
    if (opt_.interpolation() != "bilinear" && opt_.interpolation() != "nearest") {
      throw ConfigError("RandomTranslation: interpolation must be bilinear or nearest, got \"" + opt_.interpolation() + "\"");
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    const auto range = [&](const char* key) {
      const std::vector<double> v = c.reals(key);
      if (v.size() != 2) Config::bad(key, c.text(key));
      return Factor(v[0], v[1]);
    };
    return std::make_unique<RandomTranslation>(range("height_factor"), range("width_factor"),
                                               RandomTranslationOptions()
                                                   .fill_mode(c.text("fill_mode", "reflect"))
                                                   .interpolation(c.text("interpolation", "bilinear"))
                                                   .fill_value(c.real("fill_value", 0.0))
                                                   .seed(RandomTranslation::seed_of(c)));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "random_translation"; }
  FusionTraits fusion_traits() const override { return {/*identity_in_inference=*/true, /*scales_elementwise=*/false}; }
  Config config() const override {
    return this->with_seed(Config()
                               .set_reals("height_factor", {h_.lower, h_.upper})
                               .set_reals("width_factor", {w_.lower, w_.upper})
                               .set("fill_mode", opt_.fill_mode())
                               .set("interpolation", opt_.interpolation())
                               .set("fill_value", opt_.fill_value()));
  }

 protected:

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    identity_ = mode == Mode::Inference;
    if (identity_) return x;
    const Index n = x.dim(0), hh = x.dim(1), ww = x.dim(2);
    shifts_.resize(static_cast<std::size_t>(2 * n));
    const std::uint64_t key = this->next_key();
    for (Index b = 0; b < n; ++b) {
      shifts_[static_cast<std::size_t>(2 * b)] = (h_.lower + (h_.upper - h_.lower) * this->uniform(key, b, 0)) * static_cast<double>(hh);
      shifts_[static_cast<std::size_t>(2 * b + 1)] = (w_.lower + (w_.upper - w_.lower) * this->uniform(key, b, 1)) * static_cast<double>(ww);
    }
    y_.resize_for_overwrite(x.shape());
    const T fill = static_cast<T>(opt_.fill_value());
    const Index cc = x.dim(3);
    this->for_each_sample(n, hh * ww * cc, [&](Index b) {
      const T* src = x.data() + b * hh * ww * cc;
      T* dst = y_.data() + b * hh * ww * cc;
      for (Index i = 0; i < hh; ++i) {
        for (Index j = 0; j < ww; ++j) {
          T* out = dst + (i * ww + j) * cc;
          std::fill_n(out, cc, T(0));
          taps(b, i, j, hh, ww, [&](Index si, Index sj, T w) {
            if (si < 0) {
              for (Index c = 0; c < cc; ++c) out[c] += w * fill;
            } else {
              const T* in = src + (si * ww + sj) * cc;
              for (Index c = 0; c < cc; ++c) out[c] += w * in[c];
            }
          });
        }
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    if (identity_) return dy;
    const Index hh = dy.dim(1), ww = dy.dim(2), cc = dy.dim(3);
    dx_.resize_for_overwrite(dy.shape());
    this->for_each_sample(dy.dim(0), hh * ww * cc, [&](Index b) {
      const T* g = dy.data() + b * hh * ww * cc;
      T* dst = dx_.data() + b * hh * ww * cc;
      std::fill_n(dst, hh * ww * cc, T(0));
      for (Index i = 0; i < hh; ++i) {
        for (Index j = 0; j < ww; ++j) {
          const T* gij = g + (i * ww + j) * cc;
          taps(b, i, j, hh, ww, [&](Index si, Index sj, T w) {
            if (si < 0) return;  // fill_value: no input behind it
            T* d = dst + (si * ww + sj) * cc;
            for (Index c = 0; c < cc; ++c) d[c] += w * gij[c];
          });
        }
      }
    });
    return dx_;
  }

 private:
  /// A coordinate moved into [0, len - 1] by the fill mode (TensorFlow's
  /// map_coordinate); "constant" leaves it where it is.
  double mapped(double c, Index len) const {
    const double n = static_cast<double>(len);
    if (fill_ == Fill::Constant) return c;
    if (fill_ == Fill::Nearest) return std::clamp(c, 0.0, n - 1);
    if (len <= 1) return 0;
    // reflect: d c b a | a b c d | d c b a, a period of 2n
    const double period = 2 * n;
    c = std::fmod(c, period);
    if (c < 0) c += period;
    if (c >= n) c = period - c - 1;
    return std::clamp(c, 0.0, n - 1);
  }

  /// Calls tap(si, sj, weight) for each input pixel output (i, j) of sample
  /// b reads, with si = -1 for a read of fill_value.
  template <class Tap>
  void taps(Index b, Index i, Index j, Index hh, Index ww, Tap&& tap) const {
    const double y = mapped(static_cast<double>(i) - shifts_[static_cast<std::size_t>(2 * b)], hh);
    const double x = mapped(static_cast<double>(j) - shifts_[static_cast<std::size_t>(2 * b + 1)], ww);
    const auto inside = [](Index k, Index len) { return k >= 0 && k < len; };
    if (nearest_) {
      const Index si = static_cast<Index>(std::round(y)), sj = static_cast<Index>(std::round(x));
      if (inside(si, hh) && inside(sj, ww)) {
        tap(si, sj, T(1));
      } else {
        tap(-1, -1, T(1));
      }
      return;
    }
    const double fy = std::floor(y), fx = std::floor(x);
    const Index y0 = static_cast<Index>(fy), x0 = static_cast<Index>(fx);
    const double wy1 = y - fy, wx1 = x - fx;
    const double wy[2] = {1 - wy1, wy1}, wx[2] = {1 - wx1, wx1};
    for (int a = 0; a < 2; ++a) {
      for (int c = 0; c < 2; ++c) {
        const double w = wy[a] * wx[c];
        if (w == 0) continue;
        const Index si = y0 + a, sj = x0 + c;
        if (inside(si, hh) && inside(sj, ww)) {
          tap(si, sj, static_cast<T>(w));
        } else {
          tap(-1, -1, static_cast<T>(w));
        }
      }
    }
  }

  enum class Fill { Reflect, Constant, Nearest };
  Factor h_, w_;
  RandomTranslationOptions opt_;
  Fill fill_;     ///< opt_'s fill mode, read per pixel
  bool nearest_;  ///< nearest interpolation, not bilinear
  std::vector<double> shifts_;  ///< per sample: rows, then columns it moves by
  bool identity_ = true;
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(RandomTranslation)

}  // namespace loom
