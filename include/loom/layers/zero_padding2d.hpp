#pragma once
/// \file zero_padding2d.hpp
/// ZeroPadding2D, Keras's layer of that name: what goes before a RandomCrop
/// (see augmentation.hpp).

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {

/// Keras's ZeroPadding2D: zero rows above and below, zero columns left and
/// right of every image, in training and inference alike.
template <class T>
class ZeroPadding2D : public Layer<T> {
 public:
  static constexpr const char* class_name = "ZeroPadding2D";
  /// Keras's padding=p: p on every side.
  explicit ZeroPadding2D(Index padding = 1) : ZeroPadding2D(padding, padding, padding, padding) {}
  /// Keras's padding=((top, bottom), (left, right)).
  ZeroPadding2D(Index top, Index bottom, Index left, Index right) : pad_{top, bottom, left, right} {
    for (Index p : pad_) {
      if (p < 0) throw ConfigError(detail::str("ZeroPadding2D: padding must be >= 0, got ", p));
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    const std::vector<double> p = c.reals("padding");
    if (p.size() != 4) Config::bad("padding", c.text("padding"));
    return std::make_unique<ZeroPadding2D>(static_cast<Index>(p[0]), static_cast<Index>(p[1]), static_cast<Index>(p[2]),
                                           static_cast<Index>(p[3]));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "zero_padding2d"; }
  Config config() const override {
    return Config().set_reals("padding", {static_cast<double>(pad_[0]), static_cast<double>(pad_[1]),
                                          static_cast<double>(pad_[2]), static_cast<double>(pad_[3])});
  }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    if (in.rank() != 3) this->reject_input(in, "images (None, H, W, C)");
    return Shape{in[0] + pad_[0] + pad_[1], in[1] + pad_[2] + pad_[3], in[2]};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    const Shape out = this->output_shape().with_batch(x.dim(0));
    y_.resize_for_overwrite(out);
    const Index hh = x.dim(1), ww = x.dim(2), cc = x.dim(3), oh = out[1], ow = out[2];
    detail::parallel(detail::threads_for(x.size() / 16384), [&](int t, int nt) {
      const detail::Range mine = detail::split(x.dim(0), t, nt);
      for (Index b = mine.begin; b < mine.end; ++b) {
        T* dst = y_.data() + b * oh * ow * cc;
        std::fill_n(dst, oh * ow * cc, T(0));
        for (Index i = 0; i < hh; ++i) {
          std::copy_n(x.data() + (b * hh + i) * ww * cc, ww * cc, dst + ((i + pad_[0]) * ow + pad_[2]) * cc);
        }
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    const Shape in = this->input_shape().with_batch(dy.dim(0));
    dx_.resize_for_overwrite(in);
    const Index hh = in[1], ww = in[2], cc = in[3], oh = dy.dim(1), ow = dy.dim(2);
    for (Index b = 0; b < in[0]; ++b) {
      for (Index i = 0; i < hh; ++i) {
        std::copy_n(dy.data() + ((b * oh + i + pad_[0]) * ow + pad_[2]) * cc, ww * cc, dx_.data() + (b * hh + i) * ww * cc);
      }
    }
    return dx_;
  }

 private:
  std::array<Index, 4> pad_;  ///< top, bottom, left, right
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(ZeroPadding2D)

}  // namespace loom
