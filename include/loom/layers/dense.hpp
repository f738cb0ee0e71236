#pragma once
/// \file dense.hpp
/// `Dense`: y = f(x * W + b) with Keras's kernel layout W [in, units].
/// Takes flat input (N, features); put a Flatten before it for images.
///
/// Threads split the output columns (units) for the forward pass and the
/// kernel gradient, and the input features for dx: every element is
/// computed by one thread from whole rows, so no partial sums are added and
/// the result does not depend on the thread count.

#include <algorithm>
#include <memory>

#include "../initializers.hpp"
#include "../parallel.hpp"
#include "../kernels/activation.hpp"
#include "../kernels/gemm.hpp"
#include "layer.hpp"

namespace loom {

/// Keras's Dense arguments and defaults.
class DenseOptions {
 public:
  explicit DenseOptions(Index units) : units_(units) {}
  LOOM_OPTION(Index, units, 1)
  LOOM_OPTION(Activation, activation, Activation::None)
  LOOM_OPTION(bool, use_bias, true)
  /// Keras's weight regularizers (regularizers.hpp): L1, L2 or L1L2 penalties in training.
  LOOM_OPTION(Regularizer, kernel_regularizer, Regularizer())
  LOOM_OPTION(Regularizer, bias_regularizer, Regularizer())
};

template <class T>
class Dense : public Layer<T> {
 public:
  explicit Dense(const DenseOptions& options) : opt_(options) {
    if (opt_.units() < 1) throw ConfigError(detail::str("Dense: units must be >= 1, got ", opt_.units()));
  }

  static constexpr const char* class_name = "Dense";
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "dense"; }
  Activation activation() const override { return opt_.activation(); }
  const DenseOptions& options() const { return opt_; }

  Config config() const override {
    Config c = Config()
                   .set("units", opt_.units())
                   .set("activation", to_string(opt_.activation()))
                   .set("use_bias", opt_.use_bias());
    set_regularizer(c, "kernel_regularizer", opt_.kernel_regularizer());  // only when set
    set_regularizer(c, "bias_regularizer", opt_.bias_regularizer());
    return c;
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<Dense>(DenseOptions(c.integer("units"))
                                       .activation(activation_from(c.text("activation")))
                                       .use_bias(c.flag("use_bias"))
                                       .kernel_regularizer(regularizer_from(c, "kernel_regularizer"))
                                       .bias_regularizer(regularizer_from(c, "bias_regularizer")));
  }

  std::vector<Parameter<T>> parameters() override {
    std::vector<Parameter<T>> p{{this->name() + "/kernel", &kernel_, &dkernel_, opt_.kernel_regularizer()}};
    if (opt_.use_bias()) p.push_back({this->name() + "/bias", &bias_, &dbias_, opt_.bias_regularizer()});
    return p;
  }

  /// Reads the kernel and bias of a Dense of the same configuration (see Layer).
  bool share_parameters_of(const Layer<T>& source) override {
    const Dense* s = this->template share_source<Dense>(source);
    if (s != nullptr && s->shared_ != nullptr) s = s->shared_;
    if (s == nullptr || s->kernel_.shape() != kernel_.shape() || s->opt_.use_bias() != opt_.use_bias() ||
        s->opt_.activation() != opt_.activation()) {
      return false;
    }
    shared_ = s;
    kernel_ = bias_ = dkernel_ = dbias_ = Tensor<T>();
    this->shares_parameters();
    return true;
  }

