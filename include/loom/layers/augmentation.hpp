#pragma once
/// \file augmentation.hpp
/// Image augmentation layers, Keras's preprocessing layers of the same
/// names: `RandomFlip`, `RandomTranslation`, `RandomCrop`, `RandomErasing`,
/// and the plain `ZeroPadding2D` that goes before a RandomCrop. Inputs are
/// NHWC images.
///
/// The random layers change their input only in `Mode::Train`. In
/// inference RandomFlip, RandomTranslation and RandomErasing return their input itself
/// (no copy), and RandomCrop takes the central window, so ZeroPadding2D(p)
/// followed by RandomCrop of the unpadded size is the identity in inference.
/// (Keras's RandomCrop resizes in inference instead; see docs/keras-compat.md.)
///
/// Randomness is the layer's own seeded stream, as Dropout's: each training
/// forward draws one key, and sample b's draws are SplitMix64 values of
/// (key, b), so they depend neither on the thread count nor on the other
/// samples, and a saved model resumes them bit for bit. Samples are split
/// across threads; no step allocates once the batch size is steady.
/// Backward is exact (each layer is linear in its input for fixed draws), so
/// the layers may sit anywhere in a model.

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {
namespace detail {

/// The seeded stream and per-sample draws every random augmentation layer shares.
template <class T>
class RandomAugmentation : public Layer<T> {
 public:
  void seed(std::uint64_t seed) override { rng_.seed(seed); }
  bool has_rng() const override { return true; }
  Rng::State rng_state() const override { return rng_.state(); }
  void set_rng_state(const Rng::State& state) override { rng_.set_state(state); }

 protected:
  explicit RandomAugmentation(std::optional<std::uint64_t> seed) : seed_(seed) {}

  /// Images in, images of the same shape out (RandomCrop overrides it).
  Shape build_impl(const Shape& in, Rng& rng) override {
    require_image(in);
    seed_stream(rng);
    return in;
  }

  /// Without a fixed seed, the stream is seeded from the model's generator at build.
  void seed_stream(Rng& model_rng) {
    const std::uint64_t drawn = model_rng.next_u64();
    rng_.seed(seed_.value_or(drawn));
  }
  /// (H, W, C) images, or a ShapeError naming the layer.
  void require_image(const Shape& in) const {
    if (in.rank() != 3) this->reject_input(in, "images (None, H, W, C)");
  }
  Config with_seed(Config c) const {
    if (seed_) c.set("seed", *seed_);
    return c;
  }
  static std::optional<std::uint64_t> seed_of(const Config& c) {
    return c.has("seed") ? std::optional<std::uint64_t>(c.u64("seed")) : std::nullopt;
  }
  /// The key of this training batch.
  std::uint64_t next_key() { return rng_.next_u64(); }
  /// Draw j (< 8) of sample b under `key`, uniform in [0, 1).
  static double uniform(std::uint64_t key, Index b, int j) {
    return static_cast<double>(splitmix64(key, static_cast<std::uint64_t>(b) * 8 + static_cast<std::uint64_t>(j)) >> 11) *
           0x1.0p-53;
  }
  /// body(b) for every sample of a batch of n images of `values` values each, split across threads.
  template <class Body>
  static void for_each_sample(Index n, Index values, Body&& body) {
    parallel(threads_for(n * values / 16384), [&](int t, int nt) {
      const Range mine = split(n, t, nt);
      for (Index b = mine.begin; b < mine.end; ++b) body(b);
    });
  }

 private:
  std::optional<std::uint64_t> seed_;
  Rng rng_;
};

}  // namespace detail

/// Keras's RandomFlip: in training each image is mirrored left-right
/// ("horizontal"), upside down ("vertical"), or each of those independently
/// ("horizontal_and_vertical", Keras's default), each with probability 1/2.
template <class T>
class RandomFlip : public detail::RandomAugmentation<T> {
 public:
  static constexpr const char* class_name = "RandomFlip";
  explicit RandomFlip(std::string mode = "horizontal_and_vertical", std::optional<std::uint64_t> seed = std::nullopt)
      : detail::RandomAugmentation<T>(seed), mode_(std::move(mode)) {
    if (mode_ != "horizontal" && mode_ != "vertical" && mode_ != "horizontal_and_vertical") {
      throw ConfigError("RandomFlip: mode must be \"horizontal\", \"vertical\" or \"horizontal_and_vertical\", got \"" +
                        mode_ + "\"");
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<RandomFlip>(c.text("mode"), RandomFlip::seed_of(c));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "random_flip"; }
  FusionTraits fusion_traits() const override { return {/*identity_in_inference=*/true, /*scales_elementwise=*/false}; }
  Config config() const override { return this->with_seed(Config().set("mode", mode_)); }
  const std::string& mode() const { return mode_; }

 protected:

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    identity_ = mode == Mode::Inference;
    if (identity_) return x;
    const Index n = x.dim(0);
    flips_.resize(static_cast<std::size_t>(n));
    const std::uint64_t key = this->next_key();
    const bool h = mode_ != "vertical", v = mode_ != "horizontal";
    for (Index b = 0; b < n; ++b) {
      flips_[static_cast<std::size_t>(b)] =
          static_cast<unsigned char>((h && this->uniform(key, b, 0) < 0.5 ? 1 : 0) | (v && this->uniform(key, b, 1) < 0.5 ? 2 : 0));
    }
    flip(x, y_);
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    if (identity_) return dy;
    flip(dy, dx_);  // a flip is its own inverse and its own transpose
    return dx_;
  }

 private:
  /// out <- in with each sample flipped as flips_ says.
  void flip(const Tensor<T>& in, Tensor<T>& out) const {
    out.resize_for_overwrite(in.shape());
    const Index hh = in.dim(1), ww = in.dim(2), cc = in.dim(3);
    this->for_each_sample(in.dim(0), hh * ww * cc, [&](Index b) {
      const unsigned char f = flips_[static_cast<std::size_t>(b)];
      const T* src = in.data() + b * hh * ww * cc;
      T* dst = out.data() + b * hh * ww * cc;
      for (Index i = 0; i < hh; ++i) {
        const Index si = (f & 2) ? hh - 1 - i : i;
        for (Index j = 0; j < ww; ++j) {
          const Index sj = (f & 1) ? ww - 1 - j : j;
          std::copy_n(src + (si * ww + sj) * cc, cc, dst + (i * ww + j) * cc);
        }
      }
    });
  }

  std::string mode_;
  std::vector<unsigned char> flips_;  ///< per sample: bit 0 left-right, bit 1 upside down
  bool identity_ = true;
  Tensor<T> y_, dx_;
};

/// A range of translation as a fraction of the image's size: Keras's
/// `height_factor=0.1` is Factor(0.1), i.e. [-0.1, 0.1]; `(-0.1, 0.2)` is
/// Factor(-0.1, 0.2). Both ends lie in [-1, 1].
struct Factor {
  double lower = 0, upper = 0;
  Factor(double f) : lower(-f), upper(f) {}  // NOLINT: implicit, as Keras takes a bare float
  Factor(double lo, double hi) : lower(lo), upper(hi) {}
};

class RandomTranslationOptions {
 public:
  RandomTranslationOptions() = default;
  /// "reflect" (Keras's default: d c b a | a b c d | d c b a), "constant"
  /// (fill_value) or "nearest" (the edge pixel). Keras's "wrap" is not here.
  LOOM_OPTION(std::string, fill_mode, "reflect")
  /// "bilinear" (Keras's default) or "nearest".
  LOOM_OPTION(std::string, interpolation, "bilinear")
  LOOM_OPTION(double, fill_value, 0.0)
  LOOM_OPTION(std::optional<std::uint64_t>, seed, std::nullopt)
};

/// Keras's RandomTranslation: in training each image moves by
/// uniform(height_factor) x H rows and uniform(width_factor) x W columns (a
/// fraction of a pixel too, with bilinear interpolation); what comes in at
/// the edges follows `fill_mode`. As TensorFlow's ImageProjectiveTransformV3
/// computes it: output pixel (i, j) reads the input at (i - dy, j - dx),
/// that coordinate mapped into the image by the fill mode, then
/// interpolated from its neighbours; a neighbour outside the image reads
/// fill_value.
template <class T>
class RandomTranslation : public detail::RandomAugmentation<T> {
 public:
  static constexpr const char* class_name = "RandomTranslation";
  RandomTranslation(Factor height_factor, Factor width_factor, RandomTranslationOptions options = {})
      : detail::RandomAugmentation<T>(options.seed()),
        h_(height_factor),
        w_(width_factor),
        opt_(std::move(options)),
        fill_(opt_.fill_mode() == "constant" ? Fill::Constant : opt_.fill_mode() == "nearest" ? Fill::Nearest : Fill::Reflect),
        nearest_(opt_.interpolation() == "nearest") {
    for (const Factor& f : {h_, w_}) {
      if (!(f.lower >= -1 && f.upper <= 1 && f.lower <= f.upper)) {
        throw ConfigError(detail::str("RandomTranslation: a factor must be a range [lower, upper] within [-1, 1], got [",
                                      f.lower, ", ", f.upper, "]"));
      }
    }
    const std::string& m = opt_.fill_mode();
    if (m != "reflect" && m != "constant" && m != "nearest") {
      throw ConfigError("RandomTranslation: fill_mode must be reflect, constant or nearest, got \"" + m + "\"");
    }
    if (opt_.interpolation() != "bilinear" && opt_.interpolation() != "nearest") {
      throw ConfigError("RandomTranslation: interpolation must be bilinear or nearest, got \"" + opt_.interpolation() + "\"");
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    const auto range = [&](const char* key) {
      const std::vector<double> v = c.reals(key);
      if (v.size() != 2) Config::bad(key, c.text(key));
      return Factor(v[0], v[1]);
    };
    return std::make_unique<RandomTranslation>(range("height_factor"), range("width_factor"),
                                               RandomTranslationOptions()
                                                   .fill_mode(c.text("fill_mode", "reflect"))
                                                   .interpolation(c.text("interpolation", "bilinear"))
                                                   .fill_value(c.real("fill_value", 0.0))
                                                   .seed(RandomTranslation::seed_of(c)));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "random_translation"; }
  FusionTraits fusion_traits() const override { return {/*identity_in_inference=*/true, /*scales_elementwise=*/false}; }
  Config config() const override {
    return this->with_seed(Config()
                               .set_reals("height_factor", {h_.lower, h_.upper})
                               .set_reals("width_factor", {w_.lower, w_.upper})
                               .set("fill_mode", opt_.fill_mode())
                               .set("interpolation", opt_.interpolation())
                               .set("fill_value", opt_.fill_value()));
  }

 protected:

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    identity_ = mode == Mode::Inference;
    if (identity_) return x;
    const Index n = x.dim(0), hh = x.dim(1), ww = x.dim(2);
    shifts_.resize(static_cast<std::size_t>(2 * n));
    const std::uint64_t key = this->next_key();
    for (Index b = 0; b < n; ++b) {
      shifts_[static_cast<std::size_t>(2 * b)] = (h_.lower + (h_.upper - h_.lower) * this->uniform(key, b, 0)) * static_cast<double>(hh);
      shifts_[static_cast<std::size_t>(2 * b + 1)] = (w_.lower + (w_.upper - w_.lower) * this->uniform(key, b, 1)) * static_cast<double>(ww);
    }
    y_.resize_for_overwrite(x.shape());
    const T fill = static_cast<T>(opt_.fill_value());
    const Index cc = x.dim(3);
    this->for_each_sample(n, hh * ww * cc, [&](Index b) {
      const T* src = x.data() + b * hh * ww * cc;
      T* dst = y_.data() + b * hh * ww * cc;
      for (Index i = 0; i < hh; ++i) {
        for (Index j = 0; j < ww; ++j) {
          T* out = dst + (i * ww + j) * cc;
          std::fill_n(out, cc, T(0));
          taps(b, i, j, hh, ww, [&](Index si, Index sj, T w) {
            if (si < 0) {
              for (Index c = 0; c < cc; ++c) out[c] += w * fill;
            } else {
              const T* in = src + (si * ww + sj) * cc;
              for (Index c = 0; c < cc; ++c) out[c] += w * in[c];
            }
          });
        }
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    if (identity_) return dy;
    const Index hh = dy.dim(1), ww = dy.dim(2), cc = dy.dim(3);
    dx_.resize_for_overwrite(dy.shape());
    this->for_each_sample(dy.dim(0), hh * ww * cc, [&](Index b) {
      const T* g = dy.data() + b * hh * ww * cc;
      T* dst = dx_.data() + b * hh * ww * cc;
      std::fill_n(dst, hh * ww * cc, T(0));
      for (Index i = 0; i < hh; ++i) {
        for (Index j = 0; j < ww; ++j) {
          const T* gij = g + (i * ww + j) * cc;
          taps(b, i, j, hh, ww, [&](Index si, Index sj, T w) {
            if (si < 0) return;  // fill_value: no input behind it
            T* d = dst + (si * ww + sj) * cc;
            for (Index c = 0; c < cc; ++c) d[c] += w * gij[c];
          });
        }
      }
    });
    return dx_;
  }

 private:
  /// A coordinate moved into [0, len - 1] by the fill mode (TensorFlow's
  /// map_coordinate); "constant" leaves it where it is.
  double mapped(double c, Index len) const {
    const double n = static_cast<double>(len);
    if (fill_ == Fill::Constant) return c;
    if (fill_ == Fill::Nearest) return std::clamp(c, 0.0, n - 1);
    if (len <= 1) return 0;
    // reflect: d c b a | a b c d | d c b a, a period of 2n
    const double period = 2 * n;
    c = std::fmod(c, period);
    if (c < 0) c += period;
    if (c >= n) c = period - c - 1;
    return std::clamp(c, 0.0, n - 1);
  }

  /// Calls tap(si, sj, weight) for each input pixel output (i, j) of sample
  /// b reads, with si = -1 for a read of fill_value.
  template <class Tap>
  void taps(Index b, Index i, Index j, Index hh, Index ww, Tap&& tap) const {
    const double y = mapped(static_cast<double>(i) - shifts_[static_cast<std::size_t>(2 * b)], hh);
    const double x = mapped(static_cast<double>(j) - shifts_[static_cast<std::size_t>(2 * b + 1)], ww);
    const auto inside = [](Index k, Index len) { return k >= 0 && k < len; };
    if (nearest_) {
      const Index si = static_cast<Index>(std::round(y)), sj = static_cast<Index>(std::round(x));
      if (inside(si, hh) && inside(sj, ww)) {
        tap(si, sj, T(1));
      } else {
        tap(-1, -1, T(1));
      }
      return;
    }
    const double fy = std::floor(y), fx = std::floor(x);
    const Index y0 = static_cast<Index>(fy), x0 = static_cast<Index>(fx);
    const double wy1 = y - fy, wx1 = x - fx;
    const double wy[2] = {1 - wy1, wy1}, wx[2] = {1 - wx1, wx1};
    for (int a = 0; a < 2; ++a) {
      for (int c = 0; c < 2; ++c) {
        const double w = wy[a] * wx[c];
        if (w == 0) continue;
        const Index si = y0 + a, sj = x0 + c;
        if (inside(si, hh) && inside(sj, ww)) {
          tap(si, sj, static_cast<T>(w));
        } else {
          tap(-1, -1, static_cast<T>(w));
        }
      }
    }
  }

  enum class Fill { Reflect, Constant, Nearest };
  Factor h_, w_;
  RandomTranslationOptions opt_;
  Fill fill_;     ///< opt_'s fill mode, read per pixel
  bool nearest_;  ///< nearest interpolation, not bilinear
  std::vector<double> shifts_;  ///< per sample: rows, then columns it moves by
  bool identity_ = true;
  Tensor<T> y_, dx_;
};

/// Keras's RandomCrop: in training a window of height x width at a random
/// place (each offset uniform over the places that fit); in inference the
/// central window. The input must be at least that large.
template <class T>
class RandomCrop : public detail::RandomAugmentation<T> {
 public:
  static constexpr const char* class_name = "RandomCrop";
  RandomCrop(Index height, Index width, std::optional<std::uint64_t> seed = std::nullopt)
      : detail::RandomAugmentation<T>(seed), height_(height), width_(width) {
    if (height < 1 || width < 1) {
      throw ConfigError(detail::str("RandomCrop: height and width must be >= 1, got ", height, " and ", width));
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<RandomCrop>(static_cast<Index>(c.integer("height")), static_cast<Index>(c.integer("width")),
                                        RandomCrop::seed_of(c));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "random_crop"; }
  Config config() const override { return this->with_seed(Config().set("height", height_).set("width", width_)); }

 protected:
  Shape build_impl(const Shape& in, Rng& rng) override {
    this->require_image(in);
    if (in[0] < height_ || in[1] < width_) {
      this->reject_input(in, detail::str("images of at least ", height_, " x ", width_,
                                         " (loom crops, it does not resize a smaller image)"));
    }
    this->seed_stream(rng);
    return Shape{height_, width_, in[2]};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    const Index n = x.dim(0), hh = x.dim(1), ww = x.dim(2);
    offsets_.resize(static_cast<std::size_t>(2 * n));
    const bool train = mode == Mode::Train;
    const std::uint64_t key = train ? this->next_key() : 0;
    for (Index b = 0; b < n; ++b) {
      const auto place = [&](Index room, int j) {
        if (!train) return room / 2;
        return std::min(room, static_cast<Index>(this->uniform(key, b, j) * static_cast<double>(room + 1)));
      };
      offsets_[static_cast<std::size_t>(2 * b)] = place(hh - height_, 0);
      offsets_[static_cast<std::size_t>(2 * b + 1)] = place(ww - width_, 1);
    }
    Shape s = x.shape();
    s[1] = height_;
    s[2] = width_;
    y_.resize_for_overwrite(s);
    const Index cc = x.dim(3);
    this->for_each_sample(n, height_ * width_ * cc, [&](Index b) {
      const Index oy = offsets_[static_cast<std::size_t>(2 * b)], ox = offsets_[static_cast<std::size_t>(2 * b + 1)];
      for (Index i = 0; i < height_; ++i) {
        std::copy_n(x.data() + ((b * hh + oy + i) * ww + ox) * cc, width_ * cc, y_.data() + ((b * height_ + i) * width_) * cc);
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    const Shape in = this->input_shape().with_batch(dy.dim(0));
    dx_.resize_for_overwrite(in);
    const Index hh = in[1], ww = in[2], cc = in[3];
    this->for_each_sample(dy.dim(0), hh * ww * cc, [&](Index b) {
      const Index oy = offsets_[static_cast<std::size_t>(2 * b)], ox = offsets_[static_cast<std::size_t>(2 * b + 1)];
      std::fill_n(dx_.data() + b * hh * ww * cc, hh * ww * cc, T(0));
      for (Index i = 0; i < height_; ++i) {
        std::copy_n(dy.data() + ((b * height_ + i) * width_) * cc, width_ * cc, dx_.data() + ((b * hh + oy + i) * ww + ox) * cc);
      }
    });
    return dx_;
  }

 private:
  Index height_, width_;
  std::vector<Index> offsets_;  ///< per sample of the last forward: top row, left column
  Tensor<T> y_, dx_;
};

class RandomErasingOptions {
 public:
  RandomErasingOptions() = default;
  /// Keras's factor f: each image's erasing probability p is drawn from
  /// U(0, f), and the image is erased when U(0, 1) < p (so f = 1 erases half
  /// the images on average; factor(1, 1) erases every one).
  RandomErasingOptions& factor(double f) { return factor(std::max(-f, 0.0), f); }
  RandomErasingOptions& factor(double lower, double upper) {
    factor_ = {std::min(lower, upper), std::max(lower, upper)};
    return *this;
  }
  const std::array<double, 2>& factor() const { return factor_; }
  /// The patch's width is sqrt(U(scale)) x W and its height, drawn apart,
  /// sqrt(U(scale)) x H.
  RandomErasingOptions& scale(double lower, double upper) {
    scale_ = {std::min(lower, upper), std::max(lower, upper)};
    return *this;
  }
  const std::array<double, 2>& scale() const { return scale_; }
  /// The erased values: a constant, or (nullopt, Keras's None) normal noise
  /// times value_range's upper end; either clipped to value_range.
  LOOM_OPTION(std::optional<double>, fill_value, std::nullopt)

 public:
  RandomErasingOptions& value_range(double low, double high) {
    value_range_ = {low, high};
    return *this;
  }
  const std::array<double, 2>& value_range() const { return value_range_; }
  LOOM_OPTION(std::optional<std::uint64_t>, seed, std::nullopt)

 private:
  std::array<double, 2> factor_{0.0, 1.0}, scale_{0.02, 0.33}, value_range_{0.0, 255.0};
};

/// Keras 3's RandomErasing (keras/src/layers/preprocessing/image_preprocessing/
/// random_erasing.py): in training, each image gets a patch whose sides are
/// sqrt(U(scale)) of the image's, placed uniformly, and the patch's pixels
/// become fill_value or noise, when the image's draw says so (see `factor`).
/// A pixel (i, j) is in the patch when x0 <= j < x1 and y0 <= i < y1, the
/// corners being real numbers as Keras computes them.
template <class T>
class RandomErasing : public detail::RandomAugmentation<T> {
 public:
  static constexpr const char* class_name = "RandomErasing";
  explicit RandomErasing(RandomErasingOptions options = {})
      : detail::RandomAugmentation<T>(options.seed()), opt_(std::move(options)) {
    const auto in01 = [](const std::array<double, 2>& r) { return r[0] >= 0 && r[1] <= 1; };
    if (!in01(opt_.factor()) || !in01(opt_.scale())) {
      throw ConfigError(detail::str("RandomErasing: factor and scale must lie in [0, 1], got factor [", opt_.factor()[0],
                                    ", ", opt_.factor()[1], "] and scale [", opt_.scale()[0], ", ", opt_.scale()[1], "]"));
    }
    if (!(opt_.value_range()[0] < opt_.value_range()[1])) {
      throw ConfigError(detail::str("RandomErasing: value_range must be [low, high] with low < high, got [",
                                    opt_.value_range()[0], ", ", opt_.value_range()[1], "]"));
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    const auto pair = [&](const char* key) {
      const std::vector<double> v = c.reals(key);
      if (v.size() != 2) Config::bad(key, c.text(key));
      return v;
    };
    const auto f = pair("factor"), sc = pair("scale"), vr = pair("value_range");
    RandomErasingOptions o;
    o.factor(f[0], f[1]).scale(sc[0], sc[1]).value_range(vr[0], vr[1]).seed(RandomErasing::seed_of(c));
    if (c.has("fill_value")) o.fill_value(c.real("fill_value"));
    return std::make_unique<RandomErasing>(o);
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "random_erasing"; }
  FusionTraits fusion_traits() const override { return {/*identity_in_inference=*/true, /*scales_elementwise=*/false}; }
  Config config() const override {
    Config c;
    c.set_reals("factor", {opt_.factor()[0], opt_.factor()[1]})
        .set_reals("scale", {opt_.scale()[0], opt_.scale()[1]})
        .set_reals("value_range", {opt_.value_range()[0], opt_.value_range()[1]});
    if (opt_.fill_value()) c.set("fill_value", *opt_.fill_value());
    return this->with_seed(c);
  }

 protected:

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    identity_ = mode == Mode::Inference;
    if (identity_) return x;
    const Index n = x.dim(0), hh = x.dim(1), ww = x.dim(2), cc = x.dim(3);
    boxes_.resize(static_cast<std::size_t>(n));
    key_ = this->next_key();
    for (Index b = 0; b < n; ++b) {
      const auto u = [&](int j) { return this->uniform(key_, b, j); };
      const auto& sc = opt_.scale();
      const double wx = std::sqrt(sc[0] + (sc[1] - sc[0]) * u(0)), wy = std::sqrt(sc[0] + (sc[1] - sc[0]) * u(1));
      const double cw = wx * static_cast<double>(ww), ch = wy * static_cast<double>(hh);
      Box& box = boxes_[static_cast<std::size_t>(b)];
      box.x0 = u(2) * (static_cast<double>(ww) - cw);
      box.x1 = box.x0 + cw;
      box.y0 = u(3) * (static_cast<double>(hh) - ch);
      box.y1 = box.y0 + ch;
      const double p = opt_.factor()[0] + (opt_.factor()[1] - opt_.factor()[0]) * u(4);
      box.erase = u(5) < p;
    }
    y_.resize_for_overwrite(x.shape());
    const double lo = opt_.value_range()[0], hi = opt_.value_range()[1];
    this->for_each_sample(n, hh * ww * cc, [&](Index b) {
      const Box& box = boxes_[static_cast<std::size_t>(b)];
      const Index base = b * hh * ww * cc;
      for (Index i = 0; i < hh; ++i) {
        for (Index j = 0; j < ww; ++j) {
          const bool in = box.erase && inside(box, i, j);
          for (Index c = 0; c < cc; ++c) {
            const Index at = base + (i * ww + j) * cc + c;
            y_[at] = in ? static_cast<T>(std::clamp(fill(at), lo, hi)) : x[at];
          }
        }
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    if (identity_) return dy;
    const Index hh = dy.dim(1), ww = dy.dim(2), cc = dy.dim(3);
    dx_.resize_for_overwrite(dy.shape());
    this->for_each_sample(dy.dim(0), hh * ww * cc, [&](Index b) {
      const Box& box = boxes_[static_cast<std::size_t>(b)];
      for (Index i = 0; i < hh; ++i) {
        for (Index j = 0; j < ww; ++j) {
          const bool in = box.erase && inside(box, i, j);
          const Index at = (b * hh * ww + i * ww + j) * cc;
          for (Index c = 0; c < cc; ++c) dx_[at + c] = in ? T(0) : dy[at + c];  // erased values do not depend on x
        }
      }
    });
    return dx_;
  }

 private:
  struct Box {
    double x0 = 0, x1 = 0, y0 = 0, y1 = 0;
    bool erase = false;
  };
  static bool inside(const Box& box, Index i, Index j) {
    const double y = static_cast<double>(i), x = static_cast<double>(j);
    return x >= box.x0 && x < box.x1 && y >= box.y0 && y < box.y1;
  }
  /// The value erasing writes at element `at` of the batch: the constant, or
  /// normal noise (Box-Muller on two SplitMix64 draws of this batch's key) times value_range's top.
  double fill(Index at) const {
    if (opt_.fill_value()) return *opt_.fill_value();
    const std::uint64_t k = key_ ^ 0x9E3779B97F4A7C15ULL;
    const double u1 = (static_cast<double>(splitmix64(k, 2 * static_cast<std::uint64_t>(at)) >> 11) + 1) * 0x1.0p-53;
    const double u2 = static_cast<double>(splitmix64(k, 2 * static_cast<std::uint64_t>(at) + 1) >> 11) * 0x1.0p-53;
    const double normal = std::sqrt(-2 * std::log(u1)) * std::cos(2 * 3.14159265358979323846 * u2);
    return normal * opt_.value_range()[1];
  }

  RandomErasingOptions opt_;
  std::vector<Box> boxes_;  ///< per sample of the last training forward
  std::uint64_t key_ = 0;
  bool identity_ = true;
  Tensor<T> y_, dx_;
};

/// Keras's ZeroPadding2D: zero rows above and below, zero columns left and
/// right of every image, in training and inference alike.
template <class T>
class ZeroPadding2D : public Layer<T> {
 public:
  static constexpr const char* class_name = "ZeroPadding2D";
  /// Keras's padding=p: p on every side.
  explicit ZeroPadding2D(Index padding = 1) : ZeroPadding2D(padding, padding, padding, padding) {}
  /// Keras's padding=((top, bottom), (left, right)).
  ZeroPadding2D(Index top, Index bottom, Index left, Index right) : pad_{top, bottom, left, right} {
    for (Index p : pad_) {
      if (p < 0) throw ConfigError(detail::str("ZeroPadding2D: padding must be >= 0, got ", p));
    }
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    const std::vector<double> p = c.reals("padding");
    if (p.size() != 4) Config::bad("padding", c.text("padding"));
    return std::make_unique<ZeroPadding2D>(static_cast<Index>(p[0]), static_cast<Index>(p[1]), static_cast<Index>(p[2]),
                                           static_cast<Index>(p[3]));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "zero_padding2d"; }
  Config config() const override {
    return Config().set_reals("padding", {static_cast<double>(pad_[0]), static_cast<double>(pad_[1]),
                                          static_cast<double>(pad_[2]), static_cast<double>(pad_[3])});
  }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    if (in.rank() != 3) this->reject_input(in, "images (None, H, W, C)");
    return Shape{in[0] + pad_[0] + pad_[1], in[1] + pad_[2] + pad_[3], in[2]};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    const Shape out = this->output_shape().with_batch(x.dim(0));
    y_.resize_for_overwrite(out);
    const Index hh = x.dim(1), ww = x.dim(2), cc = x.dim(3), oh = out[1], ow = out[2];
    detail::parallel(detail::threads_for(x.size() / 16384), [&](int t, int nt) {
      const detail::Range mine = detail::split(x.dim(0), t, nt);
      for (Index b = mine.begin; b < mine.end; ++b) {
        T* dst = y_.data() + b * oh * ow * cc;
        std::fill_n(dst, oh * ow * cc, T(0));
        for (Index i = 0; i < hh; ++i) {
          std::copy_n(x.data() + (b * hh + i) * ww * cc, ww * cc, dst + ((i + pad_[0]) * ow + pad_[2]) * cc);
        }
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    const Shape in = this->input_shape().with_batch(dy.dim(0));
    dx_.resize_for_overwrite(in);
    const Index hh = in[1], ww = in[2], cc = in[3], oh = dy.dim(1), ow = dy.dim(2);
    for (Index b = 0; b < in[0]; ++b) {
      for (Index i = 0; i < hh; ++i) {
        std::copy_n(dy.data() + ((b * oh + i + pad_[0]) * ow + pad_[2]) * cc, ww * cc, dx_.data() + (b * hh + i) * ww * cc);
      }
    }
    return dx_;
  }

 private:
  std::array<Index, 4> pad_;  ///< top, bottom, left, right
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(RandomFlip)
LOOM_REGISTER(RandomTranslation)
LOOM_REGISTER(RandomCrop)
LOOM_REGISTER(RandomErasing)
LOOM_REGISTER(ZeroPadding2D)

}  // namespace loom
