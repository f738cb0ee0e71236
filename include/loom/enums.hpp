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

/// Activations, as the `activation` of Dense and Conv2D (applied after the
/// bias) and as ActivationLayer. Their names are Keras's (to_string), but
/// for the two Keras has no name for: GELUTanh (PyTorch's
/// `GELU(approximate="tanh")`) and HardSigmoidKeras2 (what "hard_sigmoid"
/// means in a file tf.keras 2 wrote: clip(0.2 x + 0.5, 0, 1), where
/// Keras 3's is clip(x / 6 + 0.5, 0, 1)).
enum class Activation {
  None,        ///< "linear": the identity
  ReLU,        ///< max(x, 0)
  Softmax,     ///< over the last axis
  ReLU6,       ///< min(max(x, 0), 6)
  LeakyReLU,   ///< x > 0 ? x : 0.2 x (Keras's leaky_relu; the LeakyReLU layer takes any slope)
  ELU,         ///< x > 0 ? x : exp(x) - 1 (the ELU layer takes any alpha)
  SELU,        ///< 1.0507... * (x > 0 ? x : 1.6732... (exp(x) - 1))
  GELU,        ///< x Phi(x), with the exact normal CDF (erf)
  GELUTanh,    ///< GELU's tanh approximation
  SiLU,        ///< x sigmoid(x) (Keras's silu, alias swish)
  Sigmoid,     ///< 1 / (1 + exp(-x))
  HardSigmoid, ///< Keras 3: relu6(x + 3) / 6
  HardSigmoidKeras2,  ///< tf.keras 2: clip(0.2 x + 0.5, 0, 1)
  Tanh,        ///< tanh(x)
  Softplus,    ///< log(1 + exp(x))
  Softsign,    ///< x / (1 + |x|)
};

/// Keras's padding modes for convolution and pooling.
enum class Padding { Valid, Same };

/// A model's precision policy, as Keras names its dtype policies.
/// MixedBFloat16 ("mixed_bfloat16"): the products of the convolutions and
/// Dense layers take bfloat16 operands (rounded to nearest even) and sum in
/// float32; weights, optimizer state, BatchNormalization's statistics and
/// everything else stay float32. It needs AVX512_BF16 (see
/// detail::bf16_supported) and is refused where it is missing.
enum class Precision { Float32, MixedBFloat16 };

namespace detail {
struct ActivationName {
  Activation activation;
  const char* name;
};
/// Every activation under its name (the first of a kind is the one written).
inline constexpr ActivationName kActivationNames[] = {
    {Activation::None, "linear"},          {Activation::ReLU, "relu"},
    {Activation::Softmax, "softmax"},      {Activation::ReLU6, "relu6"},
    {Activation::LeakyReLU, "leaky_relu"}, {Activation::ELU, "elu"},
    {Activation::SELU, "selu"},            {Activation::GELU, "gelu"},
    {Activation::GELUTanh, "gelu_tanh"},   {Activation::SiLU, "silu"},
    {Activation::SiLU, "swish"},           {Activation::Sigmoid, "sigmoid"},
    {Activation::HardSigmoid, "hard_sigmoid"}, {Activation::HardSigmoidKeras2, "hard_sigmoid_keras2"},
    {Activation::Tanh, "tanh"},            {Activation::Softplus, "softplus"},
    {Activation::Softsign, "softsign"},
};
}  // namespace detail

inline const char* to_string(Activation a) {
  for (const auto& n : detail::kActivationNames) {
    if (n.activation == a) return n.name;
  }
  return "linear";
}
inline const char* to_string(Padding p) { return p == Padding::Same ? "same" : "valid"; }
inline const char* to_string(Precision p) { return p == Precision::MixedBFloat16 ? "mixed_bfloat16" : "float32"; }

/// An activation by its name ("relu", "gelu", "swish", ...; see
/// kActivationNames); ConfigError for anything else.
inline Activation activation_from(const std::string& name) {
  for (const auto& n : detail::kActivationNames) {
    if (name == n.name) return n.activation;
  }
  Config::bad("activation", name);
}
/// Whether an activation's derivative needs its input, not only its output
/// (the layers that apply it then keep the input in training).
inline bool activation_needs_input(Activation a) {
  return a == Activation::GELU || a == Activation::GELUTanh || a == Activation::SiLU;
}
/// "same" or "valid"; ConfigError for anything else.
inline Padding padding_from(const std::string& name) {
  if (name != "same" && name != "valid") Config::bad("padding", name);
  return name == "same" ? Padding::Same : Padding::Valid;
}

/// "float32" or "mixed_bfloat16"; ConfigError for anything else.
inline Precision precision_from(const std::string& name) {
  if (name != "float32" && name != "mixed_bfloat16") Config::bad("precision policy", name);
  return name == "mixed_bfloat16" ? Precision::MixedBFloat16 : Precision::Float32;
}

}  // namespace loom
