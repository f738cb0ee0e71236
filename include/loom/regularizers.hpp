#pragma once
/// \file regularizers.hpp
/// `Regularizer`: Keras's weight regularizers (keras.regularizers L1, L2 and
/// L1L2) as one value, the penalty
///
///     l1 * sum(|w|) + l2 * sum(w^2)
///
/// that training adds to the loss for a parameter w. As in Keras, L2 has no
/// factor 1/2: its gradient is 2 * l2 * w (and L1's l1 * sign(w), 0 at 0).
///
///     Dense<float>(DenseOptions(10).kernel_regularizer(L2(1e-4)).bias_regularizer(L1(1e-5)))
///
/// A layer takes them as options and shows each on its Parameter
/// (parameter.hpp); every training step adds the penalties to the loss it
/// reports and their gradients to the parameters' gradients
/// (add_regularization), and evaluate adds the penalties to its loss, as
/// Keras's train and test steps do.

#include <cmath>
#include <string>
#include <vector>

#include "config.hpp"
#include "error.hpp"
#include "tensor.hpp"

namespace loom {

class Regularizer {
 public:
  /// No penalty.
  Regularizer() = default;
  /// l1 * sum(|w|) + l2 * sum(w^2); both finite and >= 0 (ConfigError otherwise).
  Regularizer(double l1, double l2) : l1_(l1), l2_(l2) {
    if (!(l1 >= 0 && std::isfinite(l1) && l2 >= 0 && std::isfinite(l2))) {
      throw ConfigError(detail::str("regularizer: l1 and l2 must be finite and >= 0, got l1=", l1, " l2=", l2));
    }
  }

  double l1() const { return l1_; }
  double l2() const { return l2_; }
  /// Whether it adds anything (a zero L1L2 is no regularizer).
  bool active() const { return l1_ != 0 || l2_ != 0; }
  bool operator==(const Regularizer& o) const { return l1_ == o.l1_ && l2_ == o.l2_; }
  bool operator!=(const Regularizer& o) const { return !(*this == o); }

  /// The penalty of `w`, summed in double.
  template <class T>
  double penalty(const Tensor<T>& w) const {
    double abs_sum = 0, square_sum = 0;
    for (const T v : w) {
      abs_sum += std::fabs(static_cast<double>(v));
      square_sum += static_cast<double>(v) * static_cast<double>(v);
    }
    return l1_ * abs_sum + l2_ * square_sum;
  }

  /// grad += the penalty's gradient at `w`, in one pass that also returns the penalty.
  template <class T>
  double add_gradient(const Tensor<T>& w, Tensor<T>& grad) const {
    const T l1 = static_cast<T>(l1_), two_l2 = static_cast<T>(2 * l2_);
    double abs_sum = 0, square_sum = 0;
    const T* v = w.data();
    T* g = grad.data();
    for (Index i = 0, n = w.size(); i < n; ++i) {
      const T x = v[i];
      abs_sum += std::fabs(static_cast<double>(x));
      square_sum += static_cast<double>(x) * static_cast<double>(x);
      g[i] += two_l2 * x + (x > 0 ? l1 : x < 0 ? -l1 : T(0));
    }
    return l1_ * abs_sum + l2_ * square_sum;
  }

  /// "L2(0.0001)", "L1L2(0.001, 0.0001)", "none": for messages and summaries.
  std::string str() const {
    if (!active()) return "none";
    if (l2_ == 0) return detail::str("L1(", l1_, ")");
    if (l1_ == 0) return detail::str("L2(", l2_, ")");
    return detail::str("L1L2(", l1_, ", ", l2_, ")");
  }

 private:
  double l1_ = 0, l2_ = 0;
};

/// Keras's `keras.regularizers.L1(l1=0.01)`.
inline Regularizer L1(double l1 = 0.01) { return Regularizer(l1, 0); }
/// Keras's `keras.regularizers.L2(l2=0.01)`: l2 * sum(w^2), no factor 1/2.
inline Regularizer L2(double l2 = 0.01) { return Regularizer(0, l2); }
/// Keras's `keras.regularizers.L1L2(l1=0.0, l2=0.0)`.
inline Regularizer L1L2(double l1 = 0, double l2 = 0) { return Regularizer(l1, l2); }

/// A layer's regularizer in its Config: "l1,l2" under `key` (each exact),
/// written only when it is active, so that a config without one is as before.
inline void set_regularizer(Config& c, const std::string& key, const Regularizer& r) {
  if (r.active()) c.set_reals(key, {r.l1(), r.l2()});
}
/// The regularizer under `key` (none when absent); ConfigError for a value
/// that is not two non-negative reals.
inline Regularizer regularizer_from(const Config& c, const std::string& key) {
  if (!c.has(key)) return {};
  const std::vector<double> v = c.reals(key);
  if (v.size() != 2 || !(v[0] >= 0 && std::isfinite(v[0]) && v[1] >= 0 && std::isfinite(v[1]))) {
    Config::bad(key, c.text(key));
  }
  return Regularizer(v[0], v[1]);
}

}  // namespace loom
