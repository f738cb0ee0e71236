#pragma once
// A generic finite-difference gradient checker, in double.
//
// For a layer, the scalar checked is L = sum(forward(x, Train) .* R) with a
// fixed random R, so dL/dy = R. Central differences of L with respect to
// every input element and every trainable parameter element (or a random
// subset of at most `max_per_tensor` of them) are compared with what
// backward(R) returned. Layers that draw random numbers (Dropout) are
// reseeded before every forward pass so that each evaluation sees the same
// mask.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <loom/loom.hpp>

namespace loom::testing {

inline void random_fill(Tensor<double>& t, Rng& rng, double lo = -1, double hi = 1) {
  for (double& v : t) v = rng.uniform(lo, hi);
}

/// Indices to probe: all of them, or a fixed random subset.
inline std::vector<Index> probe_indices(Index size, Index max_per_tensor, Rng& rng) {
  std::vector<Index> idx;
  if (size <= max_per_tensor) {
    for (Index i = 0; i < size; ++i) idx.push_back(i);
  } else {
    for (Index i = 0; i < max_per_tensor; ++i) idx.push_back(static_cast<Index>(rng.below(static_cast<std::uint64_t>(size))));
  }
  return idx;
}

/// Compares an analytic gradient with central differences of `f` over `value`.
inline void compare(const std::string& what, Tensor<double>& value, const Tensor<double>& analytic,
                    const std::function<double()>& f, Index max_per_tensor, Rng& rng, double h = 1e-6,
                    double tol = 1e-6) {
  REQUIRE_MESSAGE(analytic.shape() == value.shape(), what << ": gradient shape " << analytic.shape()
                                                          << " differs from " << value.shape());
  int bad = 0;
  for (Index i : probe_indices(value.size(), max_per_tensor, rng)) {
    const double saved = value[i];
    value[i] = saved + h;
    const double plus = f();
    value[i] = saved - h;
    const double minus = f();
    value[i] = saved;
    const double numeric = (plus - minus) / (2 * h);
    const double a = analytic[i];
    const double err = std::fabs(a - numeric) / std::max(1.0, std::max(std::fabs(a), std::fabs(numeric)));
    if (err > tol && bad++ < 5) {
      FAIL_CHECK(what << "[" << i << "]: analytic " << a << " vs numeric " << numeric << " (error " << err << ")");
    }
  }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " gradient entries disagree");
}

/// Checks d/dx and d/dparams of `layer` (built) at input `x`, in training mode.
inline void check_layer_gradients(Layer<double>& layer, Tensor<double> x, std::uint64_t seed = 1,
                                  Index max_per_tensor = 80) {
  Rng rng(seed);
  const std::uint64_t layer_seed = 12345;
  layer.set_needs_input_grad(true);
  layer.seed(layer_seed);
  Tensor<double> r(layer.forward(x, Mode::Train).shape());
  random_fill(r, rng);

  auto loss = [&] {
    layer.seed(layer_seed);
    const Tensor<double>& y = layer.forward(x, Mode::Train);
    double s = 0;
    for (Index i = 0; i < y.size(); ++i) s += y[i] * r[i];
    return s;
  };
  loss();
  const Tensor<double> dx = layer.backward(r);  // copies: the next forward reuses the layer's buffers
  std::vector<Tensor<double>> grads;
  auto params = layer.parameters();
  for (auto& p : params) {
    if (p.trainable()) grads.push_back(*p.grad);
  }
  compare(layer.type() + " d/dx", x, dx, loss, max_per_tensor, rng);
  std::size_t g = 0;
  for (auto& p : params) {
    if (p.trainable()) compare(p.name, *p.value, grads[g++], loss, max_per_tensor, rng);
  }
}

}  // namespace loom::testing
