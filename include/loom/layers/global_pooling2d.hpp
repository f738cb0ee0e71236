#pragma once
/// \file global_pooling2d.hpp
/// Keras's `GlobalAveragePooling2D` and `GlobalMaxPooling2D`: each channel's
/// mean (or maximum) over the whole image, (N, h, w, c) -> (N, c), or
/// (N, 1, 1, c) with `keepdims`. The maximum's gradient goes to the first
/// cell holding it; a NaN wins, as MaxPool2D's. Threads split the batch.

#include <algorithm>
#include <memory>
#include <vector>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {

template <class T>
class GlobalPool2D : public Layer<T> {
 public:
  bool keepdims() const { return keepdims_; }
  Config config() const override { return Config().set("keepdims", keepdims_); }

 protected:
  GlobalPool2D(bool keepdims, bool max) : keepdims_(keepdims), max_(max) {}

  Shape build_impl(const Shape& in, Rng&) override {
    if (in.rank() != 3) this->reject_input(in, "(None, height, width, channels)");
    return keepdims_ ? Shape{1, 1, in[2]} : Shape{in[2]};
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    const Index n = x.dim(0), cells = x.dim(1) * x.dim(2), c = x.dim(3);
    y_.resize_for_overwrite(this->output_shape().with_batch(n));
    const bool track = max_ && mode == Mode::Train;
    if (track) argmax_.resize(static_cast<std::size_t>(n * c));
    detail::parallel(detail::threads_for(x.size() / 32768), [&](int t, int nt) {
      const detail::Range mine = detail::split(n, t, nt);
      for (Index s = mine.begin; s < mine.end; ++s) {
        const T* in = x.data() + s * cells * c;
        T* out = y_.data() + s * c;
        std::copy(in, in + c, out);
        Index* at = track ? argmax_.data() + s * c : nullptr;
        if (at) std::fill(at, at + c, Index(0));
        for (Index k = 1; k < cells; ++k) {
          const T* cell = in + k * c;
          for (Index ch = 0; ch < c; ++ch) {
            if (!max_) {
              out[ch] += cell[ch];
            } else if (cell[ch] > out[ch] || (cell[ch] != cell[ch] && out[ch] == out[ch])) {  // the first NaN stays
              out[ch] = cell[ch];
              if (at) at[ch] = k;
            }
          }
        }
        if (!max_) {
          for (Index ch = 0; ch < c; ++ch) out[ch] /= static_cast<T>(cells);
        }
      }
    });
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    const Shape& in = this->input_shape();
    const Index n = dy.dim(0), cells = in[0] * in[1], c = in[2];
    dx_.resize_for_overwrite(in.with_batch(n));
    detail::parallel(detail::threads_for(dx_.size() / 32768), [&](int t, int nt) {
      const detail::Range mine = detail::split(n, t, nt);
      for (Index s = mine.begin; s < mine.end; ++s) {
        const T* d = dy.data() + s * c;
        T* out = dx_.data() + s * cells * c;
        if (max_) {
          std::fill(out, out + cells * c, T(0));
          for (Index ch = 0; ch < c; ++ch) out[argmax_[static_cast<std::size_t>(s * c + ch)] * c + ch] = d[ch];
        } else {
          for (Index k = 0; k < cells; ++k) {
            for (Index ch = 0; ch < c; ++ch) out[k * c + ch] = d[ch] / static_cast<T>(cells);
          }
        }
      }
    });
    return dx_;
  }

 private:
  bool keepdims_, max_;
  Tensor<T> y_, dx_;
  std::vector<Index> argmax_;  ///< each sample's and channel's winning cell (max, training)
};

template <class T>
class GlobalAveragePooling2D : public GlobalPool2D<T> {
 public:
  explicit GlobalAveragePooling2D(bool keepdims = false) : GlobalPool2D<T>(keepdims, false) {}
  static constexpr const char* class_name = "GlobalAveragePooling2D";
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<GlobalAveragePooling2D>(c.flag("keepdims", false));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "global_average_pooling2d"; }
};

template <class T>
class GlobalMaxPooling2D : public GlobalPool2D<T> {
 public:
  explicit GlobalMaxPooling2D(bool keepdims = false) : GlobalPool2D<T>(keepdims, true) {}
  static constexpr const char* class_name = "GlobalMaxPooling2D";
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<GlobalMaxPooling2D>(c.flag("keepdims", false));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "global_max_pooling2d"; }
};

LOOM_REGISTER(GlobalAveragePooling2D, "GlobalAvgPool2D")
LOOM_REGISTER(GlobalMaxPooling2D, "GlobalMaxPool2D")

}  // namespace loom
