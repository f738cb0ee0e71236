#pragma once
/// \file layers/quantized.hpp
/// The layers of an int8 model (loom::quantize, model/quantize.hpp):
/// QuantizedConv2D and QuantizedDense, for inference only.
///
/// Each holds its weights as signed 8-bit integers with one scale per output
/// channel (symmetric: w = q * kernel_scale[j], q in [-127, 127]) and takes
/// its input in unsigned 8-bit with the scale and zero point calibrated on
/// sample images (x = (u - zero_point) * input_scale, u in [0, 255]). Its
/// product runs on kernels/int8_gemm.hpp (VNNI): exact integer sums, mapped
/// back to float by the column's scales, with the bias, the activation and,
/// when the model had one right after, a BatchNormalization's inference
/// affine in the same pass. Everything outside the products stays float32:
/// the layers take and give float tensors, so they chain with every other
/// layer (pooling, Flatten) unchanged.
///
/// The integers are stored as float tensors holding whole numbers, so the
/// layers save and load through the registry like any other; the packed
/// form the kernel reads is made again whenever the stored weights change.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <initializer_list>
#include <vector>

#include "../kernels/activation.hpp"
#include "../kernels/im2col.hpp"
#include "../kernels/int8_gemm.hpp"
#include "../kernels/pool.hpp"
#include "../parallel.hpp"
#include "layer.hpp"
#include "max_pool2d.hpp"

namespace loom {

namespace detail {

/// How a float input becomes unsigned bytes: u = clamp(round(x / scale) + zero_point, 0, 255).
struct Int8Input {
  float scale = 1;
  float zero_point = 0;

  /// Quantizes n values of x into q.
  void quantize(const float* x, Index n, std::uint8_t* q) const {
    int8_quantize(x, n, 1.0f / scale, static_cast<int>(zero_point), q);
  }
};

/// The int8 weights of a layer, packed for int8_gemm, and the epilogue's
/// per-column maps: made from the stored integers, scales and bias, and
/// made again when any of them changes.
struct Int8Weights {
  Int8PackedB packed;
  std::vector<float> scale, shift;
  std::vector<float> source;  ///< the integers, scales and bias they were made from, one after another

  /// Whether `parts` (compared in place, one after another) are what the
  /// pack was made from.
  bool made_from(std::initializer_list<std::pair<const float*, Index>> parts) const {
    std::size_t at = 0;
    for (const auto& [p, n] : parts) {
      const auto count = static_cast<std::size_t>(n);
      if (at + count > source.size() || std::memcmp(p, source.data() + at, sizeof(float) * count) != 0) return false;
      at += count;
    }
    return at == source.size();
  }
};

}  // namespace detail

/// The common part of QuantizedConv2D and QuantizedDense: the input's
/// quantization, the stored weights, the activation and the optional affine
/// after it.
template <class T>
class QuantizedLayer : public Layer<T> {
 public:
  /// The input's calibrated scale and zero point.
  detail::Int8Input input_quantization() const { return in_; }
  Activation activation() const override { return activation_; }
  bool has_affine() const { return affine_after_; }

  std::vector<Parameter<T>> parameters() override {  // buffers: not trained
    std::vector<Parameter<T>> p{{this->name() + "/kernel", &kernel_, nullptr},
                                {this->name() + "/kernel_scale", &kernel_scale_, nullptr},
                                {this->name() + "/bias", &bias_, nullptr}};
    if (affine_after_) p.push_back({this->name() + "/affine", &affine_, nullptr});
    return p;
  }

  /// Sets the weights from float ones `w` (rows = depth, one column per
  /// output channel): per-column symmetric scales max|w| / 127, each value
  /// rounded to the nearest integer. `bias` (one per column, may be null)
  /// and the affine after the activation (two per column, may be null) are
  /// kept in float.
  void set_weights(const T* w, const T* bias, const T* affine_scale, const T* affine_shift) {
    const Index cols = kernel_scale_.size(), rows = kernel_.size() / cols;
    for (Index j = 0; j < cols; ++j) {
      double most = 0;
      for (Index r = 0; r < rows; ++r) most = std::max(most, std::abs(double(w[r * cols + j])));
      const double s = most > 0 ? most / 127 : 1;
      kernel_scale_[j] = static_cast<T>(s);
      for (Index r = 0; r < rows; ++r) {
        kernel_[r * cols + j] = static_cast<T>(std::clamp(std::nearbyint(double(w[r * cols + j]) / s), -127.0, 127.0));
      }
      bias_[j] = bias ? bias[j] : T(0);
      if (affine_after_) {
        affine_[j] = affine_scale[j];
        affine_[cols + j] = affine_shift[j];
      }
    }
  }

