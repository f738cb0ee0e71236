#pragma once
/// \file random_flip.hpp
/// RandomFlip, Keras's preprocessing layer of that name (see augmentation.hpp).

#include <algorithm>
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

/// Keras's RandomFlip: in training each image is mirrored left-right
/// ("horizontal"), upside down ("vertical"), or each of those independently
/// ("horizontal_and_vertical", Keras's default), each with probability 1/2.
template <class T>
class RandomFlip : public detail::RandomAugmentation<T> {
 public:
  static constexpr const char* class_name = "RandomFlip";
  explicit RandomFlip(std::string mode = "horizontal_and_vertical", std::optional<std::uint64_t> seed = std::nullopt)
      : detail::RandomAugmentation<T>(seed), mode_(std::move(mode)) {
    if (mode_ != "horizontal" && mode_ != "vertical" && mode_ != "horizontal_and_vertical") {
      throw ConfigError("RandomFlip: mode must be \"horizontal\", \"vertical\" or \"horizontal_and_vertical\", got \"" +
                        mode_ + "\"");
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<RandomFlip>(c.text("mode"), RandomFlip::seed_of(c));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "random_flip"; }
  FusionTraits fusion_traits() const override { return {/*identity_in_inference=*/true, /*scales_elementwise=*/false}; }
  Config config() const override { return this->with_seed(Config().set("mode", mode_)); }
  const std::string& mode() const { return mode_; }

 protected:

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    identity_ = mode == Mode::Inference;
    if (identity_) return x;
    const Index n = x.dim(0);
    flips_.resize(static_cast<std::size_t>(n));
    const std::uint64_t key = this->next_key();
    const bool h = mode_ != "vertical", v = mode_ != "horizontal";
    for (Index b = 0; b < n; ++b) {
      flips_[static_cast<std::size_t>(b)] =
          static_cast<unsigned char>((h && this->uniform(key, b, 0) < 0.5 ? 1 : 0) | (v && this->uniform(key, b, 1) < 0.5 ? 2 : 0));
    }
    flip(x, y_);
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    if (identity_) return dy;
    flip(dy, dx_);  // a flip is its own inverse and its own transpose
    return dx_;
  }

 private:
  /// out <- in with each sample flipped as flips_ says.
  void flip(const Tensor<T>& in, Tensor<T>& out) const {
    out.resize_for_overwrite(in.shape());
    const Index hh = in.dim(1), ww = in.dim(2), cc = in.dim(3);
    this->for_each_sample(in.dim(0), hh * ww * cc, [&](Index b) {
      const unsigned char f = flips_[static_cast<std::size_t>(b)];
      const T* src = in.data() + b * hh * ww * cc;
      T* dst = out.data() + b * hh * ww * cc;
      for (Index i = 0; i < hh; ++i) {
        const Index si = (f & 2) ? hh - 1 - i : i;
        for (Index j = 0; j < ww; ++j) {
          const Index sj = (f & 1) ? ww - 1 - j : j;
          std::copy_n(src + (si * ww + sj) * cc, cc, dst + (i * ww + j) * cc);
        }
      }
    });
  }

  std::string mode_;
  std::vector<unsigned char> flips_;  ///< per sample: bit 0 left-right, bit 1 upside down
  bool identity_ = true;
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(RandomFlip)

}  // namespace loom
