#pragma once
/// \file max_pool2d.hpp
/// `MaxPool2D` over NHWC images. With "same" padding the window is clipped to
/// the image (padded cells never win), so 2x2/2 on 7x7 gives 4x4 and the last
/// row and column each see one real row or column, as in Keras. Forward
/// remembers the winning input cell of every output; backward routes each
/// output gradient to it. A NaN in a window wins, so it is not hidden.
/// Threads split the batch by samples.

#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "../parallel.hpp"
#include "../kernels/im2col.hpp"
#include "../kernels/pool.hpp"
#include "layer.hpp"

namespace loom {

/// Keras's MaxPool2D arguments; strides default to the pool size.
class MaxPool2DOptions {
 public:
  explicit MaxPool2DOptions(Size2 pool_size = {2, 2}) : pool_size_(pool_size) {}
  LOOM_OPTION(Size2, pool_size, (Size2{2, 2}))
  LOOM_OPTION(std::optional<Size2>, strides, std::nullopt)
  LOOM_OPTION(Padding, padding, Padding::Valid)
};

namespace detail {

/// What the window pooling layers (MaxPool2D, AveragePool2D) share: the
/// checks of their options, their config both ways, and their window.
struct WindowPooling {
  static void check(const MaxPool2DOptions& opt, const char* cls) {
    const Size2 s = opt.strides().value_or(opt.pool_size());
    if (opt.pool_size()[0] < 1 || opt.pool_size()[1] < 1 || s[0] < 1 || s[1] < 1) {
      throw ConfigError(detail::str(cls, ": pool_size and strides must be >= 1, got pool_size=(", opt.pool_size()[0],
                                    ", ", opt.pool_size()[1], ") strides=(", s[0], ", ", s[1], ")"));
    }
  }
  static Config config(const MaxPool2DOptions& opt) {
    return Config()
        .set("pool_size", opt.pool_size())
        .set("strides", opt.strides().value_or(opt.pool_size()))
        .set("padding", to_string(opt.padding()));
  }
  static MaxPool2DOptions options(const Config& c) {
    return MaxPool2DOptions(c.size2("pool_size")).strides(c.size2("strides")).padding(padding_from(c.text("padding")));
  }
  /// The window over per-sample input `in` (rank 3; the batch n left 0),
  /// or nullopt when `in` is too small for 'valid' pooling.
  static std::optional<Window2D> window(const MaxPool2DOptions& opt, const Shape& in) {
    const auto [ph, pw] = opt.pool_size();
    const auto [sh, sw] = opt.strides().value_or(opt.pool_size());
    const auto rows = window_axis(in[0], ph, sh, opt.padding());
    const auto cols = window_axis(in[1], pw, sw, opt.padding());
    if (rows.out < 1 || cols.out < 1) return std::nullopt;
    return Window2D{0, in[0], in[1], in[2], ph, pw, sh, sw, rows.pad_before, cols.pad_before, rows.out, cols.out};
  }
};

}  // namespace detail

template <class T>
class MaxPool2D : public Layer<T> {
 public:
  explicit MaxPool2D(const MaxPool2DOptions& options = MaxPool2DOptions()) : opt_(options) {
    detail::WindowPooling::check(opt_, "MaxPool2D");
  }

  /// Keras's summary prints the class this is an alias of.
  static constexpr const char* class_name = "MaxPooling2D";
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "max_pooling2d"; }
  const MaxPool2DOptions& options() const { return opt_; }
  Size2 strides() const { return opt_.strides().value_or(opt_.pool_size()); }
  /// The pooling geometry (after build; `n` is the last forward's batch).
  const detail::Window2D& window() const { return geo_; }
  /// Whether every input cell is in at most one window (strides equal to the pool size).
  bool windows_tile() const { return strides() == opt_.pool_size(); }

  Config config() const override { return detail::WindowPooling::config(opt_); }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<MaxPool2D>(detail::WindowPooling::options(c));
  }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    if (in.rank() != 3) this->reject_input(in, "(None, height, width, channels)");
    const auto window = detail::WindowPooling::window(opt_, in);
    if (!window) {
      this->reject_input(in, detail::str("at least ", opt_.pool_size()[0], "x", opt_.pool_size()[1],
                                         " pixels for 'valid' pooling"));
    }
    geo_ = *window;
    return Shape{geo_.ho, geo_.wo, in[2]};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    const auto& g = geo_;
    geo_.n = x.dim(0);
    y_.resize_for_overwrite(Shape{g.n, g.ho, g.wo, g.c});
    // Only backward needs the winners: inference skips writing them.
    const bool track = mode == Mode::Train;
    if (track) argmax_.resize(static_cast<std::size_t>(y_.size()));
    const T* xd = x.data();
    detail::parallel(detail::threads_for(y_.size() / 32768), [&](int t, int nt) {
      const detail::Range mine = detail::split(g.n, t, nt);
      for (Index n = mine.begin; n < mine.end; ++n) {
        for (Index oh = 0; oh < g.ho; ++oh) {
          const detail::Range rows = detail::pool_rows(g, oh);
          const T* band = xd + (n * g.h + rows.begin) * g.w * g.c;
          T* out = y_.data() + (n * g.ho + oh) * g.wo * g.c;
          if (track) {
            pool_row_tracked(band, rows.size(), band - xd, out, argmax_.data() + (out - y_.data()));
          } else {
            detail::pool_row(band, rows.size(), g, out);
          }
        }
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    dx_.resize_for_overwrite(this->input_shape().with_batch(geo_.n));
    // Each sample's outputs route only into that sample's inputs: split by sample.
    const auto& g = geo_;
    const Index in_sample = g.h * g.w * g.c, out_sample = g.ho * g.wo * g.c;
    detail::parallel(detail::threads_for(dy.size() / 32768), [&](int t, int nt) {
      const detail::Range mine = detail::split(g.n, t, nt);
      std::fill(dx_.data() + mine.begin * in_sample, dx_.data() + mine.end * in_sample, T(0));
      for (Index i = mine.begin * out_sample; i < mine.end * out_sample; ++i) {
        dx_[argmax_[static_cast<std::size_t>(i)]] += dy[i];
      }
    });
    return dx_;
  }

 private:
  /// detail::pool_row, remembering each output's winning input cell (its
  /// index in x, the band starting at x[first]).
  void pool_row_tracked(const T* band, Index rows, Index first, T* out, Index* at) const {
    const Index c = geo_.c;
    detail::visit_pool_row(
        rows, geo_,
        [&](Index ow, Index cell) {
          std::copy(band + cell, band + cell + c, out + ow * c);
          for (Index ch = 0; ch < c; ++ch) at[ow * c + ch] = first + cell + ch;
        },
        [&](Index ow, Index cell) { take_larger(band + cell, first + cell, c, out + ow * c, at + ow * c); });
  }

  /// best[c], at[c] <- src[c], first + c where src[c] is larger, or NaN (the
  /// first NaN wins and stays), as detail::take_larger.
  static void take_larger(const T* __restrict src, Index first, Index channels, T* __restrict best,
                          Index* __restrict at) {
    for (Index c = 0; c < channels; ++c) {
      const T v = src[c], b = best[c];
      const bool take = v > b || (v != v && b == b);
      best[c] = take ? v : b;
      at[c] = take ? first + c : at[c];
    }
  }

  MaxPool2DOptions opt_;
  detail::Window2D geo_;
  Tensor<T> y_, dx_;
  std::vector<Index, detail::UninitializedAllocator<Index>> argmax_;  // every element written by forward
};

LOOM_REGISTER(MaxPool2D, "MaxPool2D")

}  // namespace loom
