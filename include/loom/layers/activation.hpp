#pragma once
/// \file activation.hpp
/// Activations as layers, each under its Keras class:
///
/// - `ActivationLayer` (Keras's `layers.Activation`): any loom Activation
///   ("relu", "gelu", "swish", ...), the same functions Dense and Conv2D
///   apply as their `activation` option;
/// - `ReLU` (with Keras's max_value, negative_slope and threshold),
///   `Softmax` (over the last axis);
/// - `LeakyReLU` and `ELU`, with a slope or alpha of one's own;
/// - `PReLU`, whose negative slopes are learned.

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include "../kernels/activation.hpp"
#include "layer.hpp"

namespace loom {

/// Applies one Activation as a layer of its own. Output shape = input shape.
template <class T>
class ActivationLayer : public Layer<T> {
 public:
  static constexpr const char* class_name = "Activation";
  explicit ActivationLayer(Activation a) : activation_(a) {}

  std::string type() const override { return class_name; }
  std::string base_name() const override { return "activation"; }
  Activation activation() const override { return activation_; }
  Config config() const override { return Config().set("activation", to_string(activation_)); }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<ActivationLayer>(activation_from(c.text("activation")));
  }

 protected:
  Shape build_impl(const Shape& input, Rng&) override {
    if (input.rank() < 1) this->reject_input(input, "of rank >= 1");
    return input;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    if (mode == Mode::Train && activation_needs_input(activation_)) {
      z_.resize_for_overwrite(x.shape());
      std::copy(x.begin(), x.end(), z_.begin());
    }
    y_.resize_for_overwrite(x.shape());
    std::copy(x.begin(), x.end(), y_.begin());
    detail::activate(activation_, y_.data(), rows(), x.shape().back());
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    dx_.resize_for_overwrite(dy.shape());
    std::copy(dy.begin(), dy.end(), dx_.begin());
    if (!this->skip_softmax_grad()) {
      detail::activation_grad(activation_, y_.data(), dx_.data(), rows(), dy.shape().back(),
                              activation_needs_input(activation_) ? z_.data() : nullptr);
    }
    return dx_;
  }

 private:
  Index rows() const { return y_.size() / y_.shape().back(); }

  Activation activation_;
  Tensor<T> y_, z_, dx_;  // z_: the input, kept in training when the derivative needs it
};

/// Keras's `layers.Softmax()` over the last axis.
template <class T>
class Softmax : public ActivationLayer<T> {
 public:
  static constexpr const char* class_name = "Softmax";
  Softmax() : ActivationLayer<T>(Activation::Softmax) {}
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "softmax"; }
  Config config() const override { return {}; }
  static std::unique_ptr<Layer<T>> from_config(const Config&) { return std::make_unique<Softmax>(); }
};

namespace detail {

/// A layer that applies, element by element, a function with parameters of
/// its own: `Derived` gives `value(z)` and `derivative(z)`, its derivative
/// from the input (kept in training). Output shape = input shape.
template <class T, class Derived>
class Elementwise : public Layer<T> {
 protected:
  Shape build_impl(const Shape& input, Rng&) override {
    if (input.rank() < 1) this->reject_input(input, "of rank >= 1");
    return input;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    const Derived& f = static_cast<const Derived&>(*this);
    if (mode == Mode::Train) {
      x_.resize_for_overwrite(x.shape());
      std::copy(x.begin(), x.end(), x_.begin());
    }
    y_.resize_for_overwrite(x.shape());
    const T* in = x.data();
    T* out = y_.data();
    for (Index i = 0, n = x.size(); i < n; ++i) out[i] = f.value(in[i]);
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    const Derived& f = static_cast<const Derived&>(*this);
    dx_.resize_for_overwrite(dy.shape());
    const T* x = x_.data();
    for (Index i = 0, n = dy.size(); i < n; ++i) dx_[i] = dy[i] * f.derivative(x[i]);
    return dx_;
  }

 private:
  Tensor<T> x_, y_, dx_;
};

}  // namespace detail

