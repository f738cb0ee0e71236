#pragma once
/// \file kernels/column_sums.hpp
/// Per-column sums, in double, over the rows of row-major [rows, cols]
/// blocks: BatchNormalization's statistics and gradient sums, a conv's bias
/// gradient. The plain loop (for each row, for each column, sum[k] += ...)
/// loads and stores every sum once per row, and that store-to-load chain,
/// not the data, set its speed. Here the columns go up to 16 at a time with
/// their sums in registers, over blocks of rows that stay in L1. Each
/// column's values are still added in row order, so the sums are the plain
/// loop's bit for bit.

#include <algorithm>

#include "../tensor.hpp"

namespace loom::detail {

/// What is summed beside the values themselves.
enum class Second {
  None,      // sum[k] only
  Squares,   // dot[k] += a * a
  Products,  // dot[k] += a * b
};

namespace column_sums_impl {

/// Columns [0, G) of `rows` rows (stride `cols`), added to sum[0, G) and dot[0, G).
template <int G, Second S, class T>
inline void group(const T* __restrict a, const T* __restrict b, Index rows, Index cols, double* __restrict sum,
                  double* __restrict dot) {
  double s[G], d[G];
  for (int l = 0; l < G; ++l) s[l] = sum[l];
  if constexpr (S != Second::None) {
    for (int l = 0; l < G; ++l) d[l] = dot[l];
  }
  for (Index r = 0; r < rows; ++r) {
    const T* __restrict ar = a + r * cols;
    for (int l = 0; l < G; ++l) s[l] += static_cast<double>(ar[l]);
    if constexpr (S == Second::Squares) {
      for (int l = 0; l < G; ++l) d[l] += static_cast<double>(ar[l]) * static_cast<double>(ar[l]);
    } else if constexpr (S == Second::Products) {
      const T* __restrict br = b + r * cols;
      for (int l = 0; l < G; ++l) d[l] += static_cast<double>(ar[l]) * static_cast<double>(br[l]);
    }
  }
  for (int l = 0; l < G; ++l) sum[l] = s[l];
  if constexpr (S != Second::None) {
    for (int l = 0; l < G; ++l) dot[l] = d[l];
  }
}

/// p + k, or null for an array that is not read.
template <class P>
inline P* at(P* p, Index k) {
  return p ? p + k : nullptr;
}

}  // namespace column_sums_impl

/// sum[k] += a[r][k] over rows r of a [rows, cols] block, in row order, and
/// as S says, dot[k] += a[r][k]^2 or a[r][k] * b[r][k] (b as a's shape; dot
/// and b are not read when S is None, b not when S is Squares).
template <Second S, class T>
void add_column_sums(const T* a, const T* b, Index rows, Index cols, double* sum, double* dot) {
  using namespace column_sums_impl;
  constexpr Index kRows = 32;  // a block of rows, with b, within L1: 2 x 32 x 75 floats for conv1
  for (Index r0 = 0; r0 < rows; r0 += kRows) {
    const Index n = std::min(kRows, rows - r0);
    const T* ab = a + r0 * cols;
    const T* bb = S == Second::Products ? b + r0 * cols : nullptr;
    Index k = 0;
    for (; k + 16 <= cols; k += 16) group<16, S>(ab + k, at(bb, k), n, cols, sum + k, at(dot, k));
    if (k + 8 <= cols) group<8, S>(ab + k, at(bb, k), n, cols, sum + k, at(dot, k)), k += 8;
    if (k + 4 <= cols) group<4, S>(ab + k, at(bb, k), n, cols, sum + k, at(dot, k)), k += 4;
    for (; k < cols; ++k) group<1, S>(ab + k, at(bb, k), n, cols, sum + k, at(dot, k));
  }
}

}  // namespace loom::detail
