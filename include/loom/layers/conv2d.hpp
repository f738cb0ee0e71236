#pragma once
/// \file conv2d.hpp
/// `Conv2D`: 2-D convolution over NHWC images by im2col + one GEMM.
///
///     forward:   col = im2col(x)                 [N*Ho*Wo, kh*kw*Cin]
///                y   = f(col * K + b)            [N*Ho*Wo, Cout] = NHWC output
///     backward:  dz  = dy * f'(y)
///                dK  = colT * dz,  db = sum over rows of dz
///                dx  = col2im(dz * KT)
///
/// The kernel has Keras's layout [kh, kw, Cin, Cout], which viewed as a
/// [kh*kw*Cin, Cout] row-major matrix multiplies the column matrix directly.

#include <array>
#include <cmath>

#include "../initializers.hpp"
#include "detail/activation.hpp"
#include "detail/im2col.hpp"
#include "layer.hpp"

namespace loom {

using Size2 = std::array<Index, 2>;

/// Keras's Conv2D arguments and defaults.
class Conv2DOptions {
 public:
  Conv2DOptions(Index filters, Size2 kernel_size) : filters_(filters), kernel_size_(kernel_size) {}
  LOOM_OPTION(Index, filters, 1)
  LOOM_OPTION(Size2, kernel_size, (Size2{3, 3}))
  LOOM_OPTION(Size2, strides, (Size2{1, 1}))
  LOOM_OPTION(Padding, padding, Padding::Valid)
  LOOM_OPTION(Activation, activation, Activation::None)
  LOOM_OPTION(bool, use_bias, true)
};

template <class T>
class Conv2D : public Layer<T> {
 public:
  explicit Conv2D(const Conv2DOptions& options) : opt_(options) {
    if (opt_.filters() < 1 || opt_.kernel_size()[0] < 1 || opt_.kernel_size()[1] < 1 || opt_.strides()[0] < 1 ||
        opt_.strides()[1] < 1) {
      throw ConfigError(detail::str("Conv2D: filters, kernel_size and strides must be >= 1, got filters=",
                                    opt_.filters(), " kernel_size=(", opt_.kernel_size()[0], ", ",
                                    opt_.kernel_size()[1], ") strides=(", opt_.strides()[0], ", ",
                                    opt_.strides()[1], ")"));
    }
  }

  std::string type() const override { return "Conv2D"; }
  std::string base_name() const override { return "conv2d"; }
  Activation activation() const override { return opt_.activation(); }
  const Conv2DOptions& options() const { return opt_; }

  std::vector<std::pair<std::string, std::string>> config() const override {
    const auto& k = opt_.kernel_size();
    const auto& s = opt_.strides();
    return {{"filters", std::to_string(opt_.filters())},
            {"kernel_size", std::to_string(k[0]) + "," + std::to_string(k[1])},
            {"strides", std::to_string(s[0]) + "," + std::to_string(s[1])},
            {"padding", to_string(opt_.padding())},
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
    if (in.rank() != 3) this->reject_input(in, "(None, height, width, channels)");
    const auto [kh, kw] = opt_.kernel_size();
    const auto [sh, sw] = opt_.strides();
    const auto rows = detail::window_axis(in[0], kh, sh, opt_.padding());
    const auto cols = detail::window_axis(in[1], kw, sw, opt_.padding());
    if (rows.out < 1 || cols.out < 1) {
      this->reject_input(in, detail::str("at least ", kh, "x", kw, " pixels for a ", kh, "x", kw,
                                         " kernel with 'valid' padding"));
    }
    geo_ = {0, in[0], in[1], in[2], kh, kw, sh, sw, rows.pad_before, cols.pad_before, rows.out, cols.out};
    const Index cout = opt_.filters();
    kernel_ = Tensor<T>(Shape{kh, kw, in[2], cout});
    dkernel_ = Tensor<T>(kernel_.shape());
    glorot_uniform(kernel_, kh * kw * in[2], kh * kw * cout, rng);
    if (opt_.use_bias()) {
      bias_ = Tensor<T>(Shape{cout});
      dbias_ = Tensor<T>(Shape{cout});
    }
    return Shape{rows.out, cols.out, cout};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    geo_.n = x.dim(0);
    const Index m = geo_.rows(), k = geo_.patch(), cout = opt_.filters();
    col_.resize(Shape{m, k});
    detail::im2col(x.data(), geo_, col_.data());
    y_.resize(Shape{geo_.n, geo_.ho, geo_.wo, cout});
    auto y = y_.as_matrix(m, cout);
    y.noalias() = col_.matrix() * kernel_.as_matrix(k, cout);
    epilogue(m, cout);
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    const Index m = geo_.rows(), k = geo_.patch(), cout = opt_.filters();
    dz_.resize(dy.shape());
    std::copy(dy.begin(), dy.end(), dz_.begin());
    if (!this->skip_softmax_grad()) detail::activation_grad(opt_.activation(), y_.data(), dz_.data(), m, cout);
    const auto dz = dz_.as_matrix(m, cout);
    dkernel_.as_matrix(k, cout).noalias() = col_.matrix().transpose() * dz;
    if (opt_.use_bias()) dbias_.flat().transpose() = dz.colwise().sum();
    if (!this->needs_input_grad()) return this->empty_;
    // The column buffer is no longer needed: reuse it for d(col).
    col_.matrix().noalias() = dz * kernel_.as_matrix(k, cout).transpose();
    dx_.resize(this->input_shape().with_batch(geo_.n));
    detail::col2im(col_.data(), geo_, dx_.data());
    return dx_;
  }

 private:
  /// Bias and activation in one pass over the GEMM's output.
  void epilogue(Index m, Index cout) {
    T* y = y_.data();
    const T* b = opt_.use_bias() ? bias_.data() : nullptr;
    const bool relu = opt_.activation() == Activation::ReLU;
#pragma omp parallel for schedule(static) if (m * cout > 32768)
    for (Index r = 0; r < m; ++r) {
      T* row = y + r * cout;
      for (Index c = 0; c < cout; ++c) {
        const T v = b ? row[c] + b[c] : row[c];
        row[c] = relu && v < T(0) ? T(0) : v;  // NaN passes through, as in std::max(v, 0)
      }
    }
    if (opt_.activation() == Activation::Softmax) detail::softmax_rows(y, m, cout);
  }

  Conv2DOptions opt_;
  detail::Window2D geo_;
  Tensor<T> kernel_, bias_, dkernel_, dbias_;
  Tensor<T> col_, y_, dz_, dx_;
};

}  // namespace loom
