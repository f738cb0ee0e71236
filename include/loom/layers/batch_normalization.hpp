#pragma once
/// \file batch_normalization.hpp
/// `BatchNormalization` over the last axis (channels), with Keras's semantics:
///
///     train:      mu, var = mean and biased variance per channel over N*H*W
///                 y = gamma * (x - mu) / sqrt(var + eps) + beta
///                 moving_mean     <- m * moving_mean     + (1 - m) * mu
///                 moving_variance <- m * moving_variance + (1 - m) * var
///     inference:  the same formula with the moving statistics.
///
/// That moving-variance update is Keras 3's (keras/src/layers/normalization/
/// batch_normalization.py: the biased batch variance). tf.keras 2.x ran
/// TensorFlow's fused kernel, which updates with the unbiased var * n / (n - 1)
/// (n = N*H*W); `unbiased_moving_variance(true)` keeps that rule, and the
/// Keras importer sets it for files saved by Keras 2 (docs/keras-compat.md).
///
/// gamma and beta are trainable; the moving statistics are buffers. The
/// input is viewed as a [rows, channels] matrix; sums run in double (the
/// variance as E[x^2] - mean^2, one pass over the input).
///
/// `synchronized` (Keras 3's option): in data-parallel training
/// (FitOptions::distributed) the batch statistics, and the sums backward
/// needs, are those of the global batch, summed across the replicas; without
/// it each replica normalizes with its own slice's statistics. Elsewhere it
/// changes nothing.
///
/// Threads split the rows. Each sums its own rows; the partial sums are then
/// added in thread order, so the statistics do not depend on scheduling
/// (they do, within double rounding, on the thread count).
///
/// In training, a MaxPool2D that follows on NHWC data, with windows that tile
/// the image (strides equal to the pool size), is fused in (fuse_pool; the
/// fusion planner arranges it for each training step): forward writes only
/// the pooled output and, per pooled value, its winner's place and xhat;
/// backward takes the pooled output's gradient and recomputes xhat from the
/// input. Neither the full-size output, nor xhat, nor a full-size output
/// gradient is written: four full-size passes over memory (statistics,
/// pooling, and backward's read of x and write of dx) instead of eleven. The
/// pooled output and the winners are the same bit for bit; the gradients
/// differ only in the order the sums of backward are added.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "../parallel.hpp"
#include "../kernels/column_sums.hpp"
#include "layer.hpp"
#include "max_pool2d.hpp"

namespace loom {

/// Keras's BatchNormalization arguments and defaults.
class BatchNormalizationOptions {
 public:
  BatchNormalizationOptions() = default;
  LOOM_OPTION(double, momentum, 0.99)
  LOOM_OPTION(double, epsilon, 1e-3)
  /// Whether beta (an offset) and gamma (a scale) exist and are learned.
  /// Without them they stay 0 and 1 and are not parameters at all.
  LOOM_OPTION(bool, center, true)
  LOOM_OPTION(bool, scale, true)
  /// Statistics of the global batch in data-parallel training.
  LOOM_OPTION(bool, synchronized, false)
  /// The moving variance takes the unbiased batch variance, var * n / (n - 1)
  /// (tf.keras 2.x's fused kernel), instead of Keras 3's biased one.
  LOOM_OPTION(bool, unbiased_moving_variance, false)
  /// Keras's weight regularizers of gamma and beta (regularizers.hpp).
  LOOM_OPTION(Regularizer, gamma_regularizer, Regularizer())
  LOOM_OPTION(Regularizer, beta_regularizer, Regularizer())
};

template <class T>
class BatchNormalization : public Layer<T>, public RowStatisticsSink<T> {
 public:
  explicit BatchNormalization(const BatchNormalizationOptions& options = {}) : opt_(options) {
    if (!(opt_.momentum() >= 0 && opt_.momentum() <= 1) || !(opt_.epsilon() > 0)) {
      throw ConfigError(detail::str("BatchNormalization: momentum must be in [0, 1] and epsilon > 0, got momentum=",
                                    opt_.momentum(), " epsilon=", opt_.epsilon()));
    }
  }

  static constexpr const char* class_name = "BatchNormalization";
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "batch_normalization"; }
  const BatchNormalizationOptions& options() const { return opt_; }

  Config config() const override {
    Config c = Config().set("momentum", opt_.momentum()).set("epsilon", opt_.epsilon());
    if (!opt_.center()) c.set("center", false);  // written only when off: older files have neither key
    if (!opt_.scale()) c.set("scale", false);
    if (opt_.synchronized()) c.set("synchronized", true);
    // Always written: a file without it predates the option, and was trained with the unbiased rule.
    c.set("unbiased_moving_variance", opt_.unbiased_moving_variance());
    set_regularizer(c, "gamma_regularizer", opt_.gamma_regularizer());  // only when set
    set_regularizer(c, "beta_regularizer", opt_.beta_regularizer());
    return c;
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<BatchNormalization>(BatchNormalizationOptions()
                                                    .momentum(c.real("momentum"))
                                                    .epsilon(c.real("epsilon"))
                                                    .center(c.flag("center", true))
                                                    .scale(c.flag("scale", true))
                                                    .synchronized(c.flag("synchronized", false))
                                                    .unbiased_moving_variance(c.flag("unbiased_moving_variance", true))
                                                    .gamma_regularizer(regularizer_from(c, "gamma_regularizer"))
                                                    .beta_regularizer(regularizer_from(c, "beta_regularizer")));
  }

