#pragma once
/// \file cropping2d.hpp
/// Cropping2D, Keras's layer of that name: rows cut off the top and bottom,
/// columns off the left and right of every image (NHWC, channels_last).

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {

/// Keras's Cropping2D: the image without `top` rows above, `bottom` below,
/// `left` columns on the left and `right` on the right, in training and
/// inference alike. The crops must leave at least one row and one column.
template <class T>
class Cropping2D : public Layer<T> {
 public:
  static constexpr const char* class_name = "Cropping2D";
  /// Keras's cropping=c: c on every side.
  explicit Cropping2D(Index cropping = 0) : Cropping2D(cropping, cropping, cropping, cropping) {}
  /// Keras's cropping=(h, w): h above and below, w left and right.
  Cropping2D(Index height, Index width) : Cropping2D(height, height, width, width) {}
  /// Keras's cropping=((top, bottom), (left, right)).
  Cropping2D(Index top, Index bottom, Index left, Index right) : crop_{top, bottom, left, right} {
    for (Index c : crop_) {
      if (c < 0) throw ConfigError(detail::str("Cropping2D: cropping must be >= 0, got ", c));
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    const std::vector<Index> v = c.integers("cropping");
    if (v.size() != 4) Config::bad("cropping", c.text("cropping"));
    return std::make_unique<Cropping2D>(v[0], v[1], v[2], v[3]);
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "cropping2d"; }
  Config config() const override { return Config().set_integers("cropping", {crop_[0], crop_[1], crop_[2], crop_[3]}); }
  /// top, bottom, left, right.
  const std::array<Index, 4>& cropping() const { return crop_; }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    if (in.rank() != 3) this->reject_input(in, "images (None, H, W, C)");
    if (crop_[0] + crop_[1] >= in[0] || crop_[2] + crop_[3] >= in[1]) {
      this->reject_input(in, detail::str("images of more than ", crop_[0] + crop_[1], " rows and more than ",
                                         crop_[2] + crop_[3], " columns, for cropping ((", crop_[0], ", ", crop_[1],
                                         "), (", crop_[2], ", ", crop_[3], "))"));
    }
    return Shape{in[0] - crop_[0] - crop_[1], in[1] - crop_[2] - crop_[3], in[2]};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    y_.resize_for_overwrite(this->output_shape().with_batch(x.dim(0)));
    const Index hh = x.dim(1), ww = x.dim(2), cc = x.dim(3), oh = y_.dim(1), ow = y_.dim(2);
    detail::parallel(detail::threads_for(y_.size() / 16384), [&](int t, int nt) {
      const detail::Range mine = detail::split(x.dim(0), t, nt);
      for (Index b = mine.begin; b < mine.end; ++b) {
        for (Index i = 0; i < oh; ++i) {
          std::copy_n(x.data() + ((b * hh + i + crop_[0]) * ww + crop_[2]) * cc, ow * cc,
                      y_.data() + (b * oh + i) * ow * cc);
        }
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    dx_.resize_for_overwrite(this->input_shape().with_batch(dy.dim(0)));
    const Index hh = dx_.dim(1), ww = dx_.dim(2), cc = dx_.dim(3), oh = dy.dim(1), ow = dy.dim(2);
    detail::parallel(detail::threads_for(dx_.size() / 16384), [&](int t, int nt) {
      const detail::Range mine = detail::split(dy.dim(0), t, nt);
      for (Index b = mine.begin; b < mine.end; ++b) {
        T* dst = dx_.data() + b * hh * ww * cc;
        std::fill_n(dst, hh * ww * cc, T(0));  // the cropped cells had no effect
        for (Index i = 0; i < oh; ++i) {
          std::copy_n(dy.data() + (b * oh + i) * ow * cc, ow * cc, dst + ((i + crop_[0]) * ww + crop_[2]) * cc);
        }
      }
    });
    return dx_;
  }

 private:
  std::array<Index, 4> crop_;  ///< top, bottom, left, right
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(Cropping2D)

}  // namespace loom
