#pragma once
/// \file activation.hpp
/// `ReLU` and `Softmax` as layers (Keras's `layers.ReLU`, `layers.Softmax`).
/// The same functions are also available as the `activation` option of
/// Dense and Conv2D, which apply them in the pass that adds the bias.
/// Softmax runs over the last axis.

#include <algorithm>

#include "detail/activation.hpp"
#include "layer.hpp"

namespace loom {

/// Applies one Activation as a layer of its own. Output shape = input shape.
template <class T>
class ActivationLayer : public Layer<T> {
 public:
  explicit ActivationLayer(Activation a) : activation_(a) {}

  std::string type() const override { return activation_ == Activation::Softmax ? "Softmax" : "ReLU"; }
  std::string base_name() const override { return activation_ == Activation::Softmax ? "softmax" : "re_lu"; }
  Activation activation() const override { return activation_; }

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

template <class T>
class ReLU : public ActivationLayer<T> {
 public:
  ReLU() : ActivationLayer<T>(Activation::ReLU) {}
};

template <class T>
class Softmax : public ActivationLayer<T> {
 public:
  Softmax() : ActivationLayer<T>(Activation::Softmax) {}
};

}  // namespace loom
