#pragma once
/// \file conv2d_transpose.hpp
/// `Conv2DTranspose`, Keras's layer of that name: the adjoint of a Conv2D
/// (its backward to the input), which maps a Conv2D's output shape back to
/// its input shape, with a bias and an activation of its own.
///
///     the Conv2D it is the adjoint of: input (Hy, Wy, F), output (Hx, Wx, C),
///                                      kernel K [kh, kw, F, C] (Keras's layout)
///     forward:   col = x * KT           [N*Hx*Wx, kh*kw*F]
///                y   = f(col2im(col) + b)   [N, Hy, Wy, F]
///     backward:  dz  = dy * f'(y)
///                dcol = im2col(dz);  dx = dcol * K;  dK = dcolT * x;  db = sums of dz
///
/// Its output size is Keras's (deconv_output_length): without an
/// output_padding, Hy = Hx * stride for "same", Hx * stride + max(k - stride,
/// 0) for "valid", k the dilated kernel's extent; with one, op < stride,
/// Hy = (Hx - 1) * stride + k - 2 * (k / 2) + op for "same" and
/// (Hx - 1) * stride + k + op for "valid". Either way the Conv2D it is the
/// adjoint of runs over Hy with its own padding rule (as TensorFlow's
/// conv2d_transpose, given that output shape, does); rows and columns no
/// window reaches get the bias alone. Threads split the batch, one
/// image at a time; each adds its images' kernel gradient into a buffer of
/// its own, and the buffers are summed in a fixed order.

#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

#include "../initializers.hpp"
#include "../kernels/activation.hpp"
#include "../kernels/gemm.hpp"
#include "../kernels/im2col.hpp"
#include "../parallel.hpp"
#include "conv2d.hpp"
#include "layer.hpp"

namespace loom {

template <class T>
class Conv2DTranspose : public Layer<T> {
 public:
  static constexpr const char* class_name = "Conv2DTranspose";
  /// Conv2D's options, read as Keras's Conv2DTranspose reads its arguments,
  /// and Keras's output_padding (none by default): rows and columns added
  /// to the output, each fewer than the stride.
  explicit Conv2DTranspose(const Conv2DOptions& options, std::optional<Size2> output_padding = std::nullopt)
      : opt_(options), output_padding_(output_padding) {
    if (opt_.filters() < 1) throw ConfigError(detail::str("Conv2DTranspose: filters must be >= 1, got ", opt_.filters()));
    if (opt_.groups() != 1) throw ConfigError("Conv2DTranspose: groups other than 1 (Keras's Conv2DTranspose has none)");
    detail::check_window(class_name, opt_.kernel_size(), opt_.strides(), opt_.dilation_rate());
    if (output_padding_) {
      const Size2 op = *output_padding_, s = opt_.strides();
      if (op[0] < 0 || op[1] < 0 || op[0] >= s[0] || op[1] >= s[1]) {
        throw ConfigError(detail::str("Conv2DTranspose: output_padding must be >= 0 and less than strides, got output_padding=(",
                                      op[0], ", ", op[1], ") strides=(", s[0], ", ", s[1], ")"));
      }
    }
  }
  const std::optional<Size2>& output_padding() const { return output_padding_; }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "conv2d_transpose"; }
  Activation activation() const override { return opt_.activation(); }
  const Conv2DOptions& options() const { return opt_; }

  Config config() const override {
    Config c = Config()
                   .set("filters", opt_.filters())
                   .set("kernel_size", opt_.kernel_size())
                   .set("strides", opt_.strides())
                   .set("padding", to_string(opt_.padding()))
                   .set("dilation_rate", opt_.dilation_rate())
                   .set("activation", to_string(opt_.activation()))
                   .set("use_bias", opt_.use_bias());
    if (output_padding_) c.set("output_padding", *output_padding_);  // (only when given)
    return c;
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<Conv2DTranspose>(Conv2DOptions(c.integer("filters"), c.size2("kernel_size"))
                                                 .strides(c.size2("strides"))
                                                 .padding(padding_from(c.text("padding")))
                                                 .dilation_rate(c.size2("dilation_rate"))
                                                 .activation(activation_from(c.text("activation")))
                                                 .use_bias(c.flag("use_bias")),
                                             c.has("output_padding") ? std::optional<Size2>(c.size2("output_padding"))
                                                                     : std::nullopt);
  }
  std::vector<Parameter<T>> parameters() override {
    std::vector<Parameter<T>> p{{this->name() + "/kernel", &kernel_, &dkernel_}};
    if (opt_.use_bias()) p.push_back({this->name() + "/bias", &bias_, &dbias_});
    return p;
  }

