#pragma once
/// \file losses.hpp
/// Cross-entropy losses with Keras's semantics: the mean over the batch of
/// -sum_k y_k log(clip(p_k, 1e-7, 1 - 1e-7)).
///
/// - `CategoricalCrossentropy`: targets are one-hot (or any distribution),
///   shape (N, K).
/// - `SparseCategoricalCrossentropy`: targets are integer labels in [0, K),
///   shape (N,) or (N, 1), stored in the tensor's scalar type.
///
/// After a softmax output, `gradient(..., wrt_logits = true)` gives the fused,
/// stable dL/d(logits) = (p - y) / N instead of dL/dp.

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "config.hpp"
#include "registry.hpp"
#include "tensor.hpp"

namespace loom {

/// How a loss expects its targets.
enum class Targets { OneHot, Sparse };

template <class T>
class Loss {
 public:
  using registry_base = Loss<T>;
  static constexpr const char* registry_kind = "loss";

  virtual ~Loss() = default;
  /// Keras's class name ("CategoricalCrossentropy").
  virtual std::string type() const = 0;
  virtual Targets targets() const = 0;
  /// Hyperparameters (none yet for the cross-entropies).
  virtual Config config() const { return {}; }

  /// Checks every target in `y` for a model with `classes` outputs: shape,
  /// and for integer labels their range. Throws ShapeError or FormatError.
  virtual void validate(const Tensor<T>& y, Index classes) const = 0;

  /// The class of sample `i` of `y` (argmax of a one-hot row, or the label).
  virtual Index label(const Tensor<T>& y, Index i) const = 0;

  /// Mean loss of the batch `p` (N, K) against `y`.
  double value(const Tensor<T>& p, const Tensor<T>& y) const {
    const Index n = p.dim(0), k = p.size() / n;
    double sum = 0;
    for (Index i = 0; i < n; ++i) sum += sample_loss(p.data() + i * k, y, i, k);
    return sum / static_cast<double>(n);
  }

  /// Mean loss, and writes its gradient into `grad` (resized to p's shape):
  /// dL/dp, or with `wrt_logits` dL/dz for p = softmax(z).
  double gradient(const Tensor<T>& p, const Tensor<T>& y, Tensor<T>& grad, bool wrt_logits) const {
    const Index n = p.dim(0), k = p.size() / n;
    grad.resize_for_overwrite(p.shape());
    const T inv_n = T(1) / static_cast<T>(n);
    double sum = 0;
    for (Index i = 0; i < n; ++i) {
      const T* pi = p.data() + i * k;
      T* gi = grad.data() + i * k;
      sum += sample_loss(pi, y, i, k);
      for (Index c = 0; c < k; ++c) {
        const T yc = target(y, i, c, k);
        if (wrt_logits) {
          gi[c] = (pi[c] - yc) * inv_n;
        } else {  // d/dp of -y log(clip(p)): zero where the clip is active
          gi[c] = (yc != T(0) && pi[c] > eps() && pi[c] < T(1) - eps()) ? -yc / pi[c] * inv_n : T(0);
        }
      }
    }
    return sum / static_cast<double>(n);
  }

 protected:
  static T eps() { return static_cast<T>(1e-7); }
  static double log_clipped(T p) {
    return std::log(std::clamp(static_cast<double>(p), 1e-7, 1.0 - 1e-7));
  }
  /// y's value for sample i, class c.
  virtual T target(const Tensor<T>& y, Index i, Index c, Index k) const = 0;
  virtual double sample_loss(const T* p, const Tensor<T>& y, Index i, Index k) const = 0;
};

template <class T>
class CategoricalCrossentropy : public Loss<T> {
 public:
  static constexpr const char* class_name = "CategoricalCrossentropy";
  static std::unique_ptr<Loss<T>> from_config(const Config&) { return std::make_unique<CategoricalCrossentropy>(); }
  std::string type() const override { return class_name; }
  Targets targets() const override { return Targets::OneHot; }

  void validate(const Tensor<T>& y, Index classes) const override {
    const bool labels = y.rank() == 1 || (y.rank() == 2 && y.dim(1) == 1 && classes != 1);
    if (labels) {
      throw ShapeError(detail::str("CategoricalCrossentropy expects one-hot targets of shape (N, ", classes,
                                   "), got integer labels of shape ", y.shape(),
                                   ": use SparseCategoricalCrossentropy for integer labels, or one-hot encode "
                                   "them with to_categorical"));
    }
    if (y.rank() != 2 || y.dim(1) != classes) {
      throw ShapeError(detail::str("CategoricalCrossentropy expects one-hot targets of shape (N, ", classes,
                                   ") to match the model's ", classes, " outputs, got ", y.shape()));
    }
  }

  Index label(const Tensor<T>& y, Index i) const override {
    const Index k = y.dim(1);
    const T* row = y.data() + i * k;
    return std::max_element(row, row + k) - row;
  }

 protected:
  T target(const Tensor<T>& y, Index i, Index c, Index k) const override { return y[i * k + c]; }
  double sample_loss(const T* p, const Tensor<T>& y, Index i, Index k) const override {
    double s = 0;
    const T* yi = y.data() + i * k;
    for (Index c = 0; c < k; ++c) {
      if (yi[c] != T(0)) s -= static_cast<double>(yi[c]) * this->log_clipped(p[c]);
    }
    return s;
  }
};

template <class T>
class SparseCategoricalCrossentropy : public Loss<T> {
 public:
  static constexpr const char* class_name = "SparseCategoricalCrossentropy";
  static std::unique_ptr<Loss<T>> from_config(const Config&) {
    return std::make_unique<SparseCategoricalCrossentropy>();
  }
  std::string type() const override { return class_name; }
  Targets targets() const override { return Targets::Sparse; }

  void validate(const Tensor<T>& y, Index classes) const override {
    if (!(y.rank() == 1 || (y.rank() == 2 && y.dim(1) == 1))) {
      throw ShapeError(detail::str("SparseCategoricalCrossentropy expects integer labels of shape (N,) or (N, 1), "
                                   "got ",
                                   y.shape(),
                                   (y.rank() == 2 && y.dim(1) == classes ? ": these look one-hot, use "
                                                                           "CategoricalCrossentropy"
                                                                         : "")));
    }
    for (Index i = 0; i < y.size(); ++i) {
      const T v = y[i];
      if (!(v >= 0 && v < static_cast<T>(classes)) || v != std::floor(v)) {
        throw FormatError(detail::str("SparseCategoricalCrossentropy: label ", v, " of sample ", i,
                                      " is not an integer in [0, ", classes, ")"));
      }
    }
  }

  Index label(const Tensor<T>& y, Index i) const override { return static_cast<Index>(y[i]); }

 protected:
  T target(const Tensor<T>& y, Index i, Index c, Index) const override {
    return static_cast<Index>(y[i]) == c ? T(1) : T(0);
  }
  double sample_loss(const T* p, const Tensor<T>& y, Index i, Index) const override {
    return -this->log_clipped(p[static_cast<Index>(y[i])]);
  }
};

LOOM_REGISTER(CategoricalCrossentropy, "categorical_crossentropy")
LOOM_REGISTER(SparseCategoricalCrossentropy, "sparse_categorical_crossentropy")

/// A loss by Keras's name: its class name ("CategoricalCrossentropy") or its
/// function's ("categorical_crossentropy"), or any loss registered with
/// LOOM_REGISTER. Throws ConfigError naming the losses there are.
template <class T>
std::unique_ptr<Loss<T>> make_loss(const std::string& name, const Config& config = {}) {
  return Registry<Loss<T>>::global().create(name, config);
}

}  // namespace loom
