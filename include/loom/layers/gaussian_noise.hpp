#pragma once
/// \file gaussian_noise.hpp
/// `GaussianNoise`, Keras's: in training y = x + noise, each value's noise
/// drawn from N(0, stddev^2); in inference the identity (forward returns its
/// input itself, without a copy). Its gradient is dy itself.
///
/// The noise comes from the layer's own seeded stream, as Dropout's masks
/// do: each training forward draws one 64-bit key, and element i's noise is
/// Box-Muller's normal from values 2i and 2i + 1 of the SplitMix64 sequence
/// from that key, so it depends neither on the thread count nor on the
/// other elements; the stream is saved with the model, and a fit resumes
/// exactly. Threads split the elements.

#include <cmath>
#include <memory>
#include <optional>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {

template <class T>
class GaussianNoise : public Layer<T> {
 public:
  /// Without a `seed`, the stream is seeded from the model's generator at build.
  explicit GaussianNoise(double stddev, std::optional<std::uint64_t> seed = std::nullopt)
      : stddev_(stddev), seed_(seed) {
    if (!(stddev >= 0 && std::isfinite(stddev))) {
      throw ConfigError(detail::str("GaussianNoise: stddev must be finite and >= 0, got ", stddev));
    }
  }

  static constexpr const char* class_name = "GaussianNoise";
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "gaussian_noise"; }
  /// The identity in inference.
  FusionTraits fusion_traits() const override { return {/*identity_in_inference=*/true, /*scales_elementwise=*/false}; }
  double stddev() const { return stddev_; }
  void seed(std::uint64_t seed) override { rng_.seed(seed); }
  bool has_rng() const override { return true; }
  Rng::State rng_state() const override { return rng_.state(); }
  void set_rng_state(const Rng::State& state) override { rng_.set_state(state); }

  Config config() const override {
    Config c;
    c.set("stddev", stddev_);
    if (seed_) c.set("seed", *seed_);
    return c;
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    std::optional<std::uint64_t> seed;
    if (c.has("seed")) seed = c.u64("seed");
    return std::make_unique<GaussianNoise>(c.real("stddev"), seed);
  }

  /// Element i's standard normal for the forward drawn with `key`.
  static double normal(std::uint64_t key, std::uint64_t i) {
    const double u = static_cast<double>((splitmix64(key, 2 * i) >> 11) + 1) * 0x1.0p-53;  // (0, 1]
    const double v = static_cast<double>(splitmix64(key, 2 * i + 1) >> 11) * 0x1.0p-53;   // [0, 1)
    return std::sqrt(-2 * std::log(u)) * std::cos(6.283185307179586 * v);
  }

 protected:
  Shape build_impl(const Shape& in, Rng& rng) override {
    const std::uint64_t drawn = rng.next_u64();
    rng_.seed(seed_.value_or(drawn));
    return in;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    if (mode == Mode::Inference || stddev_ == 0) return x;
    y_.resize_for_overwrite(x.shape());
    const std::uint64_t key = rng_.next_u64();
    const double stddev = stddev_;
    const T* __restrict in = x.data();
    T* __restrict out = y_.data();
    detail::parallel_ranges(x.size(), 16384, [&](Index begin, Index end) {
      for (Index i = begin; i < end; ++i) {
        out[i] = static_cast<T>(static_cast<double>(in[i]) + stddev * normal(key, static_cast<std::uint64_t>(i)));
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override { return this->needs_input_grad() ? dy : this->empty_; }

 private:
  double stddev_;
  std::optional<std::uint64_t> seed_;
  Rng rng_;
  Tensor<T> y_;
};

LOOM_REGISTER(GaussianNoise)

}  // namespace loom