 protected:
  Shape build_impl(const Shape& in, Rng& rng) override {
    if (in.rank() != 3) this->reject_input(in, "images (None, H, W, C)");
    const auto [kh, kw] = opt_.kernel_size();
    const auto [sh, sw] = opt_.strides();
    const auto [dh, dw] = opt_.dilation_rate();
    const bool same = opt_.padding() == Padding::Same;
    auto length = [&](Index x, Index k, Index s, int axis) {  // Keras's deconv_output_length
      if (output_padding_) return (x - 1) * s + k - (same ? 2 * (k / 2) : 0) + (*output_padding_)[axis];
      return same ? x * s : x * s + std::max<Index>(k - s, 0);
    };
    const Index f = opt_.filters();
    const Shape out{length(in[0], (kh - 1) * dh + 1, sh, 0), length(in[1], (kw - 1) * dw + 1, sw, 1), f};
    if (out[0] < 1 || out[1] < 1) this->reject_input(in, "images whose transposed window fits");
    geo_ = detail::dilated_window(out, opt_.kernel_size(), opt_.strides(), opt_.dilation_rate(), opt_.padding());
    if (geo_.ho != in[0] || geo_.wo != in[1]) {  // (Keras's output length always gives it)
      this->reject_input(in, "images whose transposed window fits");
    }
    kernel_ = this->new_parameter(Shape{kh, kw, f, in[2]});
    dkernel_ = Tensor<T>(kernel_.shape());
    glorot_uniform(kernel_, kh * kw * f, kh * kw * in[2], rng);  // Keras's fans of [kh, kw, F, C]
    if (opt_.use_bias()) {
      bias_ = this->new_parameter(Shape{f});
      dbias_ = Tensor<T>(Shape{f});
    }
    return out;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    geo_.n = x.dim(0);
    if (mode == Mode::Train) {  // backward reads the input
      x_.resize_for_overwrite(x.shape());
      std::copy(x.begin(), x.end(), x_.begin());
    }
    const Index f = opt_.filters(), c = x.dim(3), p = geo_.patch(), pixels = geo_.ho * geo_.wo;
    y_.resize_for_overwrite(Shape{geo_.n, geo_.h, geo_.w, f});
    const int threads = prepare(detail::threads_for(geo_.n), pixels * p, 0);
    detail::parallel(threads, [&](int t, int nt) {
      Workspace& w = ws_[static_cast<std::size_t>(t)];
      const detail::Range mine = detail::split(geo_.n, t, nt);
      for (Index n = mine.begin; n < mine.end; ++n) {
        w.gemm(pixels, p, c, {x.data() + n * pixels * c, c}, {kernel_.data(), c, true}, w.col.data(), p);
        detail::col2im(w.col.data(), geo_, n, n + 1, y_.data());
        if (opt_.use_bias()) {
          T* y = y_.data() + n * geo_.h * geo_.w * f;
          for (Index q = 0; q < geo_.h * geo_.w; ++q) {
            for (Index o = 0; o < f; ++o) y[q * f + o] += bias_[o];
          }
        }
      }
    });
    detail::activate_output(opt_.activation(), y_, f, mode == Mode::Train, z_);
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    const Index f = opt_.filters(), c = x_.dim(3), p = geo_.patch(), pixels = geo_.ho * geo_.wo;
    const Activation a = this->skip_softmax_grad() ? Activation::None : opt_.activation();
    const T* dz = detail::output_activation_grad(a, y_, dy, f, z_, dz_);
    const bool input_grad = this->needs_input_grad();
    if (input_grad) dx_.resize_for_overwrite(x_.shape());
    const int threads = prepare(detail::threads_for(geo_.n), pixels * p, kernel_.size() + f);
    detail::parallel(threads, [&](int t, int nt) {
      Workspace& w = ws_[static_cast<std::size_t>(t)];
      std::fill(w.part.begin(), w.part.end(), T(0));
      T* dbias = w.part.data() + kernel_.size();
      const detail::Range mine = detail::split(geo_.n, t, nt);
      for (Index n = mine.begin; n < mine.end; ++n) {
        const T* dzn = dz + n * geo_.h * geo_.w * f;
        if (opt_.use_bias()) {
          for (Index q = 0; q < geo_.h * geo_.w; ++q) {
            for (Index o = 0; o < f; ++o) dbias[o] += dzn[q * f + o];
          }
        }
        detail::im2col(dz, geo_, n, n + 1, w.col.data());
        // dK [p, c] += dcolT [p, pixels] * x [pixels, c]
        w.gemm(p, c, pixels, {w.col.data(), p, true}, {x_.data() + n * pixels * c, c}, w.part.data(), c,
               /*accumulate=*/true);
        if (input_grad) w.gemm(pixels, c, p, {w.col.data(), p}, {kernel_.data(), c}, dx_.data() + n * pixels * c, c);
      }
    });
    std::fill(dkernel_.begin(), dkernel_.end(), T(0));
    if (opt_.use_bias()) std::fill(dbias_.begin(), dbias_.end(), T(0));
    for (int t = 0; t < threads; ++t) {
      const T* part = ws_[static_cast<std::size_t>(t)].part.data();
      for (Index i = 0; i < kernel_.size(); ++i) dkernel_[i] += part[i];
      if (opt_.use_bias()) {
        for (Index o = 0; o < f; ++o) dbias_[o] += part[kernel_.size() + o];
      }
    }
    return input_grad ? dx_ : this->empty_;
  }

 private:
  struct Workspace {
    detail::Gemm<T> gemm;
    Tensor<T> col, part;  // one image's column matrix; the thread's kernel and bias gradients
  };
  /// Workspaces for `threads` threads, with `col` and `part` values each;
  /// allocates only when they grow.
  int prepare(int threads, Index col, Index part) {
    if (ws_.size() < static_cast<std::size_t>(threads)) ws_.resize(static_cast<std::size_t>(threads));
    for (Workspace& w : ws_) w.gemm.set_precision(this->precision());
    for (int t = 0; t < threads; ++t) {
      Workspace& w = ws_[static_cast<std::size_t>(t)];
      if (w.col.size() < col) w.col.resize_for_overwrite(Shape{col});
      if (part > 0 && w.part.size() != part) w.part.resize_for_overwrite(Shape{part});
    }
    return threads;
  }

  Conv2DOptions opt_;
  std::optional<Size2> output_padding_;
  detail::Window2D geo_;  // the Conv2D it is the adjoint of: input y, output x
  Tensor<T> kernel_, bias_, dkernel_, dbias_;
  Tensor<T> x_, y_, z_, dz_, dx_;
  std::vector<Workspace> ws_;
};

LOOM_REGISTER(Conv2DTranspose)

}  // namespace loom
