#pragma once
/// \file rescaling.hpp
/// Rescaling, Keras's layer of that name: y = x * scale + offset, with one
/// scale and offset for every value, or one per channel (the last axis).

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {

/// Keras's Rescaling(scale, offset=0): y = x * scale + offset, computed in
/// T as Keras computes it in the layer's dtype. `scale` and `offset` are
/// each one number, or a list with one number per channel (Keras
/// broadcasts a list over the last axis); two lists have the same length.
/// Nothing is trained.
template <class T>
class Rescaling : public Layer<T> {
 public:
  static constexpr const char* class_name = "Rescaling";
  explicit Rescaling(double scale, double offset = 0)
      : Rescaling(std::vector<double>{scale}, std::vector<double>{offset}) {}
  Rescaling(std::vector<double> scale, std::vector<double> offset)
      : scale_(std::move(scale)), offset_(std::move(offset)) {
    if (scale_.empty() || offset_.empty()) {
      throw ConfigError("Rescaling: scale and offset need at least one value each");
    }
    if (scale_.size() > 1 && offset_.size() > 1 && scale_.size() != offset_.size()) {
      throw ConfigError(detail::str("Rescaling: scale has ", scale_.size(), " values and offset ", offset_.size(),
                                    ": each is one number, or one per channel"));
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<Rescaling>(c.reals("scale"),
                                       c.has("offset") ? c.reals("offset") : std::vector<double>{0.0});
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "rescaling"; }
  Config config() const override { return Config().set_reals("scale", scale_).set_reals("offset", offset_); }
  const std::vector<double>& scale() const { return scale_; }
  const std::vector<double>& offset() const { return offset_; }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    const std::size_t lists = std::max(scale_.size(), offset_.size());
    const Index channels = in.rank() > 0 ? in.back() : 1;
    if (lists > 1 && (in.rank() < 1 || channels != static_cast<Index>(lists))) {
      this->reject_input(in, detail::str("with ", lists, " channels on its last axis (one scale and offset each)"));
    }
    s_.assign(static_cast<std::size_t>(channels), T(0));
    o_.assign(static_cast<std::size_t>(channels), T(0));
    for (std::size_t c = 0; c < s_.size(); ++c) {
      s_[c] = static_cast<T>(scale_[scale_.size() > 1 ? c : 0]);
      o_[c] = static_cast<T>(offset_[offset_.size() > 1 ? c : 0]);
    }
    return in;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    y_.resize_for_overwrite(x.shape());
    apply(x, y_, true);
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    dx_.resize_for_overwrite(dy.shape());
    apply(dy, dx_, false);  // dL/dx = dL/dy * scale
    return dx_;
  }

 private:
  /// out = in * scale (+ offset when `shift`), channel by channel.
  void apply(const Tensor<T>& in, Tensor<T>& out, bool shift) const {
    const auto c = static_cast<Index>(s_.size());
    if (c == 0) return;  // a last axis of size 0: nothing to do
    const T* s = s_.data();
    const T* o = o_.data();
    detail::parallel_ranges(in.size() / c, 65536 / c + 1, [&](Index begin, Index end) {
      for (Index r = begin; r < end; ++r) {
        const T* a = in.data() + r * c;
        T* b = out.data() + r * c;
        if (shift) {
          for (Index k = 0; k < c; ++k) b[k] = a[k] * s[k] + o[k];
        } else {
          for (Index k = 0; k < c; ++k) b[k] = a[k] * s[k];
        }
      }
    });
  }

  std::vector<double> scale_, offset_;  ///< as configured: one value, or one per channel
  std::vector<T> s_, o_;                ///< per channel of the built input, in T
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(Rescaling)

}  // namespace loom