  /// gamma (when `scale`), beta (when `center`), moving_mean, moving_variance:
  /// Keras's order.
  std::vector<Parameter<T>> parameters() override {
    const std::string& n = this->name();
    std::vector<Parameter<T>> p;
    if (opt_.scale()) p.push_back({n + "/gamma", &gamma_, &dgamma_, opt_.gamma_regularizer()});
    if (opt_.center()) p.push_back({n + "/beta", &beta_, &dbeta_, opt_.beta_regularizer()});
    p.push_back({n + "/moving_mean", &moving_mean_, nullptr});
    p.push_back({n + "/moving_variance", &moving_var_, nullptr});
    return p;
  }

  /// Reads gamma, beta and the moving statistics of a BatchNormalization
  /// of the same configuration (see Layer).
  bool share_parameters_of(const Layer<T>& source) override {
    const BatchNormalization* s = this->template share_source<BatchNormalization>(source);
    if (s != nullptr && s->shared_ != nullptr) s = s->shared_;
    if (s == nullptr || s->opt_.epsilon() != opt_.epsilon()) return false;
    shared_ = s;
    gamma_ = beta_ = moving_mean_ = moving_var_ = dgamma_ = dbeta_ = Tensor<T>();
    this->shares_parameters();
    return true;
  }

  /// Training fusion with the MaxPool2D after it, arranged by fusion.hpp's
  /// planner (TrainingFusion) for one step, or ended with nullptr: while
  /// set, the Mode::Train forward returns the pooled output and backward
  /// takes its gradient (see the file comment). `pool` must follow this
  /// layer, on images, with windows that tile them.
  void fuse_pool(MaxPool2D<T>* pool) {
    pool_ = pool;
    this->set_fused_next(pool);
  }
  MaxPool2D<T>* fused_pool() const { return pool_; }

  /// Training fusion of the ReLU's derivative of the layer before it,
  /// arranged by the planner for one step: while on, backward multiplies
  /// its input gradient by (input > 0) (Conv2D::set_relu_grad_left). Only
  /// with needs_input_grad().
  void set_input_relu_grad(bool on) { input_relu_grad_ = on; }
  bool takes_input_relu_grad() const { return input_relu_grad_; }

  /// Training fusion of the gradients of the layer before it, arranged by
  /// the planner for one step (Conv2D::set_weights_grad_left), or ended with
  /// nullptr: while set, backward (fused with the MaxPool2D) hands its input
  /// gradient to `layer` one row at a time from a small scratch instead of
  /// writing it, and returns an empty tensor.
  void take_weights_grad(RowGradientSink<T>* layer) { rows_to_ = layer; }
  RowGradientSink<T>* weights_grad_taken() const { return rows_to_; }

  /// Training fusion of the batch statistics, arranged by the planner for
  /// one step (Conv2D::set_statistics_to): the layer before sums them as it
  /// writes its output, and the next Mode::Train forward of that output
  /// uses its sums instead of reading it for them. Taken only when its
  /// threads split the rows as this layer's forward would.
  bool begin_statistics(const T* output, Index rows, int threads) override {
    summed_ = nullptr;
    if (threads != threads_for(rows, channels())) return false;
    for (int t = 0; t < threads; ++t) std::fill(partial(t), partial(t) + 2 * channels(), 0.0);
    summed_ = output;
    summed_rows_ = rows;
    return true;
  }
  /// Whether the last Mode::Train forward's statistics were the sums the layer before made.
  bool statistics_summed() const { return summed_now_; }
  void add_statistics_rows(int t, const T* rows, Index count) override {
    double* s = partial(t);
    detail::add_column_sums<detail::Second::Squares>(rows, static_cast<const T*>(nullptr), count, channels(), s,
                                                     s + channels());
  }