 protected:
  QuantizedLayer(Activation activation, detail::Int8Input in, bool affine_after)
      : activation_(activation), in_(in), affine_after_(affine_after) {
    if (!(in.scale > 0) || !std::isfinite(in.scale) || in.zero_point < 0 || in.zero_point > 255 ||
        in.zero_point != std::nearbyint(in.zero_point)) {
      throw ConfigError(detail::str("a quantized layer needs input_scale > 0 and an integer input_zero_point in "
                                    "[0, 255], got ", in.scale, " and ", in.zero_point));
    }
    if (affine_after && activation != Activation::None && activation != Activation::ReLU) {
      throw ConfigError("a quantized layer takes an affine after its activation only with relu or none");
    }
  }

  /// The common config entries.
  Config common_config(Config c) const {
    c.set("activation", to_string(activation_)).set("input_scale", double(in_.scale));
    c.set("input_zero_point", double(in_.zero_point)).set("affine_after", affine_after_);
    return c;
  }
  static detail::Int8Input input_from(const Config& c) {
    return {static_cast<float>(c.real("input_scale")), static_cast<float>(c.real("input_zero_point"))};
  }

  /// Makes the stored tensors for `rows` x `cols` weights.
  void make_parameters(const Shape& kernel_shape, Index cols) {
    if constexpr (!std::is_same_v<T, float>) {
      throw ConfigError(this->where() + ": int8 layers are float layers");
    }
    if (!detail::int8_supported()) {
      throw ConfigError(this->where() + ": int8 inference cannot run here: " + detail::int8_unsupported_reason());
    }
    kernel_ = this->new_parameter(kernel_shape);
    kernel_scale_ = this->new_parameter(Shape{cols});
    std::fill(kernel_scale_.begin(), kernel_scale_.end(), T(1));
    bias_ = this->new_parameter(Shape{cols});
    if (affine_after_) affine_ = this->new_parameter(Shape{2, cols});
  }

  /// Its weights will not change (a Predictor's copy): once packed, they
  /// are not compared with the stored ones again, call after call (at batch
  /// 1 that comparison read every weight for one image's work).
  void seal_parameters() override { sealed_ = true; }

  /// The packed weights and the epilogue for products of about m rows. The
  /// depth's rows come in groups of `group` (a convolution's channels at one
  /// cell of the window), each padded with zero rows to `group_padded` (0:
  /// no padding).
  const detail::Int8Weights& weights(Index m, Index group = 0, Index group_padded = 0) {
    if (sealed_ && !packed_.source.empty()) return packed_;
    if constexpr (std::is_same_v<T, float>) {
      if (!packed_.made_from({{kernel_.data(), kernel_.size()},
                              {kernel_scale_.data(), kernel_scale_.size()},
                              {bias_.data(), bias_.size()}})) {
        const Index cols = kernel_scale_.size(), rows = kernel_.size() / cols;
        if (group <= 0) group = group_padded = rows;
        const Index padded_rows = rows / group * group_padded;
        std::vector<std::int8_t> q(static_cast<std::size_t>(padded_rows * cols), 0);
        for (Index r = 0; r < rows; ++r) {
          const Index to = r / group * group_padded + r % group;
          for (Index j = 0; j < cols; ++j) {
            q[static_cast<std::size_t>(to * cols + j)] = static_cast<std::int8_t>(kernel_[r * cols + j]);
          }
        }
        packed_.packed = detail::int8_pack_b(q.data(), cols, padded_rows, cols, m);
        packed_.scale.resize(static_cast<std::size_t>(cols));
        packed_.shift.resize(static_cast<std::size_t>(cols));
        for (Index j = 0; j < cols; ++j) {
          double sum = 0;
          for (Index r = 0; r < rows; ++r) sum += kernel_[r * cols + j];
          const double s = double(in_.scale) * double(kernel_scale_[j]);
          packed_.scale[static_cast<std::size_t>(j)] = static_cast<float>(s);
          packed_.shift[static_cast<std::size_t>(j)] = static_cast<float>(double(bias_[j]) - in_.zero_point * s * sum);
        }
        packed_.source.assign(kernel_.begin(), kernel_.end());
        packed_.source.insert(packed_.source.end(), kernel_scale_.begin(), kernel_scale_.end());
        packed_.source.insert(packed_.source.end(), bias_.begin(), bias_.end());
      }
    }
    return packed_;
  }