/// Keras's `layers.ReLU(max_value=None, negative_slope=0.0, threshold=0.0)`
/// (each >= 0, as Keras requires): x above the threshold (else 0), clipped to [0, max_value] when there is
/// one, minus negative_slope * max(threshold - x, 0). With its defaults it
/// is max(x, 0), the Activation ReLU (and the fusions that know it).
template <class T>
class ReLU : public ActivationLayer<T> {
 public:
  static constexpr const char* class_name = "ReLU";
  explicit ReLU(std::optional<double> max_value = std::nullopt, double negative_slope = 0, double threshold = 0)
      : ActivationLayer<T>(Activation::ReLU), max_(max_value), slope_(negative_slope), threshold_(threshold) {
    if (max_ && !(*max_ >= 0)) throw ConfigError(detail::str("ReLU: max_value must be >= 0, got ", *max_));
    if (!(slope_ >= 0)) throw ConfigError(detail::str("ReLU: negative_slope must be >= 0, got ", slope_));
    if (!(threshold_ >= 0 && std::isfinite(threshold_))) {
      throw ConfigError(detail::str("ReLU: threshold must be finite and >= 0, got ", threshold_));
    }
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "re_lu"; }
  /// max(x, 0): none of max_value, negative_slope, threshold.
  bool plain() const { return !max_ && slope_ == 0 && threshold_ == 0; }
  Activation activation() const override { return plain() ? Activation::ReLU : Activation::None; }
  std::optional<double> max_value() const { return max_; }
  double negative_slope() const { return slope_; }
  double threshold() const { return threshold_; }

  Config config() const override {
    if (plain()) return {};
    Config c;
    if (max_) c.set("max_value", *max_);
    return c.set("negative_slope", slope_).set("threshold", threshold_);
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    std::optional<double> max_value;
    if (c.has("max_value")) max_value = c.real("max_value");
    return std::make_unique<ReLU>(max_value, c.real("negative_slope", 0), c.real("threshold", 0));
  }

 protected:
  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    if (plain()) return ActivationLayer<T>::forward_impl(x, mode);
    if (mode == Mode::Train) {
      x_.resize_for_overwrite(x.shape());
      std::copy(x.begin(), x.end(), x_.begin());
    }
    y_.resize_for_overwrite(x.shape());
    const T th = T(threshold_), slope = T(slope_);
    for (Index i = 0, n = x.size(); i < n; ++i) {
      const T z = x[i];
      T p = z > th ? z : T(0);
      if (max_) p = std::min(std::max(p, T(0)), T(*max_));
      y_[i] = p - slope * std::max(th - z, T(0));
    }
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (plain()) return ActivationLayer<T>::backward_impl(dy);
    if (!this->needs_input_grad()) return this->empty_;
    dx_.resize_for_overwrite(dy.shape());
    const T th = T(threshold_), slope = T(slope_);
    for (Index i = 0, n = dy.size(); i < n; ++i) {
      const T z = x_[i];
      T d = z > th ? T(1) : T(0);  // the positive part, unless clipped
      if (max_ && !(z > T(0) && z < T(*max_))) d = T(0);
      if (z < th) d += slope;
      dx_[i] = dy[i] * d;
    }
    return dx_;
  }

 private:
  std::optional<double> max_;
  double slope_, threshold_;
  Tensor<T> x_, y_, dx_;
};

/// Keras's `layers.LeakyReLU(negative_slope=0.3)`: x > 0 ? x : slope x.
template <class T>
class LeakyReLU : public detail::Elementwise<T, LeakyReLU<T>> {
 public:
  static constexpr const char* class_name = "LeakyReLU";
  explicit LeakyReLU(double negative_slope = 0.3) : slope_(negative_slope) {
    if (!(slope_ >= 0)) throw ConfigError(detail::str("LeakyReLU: negative_slope must be >= 0, got ", slope_));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "leaky_re_lu"; }
  double negative_slope() const { return slope_; }
  Config config() const override { return Config().set("negative_slope", slope_); }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<LeakyReLU>(c.real("negative_slope"));
  }

  T value(T z) const { return z > T(0) ? z : T(slope_) * z; }
  T derivative(T z) const { return z > T(0) ? T(1) : T(slope_); }

 private:
  double slope_;
};

/// Keras's `layers.ELU(alpha=1.0)`: x > 0 ? x : alpha (exp(x) - 1).
template <class T>
class ELU : public detail::Elementwise<T, ELU<T>> {
 public:
  static constexpr const char* class_name = "ELU";
  explicit ELU(double alpha = 1.0) : alpha_(alpha) {
    if (!std::isfinite(alpha_)) throw ConfigError(detail::str("ELU: alpha must be finite, got ", alpha_));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "elu"; }
  double alpha() const { return alpha_; }
  Config config() const override { return Config().set("alpha", alpha_); }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) { return std::make_unique<ELU>(c.real("alpha")); }

  T value(T z) const { return z > T(0) ? z : T(alpha_) * std::expm1(z); }
  T derivative(T z) const { return z > T(0) ? T(1) : T(alpha_) * std::exp(z); }

 private:
  double alpha_;
};

