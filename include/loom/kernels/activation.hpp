#pragma once
/// \file kernels/activation.hpp
/// In-place activation kernels shared by Dense, Conv2D and the activation
/// layers. Data is a row-major [rows, cols] block; softmax runs along a row.

#include <algorithm>
#include <cmath>

#include "../enums.hpp"
#include "../tensor.hpp"

namespace loom::detail {

template <class T>
void softmax_rows(T* y, Index rows, Index cols) {
  for (Index r = 0; r < rows; ++r) {
    T* row = y + r * cols;
    const T m = *std::max_element(row, row + cols);
    T sum = 0;
    for (Index c = 0; c < cols; ++c) {
      row[c] = std::exp(row[c] - m);
      sum += row[c];
    }
    const T inv = T(1) / sum;
    for (Index c = 0; c < cols; ++c) row[c] *= inv;
  }
}

/// y <- f(y).
template <class T>
void activate(Activation a, T* y, Index rows, Index cols) {
  const Index n = rows * cols;
  switch (a) {
    case Activation::ReLU:
      for (Index i = 0; i < n; ++i) y[i] = std::max(y[i], T(0));
      break;
    case Activation::Softmax: softmax_rows(y, rows, cols); break;
    case Activation::None: break;
  }
}

/// dz = dL/dz from dy = dL/dy, given the activation's output y = f(z), in
/// one pass. dz may be dy (in place).
template <class T>
void activation_grad(Activation a, const T* y, const T* dy, T* dz, Index rows, Index cols) {
  const Index n = rows * cols;
  switch (a) {
    case Activation::ReLU:
      for (Index i = 0; i < n; ++i) dz[i] = y[i] > T(0) ? dy[i] : T(0);
      break;
    case Activation::Softmax:
      // dz_c = y_c * (dy_c - sum_k dy_k y_k)
      for (Index r = 0; r < rows; ++r) {
        const T* yr = y + r * cols;
        const T* gr = dy + r * cols;
        T* dr = dz + r * cols;
        T dot = 0;
        for (Index c = 0; c < cols; ++c) dot += gr[c] * yr[c];
        for (Index c = 0; c < cols; ++c) dr[c] = yr[c] * (gr[c] - dot);
      }
      break;
    case Activation::None:
      if (dz != dy) std::copy(dy, dy + n, dz);
      break;
  }
}

/// The same, in place: dy becomes dL/dz.
template <class T>
void activation_grad(Activation a, const T* y, T* dy, Index rows, Index cols) {
  activation_grad(a, y, dy, dy, rows, cols);
}

}  // namespace loom::detail