  /// The epilogue of the packed weights, with the activation and affine.
  detail::Int8Epilogue epilogue(const detail::Int8Weights& w) const {
    const Index cols = kernel_scale_.size();
    detail::Int8Epilogue e{w.scale.data(), w.shift.data(), activation_ == Activation::ReLU};
    if (affine_after_) {
      e.post_scale = reinterpret_cast<const float*>(affine_.data());
      e.post_shift = reinterpret_cast<const float*>(affine_.data()) + cols;
    }
    return e;
  }

  /// The activation, when not ReLU (which the epilogue applies).
  void activate_rest(T* y, Index rows, Index cols) const {
    if (activation_ != Activation::None && activation_ != Activation::ReLU) detail::activate(activation_, y, rows, cols);
  }

  void refuse_training(Mode mode) const {
    if (mode == Mode::Train) {
      throw ConfigError(this->where() + ": an int8 layer is for inference only (train the float model, then quantize)");
    }
  }
  const Tensor<T>& backward_impl(const Tensor<T>&) override {
    throw ConfigError(this->where() + ": an int8 layer has no backward (it is for inference only)");
  }

  Activation activation_;
  detail::Int8Input in_;
  bool affine_after_;
  Tensor<T> kernel_, kernel_scale_, bias_, affine_;
  detail::Int8Weights packed_;
  bool sealed_ = false;
};

/// A Conv2D in int8 (no groups). Each image is quantized into a padded
/// image of bytes (the padding at the zero point), and each row of outputs
/// is one int8 product that reads its windows in place: a window's rows are
/// runs of kw * channels bytes of that image, rounded up to a multiple of 4
/// (kernels/int8_gemm.hpp's Int8Rows; the weights of the rounding are
/// zero). Where a window's cells are not adjacent (a column dilation), or
/// where the rounding would add more than a quarter to the depth (a 1x1
/// kernel on a few channels), the windows are laid out as rows of bytes
/// first (im2col), a tile of images at a time.
///
/// In inference the fusion planner (layers/fusion.hpp) may give it the
/// MaxPool2D after it (absorb_pool): it then pools each band of output rows
/// as it is made, and the unpooled output is never stored.
template <class T>
class QuantizedConv2D : public QuantizedLayer<T> {
 public:
  static constexpr const char* class_name = "QuantizedConv2D";
  QuantizedConv2D(Index filters, Size2 kernel_size, Size2 strides, Padding padding, Size2 dilation,
                  Activation activation, detail::Int8Input in, bool affine_after)
      : QuantizedLayer<T>(activation, in, affine_after),
        filters_(filters), kernel_size_(kernel_size), strides_(strides), dilation_(dilation), padding_(padding) {
    if (filters < 1) throw ConfigError(detail::str("QuantizedConv2D: filters must be >= 1, got ", filters));
    detail::check_window("QuantizedConv2D", kernel_size, strides, dilation);
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<QuantizedConv2D>(
        c.integer("filters"), c.size2("kernel_size"), c.size2("strides"), padding_from(c.text("padding")),
        c.size2("dilation_rate"), activation_from(c.text("activation")), QuantizedLayer<T>::input_from(c),
        c.flag("affine_after"));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "quantized_conv2d"; }

