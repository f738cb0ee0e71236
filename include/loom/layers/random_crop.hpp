#pragma once
/// \file random_crop.hpp
/// RandomCrop, Keras's preprocessing layer of that name (see augmentation.hpp).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "layer.hpp"
#include "random_augmentation.hpp"

namespace loom {

/// Keras's RandomCrop: in training a window of height x width at a random
/// place (each offset uniform over the places that fit); in inference the
/// central window. The input must be at least that large.
template <class T>
class RandomCrop : public detail::RandomAugmentation<T> {
 public:
  static constexpr const char* class_name = "RandomCrop";
  RandomCrop(Index height, Index width, std::optional<std::uint64_t> seed = std::nullopt)
      : detail::RandomAugmentation<T>(seed), height_(height), width_(width) {
    if (height < 1 || width < 1) {
      throw ConfigError(detail::str("RandomCrop: height and width must be >= 1, got ", height, " and ", width));
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<RandomCrop>(static_cast<Index>(c.integer("height")), static_cast<Index>(c.integer("width")),
                                        RandomCrop::seed_of(c));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "random_crop"; }
  Config config() const override { return this->with_seed(Config().set("height", height_).set("width", width_)); }

 protected:
  Shape build_impl(const Shape& in, Rng& rng) override {
    this->require_image(in);
    if (in[0] < height_ || in[1] < width_) {
      this->reject_input(in, detail::str("images of at least ", height_, " x ", width_,
                                         " (loom crops, it does not resize a smaller image)"));
    }
    this->seed_stream(rng);
    return Shape{height_, width_, in[2]};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    const Index n = x.dim(0), hh = x.dim(1), ww = x.dim(2);
    offsets_.resize(static_cast<std::size_t>(2 * n));
    const bool train = mode == Mode::Train;
    const std::uint64_t key = train ? this->next_key() : 0;
    for (Index b = 0; b < n; ++b) {
      const auto place = [&](Index room, int j) {
        if (!train) return room / 2;
        return std::min(room, static_cast<Index>(this->uniform(key, b, j) * static_cast<double>(room + 1)));
      };
      offsets_[static_cast<std::size_t>(2 * b)] = place(hh - height_, 0);
      offsets_[static_cast<std::size_t>(2 * b + 1)] = place(ww - width_, 1);
    }
    Shape s = x.shape();
    s[1] = height_;
    s[2] = width_;
    y_.resize_for_overwrite(s);
    const Index cc = x.dim(3);
    this->for_each_sample(n, height_ * width_ * cc, [&](Index b) {
      const Index oy = offsets_[static_cast<std::size_t>(2 * b)], ox = offsets_[static_cast<std::size_t>(2 * b + 1)];
      for (Index i = 0; i < height_; ++i) {
        std::copy_n(x.data() + ((b * hh + oy + i) * ww + ox) * cc, width_ * cc, y_.data() + ((b * height_ + i) * width_) * cc);
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    const Shape in = this->input_shape().with_batch(dy.dim(0));
    dx_.resize_for_overwrite(in);
    const Index hh = in[1], ww = in[2], cc = in[3];
    this->for_each_sample(dy.dim(0), hh * ww * cc, [&](Index b) {
      const Index oy = offsets_[static_cast<std::size_t>(2 * b)], ox = offsets_[static_cast<std::size_t>(2 * b + 1)];
      std::fill_n(dx_.data() + b * hh * ww * cc, hh * ww * cc, T(0));
      for (Index i = 0; i < height_; ++i) {
        std::copy_n(dy.data() + ((b * height_ + i) * width_) * cc, width_ * cc, dx_.data() + ((b * hh + oy + i) * ww + ox) * cc);
      }
    });
    return dx_;
  }

 private:
  Index height_, width_;
  std::vector<Index> offsets_;  ///< per sample of the last forward: top row, left column
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(RandomCrop)

}  // namespace loom
