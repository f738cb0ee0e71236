#pragma once
/// \file random_augmentation.hpp
/// `detail::RandomAugmentation<T>`, what the random augmentation layers
/// (RandomFlip, RandomTranslation, RandomCrop, RandomErasing) share: the
/// layer's own seeded stream, per-sample draws that depend on neither the
/// thread count nor the other samples, and the split of a batch's samples
/// across threads (see augmentation.hpp).

#include <cstdint>
#include <optional>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {
namespace detail {

/// The seeded stream and per-sample draws every random augmentation layer shares.
template <class T>
class RandomAugmentation : public Layer<T> {
 public:
  void seed(std::uint64_t seed) override { rng_.seed(seed); }
  bool has_rng() const override { return true; }
  Rng::State rng_state() const override { return rng_.state(); }
  void set_rng_state(const Rng::State& state) override { rng_.set_state(state); }

 protected:
  explicit RandomAugmentation(std::optional<std::uint64_t> seed) : seed_(seed) {}

  /// Images in, images of the same shape out (RandomCrop overrides it).
  Shape build_impl(const Shape& in, Rng& rng) override {
    require_image(in);
    seed_stream(rng);
    return in;
  }

  /// Without a fixed seed, the stream is seeded from the model's generator at build.
  void seed_stream(Rng& model_rng) {
    const std::uint64_t drawn = model_rng.next_u64();
    rng_.seed(seed_.value_or(drawn));
  }
  /// (H, W, C) images, or a ShapeError naming the layer.
  void require_image(const Shape& in) const {
    if (in.rank() != 3) this->reject_input(in, "images (None, H, W, C)");
  }
  Config with_seed(Config c) const {
    if (seed_) c.set("seed", *seed_);
    return c;
  }
  static std::optional<std::uint64_t> seed_of(const Config& c) {
    return c.has("seed") ? std::optional<std::uint64_t>(c.u64("seed")) : std::nullopt;
  }
  /// The key of this training batch.
  std::uint64_t next_key() { return rng_.next_u64(); }
  /// Draw j (< 8) of sample b under `key`, uniform in [0, 1).
  static double uniform(std::uint64_t key, Index b, int j) {
    return static_cast<double>(splitmix64(key, static_cast<std::uint64_t>(b) * 8 + static_cast<std::uint64_t>(j)) >> 11) *
           0x1.0p-53;
  }
  /// body(b) for every sample of a batch of n images of `values` values each, split across threads.
  template <class Body>
  static void for_each_sample(Index n, Index values, Body&& body) {
    parallel(threads_for(n * values / 16384), [&](int t, int nt) {
      const Range mine = split(n, t, nt);
      for (Index b = mine.begin; b < mine.end; ++b) body(b);
    });
  }

 private:
  std::optional<std::uint64_t> seed_;
  Rng rng_;
};

}  // namespace detail
}  // namespace loom