  /// Whether the forward can pool its output for `pool` (see absorb_pool):
  /// windows that tile the output, the windows read in place, the
  /// activation in the epilogue.
  bool can_pool(const MaxPool2D<T>& pool) const {
    const detail::Window2D& p = pool.window();
    return pool.windows_tile() && p.h == geo_.ho && p.w == geo_.wo && p.c == filters_ && in_place() &&
           (this->activation_ == Activation::None || this->activation_ == Activation::ReLU);
  }
  /// Pools the output of the next Mode::Inference forwards for `pool`
  /// (which must satisfy can_pool); nullptr ends it.
  void absorb_pool(const MaxPool2D<T>* pool) { pooled_ = pool; }
  const MaxPool2D<T>* pooled() const { return pooled_; }
  Config config() const override {
    return this->common_config(Config()
                                   .set("filters", filters_)
                                   .set("kernel_size", kernel_size_)
                                   .set("strides", strides_)
                                   .set("padding", to_string(padding_))
                                   .set("dilation_rate", dilation_));
  }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    if (in.rank() != 3) this->reject_input(in, "(None, height, width, channels)");
    geo_ = detail::dilated_window(in, kernel_size_, strides_, dilation_, padding_);
    if (geo_.ho < 1 || geo_.wo < 1) this->reject_input(in, "an image at least as large as the window");
    this->make_parameters(Shape{kernel_size_[0], kernel_size_[1], in[2], filters_}, filters_);
    return Shape{geo_.ho, geo_.wo, filters_};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    this->refuse_training(mode);
    if constexpr (std::is_same_v<T, float>) {
      geo_.n = x.dim(0);
      const detail::Window2D* pool = pooled_ ? &pooled_->window() : nullptr;
      y_.resize_for_overwrite(Shape{geo_.n, pool ? pool->ho : geo_.ho, pool ? pool->wo : geo_.wo, filters_});
      if (in_place()) {
        forward_in_place(x);
      } else {
        forward_im2col(x);
      }
    }
    return y_;
  }

 private:
  /// The bytes of one row of a window read in place: its kw cells' channels
  /// (adjacent in the image), rounded up to the 4 of a quad. The bytes past
  /// the window that the rounding reads meet zero weights.
  Index run_bytes() const { return detail::int8_row_bytes(geo_.kw * geo_.c); }

  /// Whether the windows are read in place: a window's cells adjacent along
  /// a row (no column dilation), and the rounding of its rows to quads
  /// adding at most a quarter to the depth (a 1x1 kernel on 2 channels
  /// would double it; laid out, the depth is rounded once, not per row).
  bool in_place() const {
    return geo_.dw == 1 && 4 * geo_.kh * run_bytes() <= 5 * detail::int8_row_bytes(geo_.patch());
  }

  /// The windows read in place from each padded image, a product per row of outputs.
  void forward_in_place(const Tensor<float>& x) {
    const Index c = geo_.c, f = filters_, run = run_bytes();
    const Index hp = std::max(geo_.pad_top + geo_.h, (geo_.ho - 1) * geo_.sh + (geo_.kh - 1) * geo_.dh + 1);
    const Index wp = std::max(geo_.pad_left + geo_.w, (geo_.wo - 1) * geo_.sw + geo_.kw);
    const Index image = geo_.h * geo_.w * c, per_image = geo_.ho * geo_.wo;
    // The padded image; then what a last row's partial tile reads in place past it (up to 16 rows
    // of windows, whose sums are dropped), and the 3 bytes a rounded run may read past a window.
    constexpr Index kRowsPast = 16;
    const auto padded = static_cast<std::size_t>(hp * wp * c + kRowsPast * geo_.sw * c + 3);
    const detail::Int8Weights& w = this->weights(geo_.wo, geo_.kw * c, run);
    const detail::Int8Epilogue epi = this->epilogue(w);
    const auto zp = static_cast<std::uint8_t>(this->in_.zero_point);
    detail::parallel(workspaces(), [&](int t, int nt) {
      Workspace& s = ws_[static_cast<std::size_t>(t)];
      // The border at the zero point once: each image overwrites the inside.
      if (s.image.size() != padded) s.image.assign(padded, zp);
      const detail::Range mine = detail::split(geo_.n, t, nt);
      for (Index n = mine.begin; n < mine.end; ++n) {
        const float* xi = x.data() + n * image;
        std::uint8_t* inside = s.image.data() + (geo_.pad_top * wp + geo_.pad_left) * c;
        if (wp == geo_.w) {  // no padding left or right: the image is one run of bytes
          this->in_.quantize(xi, image, inside);
        } else {
          for (Index ih = 0; ih < geo_.h; ++ih) this->in_.quantize(xi + ih * geo_.w * c, geo_.w * c, inside + ih * wp * c);
        }
        detail::Int8Rows rows{nullptr, geo_.sw * c, geo_.kh, run, geo_.dh * wp * c, kRowsPast};
        const auto output_row = [&](Index oh, float* out) {
          rows.a = s.image.data() + oh * geo_.sh * wp * c;
          detail::int8_gemm(geo_.wo, rows, w.packed, out, f, epi, s.edge);
        };
        if (pooled_) {  // each band of rows a pooled row covers, made in the workspace and pooled into y
          const detail::Window2D& pool = pooled_->window();
          s.band.resize(static_cast<std::size_t>(pool.kh * geo_.wo * f));
          float* y = y_.data() + n * pool.ho * pool.wo * f;
          for (Index ph = 0; ph < pool.ho; ++ph) {
            const detail::Range band = detail::pool_rows(pool, ph);
            for (Index oh = band.begin; oh < band.end; ++oh) output_row(oh, s.band.data() + (oh - band.begin) * geo_.wo * f);
            detail::pool_row(s.band.data(), band.size(), pool, y + ph * pool.wo * f);
          }
          continue;
        }
        float* y = y_.data() + n * per_image * f;
        for (Index oh = 0; oh < geo_.ho; ++oh) output_row(oh, y + oh * geo_.wo * f);
        this->activate_rest(y, per_image, f);
      }
    });
  }

