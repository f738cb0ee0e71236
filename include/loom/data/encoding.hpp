#pragma once
/// \file data/encoding.hpp
/// The notebook's preprocessing as functions: take a range of samples
/// (the 48,000 / 12,000 split), scale (x / 255), one-hot (to_categorical),
/// and add a channel axis ((N, 28, 28) -> (N, 28, 28, 1)).

#include <algorithm>
#include <cmath>

#include "../error.hpp"
#include "../parallel.hpp"
#include "../tensor.hpp"

namespace loom::data {

/// Samples [begin, end) of `x` (along the first axis), copied.
template <class T>
Tensor<T> take(const Tensor<T>& x, Index begin, Index end) {
  if (x.rank() < 1 || begin < 0 || end < begin || end > x.dim(0)) {
    throw ShapeError(loom::detail::str("take: range [", begin, ", ", end, ") is not within the ", x.rank() ? x.dim(0) : 0,
                                 " samples of ", x.shape()));
  }
  Shape s = x.shape();
  s[0] = end - begin;
  Tensor<T> out;
  out.resize_for_overwrite(s);  // every element is copied next
  const Index row = x.dim(0) ? x.size() / x.dim(0) : 0;
  std::copy(x.data() + begin * row, x.data() + end * row, out.data());
  return out;
}

/// x * factor, as a new tensor (the notebook's `x_train / 255`).
template <class T>
Tensor<T> scaled(const Tensor<T>& x, double factor) {
  Tensor<T> out;
  out.resize_for_overwrite(x.shape());  // every element is written next
  // On the threads: the training images are 150 MB, most of their time the
  // first touch of new memory (the experiment's x_train / 255: 0.12 s on one).
  loom::detail::parallel_ranges(x.size(), Index(1) << 20, [&](Index begin, Index end) {
    for (Index i = begin; i < end; ++i) out[i] = static_cast<T>(x[i] * factor);
  });
  return out;
}

/// Keras's `to_categorical`: integer labels (N,) or (N, 1) -> one-hot (N, num_classes).
template <class T>
Tensor<T> to_categorical(const Tensor<T>& labels, Index num_classes) {
  if (!(labels.rank() == 1 || (labels.rank() == 2 && labels.dim(1) == 1))) {
    throw ShapeError(loom::detail::str("to_categorical: expected labels of shape (N,) or (N, 1), got ", labels.shape()));
  }
  if (num_classes < 1) throw ConfigError(loom::detail::str("to_categorical: num_classes must be >= 1, got ", num_classes));
  const Index n = labels.dim(0);
  Tensor<T> out(Shape{n, num_classes});
  for (Index i = 0; i < n; ++i) {
    const T v = labels[i];
    if (!(v >= 0 && v < static_cast<T>(num_classes)) || v != std::floor(v)) {
      throw FormatError(loom::detail::str("to_categorical: label ", v, " of sample ", i, " is not an integer in [0, ",
                                    num_classes, ")"));
    }
    out(i, static_cast<Index>(v)) = T(1);
  }
  return out;
}

/// (N, h, w) -> (N, h, w, 1) in place: the notebook's `reshape(-1, 28, 28, 1)`.
template <class T>
Tensor<T>& add_channel_axis(Tensor<T>& x) {
  Shape s = x.shape();
  s.push_back(1);
  return x.reshape(s);
}

}  // namespace loom::data
