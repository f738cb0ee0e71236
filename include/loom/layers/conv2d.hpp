#pragma once
/// \file conv2d.hpp
/// `Conv2D`: 2-D convolution over NHWC images by im2col + one GEMM; for 3x3
/// stride-1 layers, by Winograd's F(4x4, 3x3) (kernels/winograd.hpp) for the
/// forward, the backward to the input and, where that pays, the weights'
/// gradient; for layers with few input channels, by the same GEMM reading
/// the image in place (kernels/direct_conv.hpp). See ConvAlgorithm.
///
///     forward:   col = im2col(x)                 [N*Ho*Wo, kh*kw*Cin]
///                y   = f(col * K + b)            [N*Ho*Wo, Cout] = NHWC output
///     backward:  dz  = dy * f'(y)
///                dK  = colT * dz,  db = sum over rows of dz
///                     (or Winograd's F(3x3, 4x4) from x and dz)
///                dx  = col2im(dz * KT)
///
/// The kernel has Keras's layout [kh, kw, Cin, Cout], which viewed as a
/// [kh*kw*Cin, Cout] row-major matrix multiplies the column matrix directly.
///
/// Threads split the batch: each takes a contiguous run of samples and goes
/// through it a few images at a time (a tile whose column and output rows
/// fit in L2), so im2col's rows are still in cache when its GEMM reads them.
/// The GEMM adds the bias and applies ReLU to each tile before storing it
/// (its epilogue), so the output is written once.
/// Backward, each thread computes the kernel gradient of its own samples,
/// and the threads then add those partial sums in a fixed order: results do
/// not depend on scheduling (they do, within rounding, on the thread count).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>

#include "../initializers.hpp"
#include "../parallel.hpp"
#include "batch_normalization.hpp"
#include "../kernels/activation.hpp"
#include "../kernels/column_sums.hpp"
#include "../kernels/direct_conv.hpp"
#include "../kernels/gemm.hpp"
#include "../kernels/im2col.hpp"
#include "../kernels/winograd.hpp"
#include "layer.hpp"
#include "max_pool2d.hpp"

namespace loom {

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
  /// The kernel's cells this many rows and columns apart (Keras's
  /// dilation_rate); a dilated Conv2D runs by im2col + GEMM.
  LOOM_OPTION(Size2, dilation_rate, (Size2{1, 1}))
  /// Channel groups (Keras's groups): the input channels and the filters are
  /// cut into this many equal parts, and each part of the filters sees only
  /// its part of the channels; the kernel is [kh, kw, Cin / groups, filters].
  /// A grouped Conv2D runs by im2col + one GEMM per group.
  LOOM_OPTION(Index, groups, 1)
  /// Keras's weight regularizers (regularizers.hpp): L1, L2 or L1L2 penalties in training.
  LOOM_OPTION(Regularizer, kernel_regularizer, Regularizer())
  LOOM_OPTION(Regularizer, bias_regularizer, Regularizer())
};

/// How Conv2D computes its forward and its backward to the input. `Auto`
/// takes Winograd's F(4x4, 3x3) for 3x3 stride-1 kernels with at least 8
/// input and 8 output channels (the notebook's second and third layers),
/// the direct kernel for fewer than 8 input channels (its first), im2col +
/// GEMM otherwise; bench_conv2d measured the rule (docs/performance.md).
/// Winograd does the weights' gradient too where that measured faster
/// (Conv2D::uses_winograd_weights; always when forced); Direct does its
/// forward and weights' gradient, and its backward to the input is
/// im2col's. Not part of the model's configuration: all compute the same
/// function, to within float rounding.
enum class ConvAlgorithm { Auto, Im2col, Winograd, Direct };

template <class T>
class Conv2D : public Layer<T>, public RowGradientSink<T> {
 public:
  explicit Conv2D(const Conv2DOptions& options) : opt_(options) {
    if (opt_.filters() < 1 || opt_.kernel_size()[0] < 1 || opt_.kernel_size()[1] < 1 || opt_.strides()[0] < 1 ||
        opt_.strides()[1] < 1) {
      throw ConfigError(detail::str("Conv2D: filters, kernel_size and strides must be >= 1, got filters=",
                                    opt_.filters(), " kernel_size=(", opt_.kernel_size()[0], ", ",
                                    opt_.kernel_size()[1], ") strides=(", opt_.strides()[0], ", ",
                                    opt_.strides()[1], ")"));
    }
    detail::check_window(class_name, opt_.kernel_size(), opt_.strides(), opt_.dilation_rate());
    if (opt_.groups() < 1 || opt_.filters() % opt_.groups() != 0) {
      throw ConfigError(detail::str("Conv2D: groups must be >= 1 and divide filters, got groups=", opt_.groups(),
                                    " filters=", opt_.filters()));
    }
  }