  /// The threads a forward over geo_.n images runs on, each with a workspace.
  int workspaces() {
    const int threads = detail::threads_for(geo_.n);
    if (ws_.size() < static_cast<std::size_t>(threads)) ws_.resize(static_cast<std::size_t>(threads));
    return threads;
  }

  /// The windows laid out as rows of bytes, a tile of images at a time.
  void forward_im2col(const Tensor<float>& x) {
    const Index k = geo_.patch(), lda = detail::int8_row_bytes(k), per_image = geo_.ho * geo_.wo;
    const Index image = geo_.h * geo_.w * geo_.c;
    // Images per tile: their byte rows within 256 KiB (at least one).
    const Index tile = std::max<Index>(1, (Index(256) << 10) / std::max<Index>(1, per_image * lda));
    const detail::Int8Weights& w = this->weights(tile * per_image);
    const detail::Int8Epilogue epi = this->epilogue(w);
    const auto zp = static_cast<std::uint8_t>(this->in_.zero_point);
    detail::parallel(workspaces(), [&](int t, int nt) {
      Workspace& s = ws_[static_cast<std::size_t>(t)];
      s.image.resize(static_cast<std::size_t>(image));
      s.col.resize(static_cast<std::size_t>(tile * per_image * lda));
      const detail::Range mine = detail::split(geo_.n, t, nt);
      for (Index n0 = mine.begin; n0 < mine.end; n0 += tile) {
        const Index n1 = std::min(n0 + tile, mine.end);
        for (Index n = n0; n < n1; ++n) {
          this->in_.quantize(x.data() + n * image, image, s.image.data());
          windows(s.image.data(), zp, s.col.data() + (n - n0) * per_image * lda, lda);
        }
        float* y = y_.data() + n0 * per_image * filters_;
        detail::int8_gemm((n1 - n0) * per_image, s.col.data(), lda, w.packed, y, filters_, epi, s.edge);
        this->activate_rest(y, (n1 - n0) * per_image, filters_);
      }
    });
  }

