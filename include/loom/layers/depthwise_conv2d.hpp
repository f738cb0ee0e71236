#pragma once
/// \file depthwise_conv2d.hpp
/// `DepthwiseConv2D` and `SeparableConv2D`, Keras's layers of those names,
/// over NHWC images.
///
///     depthwise:  y[n, oh, ow, c*M + m] = b[c*M + m] + sum over (i, j) of
///                 x[n, oh*sh - pad_top + i*dh, ow*sw - pad_left + j*dw, c] * K[i, j, c, m]
///     separable:  pointwise(depthwise(x)): a 1x1 Conv2D (with the bias and
///                 the activation) after a depthwise one (with neither)
///
/// M is the depth multiplier, (dh, dw) the dilation; the kernel has Keras's
/// layout [kh, kw, C, M]. Each output channel reads one input channel, so
/// the depthwise kernel is direct loops along the channels (contiguous in
/// NHWC) rather than a GEMM. Threads split the batch; in backward each adds
/// its samples' kernel gradient into a buffer of its own, and the buffers
/// are summed in a fixed order.

#include <algorithm>
#include <memory>
#include <vector>

#include "../initializers.hpp"
#include "../kernels/activation.hpp"
#include "../kernels/im2col.hpp"
#include "../parallel.hpp"
#include "conv2d.hpp"
#include "layer.hpp"

namespace loom {

/// Keras's DepthwiseConv2D arguments and defaults.
class DepthwiseConv2DOptions {
 public:
  explicit DepthwiseConv2DOptions(Size2 kernel_size) : kernel_size_(kernel_size) {}
  LOOM_OPTION(Size2, kernel_size, (Size2{3, 3}))
  LOOM_OPTION(Size2, strides, (Size2{1, 1}))
  LOOM_OPTION(Padding, padding, Padding::Valid)
  LOOM_OPTION(Index, depth_multiplier, 1)
  LOOM_OPTION(Size2, dilation_rate, (Size2{1, 1}))
  LOOM_OPTION(Activation, activation, Activation::None)
  LOOM_OPTION(bool, use_bias, true)
};


/// Keras's DepthwiseConv2D: each input channel convolved with M kernels of
/// its own (M = depth_multiplier), giving C * M output channels, channel
/// c's m-th at c * M + m. Weights "kernel" [kh, kw, C, M] (Keras's
/// glorot_uniform) and "bias" [C * M].
template <class T>
class DepthwiseConv2D : public Layer<T> {
 public:
  static constexpr const char* class_name = "DepthwiseConv2D";
  explicit DepthwiseConv2D(const DepthwiseConv2DOptions& options) : opt_(options) {
    detail::check_window(class_name, opt_.kernel_size(), opt_.strides(), opt_.dilation_rate());
    if (opt_.depth_multiplier() < 1) {
      throw ConfigError(detail::str("DepthwiseConv2D: depth_multiplier must be >= 1, got ", opt_.depth_multiplier()));
    }
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "depthwise_conv2d"; }
  Activation activation() const override { return opt_.activation(); }
  const DepthwiseConv2DOptions& options() const { return opt_; }

  Config config() const override {
    return Config()
        .set("kernel_size", opt_.kernel_size())
        .set("strides", opt_.strides())
        .set("padding", to_string(opt_.padding()))
        .set("depth_multiplier", opt_.depth_multiplier())
        .set("dilation_rate", opt_.dilation_rate())
        .set("activation", to_string(opt_.activation()))
        .set("use_bias", opt_.use_bias());
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<DepthwiseConv2D>(DepthwiseConv2DOptions(c.size2("kernel_size"))
                                                 .strides(c.size2("strides"))
                                                 .padding(padding_from(c.text("padding")))
                                                 .depth_multiplier(c.integer("depth_multiplier"))
                                                 .dilation_rate(c.size2("dilation_rate"))
                                                 .activation(activation_from(c.text("activation")))
                                                 .use_bias(c.flag("use_bias")));
  }
  std::vector<Parameter<T>> parameters() override {
    std::vector<Parameter<T>> p{{this->name() + "/kernel", &kernel_, &dkernel_}};
    if (opt_.use_bias()) p.push_back({this->name() + "/bias", &bias_, &dbias_});
    return p;
  }

