#pragma once
/// \file kernels/activation.hpp
/// In-place activation kernels shared by Dense, Conv2D and the activation
/// layers. Data is a row-major [rows, cols] block; softmax runs along a row.

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "../enums.hpp"
#include "../tensor.hpp"

namespace loom::detail {

/// 1 / (1 + exp(-z)), without overflow for either sign.
template <class T>
T sigmoid(T z) {
  if (z >= T(0)) return T(1) / (T(1) + std::exp(-z));
  const T e = std::exp(z);
  return e / (T(1) + e);
}

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

/// SELU's constants (Klambauer et al. 2017, as Keras writes them).
inline constexpr double kSeluAlpha = 1.67326324235437728481;
inline constexpr double kSeluScale = 1.05070098735548049342;

/// One element of an elementwise activation (not Softmax): f(z).
template <class T>
T activate_one(Activation a, T z) {
  using std::exp;
  switch (a) {
    case Activation::ReLU: return std::max(z, T(0));
    case Activation::ReLU6: return std::min(std::max(z, T(0)), T(6));
    case Activation::LeakyReLU: return z > T(0) ? z : T(0.2) * z;
    case Activation::ELU: return z > T(0) ? z : std::expm1(z);
    case Activation::SELU: return T(kSeluScale) * (z > T(0) ? z : T(kSeluAlpha) * std::expm1(z));
    case Activation::GELU: return T(0.5) * z * (T(1) + std::erf(z * T(0.70710678118654752440)));
    case Activation::GELUTanh: {
      const T u = T(0.79788456080286535588) * (z + T(0.044715) * z * z * z);  // sqrt(2/pi)
      return T(0.5) * z * (T(1) + std::tanh(u));
    }
    case Activation::SiLU: return z * sigmoid(z);
    case Activation::Sigmoid: return sigmoid(z);
    case Activation::HardSigmoid: return std::min(std::max(z + T(3), T(0)), T(6)) / T(6);
    case Activation::HardSigmoidKeras2: return std::min(std::max(T(0.2) * z + T(0.5), T(0)), T(1));
    case Activation::Tanh: return std::tanh(z);
    case Activation::Softplus: return std::max(z, T(0)) + std::log1p(exp(-std::abs(z)));
    case Activation::Softsign: return z / (T(1) + std::abs(z));
    case Activation::None:
    case Activation::Softmax: return z;
  }
  return z;
}

/// One element's f'(z), from its output y = f(z) and, for the activations
/// that need it (activation_needs_input), its input z.
template <class T>
T derivative_one(Activation a, T y, T z) {
  switch (a) {
    case Activation::ReLU: return y > T(0) ? T(1) : T(0);
    case Activation::ReLU6: return y > T(0) && y < T(6) ? T(1) : T(0);
    case Activation::LeakyReLU: return y > T(0) ? T(1) : T(0.2);
    case Activation::ELU: return y > T(0) ? T(1) : y + T(1);
    case Activation::SELU: return y > T(0) ? T(kSeluScale) : y + T(kSeluScale * kSeluAlpha);
    case Activation::GELU:  // Phi(z) + z phi(z)
      return T(0.5) * (T(1) + std::erf(z * T(0.70710678118654752440))) +
             z * T(0.39894228040143267794) * std::exp(T(-0.5) * z * z);
    case Activation::GELUTanh: {
      const T t = std::tanh(T(0.79788456080286535588) * (z + T(0.044715) * z * z * z));
      return T(0.5) * (T(1) + t) +
             T(0.5) * z * (T(1) - t * t) * T(0.79788456080286535588) * (T(1) + T(3 * 0.044715) * z * z);
    }
    case Activation::SiLU: {
      const T s = sigmoid(z);
      return s * (T(1) + z * (T(1) - s));
    }
    case Activation::Sigmoid: return y * (T(1) - y);
    case Activation::HardSigmoid: return y > T(0) && y < T(1) ? T(1) / T(6) : T(0);
    case Activation::HardSigmoidKeras2: return y > T(0) && y < T(1) ? T(0.2) : T(0);
    case Activation::Tanh: return T(1) - y * y;
    case Activation::Softplus: return -std::expm1(-y);  // sigmoid(z)
    case Activation::Softsign: {
      const T r = T(1) - std::abs(y);  // 1 / (1 + |z|)
      return r * r;
    }
    case Activation::None:
    case Activation::Softmax: return T(1);
  }
  return T(1);
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
    default:
      for (Index i = 0; i < n; ++i) y[i] = activate_one(a, y[i]);
      break;
  }
}

/// dz = dL/dz from dy = dL/dy, given the activation's output y = f(z) and,
/// for the activations that need it (activation_needs_input), its input z,
/// in one pass. dz may be dy (in place).
template <class T>
void activation_grad(Activation a, const T* y, const T* dy, T* dz, Index rows, Index cols, const T* z = nullptr) {
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
    default:
      if (activation_needs_input(a)) {
        if (z == nullptr) throw std::logic_error("activation_grad: this activation's derivative needs its input");
        for (Index i = 0; i < n; ++i) dz[i] = dy[i] * derivative_one(a, y[i], z[i]);
      } else {
        for (Index i = 0; i < n; ++i) dz[i] = dy[i] * derivative_one(a, y[i], T(0));
      }
      break;
  }
}

/// A layer's activation on its whole output y (rows of `cols`), in place;
/// in training, when its derivative needs its input, that input is kept in
/// `kept` first.
template <class T>
void activate_output(Activation a, Tensor<T>& y, Index cols, bool training, Tensor<T>& kept) {
  if (a == Activation::None) return;
  if (training && activation_needs_input(a)) {
    kept.resize_for_overwrite(y.shape());
    std::copy(y.begin(), y.end(), kept.begin());
  }
  activate(a, y.data(), y.size() / cols, cols);
}

/// dL/dz of a layer that applied activate_output: dy itself without an
/// activation, else written into `dz` and returned.
template <class T>
const T* output_activation_grad(Activation a, const Tensor<T>& y, const Tensor<T>& dy, Index cols,
                                const Tensor<T>& kept, Tensor<T>& dz) {
  if (a == Activation::None) return dy.data();
  dz.resize_for_overwrite(dy.shape());
  activation_grad(a, y.data(), dy.data(), dz.data(), dy.size() / cols, cols,
                  activation_needs_input(a) ? kept.data() : nullptr);
  return dz.data();
}

/// The same, in place: dy becomes dL/dz.
template <class T>
void activation_grad(Activation a, const T* y, T* dy, Index rows, Index cols, const T* z = nullptr) {
  activation_grad(a, y, dy, dy, rows, cols, z);
}

}  // namespace loom::detail
