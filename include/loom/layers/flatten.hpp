#pragma once
/// \file flatten.hpp
/// `Flatten`: (N, h, w, c) -> (N, h*w*c) in row-major (h, w, c) order, as
/// Keras flattens channels-last data.

#include <algorithm>
#include <memory>

#include "layer.hpp"

namespace loom {

template <class T>
class Flatten : public Layer<T> {
 public:
  static constexpr const char* class_name = "Flatten";
  static std::unique_ptr<Layer<T>> from_config(const Config&) { return std::make_unique<Flatten>(); }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "flatten"; }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    if (in.rank() < 1) this->reject_input(in, "of rank >= 1");
    return Shape{in.size()};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    y_.resize_for_overwrite(Shape{x.dim(0), this->output_shape()[0]});
    std::copy(x.begin(), x.end(), y_.begin());
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    dx_.resize_for_overwrite(this->input_shape().with_batch(dy.dim(0)));
    std::copy(dy.begin(), dy.end(), dx_.begin());
    return dx_;
  }

 private:
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(Flatten)

}  // namespace loom