 protected:
  Shape build_impl(const Shape& in, Rng& rng) override {
    if (in.rank() != 3) this->reject_input(in, "images (None, H, W, C)");
    geo_ = detail::dilated_window(in, opt_.kernel_size(), opt_.strides(), opt_.dilation_rate(), opt_.padding());
    if (geo_.ho < 1 || geo_.wo < 1) this->reject_input(in, "at least as large as the (dilated) kernel");
    const Index m = opt_.depth_multiplier(), out = geo_.c * m;
    kernel_ = this->new_parameter(Shape{geo_.kh, geo_.kw, geo_.c, m});
    dkernel_ = Tensor<T>(kernel_.shape());
    glorot_uniform(kernel_, geo_.kh * geo_.kw * geo_.c, geo_.kh * geo_.kw * m, rng);
    if (opt_.use_bias()) {
      bias_ = this->new_parameter(Shape{out});
      dbias_ = Tensor<T>(Shape{out});
    }
    return Shape{geo_.ho, geo_.wo, out};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    geo_.n = x.dim(0);
    if (mode == Mode::Train) {  // backward reads the input
      x_.resize_for_overwrite(x.shape());
      std::copy(x.begin(), x.end(), x_.begin());
    }
    const Index m = opt_.depth_multiplier(), out = geo_.c * m;
    y_.resize_for_overwrite(Shape{geo_.n, geo_.ho, geo_.wo, out});
    detail::parallel(detail::threads_for(geo_.n), [&](int t, int nt) {
      const detail::Range mine = detail::split(geo_.n, t, nt);
      for (Index n = mine.begin; n < mine.end; ++n) forward_image(x.data(), n);
    });
    detail::activate_output(opt_.activation(), y_, out, mode == Mode::Train, z_);
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    const Index m = opt_.depth_multiplier(), out = geo_.c * m, n = geo_.n;
    const Activation a = this->skip_softmax_grad() ? Activation::None : opt_.activation();
    const T* dz = detail::output_activation_grad(a, y_, dy, out, z_, dz_);
    const bool input_grad = this->needs_input_grad();
    if (input_grad) dx_.resize_for_overwrite(x_.shape());
    const int threads = detail::threads_for(n);
    if (parts_.size() < static_cast<std::size_t>(threads)) parts_.resize(static_cast<std::size_t>(threads));
    detail::parallel(threads, [&](int t, int nt) {
      Tensor<T>& part = parts_[static_cast<std::size_t>(t)];
      part.resize_for_overwrite(Shape{kernel_.size() + out});  // the kernel's gradient, then the bias's
      std::fill(part.begin(), part.end(), T(0));
      const detail::Range mine = detail::split(n, t, nt);
      for (Index b = mine.begin; b < mine.end; ++b) backward_image(dz, b, part.data(), input_grad);
    });
    // The threads' sums, added in a fixed order.
    std::fill(dkernel_.begin(), dkernel_.end(), T(0));
    if (opt_.use_bias()) std::fill(dbias_.begin(), dbias_.end(), T(0));
    for (int t = 0; t < threads; ++t) {
      const T* part = parts_[static_cast<std::size_t>(t)].data();
      for (Index i = 0; i < kernel_.size(); ++i) dkernel_[i] += part[i];
      if (opt_.use_bias()) {
        for (Index i = 0; i < out; ++i) dbias_[i] += part[kernel_.size() + i];
      }
    }
    return input_grad ? dx_ : this->empty_;
  }

