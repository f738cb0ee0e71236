#pragma once
/// \file layer_normalization.hpp
/// `LayerNormalization`, Keras's: each sample normalized over its last axis
/// (or several trailing axes) with its own statistics, the same in training
/// and inference (there are no moving statistics):
///
///     mean, var = over the normalized axes of one sample (var biased)
///     y = (x - mean) / sqrt(var + epsilon) * gamma + beta
///
/// (keras/src/ops/nn.py, _layer_normalization; tf.keras 2 computes the same).
/// gamma and beta have the shape of the normalized axes, as in Keras. Keras's
/// `axis` counts the batch as axis 0 and may be negative (-1: the last);
/// loom takes the last axis or the last several together, which it views as
/// one axis of D values: the input is a [rows, D] matrix. A row's mean and
/// variance are summed in double, in two passes.
///
/// Backward, per row, with xhat and inv = 1 / sqrt(var + epsilon) kept from
/// the forward:
///
///     g = dy * gamma
///     dx = inv * (g - mean(g) - xhat * mean(g * xhat))
///     dgamma = sum over rows of dy * xhat,  dbeta = sum over rows of dy
///
/// Threads split the rows; the partial sums of dgamma and dbeta (in double)
/// are added in thread order, so results do not depend on scheduling.

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {

/// Keras's LayerNormalization arguments and defaults.
class LayerNormalizationOptions {
 public:
  LayerNormalizationOptions() = default;
  /// The axes normalized over, as Keras counts them (the batch is axis 0,
  /// -1 the last): the last axis (the default) or several trailing ones.
  LOOM_OPTION(std::vector<Index>, axis, (std::vector<Index>{-1}))
  LOOM_OPTION(double, epsilon, 1e-3)
  /// Whether beta (an offset) and gamma (a scale) exist and are learned;
  /// without them they stay 0 and 1 and are not parameters.
  LOOM_OPTION(bool, center, true)
  LOOM_OPTION(bool, scale, true)
  /// Keras's weight regularizers of gamma and beta (regularizers.hpp).
  LOOM_OPTION(Regularizer, gamma_regularizer, Regularizer())
  LOOM_OPTION(Regularizer, beta_regularizer, Regularizer())
};

template <class T>
class LayerNormalization : public Layer<T> {
 public:
  explicit LayerNormalization(const LayerNormalizationOptions& options = {}) : opt_(options) {
    if (!(opt_.epsilon() > 0)) {
      throw ConfigError(detail::str("LayerNormalization: epsilon must be > 0, got ", opt_.epsilon()));
    }
    constexpr int kMaxAxis = Shape::max_rank - 1;  // a sample's rank at most
    if (opt_.axis().empty() || opt_.axis().size() > static_cast<std::size_t>(kMaxAxis)) {
      throw ConfigError("LayerNormalization: axis must name 1 to 5 axes");
    }
    for (Index a : opt_.axis()) {
      if (a == 0 || a < -kMaxAxis || a > kMaxAxis) {
        throw ConfigError(detail::str("LayerNormalization: axis ", a,
                                      " is not an axis of a sample (the batch is axis 0; -1 is the last)"));
      }
    }
  }

  static constexpr const char* class_name = "LayerNormalization";
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "layer_normalization"; }
  const LayerNormalizationOptions& options() const { return opt_; }

  /// How many trailing axes of a per-sample input of rank `rank` Keras's
  /// `axis` names, when it names the last k of them (each once); 0 when it
  /// names anything else.
  static int trailing_axes(const std::vector<Index>& axis, int rank) {
    std::vector<bool> named(static_cast<std::size_t>(rank) + 1, false);
    for (Index a : axis) {
      const Index p = a < 0 ? a + rank + 1 : a;  // counted with the batch
      if (p < 1 || p > rank || named[static_cast<std::size_t>(p)]) return 0;
      named[static_cast<std::size_t>(p)] = true;
    }
    const int k = static_cast<int>(axis.size());
    for (int p = rank - k + 1; p <= rank; ++p) {
      if (!named[static_cast<std::size_t>(p)]) return 0;
    }
    return k;
  }

  Config config() const override {
    Config c = Config()
                   .set_integers("axis", opt_.axis())
                   .set("epsilon", opt_.epsilon())
                   .set("center", opt_.center())
                   .set("scale", opt_.scale());
    set_regularizer(c, "gamma_regularizer", opt_.gamma_regularizer());  // only when set
    set_regularizer(c, "beta_regularizer", opt_.beta_regularizer());
    return c;
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<LayerNormalization>(LayerNormalizationOptions()
                                                    .axis(c.integers("axis"))
                                                    .epsilon(c.real("epsilon"))
                                                    .center(c.flag("center", true))
                                                    .scale(c.flag("scale", true))
                                                    .gamma_regularizer(regularizer_from(c, "gamma_regularizer"))
                                                    .beta_regularizer(regularizer_from(c, "beta_regularizer")));
  }

  /// gamma (when `scale`), then beta (when `center`): Keras's order.
  std::vector<Parameter<T>> parameters() override {
    const std::string& n = this->name();
    std::vector<Parameter<T>> p;
    if (opt_.scale()) p.push_back({n + "/gamma", &gamma_, &dgamma_, opt_.gamma_regularizer()});
    if (opt_.center()) p.push_back({n + "/beta", &beta_, &dbeta_, opt_.beta_regularizer()});
    return p;
  }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    if (in.rank() < 1) this->reject_input(in, "of rank >= 1");
    const int k = trailing_axes(opt_.axis(), in.rank());
    if (k == 0) {
      std::string axes;
      for (Index a : opt_.axis()) axes += (axes.empty() ? "" : ", ") + std::to_string(a);
      throw ShapeError(detail::str(this->where(), ": axis [", axes, "] of its input ", in.str("None"),
                                   " is not its last axis or several last axes, which loom normalizes over"));
    }
    Shape normalized;
    for (int i = in.rank() - k; i < in.rank(); ++i) normalized.push_back(in[i]);
    gamma_ = opt_.scale() ? this->new_parameter(normalized) : Tensor<T>(normalized);
    beta_ = opt_.center() ? this->new_parameter(normalized) : Tensor<T>(normalized);
    gamma_.fill(T(1));
    dgamma_ = Tensor<T>(normalized);
    dbeta_ = Tensor<T>(normalized);
    return in;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    const Index d = gamma_.size(), rows = x.size() / d;
    const bool train = mode == Mode::Train;
    y_.resize_for_overwrite(x.shape());
    if (train) {  // backward needs xhat and each row's inv
      xhat_.resize_for_overwrite(x.shape());
      inv_.resize_for_overwrite(Shape{rows});
    }
    const double eps = opt_.epsilon();
    detail::parallel(threads_for(rows, d), [&](int t, int nt) {
      const detail::Range mine = detail::split(rows, t, nt);
      const T* __restrict g = gamma_.data();
      const T* __restrict b = beta_.data();
      for (Index r = mine.begin; r < mine.end; ++r) {
        const T* __restrict xr = x.data() + r * d;
        double sum = 0;
        for (Index i = 0; i < d; ++i) sum += static_cast<double>(xr[i]);
        const double mean = sum / static_cast<double>(d);
        double squares = 0;
        for (Index i = 0; i < d; ++i) {
          const double c = static_cast<double>(xr[i]) - mean;
          squares += c * c;
        }
        const double inv = 1.0 / std::sqrt(squares / static_cast<double>(d) + eps);
        const T m = static_cast<T>(mean), s = static_cast<T>(inv);
        T* __restrict yr = y_.data() + r * d;
        if (train) {
          T* __restrict hr = xhat_.data() + r * d;
          for (Index i = 0; i < d; ++i) {
            const T h = (xr[i] - m) * s;
            hr[i] = h;
            yr[i] = h * g[i] + b[i];
          }
          inv_[r] = s;
        } else {
          for (Index i = 0; i < d; ++i) yr[i] = (xr[i] - m) * s * g[i] + b[i];
        }
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    const Index d = gamma_.size(), rows = dy.size() / d;
    const bool input_grad = this->needs_input_grad();
    if (input_grad) dx_.resize_for_overwrite(dy.shape());
    const int threads = threads_for(rows, d);
    const std::size_t need = static_cast<std::size_t>(threads) * 2 * static_cast<std::size_t>(d);
    if (partial_.size() < need) partial_.resize(need);  // grows once: a step allocates nothing after
    detail::parallel(threads, [&](int t, int nt) {
      const detail::Range mine = detail::split(rows, t, nt);
      double* __restrict pg = partial_.data() + static_cast<std::size_t>(t) * 2 * static_cast<std::size_t>(d);
      double* __restrict pb = pg + d;
      std::fill(pg, pg + 2 * d, 0.0);
      const T* __restrict gamma = gamma_.data();
      for (Index r = mine.begin; r < mine.end; ++r) {
        const T* __restrict g = dy.data() + r * d;
        const T* __restrict h = xhat_.data() + r * d;
        double sum_g = 0, sum_gh = 0;  // of dy * gamma, and of that times xhat
        for (Index i = 0; i < d; ++i) {
          const double gi = static_cast<double>(g[i]), hi = static_cast<double>(h[i]);
          pg[i] += gi * hi;
          pb[i] += gi;
          const double gg = gi * static_cast<double>(gamma[i]);
          sum_g += gg;
          sum_gh += gg * hi;
        }
        if (!input_grad) continue;
        const T mean_g = static_cast<T>(sum_g / static_cast<double>(d));
        const T mean_gh = static_cast<T>(sum_gh / static_cast<double>(d));
        const T inv = inv_[r];
        T* __restrict dx = dx_.data() + r * d;
        for (Index i = 0; i < d; ++i) dx[i] = inv * (g[i] * gamma[i] - mean_g - h[i] * mean_gh);
      }
      detail::barrier(nt);
      // dgamma and dbeta: the threads' sums added in thread order, each thread a slice.
      const detail::Range slice = detail::split(d, t, nt);
      for (Index i = slice.begin; i < slice.end; ++i) {
        double sg = 0, sb = 0;
        for (int u = 0; u < nt; ++u) {
          const double* p = partial_.data() + static_cast<std::size_t>(u) * 2 * static_cast<std::size_t>(d);
          sg += p[i];
          sb += p[d + i];
        }
        dgamma_[i] = static_cast<T>(sg);
        dbeta_[i] = static_cast<T>(sb);
      }
    });
    return input_grad ? dx_ : this->empty_;
  }

 private:
  /// Threads for `rows` rows of `d` values: one per 16,384 values or so, at most one per row.
  static int threads_for(Index rows, Index d) {
    return detail::threads_for(std::min<Index>(rows, std::max<Index>(1, rows * d / 16384)));
  }

  LayerNormalizationOptions opt_;
  Tensor<T> gamma_, beta_, dgamma_, dbeta_;
  Tensor<T> y_, xhat_, inv_, dx_;
  std::vector<double> partial_;  ///< per thread: its rows' sums of dy * xhat, then of dy
};

LOOM_REGISTER(LayerNormalization)

}  // namespace loom
