#pragma once
/// \file enums.hpp
/// The small enums that layers and their kernels share (Mode, Activation,
/// Padding), with Keras's names for them. Kept apart from layers/layer.hpp
/// (which includes this) so that the kernels under kernels/ need no layer
/// header.

#include <string>

#include "config.hpp"

namespace loom {

/// Whether a forward pass is part of training (batch statistics, dropout on)
/// or inference (moving statistics, dropout off). Passed on every call.
enum class Mode { Train, Inference };

/// Activations that Dense and Conv2D apply to their output after the bias.
enum class Activation { None, ReLU, Softmax };

/// Keras's padding modes for convolution and pooling.
enum class Padding { Valid, Same };

inline const char* to_string(Activation a) {
  switch (a) {
    case Activation::ReLU: return "relu";
    case Activation::Softmax: return "softmax";
    default: return "linear";
  }
}
inline const char* to_string(Padding p) { return p == Padding::Same ? "same" : "valid"; }

/// "relu", "softmax" or "linear" (Keras's names); ConfigError for anything else.
inline Activation activation_from(const std::string& name) {
  if (name == "relu") return Activation::ReLU;
  if (name == "softmax") return Activation::Softmax;
  if (name != "linear") Config::bad("activation", name);
  return Activation::None;
}
/// "same" or "valid"; ConfigError for anything else.
inline Padding padding_from(const std::string& name) {
  if (name != "same" && name != "valid") Config::bad("padding", name);
  return name == "same" ? Padding::Same : Padding::Valid;
}

}  // namespace loom
