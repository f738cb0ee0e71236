#pragma once
/// \file reshape.hpp
/// Reshape and Permute, Keras's layers of those names: each sample's values
/// in another shape, in the same row-major order (Reshape), or with its
/// axes reordered (Permute). The batch axis is never touched.

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {
namespace detail {

/// "(2, -1, 3)": a list of sizes or axes, as Python prints a tuple.
inline std::string tuple_str(const std::vector<Index>& v) {
  std::string s = "(";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + (v.size() == 1 ? ",)" : ")");
}

}  // namespace detail

/// Keras's Reshape(target_shape): each sample's values, in row-major order,
/// in the per-sample shape `target_shape`, where one size may be -1 (what
/// the input's size leaves for it). Forward and backward are copies.
template <class T>
class Reshape : public Layer<T> {
 public:
  static constexpr const char* class_name = "Reshape";
  explicit Reshape(std::vector<Index> target_shape) : target_(std::move(target_shape)) {
    if (!valid_target_shape(target_)) {
      throw ConfigError(detail::str("Reshape: target_shape must be 1 to ", Shape::max_rank - 1,
                                    " sizes, each positive or one of them -1; got ", detail::tuple_str(target_)));
    }
  }
  /// Whether `s` is a target shape loom takes: 1 to 5 sizes (a sample's rank
  /// below Shape::max_rank), each positive, or -1 for at most one.
  static bool valid_target_shape(const std::vector<Index>& s) {
    if (s.empty() || s.size() >= static_cast<std::size_t>(Shape::max_rank)) return false;
    int unknown = 0;
    for (Index d : s) {
      if (d == -1) {
        ++unknown;
      } else if (d < 1) {
        return false;
      }
    }
    return unknown <= 1;
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<Reshape>(c.integers("target_shape"));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "reshape"; }
  Config config() const override { return Config().set_integers("target_shape", target_); }
  const std::vector<Index>& target_shape() const { return target_; }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    const Index size = in.size();
    Index known = 1;  // the product of the known sizes, while it is at most `size`
    double product = 1;
    bool unknown = false;
    for (Index d : target_) {
      if (d == -1) {
        unknown = true;
      } else {
        product *= static_cast<double>(d);
        if (known <= size / d) known *= d;  // known * d <= size, without overflowing
      }
    }
    if (product > static_cast<double>(size) || (unknown ? size % known != 0 : size != known)) {
      const std::string sizes = product > static_cast<double>(size) ? detail::str(product) : std::to_string(known);
      this->reject_input(in, detail::str(unknown ? "whose sample size is a multiple of " : "with a sample size of ",
                                         sizes, " (target_shape ", detail::tuple_str(target_), ")"));
    }
    Shape out;
    for (Index d : target_) out.push_back(d == -1 ? size / known : d);
    return out;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    y_.resize_for_overwrite(this->output_shape().with_batch(x.dim(0)));
    std::copy(x.begin(), x.end(), y_.begin());
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    dx_.resize_for_overwrite(this->input_shape().with_batch(dy.dim(0)));
    std::copy(dy.begin(), dy.end(), dx_.begin());
    return dx_;
  }

 private:
  std::vector<Index> target_;
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(Reshape)

/// Keras's Permute(dims): the axes of each sample reordered, output axis i
/// being input axis dims[i], counted from 1 after the batch as Keras counts
/// them ((2, 1) swaps the two axes of a rank-2 sample). `dims` must be a
/// permutation of 1..rank of the input.
template <class T>
class Permute : public Layer<T> {
 public:
  static constexpr const char* class_name = "Permute";
  explicit Permute(std::vector<Index> dims) : dims_(std::move(dims)) {
    if (!valid_dims(dims_)) {
      throw ConfigError(detail::str("Permute: dims must be a permutation of 1..n, n from 1 to ", Shape::max_rank - 1,
                                    " (the axes after the batch, counted from 1); got ", detail::tuple_str(dims_)));
    }
  }
  /// Whether `d` is a permutation of 1..n with 1 <= n < Shape::max_rank.
  static bool valid_dims(std::vector<Index> d) {
    if (d.empty() || d.size() >= static_cast<std::size_t>(Shape::max_rank)) return false;
    std::sort(d.begin(), d.end());
    for (std::size_t i = 0; i < d.size(); ++i) {
      if (d[i] != static_cast<Index>(i) + 1) return false;
    }
    return true;
  }
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<Permute>(c.integers("dims"));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "permute"; }
  Config config() const override { return Config().set_integers("dims", dims_); }
  const std::vector<Index>& dims() const { return dims_; }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    const int rank = static_cast<int>(dims_.size());
    if (in.rank() != rank) {
      this->reject_input(in, detail::str("of rank ", rank, " (dims ", detail::tuple_str(dims_), ")"));
    }
    std::array<Index, Shape::max_rank> in_stride{};
    Index s = 1;
    for (int a = rank - 1; a >= 0; --a) {
      in_stride[static_cast<std::size_t>(a)] = s;
      s *= in[a];
    }
    Shape out;
    for (int a = 0; a < rank; ++a) {
      const int from = static_cast<int>(dims_[static_cast<std::size_t>(a)]) - 1;
      out.push_back(in[from]);
      stride_[static_cast<std::size_t>(a)] = in_stride[static_cast<std::size_t>(from)];
    }
    return out;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    y_.resize_for_overwrite(this->output_shape().with_batch(x.dim(0)));
    permute(x.data(), y_.data(), x.dim(0), false);
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    dx_.resize_for_overwrite(this->input_shape().with_batch(dy.dim(0)));
    permute(dy.data(), dx_.data(), dy.dim(0), true);  // the transpose of a permutation is its inverse
    return dx_;
  }

 private:
  /// For each sample, walks the output in row-major order, element o at
  /// input offset `at`: out[o] = in[at] (gather, forward), or, with
  /// `scatter`, in[at] = out[o], reading `from` as the output (backward).
  void permute(const T* from, T* to, Index samples, bool scatter) const {
    const Shape& out = this->output_shape();
    const int rank = out.rank();
    const Index per_sample = out.size(), last = out[rank - 1];
    const Index last_stride = stride_[static_cast<std::size_t>(rank - 1)];
    detail::parallel(detail::threads_for(samples * per_sample / 16384), [&](int t, int nt) {
      const detail::Range mine = detail::split(samples, t, nt);
      for (Index b = mine.begin; b < mine.end; ++b) {
        const T* src = from + b * per_sample;
        T* dst = to + b * per_sample;
        std::array<Index, Shape::max_rank> index{};
        Index at = 0, o = 0;
        for (;;) {
          if (scatter) {
            for (Index j = 0; j < last; ++j) dst[at + j * last_stride] = src[o + j];
          } else {
            for (Index j = 0; j < last; ++j) dst[o + j] = src[at + j * last_stride];
          }
          o += last;
          int a = rank - 2;  // the next row: an odometer over the output's other axes
          for (; a >= 0; --a) {
            const auto u = static_cast<std::size_t>(a);
            at += stride_[u];
            if (++index[u] < out[a]) break;
            at -= stride_[u] * out[a];
            index[u] = 0;
          }
          if (a < 0) break;
        }
      }
    });
  }

  std::vector<Index> dims_;
  std::array<Index, Shape::max_rank> stride_{};  ///< per output axis: its step in the input sample
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(Permute)

}  // namespace loom
