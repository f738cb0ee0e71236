#pragma once
/// \file spatial_dropout2d.hpp
/// `SpatialDropout2D`, Keras's: Dropout of whole feature maps. In training,
/// each channel of each sample of (N, H, W, C) images is kept with
/// probability 1 - rate, and then scaled by 1 / (1 - rate), or zeroed, at
/// every pixel alike (Keras's noise shape (N, 1, 1, C)); in inference it is
/// the identity (forward returns its input itself, without a copy).
///
/// The masks come from the layer's own seeded stream, as Dropout's do: each
/// training forward draws one 64-bit key, and channel c of sample n is kept
/// when value n * C + c of the SplitMix64 sequence from that key clears the
/// rate. So they depend neither on the thread count nor on the batch's
/// split; the stream is saved with the model, and a fit resumes exactly.
/// Threads split the samples.

#include <algorithm>
#include <memory>
#include <optional>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {

template <class T>
class SpatialDropout2D : public Layer<T> {
 public:
  /// Without a `seed`, the stream is seeded from the model's generator at build.
  explicit SpatialDropout2D(double rate, std::optional<std::uint64_t> seed = std::nullopt) : rate_(rate), seed_(seed) {
    if (!(rate >= 0 && rate < 1)) {
      throw ConfigError(detail::str("SpatialDropout2D: rate must be in [0, 1), got ", rate));
    }
  }

  static constexpr const char* class_name = "SpatialDropout2D";
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "spatial_dropout2d"; }
  /// The identity in inference; in training it scales by 0 or 1 / (1 - rate).
  FusionTraits fusion_traits() const override {
    return {/*identity_in_inference=*/true, /*scales_elementwise=*/true};
  }
  double rate() const { return rate_; }
  void seed(std::uint64_t seed) override { rng_.seed(seed); }
  bool has_rng() const override { return true; }
  Rng::State rng_state() const override { return rng_.state(); }
  void set_rng_state(const Rng::State& state) override { rng_.set_state(state); }

  Config config() const override {
    Config c;
    c.set("rate", rate_);
    if (seed_) c.set("seed", *seed_);
    return c;
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    std::optional<std::uint64_t> seed;
    if (c.has("seed")) seed = c.u64("seed");
    return std::make_unique<SpatialDropout2D>(c.real("rate"), seed);
  }

 protected:
  Shape build_impl(const Shape& in, Rng& rng) override {
    if (in.rank() != 3) this->reject_input(in, "(None, height, width, channels)");
    const std::uint64_t drawn = rng.next_u64();
    rng_.seed(seed_.value_or(drawn));
    return in;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    if (mode == Mode::Inference || rate_ == 0) {
      identity_ = true;
      return x;
    }
    identity_ = false;
    const Index n = x.dim(0), c = x.dim(3), pixels = x.dim(1) * x.dim(2);
    mask_.resize_for_overwrite(Shape{n, c});
    const T scale = static_cast<T>(1.0 / (1.0 - rate_));
    const std::uint64_t key = rng_.next_u64();
    // Keep when the hash's top 53 bits, as a fraction of 2^53, are >= rate (Dropout's rule).
    const auto threshold = static_cast<std::uint64_t>(rate_ * 0x1.0p53);
    for (Index i = 0; i < n * c; ++i) {
      mask_[i] = (splitmix64(key, static_cast<std::uint64_t>(i)) >> 11) >= threshold ? scale : T(0);
    }
    y_.resize_for_overwrite(x.shape());
    apply(x.data(), y_.data(), n, pixels, c);
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    if (identity_) return dy;
    dx_.resize_for_overwrite(dy.shape());
    apply(dy.data(), dx_.data(), dy.dim(0), dy.dim(1) * dy.dim(2), dy.dim(3));
    return dx_;
  }

 private:
  /// out = in * mask of its sample and channel, over n samples of `pixels` x c values.
  void apply(const T* in, T* out, Index n, Index pixels, Index c) const {
    const Index per_sample = pixels * c;
    detail::parallel_ranges(n, std::max<Index>(1, 65536 / std::max<Index>(per_sample, 1)), [&](Index begin, Index end) {
      for (Index s = begin; s < end; ++s) {
        const T* __restrict m = mask_.data() + s * c;
        for (Index p = 0; p < pixels; ++p) {
          const T* __restrict a = in + (s * pixels + p) * c;
          T* __restrict b = out + (s * pixels + p) * c;
          for (Index k = 0; k < c; ++k) b[k] = a[k] * m[k];
        }
      }
    });
  }

  double rate_;
  std::optional<std::uint64_t> seed_;
  Rng rng_;
  bool identity_ = true;
  Tensor<T> mask_, y_, dx_;  // mask_: (N, C), 0 or 1 / (1 - rate)
};

LOOM_REGISTER(SpatialDropout2D)

}  // namespace loom