  static constexpr const char* class_name = "Conv2D";
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "conv2d"; }
  Activation activation() const override { return opt_.activation(); }
  const Conv2DOptions& options() const { return opt_; }

  /// Chooses the algorithm (see ConvAlgorithm); Winograd only where it
  /// applies (3x3, stride 1), else a ConfigError.
  void set_algorithm(ConvAlgorithm a) {
    if ((a == ConvAlgorithm::Winograd || a == ConvAlgorithm::Direct) && grouped()) {
      throw ConfigError("Conv2D: a grouped convolution (groups > 1) runs by im2col");
    }
    if (a == ConvAlgorithm::Winograd && !winograd_applies()) {
      throw ConfigError("Conv2D: Winograd convolution needs a 3x3 kernel with strides (1, 1), undilated");
    }
    if (a == ConvAlgorithm::Direct && dilated()) throw ConfigError("Conv2D: the direct kernel is not dilated");
    algorithm_ = a;
  }
  /// Its copies for inference (Layer::inference_copy) run its algorithm.
  void copy_settings_to(Layer<T>& copy) const override {
    Layer<T>::copy_settings_to(copy);
    if (auto* conv = dynamic_cast<Conv2D*>(&copy)) conv->algorithm_ = algorithm_;
  }
  /// Its kernel will not change: Winograd's transforms of it, in both
  /// layouts, are made now and kept (layers sharing them read them at once).
  void seal_parameters() override {
    sealed_ = true;
    if (shared_ != nullptr || !this->built() || !uses_winograd()) return;
    for (int compact = 0; compact < 2; ++compact) {
      ForwardU& fu = forward_u_[compact];
      const Index ldu = Winograd::u_stride(opt_.filters(), compact != 0);
      fu.u.resize_for_overwrite(Shape{Winograd::kPoints, geo_.c, ldu});
      Winograd::transform_kernel(kernel_.data(), geo_.c, opt_.filters(), false, 0, geo_.c, fu.u.data(), ldu);
      fu.current = true;
    }
  }
  /// Reads the kernel, the bias and Winograd's transforms of a sealed
  /// Conv2D of the same configuration and algorithm (see Layer).
  bool share_parameters_of(const Layer<T>& source) override {
    const Conv2D* s = this->template share_source<Conv2D>(source);
    if (s != nullptr && s->shared_ != nullptr) s = s->shared_;
    if (s == nullptr || !s->sealed_ || s->algorithm_ != algorithm_ || s->kernel_.shape() != kernel_.shape() ||
        s->opt_.use_bias() != opt_.use_bias() || s->opt_.activation() != opt_.activation()) {
      return false;
    }
    shared_ = s;
    sealed_ = true;
    kernel_ = bias_ = dkernel_ = dbias_ = u_source_ = Tensor<T>();
    forward_u_[0] = forward_u_[1] = ForwardU();
    this->shares_parameters();
    return true;
  }
  /// Inference fusion, arranged by fusion.hpp's planner (InferenceFusion)
  /// around one forward: the next Mode::Inference forward applies `bn`'s
  /// inference transform in the epilogue (after the bias and ReLU, y =
  /// relu(z) * scale + shift) and then `pool`'s pooling, from the epilogue's
  /// rows (direct kernel) or tiles (Winograd, for windows within its 4x4
  /// tiles, as 2x2 pooling), so that the unpooled output is never stored;
  /// its output is then the last one's. Either may be null; `pool` must
  /// satisfy can_pool. absorb(nullptr, nullptr) ends it.
  void absorb(BatchNormalization<T>* bn, MaxPool2D<T>* pool) {
    absorbed_ = bn;
    pooled_ = pool;
  }
  BatchNormalization<T>* absorbed() const { return absorbed_; }
  MaxPool2D<T>* pooled() const { return pooled_; }

  /// Whether the inference forward can pool its output for `pool` (see
  /// absorb): windows that tile the output, and for Winograd lie within its
  /// tiles; the direct kernel or Winograd, not im2col.
  bool can_pool(const MaxPool2D<T>& pool) const {
    const detail::Window2D& p = pool.window();
    if (!pool.windows_tile() || p.h != geo_.ho || p.w != geo_.wo || p.c != opt_.filters()) return false;
    if (uses_direct()) return true;
    return uses_winograd() && Winograd::kTile % p.kh == 0 && Winograd::kTile % p.kw == 0 && p.pad_top == 0 &&
           p.pad_left == 0;
  }

  /// Training fusion of the ReLU's derivative, arranged by fusion.hpp's
  /// planner (TrainingFusion) for one step: while on, backward takes the
  /// gradient it is given as dL/dz, a later layer having multiplied it by
  /// (y > 0) already (BatchNormalization::set_input_relu_grad).
  void set_relu_grad_left(bool on) { relu_grad_left_ = on; }
  bool relu_grad_left() const { return relu_grad_left_; }

  /// Training fusion of the weights' and bias' gradients, arranged by the
  /// planner for one step: while on, the BatchNormalization after it
  /// computes them in its backward, from each output row's dL/dz as it makes
  /// it (the RowGradientSink members below), and the step skips this layer's
  /// backward. Only for the direct kernel, with no input gradient, and with
  /// the ReLU's derivative left to that layer (can_leave_weights_grad):
  /// conv1's dL/dz, 7.5 MB at batch 32, is then never stored.
  bool can_leave_weights_grad() const { return uses_direct() && !this->needs_input_grad() && relu_grad_left_; }
  void set_weights_grad_left(bool on) { weights_grad_left_ = on && can_leave_weights_grad(); }
  bool weights_grad_left() const { return weights_grad_left_; }

  /// Training fusion of the next layer's batch statistics, arranged by the
  /// planner for one step, or ended with nullptr: while set, the direct
  /// kernel's Mode::Train forward hands `sink` (the BatchNormalization
  /// after it) its output a few rows at a time, as they are made, for their
  /// sums: conv1's output, 7.5 MB at batch 32, is then read once by that
  /// layer, not twice. Only for the direct kernel without softmax.
  bool can_sum_statistics() const { return uses_direct() && activation_in_epilogue(); }
  /// Whether the activation runs in the GEMM's epilogue (none or ReLU), so
  /// that the fusions may take its output as it is made; any other
  /// (softmax, gelu, ...) runs once the output is whole.
  bool activation_in_epilogue() const {
    return opt_.activation() == Activation::None || opt_.activation() == Activation::ReLU;
  }
  void set_statistics_to(RowStatisticsSink<T>* sink) { statistics_to_ = can_sum_statistics() ? sink : nullptr; }
  RowStatisticsSink<T>* statistics_to() const { return statistics_to_; }

  int prepare_rows() override {
    const int threads = detail::threads_for(geo_.n);
    prepare_workspaces(threads, 0, true);
    return threads;
  }
  void begin_rows(int t) override {
    std::fill(weights_share(t), weights_share(t) + kernel_.size(), T(0));
    std::vector<double>& db = ws_[static_cast<std::size_t>(t)].dbias;
    std::fill(db.begin(), db.end(), 0.0);
  }
  void add_row(int t, Index r, const T* dz) override {
    direct_.weights_row(xpad_.data(), dz, r, opt_.filters(), weights_share(t));
    if (opt_.use_bias()) add_bias_sums(dz, geo_.wo, ws_[static_cast<std::size_t>(t)].dbias.data());
  }
  void end_rows(int t, int nt) override { sum_shares(t, nt); }

  /// The algorithm the layer runs (Auto resolved; before build, as for a
  /// layer of no input channels).
  ConvAlgorithm algorithm() const {
    if (uses_winograd()) return ConvAlgorithm::Winograd;
    return uses_direct() ? ConvAlgorithm::Direct : ConvAlgorithm::Im2col;
  }

  Config config() const override {
    Config c = Config()
                   .set("filters", opt_.filters())
                   .set("kernel_size", opt_.kernel_size())
                   .set("strides", opt_.strides())
                   .set("padding", to_string(opt_.padding()))
                   .set("activation", to_string(opt_.activation()))
                   .set("use_bias", opt_.use_bias());
    if (dilated()) c.set("dilation_rate", opt_.dilation_rate());  // (only when dilated)
    if (grouped()) c.set("groups", opt_.groups());                 // (only when grouped)
    set_regularizer(c, "kernel_regularizer", opt_.kernel_regularizer());  // only when set
    set_regularizer(c, "bias_regularizer", opt_.bias_regularizer());
    return c;
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<Conv2D>(Conv2DOptions(c.integer("filters"), c.size2("kernel_size"))
                                        .strides(c.size2("strides"))
                                        .padding(padding_from(c.text("padding")))
                                        .activation(activation_from(c.text("activation")))
                                        .use_bias(c.flag("use_bias"))
                                        .dilation_rate(c.has("dilation_rate") ? c.size2("dilation_rate") : Size2{1, 1})
                                        .groups(c.has("groups") ? c.integer("groups") : 1)
                                        .kernel_regularizer(regularizer_from(c, "kernel_regularizer"))
                                        .bias_regularizer(regularizer_from(c, "bias_regularizer")));
  }

  std::vector<Parameter<T>> parameters() override {
    std::vector<Parameter<T>> p{{this->name() + "/kernel", &kernel_, &dkernel_, opt_.kernel_regularizer()}};
    if (opt_.use_bias()) p.push_back({this->name() + "/bias", &bias_, &dbias_, opt_.bias_regularizer()});
    return p;
  }

 protected:
  Shape build_impl(const Shape& in, Rng& rng) override {
    if (in.rank() != 3) this->reject_input(in, "(None, height, width, channels)");
    const auto [kh, kw] = opt_.kernel_size();
    geo_ = detail::dilated_window(in, opt_.kernel_size(), opt_.strides(), opt_.dilation_rate(), opt_.padding());
    if (geo_.ho < 1 || geo_.wo < 1) {
      const Index eh = (kh - 1) * geo_.dh + 1, ew = (kw - 1) * geo_.dw + 1;  // the window, dilated
      this->reject_input(in, detail::str("at least ", eh, "x", ew, " pixels for a ", kh, "x", kw,
                                         dilated() ? " dilated" : "", " kernel with 'valid' padding"));
    }
    if (in[2] % opt_.groups() != 0) {
      this->reject_input(in, detail::str("channels divisible by its groups=", opt_.groups()));
    }
    geo_.groups = opt_.groups();
    const Index cout = opt_.filters(), cin = in[2] / opt_.groups();  // a group's input channels
    kernel_ = this->new_parameter(Shape{kh, kw, cin, cout});
    dkernel_ = Tensor<T>(kernel_.shape());
    glorot_uniform(kernel_, kh * kw * cin, kh * kw * cout, rng);  // Keras's fans of that shape
    if (opt_.use_bias()) {
      bias_ = this->new_parameter(Shape{cout});
      dbias_ = Tensor<T>(Shape{cout});
    }
    return Shape{geo_.ho, geo_.wo, cout};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    geo_.n = x.dim(0);
    const Index k = geo_.patch(), cout = opt_.filters(), per_image = geo_.ho * geo_.wo;
    const Index kg = k / geo_.groups, fg = cout / geo_.groups;  // a group's columns and filters
    const Index tile = images_per_tile();
    // Training keeps every column row for the weights' gradient (Winograd
    // keeps its transformed input tiles); inference needs only a tile (and
    // Winograd none).
    const bool keep = mode == Mode::Train;
    // The pooling taken (its geometry; the loops never read its batch size).
    const detail::Window2D* pool = pooled_ && mode == Mode::Inference ? &pooled_->window() : nullptr;
    y_.resize_for_overwrite(Shape{geo_.n, pool ? pool->ho : geo_.ho, pool ? pool->wo : geo_.wo, cout});
    keep_z_ = keep && activation_needs_input(opt_.activation());
    if (keep_z_) z_.resize_for_overwrite(y_.shape());
    detail::GemmEpilogue<T> epilogue{opt_.use_bias() ? weights().bias_.data() : nullptr,
                                     opt_.activation() == Activation::ReLU};
    if (absorbed_ && mode == Mode::Inference) {
      affine_.resize_for_overwrite(Shape{2, cout});
      absorbed_->inference_affine(affine_.data(), affine_.data() + cout);
      epilogue.scale = affine_.data();
      epilogue.shift = affine_.data() + cout;
    }
    if (uses_winograd()) {
      forward_winograd(x, keep, epilogue, pool);
      return y_;
    }
    if (uses_direct()) {
      forward_direct(x, epilogue, pool, mode == Mode::Train ? statistics_to_ : nullptr);
      return y_;
    }
    if (keep) col_.resize_for_overwrite(Shape{geo_.rows(), k});
    const int threads = detail::threads_for(geo_.n);
    prepare_workspaces(threads, keep ? 0 : tile * per_image * k, false);
    detail::parallel(threads, [&](int t, int nt) {
      Workspace& w = ws_[static_cast<std::size_t>(t)];
      const detail::Range mine = detail::split(geo_.n, t, nt);
      for (Index n0 = mine.begin; n0 < mine.end; n0 += tile) {
        const Index n1 = std::min(n0 + tile, mine.end);
        const Index r0 = n0 * per_image, rows = (n1 - n0) * per_image;
        T* col = keep ? col_.data() + r0 * k : w.col.data();
        detail::im2col(x.data(), geo_, n0, n1, col);
        // Bias and ReLU in the GEMM's epilogue; a softmax on rows still in
        // cache. Group g's columns, filters and kernel columns are blocks.
        T* y = y_.data() + r0 * cout;
        for (Index g = 0; g < geo_.groups; ++g) {
          w.forward(rows, fg, kg, {col + g * kg, k}, {weights().kernel_.data() + g * fg, cout}, y + g * fg, cout,
                    /*accumulate=*/false, epilogue.from_column(g * fg));
        }
        activate_rows(r0, rows);
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (weights_grad_left_) {
      throw ConfigError(this->where() + ": backward() is done by the BatchNormalization after it in this step");
    }
    const Index n = geo_.n, k = geo_.patch(), cout = opt_.filters(), per_image = geo_.ho * geo_.wo;
    const Index kg = k / geo_.groups, fg = cout / geo_.groups;  // a group's columns and filters
    const Index tile = images_per_tile();
    const bool input_grad = this->needs_input_grad();
    // dz = dy * f'(y), unless dy is dz already: a fused softmax gradient, a
    // ReLU's derivative applied by a later layer (set_relu_grad_left), no activation.
    const Activation act = this->skip_softmax_grad() || relu_grad_left_ ? Activation::None : opt_.activation();
    if (act != Activation::None) dz_.resize_for_overwrite(dy.shape());
    const T* dz_all = act != Activation::None ? dz_.data() : dy.data();
    if (input_grad) dx_.resize_for_overwrite(this->input_shape().with_batch(n));
    const bool winograd = uses_winograd();
    const int threads = detail::threads_for(n);
    prepare_workspaces(threads, input_grad && !winograd ? tile * per_image * k : 0, true);
    const bool winograd_weights = uses_winograd_weights(), direct = uses_direct();
    if (winograd_weights) {
      parts_.resize(static_cast<std::size_t>(threads));  // allocates only when the threads grow
      for (int u = 0; u < threads; ++u) parts_[static_cast<std::size_t>(u)] = ws_[static_cast<std::size_t>(u)].dkernel.data();
    }
    if (input_grad && winograd) {
      grad_u_.resize_for_overwrite(Shape{Winograd::kPoints, cout, Winograd::u_stride(geo_.c)});
      const Index tiles = n * Winograd::tiles_per_image(winograd_input_grad());
      queue_.reset(tiles, winograd_piece(tiles, threads, Winograd::chunk_tiles(cout, geo_.c)), threads);
    }
    detail::parallel(threads, [&](int t, int nt) {
      Workspace& w = ws_[static_cast<std::size_t>(t)];
      const detail::Range mine = detail::split(n, t, nt);
      const Index r0 = mine.begin * per_image, rows = mine.size() * per_image;
      const T* dz = dz_all + r0 * cout;
      if (act != Activation::None) {
        detail::activation_grad(act, y_.data() + r0 * cout, dy.data() + r0 * cout, dz_.data() + r0 * cout, rows, cout,
                                activation_needs_input(act) ? z_.data() + r0 * cout : nullptr);
      }
      // Winograd's dx reads every thread's dz and the whole rotated kernel,
      // so they are made before the one barrier. It comes after the
      // weights' gradient, a static split, so that a thread done with its
      // share early takes more of dx's tiles instead of waiting.
      if (input_grad && winograd) {
        const detail::Range rows = detail::split(cout, t, nt);
        Winograd::transform_kernel(kernel_.data(), geo_.c, cout, true, rows.begin, rows.end, grad_u_.data(),
                                   grad_u_.dim(2));
        w.winograd.reserve(cout, geo_.c);
        detail::barrier(nt);
      }
      // This thread's share of dK (Winograd's sums, or colT * dz) and db = column sums of dz.
      double* db = opt_.use_bias() ? w.dbias.data() : nullptr;
      if (db) std::fill(db, db + cout, 0.0);
      if (winograd_weights) {
        const Index per = Winograd::tiles_per_image(winograd_forward());
        w.winograd.weights({nullptr, kept_v_.data()}, dz_all, winograd_forward(), geo_.c, cout, mine.begin * per, mine.end * per,
                           w.dkernel.data());
      } else if (direct) {  // an output row at a time, its bias sums while it is in cache (conv1's dz is 7.5 MB)
        begin_rows(t);
        for (Index r = mine.begin * geo_.ho; r < mine.end * geo_.ho; ++r) add_row(t, r, dz_all + r * geo_.wo * cout);
        db = nullptr;  // summed
      } else {
        for (Index g = 0; g < geo_.groups; ++g) {
          w.weights(kg, fg, rows, {col_.data() + r0 * k + g * kg, k, true}, {dz + g * fg, cout},
                    weights_share(t) + g * fg, cout);
        }
      }
      if (db) add_bias_sums(dz, rows, db);
      // dx: Winograd's correlation of dz with the rotated kernel, or
      // col2im(dz * KT) a tile of images at a time.
      if (input_grad && winograd) {
        for (detail::Range tiles = queue_.take(t); tiles.size() > 0; tiles = queue_.take(t)) {
          w.winograd.run(dz_all, winograd_input_grad(), cout, tiles.begin, tiles.end, grad_u_.data(), grad_u_.dim(2),
                         geo_.c, dx_.data(), {});
        }
      } else if (input_grad) {
        for (Index n0 = mine.begin; n0 < mine.end; n0 += tile) {
          const Index n1 = std::min(n0 + tile, mine.end);
          const Index tile_rows = (n1 - n0) * per_image;
          for (Index g = 0; g < geo_.groups; ++g) {
            w.input(tile_rows, kg, fg, {dz_all + n0 * per_image * cout + g * fg, cout},
                    {kernel_.data() + g * fg, cout, true}, w.col.data() + g * kg, k);
          }
          detail::col2im(w.col.data(), geo_, n0, n1, dx_.data());
        }
      }
      detail::barrier(nt);
      // Add the threads' partial sums, in thread order, each thread a slice.
      if (winograd_weights) {
        const detail::Range slice = detail::split(Winograd::sum_rows(geo_.c, cout), t, nt);
        Winograd::finish_weights(parts_.data(), nt, geo_.c, cout, slice.begin, slice.end, dkernel_.data());
        sum_bias_shares(t, nt);
      } else {
        sum_shares(t, nt);
      }
    });
    return input_grad ? dx_ : this->empty_;
  }

 private:
  /// One thread's scratch: its GEMMs' packing buffers, a tile of column rows
  /// (inference forward; d(col) in backward) and its partial gradients.
  using Winograd = detail::Winograd3x3<T>;

  /// Winograd's forward. The kernel's transform is skipped in inference when
  /// the kernel is the one last transformed (a copy tells), which matters at
  /// batch 1. The output tiles are split evenly across the threads, so a
  /// single image uses every core, and a thread that is done takes pieces
  /// of another's share that it has not started (detail::WorkQueue). In
  /// training that measured +5 to +8 % images/s while one core of the
  /// development VM was slowed, -1 % when none was; in inference at batch
  /// 32 (2026-11-30), +3 to +12 % in the AVX2 build and within 2 % either
  /// way with AVX-512.
  void forward_winograd(const Tensor<T>& x, bool keep, const detail::GemmEpilogue<T>& epilogue,
                        const detail::Window2D* pool) {
    const Index k = geo_.patch(), cout = opt_.filters(), per_image = geo_.ho * geo_.wo;
    const Index tiles = geo_.n * Winograd::tiles_per_image(winograd_forward());
    // U's rows: compact when this call reads U once (one chunk of tiles, as
    // at batch 1), else whole vectors (Winograd3x3::u_stride). Inference
    // keeps each layout it made until the kernel changes.
    const bool compact = !keep && Winograd::reads_u_once(tiles, geo_.c, cout);
    ForwardU& fu = forward_u_[compact ? 1 : 0];
    const Index ldu = Winograd::u_stride(cout, compact);
    // A layer sharing another's weights reads that one's U, made when it was sealed.
    const T* shared_u = shared_ != nullptr ? shared_->forward_u_[compact ? 1 : 0].u.data() : nullptr;
    // Whether the kernel is the one last transformed: the same bits give the
    // same U, and memcmp compares them at memory speed, where std::equal's
    // float comparisons took 12 % of a batch-1 predict (notebook_speed, one
    // thread, AVX-512). A sealed kernel is not compared: at batch 1 the
    // comparison reads kernel and copy (270 KB for conv2) for 16 tiles' work
    // and pushes the weights the next image needs out of the core's L2 (a
    // Predictor: +12 % images/s at batch 1, AVX2 build, Intel Xeon).
    bool kernel_known = shared_u != nullptr;
    if (!keep && !kernel_known && (forward_u_[0].current || forward_u_[1].current)) {
      kernel_known = sealed_ || (u_source_.size() == kernel_.size() &&
                                 std::memcmp(kernel_.data(), u_source_.data(),
                                             sizeof(T) * std::size_t(kernel_.size())) == 0);
      if (!kernel_known) forward_u_[0].current = forward_u_[1].current = false;
    }
    const bool reuse = !keep && (fu.current || shared_u != nullptr);
    if (!reuse) fu.u.resize_for_overwrite(Shape{Winograd::kPoints, geo_.c, ldu});
    const T* u = shared_u != nullptr ? shared_u : fu.u.data();
    const bool winograd_weights = uses_winograd_weights();
    if (keep && winograd_weights) kept_v_.resize_for_overwrite(Shape{tiles, Winograd::kPoints, geo_.c});
    if (keep && !winograd_weights) col_.resize_for_overwrite(Shape{geo_.rows(), k});
    const int threads = detail::threads_for(tiles);
    prepare_workspaces(threads, 0, false);
    queue_.reset(tiles, winograd_piece(tiles, threads, Winograd::chunk_tiles(geo_.c, cout)), threads);
    detail::parallel(threads, [&](int t, int nt) {
      Workspace& w = ws_[static_cast<std::size_t>(t)];
      const detail::Range images = detail::split(geo_.n, t, nt);
      if (keep && !winograd_weights) {
        detail::im2col(x.data(), geo_, images.begin, images.end, col_.data() + images.begin * per_image * k);
      }
      if (!reuse) {
        const detail::Range rows = detail::split(geo_.c, t, nt);
        Winograd::transform_kernel(kernel_.data(), geo_.c, cout, false, rows.begin, rows.end, fu.u.data(), ldu);
        detail::barrier(nt);
      }
      w.winograd.reserve(geo_.c, cout);
      for (detail::Range mine = queue_.take(t); mine.size() > 0; mine = queue_.take(t)) {
        w.winograd.run(x.data(), winograd_forward(), geo_.c, mine.begin, mine.end, u, ldu, cout,
                       y_.data(), epilogue, pool, keep && winograd_weights ? kept_v_.data() : nullptr);
      }
      if (!activation_in_epilogue()) {  // the tiles of one image may be another thread's
        detail::barrier(nt);
        activate_rows(images.begin * per_image, images.size() * per_image);
      }
    });
    if (keep) {  // training moves the kernel: U is this step's only
      forward_u_[0].current = forward_u_[1].current = false;
    } else if (!reuse) {  // (never when shared)
      fu.current = true;
      if (!sealed_ && !kernel_known) {
        u_source_.resize_for_overwrite(kernel_.shape());
        std::copy(kernel_.begin(), kernel_.end(), u_source_.begin());
      }
    }
  }

  /// The direct kernel's forward: each thread pads its share of the images
  /// (kept in training for the weights' gradient) and computes their output.
  /// Splitting one image's rows across threads measured 8 % slower at batch
  /// 1 (notebook_speed, AVX-512): conv1's image is 10 us of work, about
  /// what the threads' barrier costs. With `pool`, the rows of one pooling
  /// window go to the thread's scratch, and only their pooling to y. With
  /// `sums`, the output goes to it a band of rows at a time for its
  /// statistics (set_statistics_to), when the threads' images split its
  /// rows as it splits them (a batch the threads divide).
  void forward_direct(const Tensor<T>& x, const detail::GemmEpilogue<T>& epilogue, const detail::Window2D* pool,
                      RowStatisticsSink<T>* sums) {
    const Index cout = opt_.filters(), row = geo_.wo * cout;
    direct_.set(geo_);
    direct_.set_kernel(weights().kernel_.data(), cout);
    xpad_.resize_for_overwrite(Shape{direct_.padded_size(geo_.n)});
    const int threads = detail::threads_for(geo_.n);
    if (pool) prepare_workspaces(threads, pool->kh * row, false);
    if (sums) {
      const bool whole = !pool && geo_.n % threads == 0;
      if (!sums->begin_statistics(whole ? y_.data() : nullptr, whole ? geo_.n * geo_.ho * geo_.wo : 0,
                                  whole ? threads : 0)) {
        sums = nullptr;
      }
    }
    detail::parallel(threads, [&](int t, int nt) {
      const detail::Range images = detail::split(geo_.n, t, nt);
      direct_.pad(x.data(), images.begin, images.end, xpad_.data());
      if (sums) {  // bands of kSumRows output rows, summed while in cache
        const Index last = images.end * geo_.ho;
        for (Index r = images.begin * geo_.ho; r < last; r += kSumRows) {
          const Index r1 = std::min(r + kSumRows, last);
          direct_.forward(xpad_.data(), r, r1, y_.data() + r * row, epilogue);
          sums->add_statistics_rows(t, y_.data() + r * row, (r1 - r) * geo_.wo);
        }
        return;
      }
      if (pool) {
        T* band = ws_[static_cast<std::size_t>(t)].col.data();
        for (Index n = images.begin; n < images.end; ++n) {
          for (Index ph = 0; ph < pool->ho; ++ph) {
            const detail::Range rows = detail::pool_rows(*pool, ph);
            direct_.forward(xpad_.data(), n * geo_.ho + rows.begin, n * geo_.ho + rows.end, band, epilogue);
            detail::pool_row(band, rows.size(), *pool, y_.data() + (n * pool->ho + ph) * pool->wo * cout);
          }
        }
        return;
      }
      direct_.forward(xpad_.data(), images.begin * geo_.ho, images.end * geo_.ho, y_.data() + images.begin * geo_.ho * row,
                      epilogue);
      activate_rows(images.begin * geo_.ho * geo_.wo, images.size() * geo_.ho * geo_.wo);
    });
  }

  /// An activation outside the epilogue (activation_in_epilogue), on output
  /// rows [r0, r0 + rows), their input kept first when its derivative needs
  /// it in training.
  void activate_rows(Index r0, Index rows) {
    if (activation_in_epilogue()) return;
    const Index cout = opt_.filters();
    T* y = y_.data() + r0 * cout;
    if (keep_z_) std::copy_n(y, rows * cout, z_.data() + r0 * cout);
    detail::activate(opt_.activation(), y, rows, cout);
  }

  struct Workspace {
    detail::Gemm<T> forward, weights, input;
    Winograd winograd;
    Tensor<T> col, dkernel;
    std::vector<double> dbias;
    /// The GEMMs' precision. Winograd's products stay float32 under
    /// mixed_bfloat16: F(4x4, 3x3)'s transforms magnify the operands'
    /// rounding, and in bfloat16 its outputs were off by 3 % of their
    /// largest value on average (up to 12 %), where a direct sum's were
    /// off by 0.2 %; in float32 it already does a quarter of im2col's work.
    void set_precision(Precision p) {
      for (detail::Gemm<T>* g : {&forward, &weights, &input}) g->set_precision(p);
    }
  };

  /// Winograd's tiles go to the threads in pieces of this many: at most a
  /// chunk of the kernel's, about four pieces per thread so that a faster
  /// core can take more, but 16 tiles at least (the GEMM's rows) unless that
  /// would leave a thread idle (a batch of few tiles).
  static Index winograd_piece(Index tiles, int threads, Index chunk) {
    const auto ceil_div = [](Index a, Index b) { return (a + b - 1) / b; };
    const Index piece = std::min(chunk, ceil_div(tiles, 4 * Index(threads)));
    return std::max(piece, std::min<Index>(16, ceil_div(tiles, threads)));
  }

  /// Thread t's share of dK: dkernel_ itself for thread 0 (sum_shares adds the others' to it).
  T* weights_share(int t) { return t == 0 ? dkernel_.data() : ws_[static_cast<std::size_t>(t)].dkernel.data(); }

  /// After a barrier, in every thread: dkernel_ += the other threads' shares
  /// of dK, in thread order, each thread a slice; then dbias_ (sum_bias_shares).
  void sum_shares(int t, int nt) {
    const detail::Range slice = detail::split(kernel_.size(), t, nt);
    for (int u = 1; u < nt; ++u) {
      const T* part = ws_[static_cast<std::size_t>(u)].dkernel.data();
      for (Index e = slice.begin; e < slice.end; ++e) dkernel_[e] += part[e];
    }
    sum_bias_shares(t, nt);
  }
  /// dbias_ from the threads' sums, in double, in thread order (thread 0).
  void sum_bias_shares(int t, int nt) {
    if (!opt_.use_bias() || t != 0) return;
    for (Index c = 0; c < opt_.filters(); ++c) {
      double sum = 0;
      for (int u = 0; u < nt; ++u) sum += ws_[static_cast<std::size_t>(u)].dbias[static_cast<std::size_t>(c)];
      dbias_[c] = static_cast<T>(sum);
    }
  }

  /// db += the column sums of `rows` rows of dz, in double (a sum over up
  /// to N*Ho*Wo rows), in row order.
  void add_bias_sums(const T* dz, Index rows, double* db) const {
    detail::add_column_sums<detail::Second::None>(dz, static_cast<const T*>(nullptr), rows, opt_.filters(), db,
                                                  nullptr);
  }

  /// Whether the weights' gradient runs by Winograd too (F(3x3, 4x4), see
  /// kernels/winograd.hpp). Forced with ConvAlgorithm::Winograd; under Auto,
  /// where it measured faster: on images of 14x14 and more, or with
  /// [cin x cout] products of 2,500 and more. The notebook's conv2 (75 -> 50
  /// channels, 14x14) gains, its conv3 (50 -> 25, 7x7) loses, its per-point
  /// products a third as large on 2x2 tiles; on the residual network's
  /// 28x28 32 -> 32 layers the forward (no column matrix kept) and the
  /// backward take half the time, and on 14x14 32 -> 32 and 16 -> 16 two
  /// thirds (docs/performance.md).
  bool uses_winograd_weights() const {
    if (algorithm_ == ConvAlgorithm::Auto) {
      return uses_winograd() && (geo_.c * opt_.filters() >= 2500 || geo_.ho * geo_.wo >= 14 * 14);
    }
    return algorithm_ == ConvAlgorithm::Winograd;
  }

  /// Whether the direct kernel runs: forced, or under Auto for layers with
  /// fewer than 8 input channels that Winograd does not take, whose im2col
  /// copies runs of a few floats (bench_conv2d: conv1, one channel).
  bool dilated() const { return !(opt_.dilation_rate() == Size2{1, 1}); }
  bool grouped() const { return opt_.groups() > 1; }
  bool uses_direct() const {
    if (algorithm_ == ConvAlgorithm::Auto) return !uses_winograd() && geo_.c < 8 && !dilated() && !grouped();
    return algorithm_ == ConvAlgorithm::Direct;
  }

  bool winograd_applies() const {
    return opt_.kernel_size() == Size2{3, 3} && opt_.strides() == Size2{1, 1} && !dilated() && !grouped();
  }
  bool uses_winograd() const {
    if (algorithm_ == ConvAlgorithm::Auto) return winograd_applies() && geo_.c >= 8 && opt_.filters() >= 8;
    return algorithm_ == ConvAlgorithm::Winograd;
  }
  /// The forward as Winograd sees it, and the backward to the input: the
  /// correlation of dz [ho, wo] with the rotated kernel, padded by 2 - pad.
  detail::Winograd2D winograd_forward() const { return {geo_.h, geo_.w, geo_.ho, geo_.wo, geo_.pad_top, geo_.pad_left}; }
  detail::Winograd2D winograd_input_grad() const {
    return {geo_.ho, geo_.wo, geo_.h, geo_.w, 2 - geo_.pad_top, 2 - geo_.pad_left};
  }

  /// Samples per tile: as many as keep one tile's column rows and output
  /// rows within 512 KiB, about a core's L2 (at least one). bench_conv2d's
  /// forward against its GEMM alone chose it: 256 KiB and 1 MiB were slower.
  Index images_per_tile() const {
    constexpr Index kTileBytes = Index(512) << 10;
    const Index bytes = geo_.ho * geo_.wo * (geo_.patch() + opt_.filters()) * static_cast<Index>(sizeof(T));
    return std::max<Index>(1, kTileBytes / std::max<Index>(bytes, 1));
  }

  /// Sizes every thread's scratch (with its share of the gradients, for a
  /// backward); allocates only when it grows.
  void prepare_workspaces(int threads, Index col_elems, bool gradients) {
    if (ws_.size() < static_cast<std::size_t>(threads)) ws_.resize(static_cast<std::size_t>(threads));
    for (Workspace& w : ws_) {
      w.set_precision(this->precision());
      if (w.col.size() < col_elems) w.col.resize_for_overwrite(Shape{col_elems});
      if (!gradients) continue;
      // A thread's share of dK, or Winograd's sums S for it (36 / 9 times as many).
      const Index dk = uses_winograd_weights() ? Winograd::kPoints * geo_.c * opt_.filters() : kernel_.size();
      if (w.dkernel.size() != dk) w.dkernel.resize_for_overwrite(Shape{dk});
      w.dbias.resize(static_cast<std::size_t>(opt_.filters()));
    }
  }

  Conv2DOptions opt_;
  ConvAlgorithm algorithm_ = ConvAlgorithm::Auto;
  BatchNormalization<T>* absorbed_ = nullptr;  // see absorb: during a fused inference forward
  MaxPool2D<T>* pooled_ = nullptr;             // the pooling after it, likewise
  bool relu_grad_left_ = false;                // see set_relu_grad_left
  bool weights_grad_left_ = false;             // see set_weights_grad_left
  RowStatisticsSink<T>* statistics_to_ = nullptr;  // see set_statistics_to
  /// Output rows the direct kernel makes before handing them to statistics_to_: 4 rows of conv1, 34 KB.
  static constexpr Index kSumRows = 4;
  Tensor<T> affine_;                           // its scale and shift
  /// Winograd's forward U in one layout (aligned rows, or compact: see
  /// forward_winograd); `current` in inference while it is the transform of
  /// u_source_ (of the kernel, when sealed).
  struct ForwardU {
    Tensor<T> u;
    bool current = false;
  };
  ForwardU forward_u_[2];    // [compact]
  Tensor<T> u_source_;       // the kernel the current U came from (inference, unless sealed)
  bool sealed_ = false;      // seal_parameters: the kernel will not change
  const Conv2D* shared_ = nullptr;  // share_parameters_of: whose kernel, bias and U it reads
  /// The layer whose kernel, bias and U the forward reads: its own, or the one it shares.
  const Conv2D& weights() const { return shared_ != nullptr ? *shared_ : *this; }
  detail::WorkQueue queue_;  // Winograd's tiles, handed to the threads a piece at a time
  Tensor<T> grad_u_;          // Winograd's U of the backward to the input
  detail::Window2D geo_;
  Tensor<T> kernel_, bias_, dkernel_, dbias_;
  Tensor<T> col_, y_, dz_, dx_;
  Tensor<T> z_;                    // the activation's input, kept in training when its derivative needs it
  bool keep_z_ = false;            // (this forward keeps it)
  Tensor<T> kept_v_;               // Winograd's transformed input in training, for the weights' gradient
  detail::DirectConv<T> direct_;   // the direct kernel's geometry
  Tensor<T> xpad_;                 // its zero-bordered images (kept in training)
  std::vector<const T*> parts_;    // the threads' sums S of Winograd's weights' gradient
  std::vector<Workspace> ws_;
};

LOOM_REGISTER(Conv2D)

}  // namespace loom
