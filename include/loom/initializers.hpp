#pragma once
/// \file initializers.hpp
/// Keras's initializers for the notebook's layers.

#include <cmath>

#include "random.hpp"
#include "tensor.hpp"

namespace loom {

/// Glorot (Xavier) uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)).
template <class T>
void glorot_uniform(Tensor<T>& w, Index fan_in, Index fan_out, Rng& rng) {
  const double limit = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  for (T& v : w) v = static_cast<T>(rng.uniform(-limit, limit));
}

}  // namespace loom
