#pragma once
/// \file random_erasing.hpp
/// RandomErasing, Keras 3's preprocessing layer of that name, with its
/// options (see augmentation.hpp).

#include <algorithm>
#include <array>
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

class RandomErasingOptions {
 public:
  RandomErasingOptions() = default;
  /// Keras's factor f: each image's erasing probability p is drawn from
  /// U(0, f), and the image is erased when U(0, 1) < p (so f = 1 erases half
  /// the images on average; factor(1, 1) erases every one).
  RandomErasingOptions& factor(double f) { return factor(std::max(-f, 0.0), f); }
  RandomErasingOptions& factor(double lower, double upper) {
    factor_ = {std::min(lower, upper), std::max(lower, upper)};
    return *this;
  }
  const std::array<double, 2>& factor() const { return factor_; }
  /// The patch's width is sqrt(U(scale)) x W and its height, drawn apart,
  /// sqrt(U(scale)) x H.
  RandomErasingOptions& scale(double lower, double upper) {
    scale_ = {std::min(lower, upper), std::max(lower, upper)};
    return *this;
  }
  const std::array<double, 2>& scale() const { return scale_; }
  /// The erased values: a constant, or (nullopt, Keras's None) normal noise
  /// times value_range's upper end; either clipped to value_range.
  LOOM_OPTION(std::optional<double>, fill_value, std::nullopt)

 public:
  RandomErasingOptions& value_range(double low, double high) {
    value_range_ = {low, high};
    return *this;
  }
  const std::array<double, 2>& value_range() const { return value_range_; }
  LOOM_OPTION(std::optional<std::uint64_t>, seed, std::nullopt)

 private:
  std::array<double, 2> factor_{0.0, 1.0}, scale_{0.02, 0.33}, value_range_{0.0, 255.0};
};