  /// One image's windows as rows of bytes (lda apart), padding at the zero point.
  void windows(const std::uint8_t* img, std::uint8_t zp, std::uint8_t* col, Index lda) const {
    const Index c = geo_.c;
    for (Index oh = 0; oh < geo_.ho; ++oh) {
      for (Index ow = 0; ow < geo_.wo; ++ow, col += lda) {
        std::uint8_t* d = col;
        const Index iw0 = ow * geo_.sw - geo_.pad_left;
        const bool whole_rows = geo_.dw == 1 && iw0 >= 0 && iw0 + geo_.kw <= geo_.w;
        for (Index i = 0; i < geo_.kh; ++i) {
          const Index ih = oh * geo_.sh - geo_.pad_top + i * geo_.dh;
          if (ih < 0 || ih >= geo_.h) {
            std::memset(d, zp, static_cast<std::size_t>(geo_.kw * c));
            d += geo_.kw * c;
            continue;
          }
          if (whole_rows) {  // the window's row is kw * c bytes in a row of the image
            std::memcpy(d, img + (ih * geo_.w + iw0) * c, static_cast<std::size_t>(geo_.kw * c));
            d += geo_.kw * c;
            continue;
          }
          for (Index j = 0; j < geo_.kw; ++j, d += c) {
            const Index iw = ow * geo_.sw - geo_.pad_left + j * geo_.dw;
            if (ih < 0 || ih >= geo_.h || iw < 0 || iw >= geo_.w) {
              std::memset(d, zp, static_cast<std::size_t>(c));
            } else {
              std::memcpy(d, img + (ih * geo_.w + iw) * c, static_cast<std::size_t>(c));
            }
          }
        }
      }
    }
  }

  struct Workspace {
    std::vector<std::uint8_t> image, col, edge;
    std::vector<float> band;  ///< output rows a pooled row covers (absorb_pool)
  };
  Index filters_;
  Size2 kernel_size_, strides_, dilation_;
  Padding padding_;
  detail::Window2D geo_;
  Tensor<T> y_;
  std::vector<Workspace> ws_;
  const MaxPool2D<T>* pooled_ = nullptr;
};

/// A Dense in int8: the input rows quantized, one int8 product per block of
/// rows on each thread.
template <class T>
class QuantizedDense : public QuantizedLayer<T> {
 public:
  static constexpr const char* class_name = "QuantizedDense";
  QuantizedDense(Index units, Activation activation, detail::Int8Input in, bool affine_after)
      : QuantizedLayer<T>(activation, in, affine_after), units_(units) {
    if (units < 1) throw ConfigError(detail::str("QuantizedDense: units must be >= 1, got ", units));
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<QuantizedDense>(c.integer("units"), activation_from(c.text("activation")),
                                            QuantizedLayer<T>::input_from(c), c.flag("affine_after"));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "quantized_dense"; }
  Config config() const override { return this->common_config(Config().set("units", units_)); }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    if (in.rank() != 1) this->reject_input(in, "(None, features)");
    this->make_parameters(Shape{in[0], units_}, units_);
    return Shape{units_};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    this->refuse_training(mode);
    if constexpr (std::is_same_v<T, float>) {
      const Index n = x.dim(0), in = x.dim(1), lda = detail::int8_row_bytes(in);
      const detail::Int8Weights& w = this->weights(std::min<Index>(n, 64));
      const detail::Int8Epilogue epi = this->epilogue(w);
      y_.resize_for_overwrite(Shape{n, units_});
      // Rows in blocks of at least 16 per thread.
      const int threads = detail::threads_for(std::max<Index>(1, n / 16));
      if (ws_.size() < static_cast<std::size_t>(threads)) ws_.resize(static_cast<std::size_t>(threads));
      detail::parallel(threads, [&](int t, int nt) {
        Workspace& s = ws_[static_cast<std::size_t>(t)];
        const detail::Range rows = detail::split(n, t, nt);
        if (rows.size() == 0) return;
        s.rows.resize(static_cast<std::size_t>(rows.size() * lda));
        for (Index r = rows.begin; r < rows.end; ++r) {
          this->in_.quantize(x.data() + r * in, in, s.rows.data() + (r - rows.begin) * lda);
        }
        float* y = y_.data() + rows.begin * units_;
        detail::int8_gemm(rows.size(), s.rows.data(), lda, w.packed, y, units_, epi, s.edge);
        this->activate_rest(y, rows.size(), units_);
      });
    }
    return y_;
  }

 private:
  struct Workspace {
    std::vector<std::uint8_t> rows, edge;
  };
  Index units_;
  Tensor<T> y_;
  std::vector<Workspace> ws_;
};

LOOM_REGISTER(QuantizedConv2D)
LOOM_REGISTER(QuantizedDense)

}  // namespace loom
