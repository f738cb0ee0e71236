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
///
/// With `from_logits` (Keras's `from_logits=True`) the model's outputs are
/// logits z: the loss is -sum_k y_k log softmax(z)_k, computed stably through
/// log-sum-exp and without clipping, as TensorFlow's
/// softmax_cross_entropy_with_logits does.
///
/// With `label_smoothing` s the targets become y (1 - s) + s / K, as Keras's
/// CategoricalCrossentropy(label_smoothing=s) and PyTorch's
/// CrossEntropyLoss(label_smoothing=s) take them. loom offers it on the
/// sparse loss too (PyTorch's takes integer labels; Keras 3's sparse loss
/// has no such argument).

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

/// A loss: its value and gradient for a batch of predictions. `predict`-side
/// work (`evaluate`, the validation of `fit`) calls `value` and `label` from
/// several threads at once on the same object, so a subclass's const
/// functions must not change its state (loom's own losses keep none).
template <class T>
class Loss {
 public:
  using registry_base = Loss<T>;
  static constexpr const char* registry_kind = "loss";

  virtual ~Loss() = default;
  /// Keras's class name ("CategoricalCrossentropy").
  virtual std::string type() const = 0;
  virtual Targets targets() const = 0;
  /// Hyperparameters: `from_logits` and `label_smoothing`, each written only when on.
  virtual Config config() const {
    Config c;
    if (from_logits_) c.set("from_logits", true);
    if (smoothing_ != 0) c.set("label_smoothing", smoothing_);
    return c;
  }

  /// Whether the model's outputs are logits rather than probabilities.
  bool from_logits() const { return from_logits_; }
  void set_from_logits(bool on) { from_logits_ = on; }

  /// Label smoothing s in [0, 1]: the loss is taken against the targets
  /// y (1 - s) + s / K, K the number of classes (Keras's `label_smoothing`).
  double label_smoothing() const { return smoothing_; }
  void set_label_smoothing(double s) {
    if (!(s >= 0 && s <= 1)) throw ConfigError(detail::str(type(), ": label_smoothing must be in [0, 1], got ", s));
    smoothing_ = s;
  }

  /// Checks every target in `y` for a model with `classes` outputs: shape,
  /// and for integer labels their range. Throws ShapeError or FormatError.
  virtual void validate(const Tensor<T>& y, Index classes) const = 0;

  /// The class of sample `i` of `y` (argmax of a one-hot row, or the label).
  virtual Index label(const Tensor<T>& y, Index i) const = 0;

  /// Mean loss of the batch `p` (N, K) against `y`.
  double value(const Tensor<T>& p, const Tensor<T>& y) const {
    const Index n = p.dim(0), k = p.size() / n;
    double sum = 0;
    for (Index i = 0; i < n; ++i) sum += from_logits_ ? logits_loss(p.data() + i * k, y, i, k, nullptr, 0) : probs_loss(p.data() + i * k, y, i, k);
    return sum / static_cast<double>(n);
  }

  /// Mean loss, and writes its gradient into `grad` (resized to p's shape):
  /// dL/dp, or with `wrt_logits` dL/dz for p = softmax(z).
  double gradient(const Tensor<T>& p, const Tensor<T>& y, Tensor<T>& grad, bool wrt_logits) const {
    const Index n = p.dim(0), k = p.size() / n;
    grad.resize_for_overwrite(p.shape());
    const T inv_n = T(1) / static_cast<T>(n);
    double sum = 0;
    if (from_logits_) {
      for (Index i = 0; i < n; ++i) sum += logits_loss(p.data() + i * k, y, i, k, grad.data() + i * k, inv_n);
      return sum / static_cast<double>(n);
    }
    for (Index i = 0; i < n; ++i) {
      const T* pi = p.data() + i * k;
      T* gi = grad.data() + i * k;
      sum += probs_loss(pi, y, i, k);
      for (Index c = 0; c < k; ++c) {
        const T yc = smoothed(y, i, c, k);
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
  /// -sum_c y_c log softmax(z)_c for one row of logits, through log-sum-exp;
  /// with `g`, also writes its gradient scaled by `scale`:
  /// (softmax(z) * sum(y) - y) * scale.
  double logits_loss(const T* z, const Tensor<T>& y, Index i, Index k, T* g, T scale) const {
    double top = z[0];
    for (Index c = 1; c < k; ++c) top = std::max(top, static_cast<double>(z[c]));
    double total = 0;
    for (Index c = 0; c < k; ++c) total += std::exp(static_cast<double>(z[c]) - top);
    const double lse = top + std::log(total);
    double loss = 0, ysum = 0;
    for (Index c = 0; c < k; ++c) {
      const double yc = static_cast<double>(smoothed(y, i, c, k));
      loss += yc * (lse - static_cast<double>(z[c]));
      ysum += yc;
    }
    if (g) {
      for (Index c = 0; c < k; ++c) {
        const double pc = std::exp(static_cast<double>(z[c]) - lse);
        g[c] = static_cast<T>((pc * ysum - static_cast<double>(smoothed(y, i, c, k))) * static_cast<double>(scale));
      }
    }
    return loss;
  }

  /// y's value for sample i, class c, after label smoothing.
  T smoothed(const Tensor<T>& y, Index i, Index c, Index k) const {
    const T t = target(y, i, c, k);
    if (smoothing_ == 0) return t;
    return static_cast<T>(static_cast<double>(t) * (1 - smoothing_) + smoothing_ / static_cast<double>(k));
  }
  /// -sum_c y_c log(clip(p_c)) of one sample, with the smoothed targets when smoothing.
  double probs_loss(const T* p, const Tensor<T>& y, Index i, Index k) const {
    if (smoothing_ == 0) return sample_loss(p, y, i, k);
    double s = 0;
    for (Index c = 0; c < k; ++c) s -= static_cast<double>(smoothed(y, i, c, k)) * log_clipped(p[c]);
    return s;
  }

  static T eps() { return static_cast<T>(1e-7); }
  static double log_clipped(T p) {
    return std::log(std::clamp(static_cast<double>(p), 1e-7, 1.0 - 1e-7));
  }
  /// y's value for sample i, class c.
  virtual T target(const Tensor<T>& y, Index i, Index c, Index k) const = 0;
  virtual double sample_loss(const T* p, const Tensor<T>& y, Index i, Index k) const = 0;

 private:
  bool from_logits_ = false;
  double smoothing_ = 0;
};

namespace detail {
/// A loss of class L made from its config (`from_logits`, `label_smoothing`).
template <class L, class T>
std::unique_ptr<Loss<T>> loss_from_config(const Config& c) {
  auto loss = std::make_unique<L>();
  loss->set_from_logits(c.flag("from_logits", false));
  loss->set_label_smoothing(c.real("label_smoothing", 0.0));
  return loss;
}
}  // namespace detail

template <class T>
class CategoricalCrossentropy : public Loss<T> {
 public:
  static constexpr const char* class_name = "CategoricalCrossentropy";
  static std::unique_ptr<Loss<T>> from_config(const Config& c) {
    return detail::loss_from_config<CategoricalCrossentropy, T>(c);
  }
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
  static std::unique_ptr<Loss<T>> from_config(const Config& c) {
    return detail::loss_from_config<SparseCategoricalCrossentropy, T>(c);
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
