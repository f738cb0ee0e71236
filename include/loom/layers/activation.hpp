#pragma once
/// \file activation.hpp
/// Activations as layers: `ActivationLayer` (Keras's `layers.Activation`,
/// any of "relu", "softmax", "linear"), `ReLU` and `Softmax` (Keras's
/// `layers.ReLU`, `layers.Softmax`). Each reports its own Keras class.
/// The same functions are also available as the `activation` option of
/// Dense and Conv2D, which apply them in the pass that adds the bias.
/// Softmax runs over the last axis.

#include <algorithm>
#include <memory>

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

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    y_.resize_for_overwrite(x.shape());
    std::copy(x.begin(), x.end(), y_.begin());
    detail::activate(activation_, y_.data(), rows(), x.shape().back());
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    dx_.resize_for_overwrite(dy.shape());
    std::copy(dy.begin(), dy.end(), dx_.begin());
    if (!this->skip_softmax_grad()) detail::activation_grad(activation_, y_.data(), dx_.data(), rows(), dy.shape().back());
    return dx_;
  }

 private:
  Index rows() const { return y_.size() / y_.shape().back(); }

  Activation activation_;
  Tensor<T> y_, dx_;
};

/// Keras's `layers.ReLU()`: max(x, 0).
template <class T>
class ReLU : public ActivationLayer<T> {
 public:
  static constexpr const char* class_name = "ReLU";
  ReLU() : ActivationLayer<T>(Activation::ReLU) {}
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "re_lu"; }
  Config config() const override { return {}; }
  static std::unique_ptr<Layer<T>> from_config(const Config&) { return std::make_unique<ReLU>(); }
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

LOOM_REGISTER(ActivationLayer)
LOOM_REGISTER(ReLU)
LOOM_REGISTER(Softmax)

}  // namespace loom