/// Keras 3's RandomErasing (keras/src/layers/preprocessing/image_preprocessing/
/// random_erasing.py): in training, each image gets a patch whose sides are
/// sqrt(U(scale)) of the image's, placed uniformly, and the patch's pixels
/// become fill_value or noise, when the image's draw says so (see `factor`).
/// A pixel (i, j) is in the patch when x0 <= j < x1 and y0 <= i < y1, the
/// corners being real numbers as Keras computes them.
template <class T>
class RandomErasing : public detail::RandomAugmentation<T> {
 public:
  static constexpr const char* class_name = "RandomErasing";
  explicit RandomErasing(RandomErasingOptions options = {})
      : detail::RandomAugmentation<T>(options.seed()), opt_(std::move(options)) {
    const auto in01 = [](const std::array<double, 2>& r) { return r[0] >= 0 && r[1] <= 1; };
    if (!in01(opt_.factor()) || !in01(opt_.scale())) {
      throw ConfigError(detail::str("RandomErasing: factor and scale must lie in [0, 1], got factor [", opt_.factor()[0],
                                    ", ", opt_.factor()[1], "] and scale [", opt_.scale()[0], ", ", opt_.scale()[1], "]"));
    }
    if (!(opt_.value_range()[0] < opt_.value_range()[1])) {
      throw ConfigError(detail::str("RandomErasing: value_range must be [low, high] with low < high, got [",
                                    opt_.value_range()[0], ", ", opt_.value_range()[1], "]"));
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    const auto pair = [&](const char* key) {
      const std::vector<double> v = c.reals(key);
      if (v.size() != 2) Config::bad(key, c.text(key));
      return v;
    };
    const auto f = pair("factor"), sc = pair("scale"), vr = pair("value_range");
    RandomErasingOptions o;
    o.factor(f[0], f[1]).scale(sc[0], sc[1]).value_range(vr[0], vr[1]).seed(RandomErasing::seed_of(c));
    if (c.has("fill_value")) o.fill_value(c.real("fill_value"));
    return std::make_unique<RandomErasing>(o);
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "random_erasing"; }
  FusionTraits fusion_traits() const override { return {/*identity_in_inference=*/true, /*scales_elementwise=*/false}; }
  Config config() const override {
    Config c;
    c.set_reals("factor", {opt_.factor()[0], opt_.factor()[1]})
        .set_reals("scale", {opt_.scale()[0], opt_.scale()[1]})
        .set_reals("value_range", {opt_.value_range()[0], opt_.value_range()[1]});
    if (opt_.fill_value()) c.set("fill_value", *opt_.fill_value());
    return this->with_seed(c);
  }

 protected:

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    identity_ = mode == Mode::Inference;
    if (identity_) return x;
    const Index n = x.dim(0), hh = x.dim(1), ww = x.dim(2), cc = x.dim(3);
    boxes_.resize(static_cast<std::size_t>(n));
    key_ = this->next_key();
    for (Index b = 0; b < n; ++b) {
      const auto u = [&](int j) { return this->uniform(key_, b, j); };
      const auto& sc = opt_.scale();
      const double wx = std::sqrt(sc[0] + (sc[1] - sc[0]) * u(0)), wy = std::sqrt(sc[0] + (sc[1] - sc[0]) * u(1));
      const double cw = wx * static_cast<double>(ww), ch = wy * static_cast<double>(hh);
      Box& box = boxes_[static_cast<std::size_t>(b)];
      box.x0 = u(2) * (static_cast<double>(ww) - cw);
      box.x1 = box.x0 + cw;
      box.y0 = u(3) * (static_cast<double>(hh) - ch);
      box.y1 = box.y0 + ch;
      const double p = opt_.factor()[0] + (opt_.factor()[1] - opt_.factor()[0]) * u(4);
      box.erase = u(5) < p;
    }
    y_.resize_for_overwrite(x.shape());
    const double lo = opt_.value_range()[0], hi = opt_.value_range()[1];
    this->for_each_sample(n, hh * ww * cc, [&](Index b) {
      const Box& box = boxes_[static_cast<std::size_t>(b)];
      const Index base = b * hh * ww * cc;
      for (Index i = 0; i < hh; ++i) {
        for (Index j = 0; j < ww; ++j) {
          const bool in = box.erase && inside(box, i, j);
          for (Index c = 0; c < cc; ++c) {
            const Index at = base + (i * ww + j) * cc + c;
            y_[at] = in ? static_cast<T>(std::clamp(fill(at), lo, hi)) : x[at];
          }
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
      const Box& box = boxes_[static_cast<std::size_t>(b)];
      for (Index i = 0; i < hh; ++i) {
        for (Index j = 0; j < ww; ++j) {
          const bool in = box.erase && inside(box, i, j);
          const Index at = (b * hh * ww + i * ww + j) * cc;
          for (Index c = 0; c < cc; ++c) dx_[at + c] = in ? T(0) : dy[at + c];  // erased values do not depend on x
        }
      }
    });
    return dx_;
  }

 private:
  struct Box {
    double x0 = 0, x1 = 0, y0 = 0, y1 = 0;
    bool erase = false;
  };
  static bool inside(const Box& box, Index i, Index j) {
    const double y = static_cast<double>(i), x = static_cast<double>(j);
    return x >= box.x0 && x < box.x1 && y >= box.y0 && y < box.y1;
  }
  /// The value erasing writes at element `at` of the batch: the constant, or
  /// normal noise (Box-Muller on two SplitMix64 draws of this batch's key) times value_range's top.
  double fill(Index at) const {
    if (opt_.fill_value()) return *opt_.fill_value();
    const std::uint64_t k = key_ ^ 0x9E3779B97F4A7C15ULL;
    const double u1 = (static_cast<double>(splitmix64(k, 2 * static_cast<std::uint64_t>(at)) >> 11) + 1) * 0x1.0p-53;
    const double u2 = static_cast<double>(splitmix64(k, 2 * static_cast<std::uint64_t>(at) + 1) >> 11) * 0x1.0p-53;
    const double normal = std::sqrt(-2 * std::log(u1)) * std::cos(2 * 3.14159265358979323846 * u2);
    return normal * opt_.value_range()[1];
  }

  RandomErasingOptions opt_;
  std::vector<Box> boxes_;  ///< per sample of the last training forward
  std::uint64_t key_ = 0;
  bool identity_ = true;
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(RandomErasing)

}  // namespace loom
