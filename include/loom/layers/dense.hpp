#pragma once
/// \file dense.hpp
/// `Dense`: y = f(x * W + b) with Keras's kernel layout W [in, units].
/// Takes flat input (N, features); put a Flatten before it for images.

#include <algorithm>

#include "../initializers.hpp"
#include "detail/activation.hpp"
#include "layer.hpp"

namespace loom {

/// Keras's Dense arguments and defaults.
class DenseOptions {
 public:
  explicit DenseOptions(Index units) : units_(units) {}
  LOOM_OPTION(Index, units, 1)
  LOOM_OPTION(Activation, activation, Activation::None)
  LOOM_OPTION(bool, use_bias, true)
};

template <class T>
class Dense : public Layer<T> {
 public:
  explicit Dense(const DenseOptions& options) : opt_(options) {
    if (opt_.units() < 1) throw ConfigError(detail::str("Dense: units must be >= 1, got ", opt_.units()));
  }

  std::string type() const override { return "Dense"; }
  std::string base_name() const override { return "dense"; }
  Activation activation() const override { return opt_.activation(); }
  const DenseOptions& options() const { return opt_; }

  std::vector<std::pair<std::string, std::string>> config() const override {
    return {{"units", std::to_string(opt_.units())},
            {"activation", to_string(opt_.activation())},
            {"use_bias", opt_.use_bias() ? "1" : "0"}};
  }

  std::vector<Parameter<T>> parameters() override {
    std::vector<Parameter<T>> p{{this->name() + "/kernel", &kernel_, &dkernel_}};
    if (opt_.use_bias()) p.push_back({this->name() + "/bias", &bias_, &dbias_});
    return p;
  }

 protected:
  Shape build_impl(const Shape& in, Rng& rng) override {
    if (in.rank() != 1) this->reject_input(in, "(None, features): add a Flatten layer before Dense");
    kernel_ = Tensor<T>(Shape{in[0], opt_.units()});
    dkernel_ = Tensor<T>(kernel_.shape());
    glorot_uniform(kernel_, in[0], opt_.units(), rng);
    if (opt_.use_bias()) {
      bias_ = Tensor<T>(Shape{opt_.units()});
      dbias_ = Tensor<T>(Shape{opt_.units()});
    }
    return Shape{opt_.units()};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    const Index n = x.dim(0), units = opt_.units();
    x_.resize(x.shape());
    std::copy(x.begin(), x.end(), x_.begin());
    y_.resize(Shape{n, units});
    auto y = y_.matrix();
    y.noalias() = x.matrix() * kernel_.matrix();
    if (opt_.use_bias()) y.rowwise() += bias_.flat().transpose();
    detail::activate(opt_.activation(), y_.data(), n, units);
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    const Index n = dy.dim(0), units = opt_.units();
    dz_.resize(dy.shape());
    std::copy(dy.begin(), dy.end(), dz_.begin());
    if (!this->skip_softmax_grad()) detail::activation_grad(opt_.activation(), y_.data(), dz_.data(), n, units);
    const auto dz = dz_.matrix();
    dkernel_.matrix().noalias() = x_.matrix().transpose() * dz;
    if (opt_.use_bias()) dbias_.flat().transpose() = dz.colwise().sum();
    if (!this->needs_input_grad()) return this->empty_;
    dx_.resize(x_.shape());
    dx_.matrix().noalias() = dz * kernel_.matrix().transpose();
    return dx_;
  }

 private:
  DenseOptions opt_;
  Tensor<T> kernel_, bias_, dkernel_, dbias_;
  Tensor<T> x_, y_, dz_, dx_;
};

}  // namespace loom
