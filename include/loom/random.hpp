#pragma once
/// \file random.hpp
/// `Rng`: a small, fast, seedable generator (xoshiro256**) whose stream is the
/// same on every platform and compiler, unlike std::*_distribution. Every
/// random draw in loom (initialization, shuffling, dropout) comes from one.

#include <array>
#include <cmath>
#include <cstdint>
#include <utility>

namespace loom {

/// SplitMix64's increment, gamma (the golden ratio's odd 64-bit integer).
inline constexpr std::uint64_t kSplitMix64Gamma = 0x9E3779B97F4A7C15ULL;

/// SplitMix64's output function: a bijective mix of one state value.
inline std::uint64_t splitmix64_mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// Value i of the SplitMix64 stream that starts at `key` (Steele, Lea and
/// Flood 2014), computed directly: the mix of key + (i + 1) * gamma.
/// Seeds Rng, and gives Dropout one independent value per element.
inline std::uint64_t splitmix64(std::uint64_t key, std::uint64_t i) {
  return splitmix64_mix(key + (i + 1) * kSplitMix64Gamma);
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) { this->seed(seed); }

  /// Restarts the stream from `seed` (expanded by splitmix64).
  void seed(std::uint64_t seed) {
    for (std::uint64_t i = 0; i < 4; ++i) state_[i] = splitmix64(seed, i);
  }

  /// The generator's whole state, to save and restore a stream exactly.
  using State = std::array<std::uint64_t, 4>;
  State state() const { return {state_[0], state_[1], state_[2], state_[3]}; }
  void set_state(const State& s) {
    for (int i = 0; i < 4; ++i) state_[i] = s[static_cast<std::size_t>(i)];
  }

  std::uint64_t next_u64() {
    const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  /// Uniform in [0, 1), 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  /// Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

  /// Uniform integer in [0, n), without modulo bias. n must be > 0.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t limit = -n % n;  // 2^64 mod n
    for (;;) {
      const std::uint64_t r = next_u64();
      if (r >= limit) return r % n;
    }
  }

  /// Shuffles [first, last) in place (Fisher-Yates).
  template <class It>
  void shuffle(It first, It last) {
    const auto n = static_cast<std::uint64_t>(last - first);
    for (std::uint64_t i = n; i > 1; --i) {
      using std::swap;
      swap(first[static_cast<std::ptrdiff_t>(i - 1)], first[static_cast<std::ptrdiff_t>(below(i))]);
    }
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t state_[4] = {};
};

}  // namespace loom
