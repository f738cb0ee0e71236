#pragma once
/// \file identity.hpp
/// Identity, Keras's layer of that name: y = x.

#include <memory>
#include <string>

#include "layer.hpp"

namespace loom {

/// Keras's Identity: returns its input itself (no copy) and, in backward,
/// the output's gradient itself, as Dropout does in inference. Any input
/// shape.
template <class T>
class Identity : public Layer<T> {
 public:
  static constexpr const char* class_name = "Identity";
  static std::unique_ptr<Layer<T>> from_config(const Config&) { return std::make_unique<Identity>(); }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "identity"; }
  /// The identity in inference, and a factor of 1 in training.
  FusionTraits fusion_traits() const override { return {/*identity_in_inference=*/true, /*scales_elementwise=*/true}; }

 protected:
  Shape build_impl(const Shape& in, Rng&) override { return in; }
  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override { return x; }
  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    return this->needs_input_grad() ? dy : this->empty_;
  }
};

LOOM_REGISTER(Identity)

}  // namespace loom
