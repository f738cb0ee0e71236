#pragma once
/// \file parameter.hpp
/// `Parameter<T>`: how a layer shows its parameters to the optimizers, the
/// model files and summary(), with the regularizer of each (regularizers.hpp).
/// Layers hand them out (layers/layer.hpp includes this); the optimizers and
/// the training step take them without including any layer.

#include <string>
#include <vector>

#include "regularizers.hpp"
#include "tensor.hpp"

namespace loom {

/// A named view of a layer's parameter. Trainable parameters have a gradient;
/// buffers (BatchNormalization's moving statistics) have `grad == nullptr`:
/// they are saved and counted as non-trainable, never touched by an optimizer.
template <class T>
struct Parameter {
  std::string name;  ///< "<layer name>/<parameter name>", e.g. "conv2d/kernel"
  Tensor<T>* value = nullptr;
  Tensor<T>* grad = nullptr;
  /// Keras's weight regularizer (Dense's kernel_regularizer, ...): its
  /// penalty joins the loss of every training step (add_regularization).
  Regularizer regularizer = {};
  bool trainable() const { return grad != nullptr; }
};

/// A training step's regularization, after backward has written every
/// gradient: adds each regularized trainable parameter's penalty gradient
/// to its gradient and returns the sum of the penalties, which the step adds
/// to the loss it reports (as Keras's does). One pass over each regularized
/// parameter; allocates nothing.
template <class T>
double add_regularization(const std::vector<Parameter<T>>& params) {
  double penalty = 0;
  for (const auto& p : params) {
    if (p.trainable() && p.regularizer.active()) penalty += p.regularizer.add_gradient(*p.value, *p.grad);
  }
  return penalty;
}

/// The sum of the penalties of the regularized trainable parameters
/// (evaluate's loss includes it, as Keras's does).
template <class T>
double regularization_penalty(const std::vector<Parameter<T>>& params) {
  double penalty = 0;
  for (const auto& p : params) {
    if (p.trainable() && p.regularizer.active()) penalty += p.regularizer.penalty(*p.value);
  }
  return penalty;
}

}  // namespace loom
