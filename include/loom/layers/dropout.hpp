#pragma once
/// \file dropout.hpp
/// `Dropout`, inverted: in training each value is kept with probability
/// 1 - rate and scaled by 1 / (1 - rate); in inference it is the identity
/// (forward returns its input unchanged, without a copy). The mask comes from
/// the layer's own seeded stream, so a fixed seed gives the same masks.
///
/// Each training forward draws one 64-bit key from that stream; element i
/// is kept when value i of the SplitMix64 sequence from that key clears the
/// rate. Elements are
/// independent of each other and of the thread that computes them, so
/// threads split the batch and the mask does not depend on their number.

#include <memory>
#include <optional>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {

template <class T>
class Dropout : public Layer<T> {
 public:
  /// Without a `seed`, the stream is seeded from the model's generator at build.
  explicit Dropout(double rate, std::optional<std::uint64_t> seed = std::nullopt) : rate_(rate), seed_(seed) {
    if (!(rate >= 0 && rate < 1)) throw ConfigError(detail::str("Dropout: rate must be in [0, 1), got ", rate));
  }

  static constexpr const char* class_name = "Dropout";
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "dropout"; }
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
    return std::make_unique<Dropout>(c.real("rate"), seed);
  }

 protected:
  Shape build_impl(const Shape& in, Rng& rng) override {
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
    mask_.resize_for_overwrite(x.shape());
    y_.resize_for_overwrite(x.shape());
    const T scale = static_cast<T>(1.0 / (1.0 - rate_));
    const std::uint64_t key = rng_.next_u64();
    // Keep when the hash's top 53 bits, as a fraction of 2^53, are >= rate.
    const auto threshold = static_cast<std::uint64_t>(rate_ * 0x1.0p53);
    const Index n = x.size();
    detail::parallel_ranges(n, 65536, [&](Index begin, Index end) {
      draw_mask(key, threshold, scale, begin, end, x.data(), mask_.data(), y_.data());
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    if (identity_) return dy;
    dx_.resize_for_overwrite(dy.shape());
    const Index n = dy.size();
    detail::parallel_ranges(n, 65536, [&](Index begin, Index end) {
      multiply(dy.data(), mask_.data(), dx_.data(), begin, end);
    });
    return dx_;
  }

 private:
  /// Elements [begin, end): mask = scale where hash i (splitmix64(key, i))
  /// clears the threshold, else 0; y = x * mask. Branch-free on raw,
  /// unaliased pointers, so that the compiler vectorizes the hash: with a
  /// branch per element (a kept element is a coin toss) g++ 12 made it
  /// scalar, and mispredictions made it 5 % of a training step. The
  /// stream's state grows by gamma per element, an addition where the
  /// direct formula multiplies; and both sides of the comparison are below
  /// 2^53, so it is a signed one, which AVX2 has (it has no unsigned 64-bit
  /// comparison nor 64-bit product: each is several instructions). On the
  /// AVX2 build, the notebook's first Dropout took 1.9 times as long as
  /// with AVX-512 before.
  [[gnu::noinline]] static void draw_mask(std::uint64_t key, std::uint64_t threshold, T scale, Index begin, Index end,
                                          const T* __restrict x, T* __restrict mask, T* __restrict y) {
    const auto limit = static_cast<std::int64_t>(threshold);
    std::uint64_t z = key + (static_cast<std::uint64_t>(begin) + 1) * kSplitMix64Gamma;
    for (Index i = begin; i < end; ++i, z += kSplitMix64Gamma) {
      const auto h = static_cast<std::int64_t>(splitmix64_mix(z) >> 11);
      const T m = h >= limit ? scale : T(0);
      mask[i] = m;
      y[i] = x[i] * m;
    }
  }
  [[gnu::noinline]] static void multiply(const T* __restrict dy, const T* __restrict mask, T* __restrict dx,
                                         Index begin, Index end) {
    for (Index i = begin; i < end; ++i) dx[i] = dy[i] * mask[i];
  }

  double rate_;
  std::optional<std::uint64_t> seed_;
  Rng rng_;
  bool identity_ = true;
  Tensor<T> mask_, y_, dx_;
};

LOOM_REGISTER(Dropout)

}  // namespace loom