 protected:
  Shape build_impl(const Shape& in, Rng& rng) override {
    if (in.rank() != 1) this->reject_input(in, "(None, features): add a Flatten layer before Dense");
    kernel_ = this->new_parameter(Shape{in[0], opt_.units()});
    dkernel_ = Tensor<T>(kernel_.shape());
    glorot_uniform(kernel_, in[0], opt_.units(), rng);
    if (opt_.use_bias()) {
      bias_ = this->new_parameter(Shape{opt_.units()});
      dbias_ = Tensor<T>(Shape{opt_.units()});
    }
    return Shape{opt_.units()};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    const Index n = x.dim(0), in = x.dim(1), units = opt_.units();
    if (mode == Mode::Train) {  // backward needs the input
      x_.resize_for_overwrite(x.shape());
      std::copy(x.begin(), x.end(), x_.begin());
    }
    y_.resize_for_overwrite(Shape{n, units});
    const int threads = threads_for_columns(units);
    const Dense& w = shared_ != nullptr ? *shared_ : *this;  // whose kernel and bias
    const T* b = opt_.use_bias() ? w.bias_.data() : nullptr;
    detail::parallel(threads, [&](int t, int nt) {
      const detail::Range cols = detail::split(units, t, nt);
      gemm_[static_cast<std::size_t>(t)].forward(n, cols.size(), in, {x.data(), in}, {w.kernel_.data() + cols.begin, units},
                                                  y_.data() + cols.begin, units, /*accumulate=*/false,
                                                  {b ? b + cols.begin : nullptr, opt_.activation() == Activation::ReLU});
    });
    // ReLU is in the GEMM's epilogue; any other activation runs here, on
    // the input kept for its derivative if that needs it.
    const Activation a = opt_.activation();
    if (a != Activation::None && a != Activation::ReLU) {
      if (mode == Mode::Train && activation_needs_input(a)) {
        z_.resize_for_overwrite(y_.shape());
        std::copy(y_.begin(), y_.end(), z_.begin());
      }
      detail::activate(a, y_.data(), n, units);
    }
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    const Index n = dy.dim(0), in = x_.dim(1), units = opt_.units();
    dz_.resize_for_overwrite(dy.shape());
    const Activation a = this->skip_softmax_grad() ? Activation::None : opt_.activation();
    detail::activation_grad(a, y_.data(), dy.data(), dz_.data(), n, units,
                            activation_needs_input(a) ? z_.data() : nullptr);
    const bool input_grad = this->needs_input_grad();
    if (input_grad) dx_.resize_for_overwrite(x_.shape());
    const int threads = threads_for_columns(std::max(units, in));
    const T* dz = dz_.data();
    detail::parallel(threads, [&](int t, int nt) {
      Workspace& g = gemm_[static_cast<std::size_t>(t)];
      // dW[:, cols] = xT * dz[:, cols] and db[cols] = column sums of dz.
      const detail::Range cols = detail::split(units, t, nt);
      g.weights(in, cols.size(), n, {x_.data(), in, true}, {dz + cols.begin, units}, dkernel_.data() + cols.begin,
                units);
      if (opt_.use_bias()) {
        for (Index c = cols.begin; c < cols.end; ++c) dbias_[c] = T(0);
        for (Index r = 0; r < n; ++r) {
          for (Index c = cols.begin; c < cols.end; ++c) dbias_[c] += dz[r * units + c];
        }
      }
      // dx[:, f] = dz * W[f, :]T
      if (input_grad) {
        const detail::Range f = detail::split(in, t, nt);
        g.input(n, f.size(), units, {dz, units}, {kernel_.data() + f.begin * units, units, true},
                dx_.data() + f.begin, in);
      }
    });
    return input_grad ? dx_ : this->empty_;
  }

 private:
  struct Workspace {
    detail::Gemm<T> forward, weights, input;
  };

  /// Threads for `columns` output columns (at least 64 each), with a
  /// workspace ready for every one of them.
  int threads_for_columns(Index columns) {
    const int threads = detail::threads_for(std::max<Index>(1, columns / 64));
    if (gemm_.size() < static_cast<std::size_t>(threads)) gemm_.resize(static_cast<std::size_t>(threads));
    for (Workspace& w : gemm_) {
      for (detail::Gemm<T>* g : {&w.forward, &w.weights, &w.input}) g->set_precision(this->precision());
    }
    return threads;
  }

  DenseOptions opt_;
  Tensor<T> kernel_, bias_, dkernel_, dbias_;
  const Dense* shared_ = nullptr;  // share_parameters_of: whose kernel and bias the forward reads
  Tensor<T> x_, y_, z_, dz_, dx_;  // z_: the activation's input, when its derivative needs it
  std::vector<Workspace> gemm_;
};

LOOM_REGISTER(Dense)

}  // namespace loom