/// Keras's `layers.PReLU(alpha_initializer="zeros", shared_axes=None)`:
/// x > 0 ? x : alpha x, with alpha a weight of the input's per-sample shape,
/// of size 1 along each of the `shared_axes` (Keras's numbering: 1 is the
/// first axis after the batch), one slope shared along them. Its weight,
/// "alpha", starts at `initial_alpha` (Keras's Zeros: 0; Constant(a): a).
template <class T>
class PReLU : public Layer<T> {
 public:
  static constexpr const char* class_name = "PReLU";
  explicit PReLU(std::vector<Index> shared_axes = {}, double initial_alpha = 0)
      : shared_(std::move(shared_axes)), initial_(initial_alpha) {
    std::sort(shared_.begin(), shared_.end());
    for (std::size_t i = 0; i < shared_.size(); ++i) {
      if (shared_[i] < 1 || (i > 0 && shared_[i] == shared_[i - 1])) {
        throw ConfigError(detail::str("PReLU: shared_axes must be distinct axes >= 1 (1 is the first after the batch), got ",
                                      shared_[i]));
      }
    }
    if (!std::isfinite(initial_)) throw ConfigError(detail::str("PReLU: initial alpha must be finite, got ", initial_));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "p_re_lu"; }
  const std::vector<Index>& shared_axes() const { return shared_; }
  Config config() const override {
    Config c;
    if (!shared_.empty()) c.set_integers("shared_axes", shared_);
    if (initial_ != 0) c.set("initial_alpha", initial_);
    return c;
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<PReLU>(c.has("shared_axes") ? c.integers("shared_axes") : std::vector<Index>{},
                                   c.real("initial_alpha", 0));
  }
  std::vector<Parameter<T>> parameters() override { return {{this->name() + "/alpha", &alpha_, &dalpha_}}; }

 protected:
  Shape build_impl(const Shape& input, Rng&) override {
    if (input.rank() < 1) this->reject_input(input, "of rank >= 1");
    Shape dims = input;
    for (Index a : shared_) {
      if (a > input.rank()) this->reject_input(input, detail::str("with an axis ", a, " to share (shared_axes)"));
      dims[static_cast<int>(a - 1)] = 1;
    }
    alpha_ = this->new_parameter(dims);
    std::fill(alpha_.begin(), alpha_.end(), T(initial_));
    dalpha_ = Tensor<T>(alpha_.shape());
    // The alpha of each element of a sample: its index with the shared axes at 0.
    const Index per_sample = input.size();
    index_.assign(static_cast<std::size_t>(per_sample), 0);
    for (Index i = 0; i < per_sample; ++i) {
      Index rest = i, a = 0, stride = 1;
      for (int axis = input.rank() - 1; axis >= 0; --axis) {
        const Index coordinate = rest % input[axis];
        rest /= input[axis];
        a += (dims[axis] == 1 ? 0 : coordinate) * stride;
        stride *= dims[axis];
      }
      index_[static_cast<std::size_t>(i)] = a;
    }
    return input;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    if (mode == Mode::Train) {
      x_.resize_for_overwrite(x.shape());
      std::copy(x.begin(), x.end(), x_.begin());
    }
    y_.resize_for_overwrite(x.shape());
    const Index per_sample = static_cast<Index>(index_.size()), n = x.dim(0);
    for (Index b = 0; b < n; ++b) {
      const T* in = x.data() + b * per_sample;
      T* out = y_.data() + b * per_sample;
      for (Index i = 0; i < per_sample; ++i) {
        out[i] = in[i] > T(0) ? in[i] : alpha_[index_[static_cast<std::size_t>(i)]] * in[i];
      }
    }
    return y_;
  }

  // Keras's relu(x) - alpha relu(-x): at x = 0 neither part passes a gradient.
  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    const Index per_sample = static_cast<Index>(index_.size()), n = dy.dim(0);
    const bool input_grad = this->needs_input_grad();
    if (input_grad) dx_.resize_for_overwrite(dy.shape());
    std::fill(dalpha_.begin(), dalpha_.end(), T(0));
    for (Index b = 0; b < n; ++b) {
      const T* x = x_.data() + b * per_sample;
      const T* g = dy.data() + b * per_sample;
      for (Index i = 0; i < per_sample; ++i) {
        const Index a = index_[static_cast<std::size_t>(i)];
        if (x[i] < T(0)) dalpha_[a] += g[i] * x[i];
        if (input_grad) dx_[b * per_sample + i] = x[i] > T(0) ? g[i] : x[i] < T(0) ? alpha_[a] * g[i] : T(0);
      }
    }
    return input_grad ? dx_ : this->empty_;
  }

 private:
  std::vector<Index> shared_;
  double initial_;
  Tensor<T> alpha_, dalpha_;
  std::vector<Index> index_;  // per element of a sample: its alpha
  Tensor<T> x_, y_, dx_;
};

LOOM_REGISTER(ActivationLayer)
LOOM_REGISTER(ReLU)
LOOM_REGISTER(Softmax)
LOOM_REGISTER(LeakyReLU)
LOOM_REGISTER(ELU)
LOOM_REGISTER(PReLU)

}  // namespace loom