 private:
  void forward_image(const T* x, Index n) const {
    const detail::Window2D& g = geo_;
    const Index m = opt_.depth_multiplier(), out = g.c * m;
    const T* k = kernel_.data();
    T* y = const_cast<T*>(y_.data()) + n * g.ho * g.wo * out;
    for (Index oh = 0; oh < g.ho; ++oh) {
      for (Index ow = 0; ow < g.wo; ++ow, y += out) {
        if (opt_.use_bias()) {
          std::copy_n(bias_.data(), out, y);
        } else {
          std::fill_n(y, out, T(0));
        }
        for (Index i = 0; i < g.kh; ++i) {
          const Index ih = oh * g.sh - g.pad_top + i * g.dh;
          if (ih < 0 || ih >= g.h) continue;
          for (Index j = 0; j < g.kw; ++j) {
            const Index iw = ow * g.sw - g.pad_left + j * g.dw;
            if (iw < 0 || iw >= g.w) continue;
            const T* xp = x + ((n * g.h + ih) * g.w + iw) * g.c;
            const T* kp = k + (i * g.kw + j) * out;
            if (m == 1) {
              for (Index c = 0; c < g.c; ++c) y[c] += xp[c] * kp[c];
            } else {
              for (Index c = 0; c < g.c; ++c) {
                for (Index q = 0; q < m; ++q) y[c * m + q] += xp[c] * kp[c * m + q];
              }
            }
          }
        }
      }
    }
  }

  /// One image's share of the gradients: the kernel's and the bias's into
  /// `part` (this thread's), its input's into dx_.
  void backward_image(const T* dz, Index n, T* part, bool input_grad) {
    const detail::Window2D& g = geo_;
    const Index m = opt_.depth_multiplier(), out = g.c * m;
    const T* k = kernel_.data();
    const T* x = x_.data();
    T* dbias = part + kernel_.size();
    T* dx = input_grad ? dx_.data() + n * g.h * g.w * g.c : nullptr;
    if (dx) std::fill_n(dx, g.h * g.w * g.c, T(0));
    const T* gz = dz + n * g.ho * g.wo * out;
    for (Index oh = 0; oh < g.ho; ++oh) {
      for (Index ow = 0; ow < g.wo; ++ow, gz += out) {
        if (opt_.use_bias()) {
          for (Index o = 0; o < out; ++o) dbias[o] += gz[o];
        }
        for (Index i = 0; i < g.kh; ++i) {
          const Index ih = oh * g.sh - g.pad_top + i * g.dh;
          if (ih < 0 || ih >= g.h) continue;
          for (Index j = 0; j < g.kw; ++j) {
            const Index iw = ow * g.sw - g.pad_left + j * g.dw;
            if (iw < 0 || iw >= g.w) continue;
            const Index at = ((n * g.h + ih) * g.w + iw) * g.c;
            const T* xp = x + at;
            const T* kp = k + (i * g.kw + j) * out;
            T* dkp = part + (i * g.kw + j) * out;
            T* dxp = dx ? dx + (ih * g.w + iw) * g.c : nullptr;
            for (Index c = 0; c < g.c; ++c) {
              T sum = 0;
              for (Index q = 0; q < m; ++q) {
                dkp[c * m + q] += xp[c] * gz[c * m + q];
                sum += kp[c * m + q] * gz[c * m + q];
              }
              if (dxp) dxp[c] += sum;
            }
          }
        }
      }
    }
  }