  void set_replicas(Communicator* replicas) override { replicas_ = opt_.synchronized() ? replicas : nullptr; }
  void forward_without_samples() override {
    if (!replicas_) return;
    std::fill(stats_.begin(), stats_.end(), 0.0);
    replicas_->allreduce_sum(stats_.data(), static_cast<Index>(stats_.size()));
    batch_statistics();
  }
  void backward_without_samples() override {
    if (!replicas_) return;
    std::fill(stats_.begin(), stats_.end(), 0.0);
    replicas_->allreduce_sum(stats_.data(), 2 * channels());
    dgamma_.fill(T(0));
    dbeta_.fill(T(0));
  }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    if (in.rank() < 1) this->reject_input(in, "of rank >= 1 (features last)");
    const Index c = in.back();
    gamma_ = opt_.scale() ? this->new_parameter(Shape{c}) : Tensor<T>(Shape{c});
    beta_ = opt_.center() ? this->new_parameter(Shape{c}) : Tensor<T>(Shape{c});
    for (Tensor<T>* t : {&moving_mean_, &moving_var_}) *t = this->new_parameter(Shape{c});
    gamma_.fill(T(1));
    moving_var_.fill(T(1));
    dgamma_ = Tensor<T>(Shape{c});
    dbeta_ = Tensor<T>(Shape{c});
    for (Tensor<T>* t : {&inv_std_, &mean_, &mean_dy_, &mean_dyh_, &scale_}) *t = Tensor<T>(Shape{c});
    stats_.assign(static_cast<std::size_t>(2 * c + 1), 0.0);
    return in;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    const Index c = channels(), rows = x.size() / c;
    y_.resize_for_overwrite(x.shape());
    const int threads = threads_for(rows, c);
    if (mode == Mode::Inference) {
      const BatchNormalization& w = weights();
      for (Index k = 0; k < c; ++k) {
        inv_std_[k] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(w.moving_var_[k]) + opt_.epsilon()));
        scale_[k] = w.gamma_[k] * inv_std_[k];
      }
      detail::parallel(threads, [&](int t, int nt) {
        const detail::Range mine = detail::split(rows, t, nt);
        for (Index r = mine.begin; r < mine.end; ++r) {
          const T* xr = x.data() + r * c;
          T* yr = y_.data() + r * c;
          for (Index k = 0; k < c; ++k) yr[k] = (xr[k] - w.moving_mean_[k]) * scale_[k] + w.beta_[k];
        }
      });
      return y_;
    }
    pooled_forward_ = fused_pool() != nullptr;
    input_ = &x;
    summed_now_ = summed_ == x.data() && summed_rows_ == rows;  // (begin_statistics checked the threads)
    summed_ = nullptr;
    if (pooled_forward_) return forward_pooled(x, threads);
    xhat_.resize_for_overwrite(x.shape());
    detail::parallel(threads, [&](int t, int nt) {
      const detail::Range mine = detail::split(rows, t, nt);
      gather_statistics(x, t, nt);
      // xhat is kept for backward; y = gamma * xhat + beta.
      const T* __restrict mu = mean_.data();
      const T* __restrict is = inv_std_.data();
      const T* __restrict g = gamma_.data();
      const T* __restrict b = beta_.data();
      for (Index r = mine.begin; r < mine.end; ++r) {
        const T* __restrict xr = x.data() + r * c;
        T* __restrict hr = xhat_.data() + r * c;
        T* __restrict yr = y_.data() + r * c;
        for (Index k = 0; k < c; ++k) {
          const T h = (xr[k] - mu[k]) * is[k];
          hr[k] = h;
          yr[k] = g[k] * h + b[k];
        }
      }
    });
    return y_;
  }

  // (public: read by the layer that absorbs this one in inference)
 public:
  /// The inference transform as y = x * scale + shift per channel (what a
  /// layer that absorbs this one applies), from the moving statistics.
  void inference_affine(T* scale, T* shift) const {
    const BatchNormalization& w = weights();
    for (Index k = 0; k < channels(); ++k) {
      const double a = double(w.gamma_[k]) / std::sqrt(static_cast<double>(w.moving_var_[k]) + opt_.epsilon());
      scale[k] = static_cast<T>(a);
      shift[k] = static_cast<T>(double(w.beta_[k]) - double(w.moving_mean_[k]) * a);
    }
  }

 protected:
  /// dx = gamma * inv_std / n * (n * dy - sum(dy) - xhat * sum(dy * xhat))
  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (pooled_forward_ != (fused_pool() != nullptr)) {
      throw ConfigError(this->where() + ": backward() must be fused with the MaxPool2D as its forward() was, or not");
    }
    if (pooled_forward_) return backward_pooled(dy);
    const Index c = channels(), rows = dy.size() / c;
    const bool input_grad = this->needs_input_grad();
    if (input_grad) dx_.resize_for_overwrite(dy.shape());
    detail::parallel(threads_for(rows, c), [&](int t, int nt) {
      const detail::Range mine = detail::split(rows, t, nt);
      double* s = partial(t);
      std::fill(s, s + 2 * c, 0.0);
      detail::add_column_sums<detail::Second::Products>(dy.data() + mine.begin * c, xhat_.data() + mine.begin * c,
                                                        mine.size(), c, s, s + c);
      finish_backward_sums(t, nt);
      if (input_grad) {
        const T* __restrict sc = scale_.data();
        const T* __restrict mg = mean_dy_.data();
        const T* __restrict mgh = mean_dyh_.data();
        const bool relu = input_relu_grad_;
        for (Index r = mine.begin; r < mine.end; ++r) {
          const T* __restrict g = dy.data() + r * c;
          const T* __restrict h = xhat_.data() + r * c;
          T* __restrict d = dx_.data() + r * c;
          for (Index k = 0; k < c; ++k) d[k] = sc[k] * (g[k] - mg[k] - h[k] * mgh[k]);
          if (relu) {
            const T* __restrict xr = input_->data() + r * c;
            for (Index k = 0; k < c; ++k) d[k] = xr[k] > T(0) ? d[k] : T(0);
          }
        }
      }
    });
    return input_grad ? dx_ : this->empty_;
  }

 private:
  Index channels() const { return scale_.size(); }  // (its own: gamma_ is empty when shared)
  /// The layer whose gamma, beta and statistics inference reads: its own, or the one it shares.
  const BatchNormalization& weights() const { return shared_ != nullptr ? *shared_ : *this; }

  /// In every thread of a parallel region: the batch statistics of x in
  /// one pass (sums of x and of x^2, in double, so that var = E[x^2] -
  /// mean^2 loses nothing a float could hold), then, on thread 0 alone
  /// (the calling thread: MPI needs no more than MPI_THREAD_FUNNELED),
  /// their sum over threads and replicas and the moving statistics'
  /// update. Ends in a barrier. The sums are the layer before's when it made them
  /// (begin_statistics).
  void gather_statistics(const Tensor<T>& x, int t, int nt) {
    const Index c = channels(), rows = x.size() / c;
    if (!summed_now_) {
      const detail::Range mine = detail::split(rows, t, nt);
      double* s = partial(t);
      std::fill(s, s + 2 * c, 0.0);
      detail::add_column_sums<detail::Second::Squares>(x.data() + mine.begin * c, static_cast<const T*>(nullptr),
                                                       mine.size(), c, s, s + c);
    }
    detail::barrier(nt);
    if (t == 0) {
      reduce_partials(nt);
      stats_[static_cast<std::size_t>(2 * c)] = static_cast<double>(rows);
      if (replicas_) replicas_->allreduce_sum(stats_.data(), 2 * c + 1);
      batch_statistics();
    }
    detail::barrier(nt);
  }

  /// In every thread, once each has its partial sums of dy and dy * xhat: on
  /// thread 0, dbeta and dgamma (this replica's share: the trainer sums
  /// them across replicas), the global sums' means and gamma * inv_std.
  /// Starts and ends in a barrier.
  void finish_backward_sums(int t, int nt) {
    const Index c = channels();
    detail::barrier(nt);
    if (t == 0) {
      reduce_partials(nt);
      for (Index k = 0; k < c; ++k) {
        dbeta_[k] = static_cast<T>(stats_[static_cast<std::size_t>(k)]);
        dgamma_[k] = static_cast<T>(stats_[static_cast<std::size_t>(c + k)]);
      }
      if (replicas_) replicas_->allreduce_sum(stats_.data(), 2 * c);
      for (Index k = 0; k < c; ++k) {
        mean_dy_[k] = static_cast<T>(stats_[static_cast<std::size_t>(k)] / count_);
        mean_dyh_[k] = static_cast<T>(stats_[static_cast<std::size_t>(c + k)] / count_);
        scale_[k] = gamma_[k] * inv_std_[k];
      }
    }
    detail::barrier(nt);
  }

  // ---- Fused with the MaxPool2D that follows (training only) ----------------

  /// A winner's place in its window, row-major over the window's cells. As
  /// wide as a float: with bytes, g++ vectorizes the loops over channels 64
  /// at a time and runs the notebook's 50 and 25 channels unvectorized.
  using Cell = std::int32_t;

  /// The window of pooled output (oh, ow), clipped to the image: rows [h0, h1), columns [w0, w1).
  struct Clip {
    Index h0, h1, w0, w1, top, left;  // top, left: the unclipped window's first row and column
  };
  static Clip clip(const detail::Window2D& g, Index oh, Index ow) {
    const Index top = oh * g.sh - g.pad_top, left = ow * g.sw - g.pad_left;
    return {std::max<Index>(top, 0), std::min<Index>(top + g.kh, g.h), std::max<Index>(left, 0),
            std::min<Index>(left + g.kw, g.w), top, left};
  }

  /// Statistics, then each window's maximum of gamma * xhat + beta (the
  /// same arithmetic as the unfused pass, so the same values and, first
  /// maximum winning and NaN winning as MaxPool2D's, the same winners).
  const Tensor<T>& forward_pooled(const Tensor<T>& x, int threads) {
    const Index c = channels();
    const detail::Window2D& g = pool_->window();
    const Index n = x.dim(0);
    pooled_.resize_for_overwrite(Shape{n, g.ho, g.wo, c});
    pooled_xhat_.resize_for_overwrite(pooled_.shape());
    winners_.resize(static_cast<std::size_t>(pooled_.size()));
    detail::parallel(threads, [&](int t, int nt) {
      gather_statistics(x, t, nt);
      const T* __restrict mu = mean_.data();
      const T* __restrict is = inv_std_.data();
      const T* __restrict ga = gamma_.data();
      const T* __restrict be = beta_.data();
      const detail::Range mine = detail::split(n, t, nt);
      for (Index s = mine.begin; s < mine.end; ++s) {
        for (Index oh = 0; oh < g.ho; ++oh) {
          for (Index ow = 0; ow < g.wo; ++ow) {
            const Clip w = clip(g, oh, ow);
            const Index out = ((s * g.ho + oh) * g.wo + ow) * c;
            T* best = pooled_.data() + out;
            T* best_xhat = pooled_xhat_.data() + out;
            Cell* at = winners_.data() + out;
            if (whole_2x2(g, w)) {
              pool_window(x.data() + ((s * g.h + w.h0) * g.w + w.w0) * c, g.w * c, mu, is, ga, be, c, best,
                          best_xhat, at);
              continue;
            }
            bool first = true;
            for (Index ih = w.h0; ih < w.h1; ++ih) {
              for (Index iw = w.w0; iw < w.w1; ++iw) {
                const T* xr = x.data() + ((s * g.h + ih) * g.w + iw) * c;
                const auto cell = static_cast<Cell>((ih - w.top) * g.kw + (iw - w.left));
                pool_cell(first, xr, mu, is, ga, be, c, cell, best, best_xhat, at);
                first = false;
              }
            }
          }
        }
      }
    });
    return pooled_;
  }

  /// dy is the pooled output's gradient: the full-size one is dy at each
  /// winner and 0 elsewhere. Its sums need only the winners' xhat, which
  /// forward kept; dx is written pixel by pixel, with xhat recomputed from the input.
  const Tensor<T>& backward_pooled(const Tensor<T>& dy) {
    const Index c = channels();
    const detail::Window2D& g = pool_->window();
    const Tensor<T>& x = *input_;
    const Index n = x.dim(0);
    const bool input_grad = this->needs_input_grad();
    RowGradientSink<T>* const sink = input_grad ? rows_to_ : nullptr;
    const int threads = sink ? sink->prepare_rows() : threads_for(x.size() / c, c);
    if (sink) {
      reserve_partials(threads);
      const auto band = static_cast<std::size_t>(threads * g.kh * g.w * c);
      if (band_.size() < band) band_.resize(band);
    } else if (input_grad) {
      dx_.resize_for_overwrite(x.shape());
    }
    detail::parallel(threads, [&](int t, int nt) {
      const detail::Range mine = detail::split(n, t, nt);
      double* s = partial(t);
      std::fill(s, s + 2 * c, 0.0);
      // The full-size dy is 0 but at the winners, whose xhat forward kept.
      const Index first = mine.begin * g.ho * g.wo;
      detail::add_column_sums<detail::Second::Products>(dy.data() + first * c, pooled_xhat_.data() + first * c,
                                                        mine.size() * g.ho * g.wo, c, s, s + c);
      finish_backward_sums(t, nt);
      if (!input_grad) return;
      if (sink) sink->begin_rows(t);
      T* band = sink ? band_.data() + static_cast<std::size_t>(t * g.kh * g.w * c) : nullptr;
      // 'valid' pooling leaves the last rows and columns from these in no window.
      const Index rows_in = std::clamp<Index>(g.ho * g.kh - g.pad_top, 0, g.h);
      const Index cols_in = std::clamp<Index>(g.wo * g.kw - g.pad_left, 0, g.w);
      for (Index sample = mine.begin; sample < mine.end; ++sample) {
        // A band of rows at a time (a row of windows, or a row in none),
        // written to dx_ or to the scratch band, then handed to the sink.
        const auto rows = [&](Index r0, Index r1, auto&& write) {
          const Index first = (sample * g.h + r0) * g.w;  // the band's first cell
          write(Band{first, sink ? band : dx_.data() + first * c});
          if (sink) {
            for (Index r = r0; r < r1; ++r) sink->add_row(t, sample * g.h + r, band + (r - r0) * g.w * c);
          }
        };
        for (Index oh = 0; oh < g.ho; ++oh) {
          const Clip band_rows = clip(g, oh, 0);
          rows(band_rows.h0, band_rows.h1, [&](Band dx) {
            if (input_relu_grad_) {
              window_row_dx<true>(x, dy, g, sample, oh, cols_in, dx);
            } else {
              window_row_dx<false>(x, dy, g, sample, oh, cols_in, dx);
            }
          });
        }
        for (Index ih = rows_in; ih < g.h; ++ih) {  // rows in no window: their output gradient is 0
          rows(ih, ih + 1, [&](Band dx) {
            if (input_relu_grad_) {
              unpooled_row_dx<true>(x, g, sample, ih, dx);
            } else {
              unpooled_row_dx<false>(x, g, sample, ih, dx);
            }
          });
        }
      }
      if (sink) {
        detail::barrier(nt);
        sink->end_rows(t, nt);
      }
    });
    return input_grad && !sink ? dx_ : this->empty_;
  }

  /// Where a band of rows' dx goes: cell `first`'s at `at`, the cells
  /// after it in order (in dx_, or in a thread's scratch band).
  struct Band {
    Index first;
    T* at;
    T* cell(Index i, Index c) const { return at + (i - first) * c; }
  };

  /// dx of the cells of window row oh of one sample, into dx: each
  /// window's, then those in no window at the end of the rows (columns from
  /// cols_in on, which 'valid' pooling leaves out).
  template <bool Relu>
  void window_row_dx(const Tensor<T>& x, const Tensor<T>& dy, const detail::Window2D& g, Index sample, Index oh,
                     Index cols_in, Band dx) const {
    const Index c = channels();
    const T *mu = mean_.data(), *is = inv_std_.data(), *sc = scale_.data(), *mg = mean_dy_.data(),
            *mgh = mean_dyh_.data();
    Clip w{};
    for (Index ow = 0; ow < g.wo; ++ow) {
      w = clip(g, oh, ow);
      const Index out = ((sample * g.ho + oh) * g.wo + ow) * c;
      const T* gy = dy.data() + out;
      const Cell* at = winners_.data() + out;
      if (kWindowDx && whole_2x2(g, w)) {
        const Index cell = (sample * g.h + w.h0) * g.w + w.w0;
        dx_window<Relu>(x.data() + cell * c, g.w * c, mu, is, sc, mg, mgh, gy, at, c, dx.cell(cell, c));
        continue;
      }
      for (Index ih = w.h0; ih < w.h1; ++ih) {
        for (Index iw = w.w0; iw < w.w1; ++iw) {
          const Index cell = (sample * g.h + ih) * g.w + iw;
          const auto place = static_cast<Cell>((ih - w.top) * g.kw + (iw - w.left));
          dx_cell<Relu>(x.data() + cell * c, mu, is, sc, mg, mgh, gy, at, place, c, dx.cell(cell, c));
        }
      }
    }
    for (Index ih = w.h0; ih < w.h1; ++ih) {
      for (Index iw = cols_in; iw < g.w; ++iw) {
        const Index cell = (sample * g.h + ih) * g.w + iw;
        dx_cell<Relu>(x.data() + cell * c, mu, is, sc, mg, mgh, nullptr, nullptr, 0, c, dx.cell(cell, c));
      }
    }
  }

  /// dx of row ih of one sample, a row in no window, into dx.
  template <bool Relu>
  void unpooled_row_dx(const Tensor<T>& x, const detail::Window2D& g, Index sample, Index ih, Band dx) const {
    const Index c = channels();
    for (Index iw = 0; iw < g.w; ++iw) {
      const Index cell = (sample * g.h + ih) * g.w + iw;
      dx_cell<Relu>(x.data() + cell * c, mean_.data(), inv_std_.data(), scale_.data(), mean_dy_.data(),
                    mean_dyh_.data(), nullptr, nullptr, 0, c, dx.cell(cell, c));
    }
  }

  // The per-pixel loops over channels, apart and not inlined, so that the
  // compiler sees only restrict pointers and values: inlined into the loops
  // over pixels, g++ 12 vectorized them only in part.

  /// One cell of a window: best, best_xhat, at <- its gamma * xhat + beta,
  /// its xhat and its place where larger (or NaN, the first NaN staying), or
  /// unconditionally for the window's first cell.
  [[gnu::noinline]] static void pool_cell(bool first, const T* __restrict x, const T* __restrict mu,
                                          const T* __restrict is, const T* __restrict ga, const T* __restrict be,
                                          Index c, Cell cell, T* __restrict best, T* __restrict best_xhat,
                                          Cell* __restrict at) {
    if (first) {
      for (Index k = 0; k < c; ++k) {
        const T h = (x[k] - mu[k]) * is[k];
        best[k] = ga[k] * h + be[k];
        best_xhat[k] = h;
        at[k] = cell;
      }
      return;
    }
    for (Index k = 0; k < c; ++k) {
      const T h = (x[k] - mu[k]) * is[k];
      const T v = ga[k] * h + be[k], b = best[k];
      const bool take = v > b || (v != v && b == b);
      best[k] = take ? v : b;
      best_xhat[k] = take ? h : best_xhat[k];
      at[k] = take ? cell : at[k];
    }
  }

  /// Whether window w is a whole 2x2 one (MaxPool2D's default, unclipped)
  /// of at least 16 channels, which pool_window and dx_window take in one
  /// pass. (With fewer, g++ rounds dx_window's values of a ReLU's input
  /// differently from dx_cell's.)
  static bool whole_2x2(const detail::Window2D& g, const Clip& w) {
    return g.kh == 2 && g.kw == 2 && w.h1 - w.h0 == 2 && w.w1 - w.w0 == 2 && g.c >= kBlock;
  }

  /// f(k0) for channel blocks [k0, k0 + kBlock) that cover [0, c), c >=
  /// kBlock: whole blocks, the last one overlapping the one before when c is
  /// not a multiple of kBlock, so that g++ runs every block as whole
  /// vectors (it ran the rest of 75 channels one at a time). Only for passes
  /// that write each channel's values from that channel's inputs alone,
  /// which a channel done twice writes twice alike.
  static constexpr Index kBlock = 16;
  template <class F>
  static void for_channel_blocks(Index c, F&& f) {
    for (Index k0 = 0; k0 < c; k0 += kBlock) f(std::min(k0, c - kBlock));
  }

  /// pool_cell over a whole 2x2 window at once, its top left value x[0] and
  /// the row below it at x + row: the same values and winners, with each
  /// channel's statistics and running maximum read and written once per
  /// window, not once per cell (the pass took 6 % of a training step).
  [[gnu::noinline]] static void pool_window(const T* __restrict x, Index row, const T* __restrict mu,
                                            const T* __restrict is, const T* __restrict ga, const T* __restrict be,
                                            Index c, T* __restrict best, T* __restrict best_xhat,
                                            Cell* __restrict at) {
    for_channel_blocks(c, [&](Index k0) {
      for (Index k = k0; k < k0 + kBlock; ++k) {
        const T m = mu[k], s = is[k], a = ga[k], b = be[k];
        const T h0 = (x[k] - m) * s, h1 = (x[c + k] - m) * s, h2 = (x[row + k] - m) * s,
                h3 = (x[row + c + k] - m) * s;
        T v = a * h0 + b, h = h0;
        Cell place = 0;
        const auto offer = [&](T hi, Cell cell) {
          const T vi = a * hi + b;
          const bool take = vi > v || (vi != vi && v == v);
          v = take ? vi : v;
          h = take ? hi : h;
          place = take ? cell : place;
        };
        offer(h1, 1);
        offer(h2, 2);
        offer(h3, 3);
        best[k] = v;
        best_xhat[k] = h;
        at[k] = place;
      }
    });
  }

  /// Whether backward takes whole 2x2 windows with dx_window: for floats
  /// always (dx_window_float), for doubles (the gradient checks) with
  /// AVX-512 only, where g++ 12 vectorizes the plain loop.
