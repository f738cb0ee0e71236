#pragma once
// Small helpers shared by the tests: files, errors, and the small models' data.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <string>
#include <vector>

#include <loom/error.hpp>
#include <loom/model/sequential.hpp>
#include <loom/random.hpp>
#include <loom/tensor.hpp>

namespace loom::testing {

/// A fresh temporary directory, removed at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "loom_test_XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  std::size_t count() const {
    return static_cast<std::size_t>(
        std::distance(std::filesystem::directory_iterator(path), std::filesystem::directory_iterator()));
  }
};

/// The message of the loom::Error that `f` throws, or "(no error)".
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

/// `n` random 8x8x1 images in [0, 1) into `x`, and labels 0-2 unrelated to them into `y`.
inline void random_data(Index n, Tensor<float>& x, Tensor<float>& y, std::uint64_t seed = 4) {
  Rng rng(seed);
  x = Tensor<float>(Shape{n, 8, 8, 1});
  y = Tensor<float>(Shape{n});
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (float& v : y) v = static_cast<float>(rng.below(3));
}

/// `n` random 28x28x1 images in [0, 1) into `x` (Fashion-MNIST's shape), labels i % 10 into `y`, from Rng(seed).
inline void random_images(Index n, std::uint64_t seed, Tensor<float>& x, Tensor<float>& y) {
  x = Tensor<float>(Shape{n, 28, 28, 1});
  y = Tensor<float>(Shape{n});
  Rng rng(seed);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (Index i = 0; i < n; ++i) y[i] = static_cast<float>(i % 10);
}

/// Every parameter of `m`, in order, in one vector.
inline std::vector<float> weights_of(Sequential<float>& m) {
  std::vector<float> w;
  for (const auto& p : m.parameters()) w.insert(w.end(), p.value->begin(), p.value->end());
  return w;
}

}  // namespace loom::testing
