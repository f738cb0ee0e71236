#pragma once
/// \file average_pool2d.hpp
/// `AveragePool2D` (Keras's AveragePooling2D) over NHWC images: the mean of
/// each window. With "same" padding the window is clipped to the image and
/// the mean is over the cells inside it (padded cells are not counted), as
/// TensorFlow's and Keras's average pooling does. Backward spreads each
/// output's gradient evenly over its window's cells. Threads split the batch.

#include <algorithm>
#include <memory>
#include <optional>

#include "../kernels/im2col.hpp"
#include "../kernels/pool.hpp"
#include "../parallel.hpp"
#include "layer.hpp"
#include "max_pool2d.hpp"

namespace loom {

/// Keras's AveragePooling2D arguments (those of MaxPool2D): strides default to the pool size.
using AveragePool2DOptions = MaxPool2DOptions;

template <class T>
class AveragePool2D : public Layer<T> {
 public:
  explicit AveragePool2D(const AveragePool2DOptions& options = AveragePool2DOptions()) : opt_(options) {
    detail::WindowPooling::check(opt_, "AveragePooling2D");
  }

  static constexpr const char* class_name = "AveragePooling2D";
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "average_pooling2d"; }
  const AveragePool2DOptions& options() const { return opt_; }
  Size2 strides() const { return opt_.strides().value_or(opt_.pool_size()); }

  Config config() const override { return detail::WindowPooling::config(opt_); }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<AveragePool2D>(detail::WindowPooling::options(c));
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

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    geo_.n = x.dim(0);
    const auto& g = geo_;
    y_.resize_for_overwrite(Shape{g.n, g.ho, g.wo, g.c});
    for_each_window(y_.size(), [&](Index n, Index oh, Index ow, detail::Range rows, detail::Range cols) {
      T* out = y_.data() + ((n * g.ho + oh) * g.wo + ow) * g.c;
      std::fill(out, out + g.c, T(0));
      for (Index r = rows.begin; r < rows.end; ++r) {
        for (Index q = cols.begin; q < cols.end; ++q) {
          const T* cell = x.data() + ((n * g.h + r) * g.w + q) * g.c;
          for (Index ch = 0; ch < g.c; ++ch) out[ch] += cell[ch];
        }
      }
      const T count = static_cast<T>(rows.size() * cols.size());
      for (Index ch = 0; ch < g.c; ++ch) out[ch] /= count;
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    const auto& g = geo_;
    dx_.resize_for_overwrite(this->input_shape().with_batch(g.n));
    const Index in_sample = g.h * g.w * g.c;
    detail::parallel(detail::threads_for(dy.size() / 32768), [&](int t, int nt) {
      const detail::Range mine = detail::split(g.n, t, nt);
      std::fill(dx_.data() + mine.begin * in_sample, dx_.data() + mine.end * in_sample, T(0));
      for (Index n = mine.begin; n < mine.end; ++n) {
        for (Index oh = 0; oh < g.ho; ++oh) {
          for (Index ow = 0; ow < g.wo; ++ow) {
            const detail::Range rows = detail::pool_rows(g, oh), cols = columns(ow);
            const T count = static_cast<T>(rows.size() * cols.size());
            const T* d = dy.data() + ((n * g.ho + oh) * g.wo + ow) * g.c;
            for (Index r = rows.begin; r < rows.end; ++r) {
              for (Index q = cols.begin; q < cols.end; ++q) {
                T* cell = dx_.data() + ((n * g.h + r) * g.w + q) * g.c;
                for (Index ch = 0; ch < g.c; ++ch) cell[ch] += d[ch] / count;
              }
            }
          }
        }
      }
    });
    return dx_;
  }

 private:
  detail::Range columns(Index ow) const {
    return {std::max<Index>(ow * geo_.sw - geo_.pad_left, 0),
            std::min<Index>(ow * geo_.sw - geo_.pad_left + geo_.kw, geo_.w)};
  }
  /// f(n, oh, ow, rows, cols) for every output cell, the batch split across threads.
  template <class F>
  void for_each_window(Index outputs, F&& f) const {
    const auto& g = geo_;
    detail::parallel(detail::threads_for(outputs / 32768), [&](int t, int nt) {
      const detail::Range mine = detail::split(g.n, t, nt);
      for (Index n = mine.begin; n < mine.end; ++n) {
        for (Index oh = 0; oh < g.ho; ++oh) {
          for (Index ow = 0; ow < g.wo; ++ow) f(n, oh, ow, detail::pool_rows(g, oh), columns(ow));
        }
      }
    });
  }

  AveragePool2DOptions opt_;
  detail::Window2D geo_;
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(AveragePool2D, "AvgPool2D")

}  // namespace loom