#if defined(__AVX512F__)
  static constexpr bool kWindowDx = true;
#else
  static constexpr bool kWindowDx = std::is_same_v<T, float>;
#endif

  /// dx_cell over a whole 2x2 window at once (as pool_window), with its
  /// output gradient dy and winners at: each channel's factors read once per window.
  template <bool Relu>
  [[gnu::noinline]] static void dx_window(const T* __restrict x, Index row, const T* __restrict mu,
                                          const T* __restrict is, const T* __restrict sc, const T* __restrict mg,
                                          const T* __restrict mgh, const T* __restrict dy, const Cell* __restrict at,
                                          Index c, T* __restrict d) {
    if constexpr (std::is_same_v<T, float>) {
      dx_window_float<Relu>(x, row, mu, is, sc, mg, mgh, dy, at, c, d);
    } else {
      for_channel_blocks(c, [&](Index k0) {
        for (Index k = k0; k < k0 + kBlock; ++k) {
          const T m = mu[k], s = is[k], f = sc[k], base = mg[k], slope = mgh[k], g = dy[k];
          const Cell won = at[k];
          const auto cell = [&](Index o, Cell place) {
            const T xv = x[o + k], h = (xv - m) * s;
            const T v = f * ((won == place ? g : T(0)) - (base + h * slope));
            d[o + k] = !Relu || xv > T(0) ? v : T(0);
          };
          cell(0, 0);
          cell(c, 1);
          cell(row, 2);
          cell(row + c, 3);
        }
      });
    }
  }

  /// dx_window's loop on the target's vectors (GCC's vector extension, also
  /// Clang's): the same operations as dx_cell's in the same order, so the
  /// same bits. Written as the plain loop, g++ 12 vectorized it with AVX-512
  /// but none of it on AVX2 ("control flow in loop": the winner's and the
  /// ReLU's selects), which made it a third of an AVX2 training step; the
  /// AVX2 build then ran dx_cell per cell. Now BatchNormalization 1's
  /// backward there takes 0.89 ms a step, not 1.06 (Intel Xeon, batch 32).
  template <bool Relu>
  static void dx_window_float(const float* __restrict x, Index row, const float* __restrict mu,
                              const float* __restrict is, const float* __restrict sc, const float* __restrict mg,
                              const float* __restrict mgh, const float* __restrict dy, const Cell* __restrict at,
                              Index c, float* __restrict d) {
#if defined(__AVX512F__)
    constexpr int L = 16;
#else
    constexpr int L = 8;  // wider vectors g++ splits into scalars, with branches
#endif
    using V = float __attribute__((vector_size(L * sizeof(float))));
    using I = Cell __attribute__((vector_size(L * sizeof(Cell))));
    static_assert(sizeof(Cell) == sizeof(float) && kBlock % L == 0, "a winner's mask selects one float");
    const auto load = [](const auto* p) {
      std::conditional_t<std::is_same_v<std::remove_cv_t<std::remove_pointer_t<decltype(p)>>, Cell>, I, V> v;
      std::memcpy(&v, p, sizeof v);
      return v;
    };
    const V zero = {};
    for_channel_blocks(c, [&](Index block) {
      for (Index k0 = block; k0 < block + kBlock; k0 += L) {
        const V m = load(mu + k0), s = load(is + k0), f = load(sc + k0), base = load(mg + k0),
                slope = load(mgh + k0), g = load(dy + k0);
        const I won = load(at + k0);
        const auto cell = [&](Index o, Cell place) {
          const V xv = load(x + o + k0), h = (xv - m) * s;
          V v = f * ((won == place ? g : zero) - (base + h * slope));
          if (Relu) v = xv > zero ? v : zero;
          std::memcpy(d + o + k0, &v, sizeof v);
        };
        cell(0, 0);
        cell(c, 1);
        cell(row, 2);
        cell(row + c, 3);
      }
    });
  }

  /// dx of one cell, from its window's output gradient (dy, at) where it
  /// won, or none (dy null); with Relu, 0 where x <= 0 (set_input_relu_grad).
  /// Here and in dx_window, mean(dy) + xhat * mean(dy xhat) is bracketed so
  /// that its product has one use, which g++ then fuses into an FMA in every
  /// copy of the loop alike: written g - mg - h * mgh, it fused some and not
  /// others, and dx with Relu and without (the ReLU applied by the layer
  /// before) differed by more than rounding where the terms cancel.
  template <bool Relu>
  [[gnu::noinline]] static void dx_cell(const T* __restrict x, const T* __restrict mu, const T* __restrict is,
                                        const T* __restrict sc, const T* __restrict mg, const T* __restrict mgh,
                                        const T* __restrict dy, const Cell* __restrict at, Cell place, Index c,
                                        T* __restrict d) {
    if (!dy) {
      for (Index k = 0; k < c; ++k) d[k] = sc[k] * (T(0) - (mg[k] + (x[k] - mu[k]) * is[k] * mgh[k]));
    } else {
      for (Index k = 0; k < c; ++k) {
        const T h = (x[k] - mu[k]) * is[k], g = dy[k];
        d[k] = sc[k] * ((at[k] == place ? g : T(0)) - (mg[k] + h * mgh[k]));
      }
    }
    // A loop of its own: folded into the one above, g++ 12 vectorized it
    // with AVX-512's masks but left it scalar, with branches, on AVX2.
    if (Relu) {
      for (Index k = 0; k < c; ++k) d[k] = x[k] > T(0) ? d[k] : T(0);
    }
  }

  /// Threads for a [rows, c] pass (about 16K elements each at least), with
  /// room for each one's partial sums.
  int threads_for(Index rows, Index c) {
    const int threads = detail::threads_for(std::max<Index>(1, rows * c / 16384));
    reserve_partials(threads);
    return threads;
  }
  void reserve_partials(int threads) {
    const auto need = static_cast<std::size_t>(threads * 2 * channels());
    if (partial_.size() < need) partial_.resize(need);
  }

  /// Thread t's partial sums: [0, c) and [c, 2c).
  double* partial(int t) { return partial_.data() + static_cast<std::size_t>(t) * 2 * channels(); }

  /// stats_[0..2c) = the sum over the threads, in thread order, of their partial sums.
  void reduce_partials(int threads) {
    const std::size_t n = static_cast<std::size_t>(2 * channels());
    std::fill(stats_.begin(), stats_.begin() + static_cast<std::ptrdiff_t>(n), 0.0);
    for (int t = 0; t < threads; ++t) {
      const double* s = partial(t);
      for (std::size_t k = 0; k < n; ++k) stats_[k] += s[k];
    }
  }

  /// From stats_ (sums of x and x^2, and the row count n): the batch mean and
  /// inverse standard deviation, and the moving statistics' update.
  void batch_statistics() {
    const Index c = channels();
    const double n = stats_[static_cast<std::size_t>(2 * c)], m = opt_.momentum();
    count_ = n;
    for (Index k = 0; k < c; ++k) {
      const double mean = stats_[static_cast<std::size_t>(k)] / n;
      const double var = std::max(stats_[static_cast<std::size_t>(c + k)] / n - mean * mean, 0.0);
      inv_std_[k] = static_cast<T>(1.0 / std::sqrt(var + opt_.epsilon()));
      const double update = opt_.unbiased_moving_variance() && n > 1 ? var * n / (n - 1) : var;
      moving_mean_[k] = static_cast<T>(m * moving_mean_[k] + (1 - m) * mean);
      moving_var_[k] = static_cast<T>(m * moving_var_[k] + (1 - m) * update);
      mean_[k] = static_cast<T>(mean);
    }
  }

  BatchNormalizationOptions opt_;
  Tensor<T> gamma_, beta_, moving_mean_, moving_var_, dgamma_, dbeta_;
  const BatchNormalization* shared_ = nullptr;  // share_parameters_of: whose parameters inference reads
  Tensor<T> inv_std_, mean_, mean_dy_, mean_dyh_, scale_;
  Tensor<T> y_, xhat_, dx_;
  MaxPool2D<T>* pool_ = nullptr;  ///< the MaxPool2D fused in (fuse_pool), or null
  bool pooled_forward_ = false;   ///< whether the last training forward was fused
  bool input_relu_grad_ = false;  ///< see set_input_relu_grad
  RowGradientSink<T>* rows_to_ = nullptr;  ///< see take_weights_grad
  const T* summed_ = nullptr;               ///< the output whose sums the layer before made (begin_statistics)
  Index summed_rows_ = 0;                   ///< its rows
  bool summed_now_ = false;                 ///< whether this training forward's partial sums are made
  std::vector<T> band_;           ///< with rows_to_: each thread's band of dx rows
  /// The last training forward's input, which backward reads again when
  /// fused (with the MaxPool2D or a ReLU's derivative): the trainer keeps it.
  const Tensor<T>* input_ = nullptr;
  Tensor<T> pooled_, pooled_xhat_;  ///< each window's maximum, and the xhat of its winner
  std::vector<Cell, detail::UninitializedAllocator<Cell>> winners_;  // every element written by forward
  /// Per channel, the sums of x and x^2 (forward) or of dy and dy * xhat
  /// (backward), then the row count: what synchronized replicas add up.
  std::vector<double> stats_, partial_;
  double count_ = 0;  ///< rows in the last training forward's (global) batch
  Communicator* replicas_ = nullptr;
};

LOOM_REGISTER(BatchNormalization)

}  // namespace loom
