#pragma once
/// \file parameter.hpp
/// `Parameter<T>`: how a layer shows its parameters to the optimizers, the
/// model files and summary(). Layers hand them out (layers/layer.hpp
/// includes this); the optimizers take them without including any layer.

#include <string>

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
  bool trainable() const { return grad != nullptr; }
};

}  // namespace loom