  DepthwiseConv2DOptions opt_;
  detail::Window2D geo_;
  Tensor<T> kernel_, bias_, dkernel_, dbias_;
  Tensor<T> x_, y_, z_, dz_, dx_;  // z_: the activation's input, when its derivative needs it
  std::vector<Tensor<T>> parts_;    // each thread's kernel and bias gradients
};

/// Keras's SeparableConv2D arguments and defaults.
class SeparableConv2DOptions {
 public:
  SeparableConv2DOptions(Index filters, Size2 kernel_size) : filters_(filters), kernel_size_(kernel_size) {}
  LOOM_OPTION(Index, filters, 1)
  LOOM_OPTION(Size2, kernel_size, (Size2{3, 3}))
  LOOM_OPTION(Size2, strides, (Size2{1, 1}))
  LOOM_OPTION(Padding, padding, Padding::Valid)
  LOOM_OPTION(Index, depth_multiplier, 1)
  LOOM_OPTION(Size2, dilation_rate, (Size2{1, 1}))
  LOOM_OPTION(Activation, activation, Activation::None)
  LOOM_OPTION(bool, use_bias, true)
};

/// Keras's SeparableConv2D: a DepthwiseConv2D (no bias, no activation),
/// then a 1x1 Conv2D to `filters` channels with the bias and the activation.
/// Weights "depthwise_kernel" [kh, kw, C, M], "pointwise_kernel" [1, 1,
/// C * M, filters] and "bias" [filters], in Keras's order.
template <class T>
class SeparableConv2D : public Layer<T> {
 public:
  static constexpr const char* class_name = "SeparableConv2D";
  explicit SeparableConv2D(const SeparableConv2DOptions& options)
      : opt_(options),
        depthwise_(DepthwiseConv2DOptions(options.kernel_size())
                       .strides(options.strides())
                       .padding(options.padding())
                       .depth_multiplier(options.depth_multiplier())
                       .dilation_rate(options.dilation_rate())
                       .use_bias(false)),
        pointwise_(Conv2DOptions(options.filters(), {1, 1}).activation(options.activation()).use_bias(options.use_bias())) {
    if (opt_.filters() < 1) throw ConfigError(detail::str("SeparableConv2D: filters must be >= 1, got ", opt_.filters()));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "separable_conv2d"; }
  Activation activation() const override { return opt_.activation(); }
  const SeparableConv2DOptions& options() const { return opt_; }

  Config config() const override {
    return Config()
        .set("filters", opt_.filters())
        .set("kernel_size", opt_.kernel_size())
        .set("strides", opt_.strides())
        .set("padding", to_string(opt_.padding()))
        .set("depth_multiplier", opt_.depth_multiplier())
        .set("dilation_rate", opt_.dilation_rate())
        .set("activation", to_string(opt_.activation()))
        .set("use_bias", opt_.use_bias());
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<SeparableConv2D>(SeparableConv2DOptions(c.integer("filters"), c.size2("kernel_size"))
                                                 .strides(c.size2("strides"))
                                                 .padding(padding_from(c.text("padding")))
                                                 .depth_multiplier(c.integer("depth_multiplier"))
                                                 .dilation_rate(c.size2("dilation_rate"))
                                                 .activation(activation_from(c.text("activation")))
                                                 .use_bias(c.flag("use_bias")));
  }
  std::vector<Parameter<T>> parameters() override {
    std::vector<Parameter<T>> p = depthwise_.parameters(), q = pointwise_.parameters();
    p[0].name = this->name() + "/depthwise_kernel";
    q[0].name = this->name() + "/pointwise_kernel";
    if (q.size() > 1) q[1].name = this->name() + "/bias";
    p.insert(p.end(), q.begin(), q.end());
    return p;
  }

 protected:
  Shape build_impl(const Shape& in, Rng& rng) override {
    if (in.rank() != 3) this->reject_input(in, "images (None, H, W, C)");
    depthwise_.set_name(this->name() + "_depthwise");
    pointwise_.set_name(this->name() + "_pointwise");
    // Keras's initializers: glorot_uniform for both kernels, with its fans.
    const Shape mid = depthwise_.build(in, rng);
    const Shape out = pointwise_.build(mid, rng);
    pointwise_.set_needs_input_grad(true);
    return out;
  }
  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    return pointwise_.forward(depthwise_.forward(x, mode), mode);
  }
  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    pointwise_.set_fused_softmax_grad(this->fused_softmax_grad());
    depthwise_.set_needs_input_grad(this->needs_input_grad());
    return depthwise_.backward(pointwise_.backward(dy));
  }

 private:
  SeparableConv2DOptions opt_;
  DepthwiseConv2D<T> depthwise_;
  Conv2D<T> pointwise_;
};

LOOM_REGISTER(DepthwiseConv2D)
LOOM_REGISTER(SeparableConv2D)

}  // namespace loom
