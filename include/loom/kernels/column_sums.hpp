#pragma once
/// \file kernels/column_sums.hpp
/// Per-column sums, in double, over the rows of row-major [rows, cols]
/// blocks: BatchNormalization's statistics and gradient sums, a conv's bias
/// gradient. The plain loop (for each row, for each column, sum[k] += ...)
/// loads and stores every sum once per row, and that store-to-load chain,
/// not the data, set its speed. Here the columns go up to 16 at a time with
/// their sums in registers, over blocks of rows that stay in L1; floats on
/// x86 with AVX-512 or AVX2 go up to 64 (24 with AVX2) at a time, their
/// last vector masked, so that each row's adds are that many independent
/// chains. Each column's values are still added in row order, so the sums
/// are the plain loop's bit for bit (a product of two floats is exact in
/// double, fused or not).

#include <algorithm>
#include <type_traits>
#include <utility>

#include "../tensor.hpp"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define LOOM_WIDE_COLUMN_SUMS 1
#endif

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

#ifdef LOOM_WIDE_COLUMN_SUMS
/// Vectors of doubles made from floats, with the last one masked.
#if defined(__AVX512F__)
struct Wide {
  using V = __m512d;
  using Mask = __mmask8;
  static constexpr int W = 8, kMaxVectors = 8;  // 64 columns: 8 sums and 8 dots in 32 registers
  static Mask mask(int lanes) { return static_cast<Mask>(lanes >= W ? 0xFF : (1u << lanes) - 1u); }
  static V load(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
  static V load(const float* p, Mask m) {
    return _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_maskz_loadu_ps(static_cast<__mmask16>(m), p)));
  }
  static V load(const double* p, Mask m) { return _mm512_maskz_loadu_pd(m, p); }
  static void store(double* p, V v, Mask m) { _mm512_mask_storeu_pd(p, m, v); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
};
#else
struct Wide {
  using V = __m256d;
  using Mask = int;  // lanes
  static constexpr int W = 4, kMaxVectors = 6;  // 24 columns: 6 sums and 6 dots in 16 registers
  static Mask mask(int lanes) { return lanes; }
  static V load(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
  static V load(const float* p, Mask m) {
    return _mm256_cvtps_pd(_mm_maskload_ps(p, _mm_cmpgt_epi32(_mm_set1_epi32(m), _mm_setr_epi32(0, 1, 2, 3))));
  }
  static __m256i lanes64(Mask m) { return _mm256_cmpgt_epi64(_mm256_set1_epi64x(m), _mm256_setr_epi64x(0, 1, 2, 3)); }
  static V load(const double* p, Mask m) { return _mm256_maskload_pd(p, lanes64(m)); }
  static void store(double* p, V v, Mask m) { _mm256_maskstore_pd(p, lanes64(m), v); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
};
#endif

/// Columns [0, n) of `rows` rows (stride `cols`), NV vectors of them (the
/// last one holding n - W (NV - 1) columns), added to sum and dot.
template <int NV, Second S>
inline void wide(const float* __restrict a, const float* __restrict b, Index rows, Index cols, int n,
                 double* __restrict sum, double* __restrict dot) {
  using V = Wide::V;
  constexpr int W = Wide::W;
  const Wide::Mask last = Wide::mask(n - W * (NV - 1)), full = Wide::mask(W);
  V s[NV], d[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    s[v] = Wide::load(sum + v * W, v + 1 < NV ? full : last);
    if constexpr (S != Second::None) d[v] = Wide::load(dot + v * W, v + 1 < NV ? full : last);
  }
  for (Index r = 0; r < rows; ++r) {
    const float* ar = a + r * cols;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const V x = v + 1 < NV ? Wide::load(ar + v * W) : Wide::load(ar + v * W, last);
      s[v] = Wide::add(s[v], x);
      if constexpr (S == Second::Squares) d[v] = Wide::fma(x, x, d[v]);
      if constexpr (S == Second::Products) {
        const float* br = b + r * cols + v * W;
        d[v] = Wide::fma(x, v + 1 < NV ? Wide::load(br) : Wide::load(br, last), d[v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    Wide::store(sum + v * W, s[v], v + 1 < NV ? full : last);
    if constexpr (S != Second::None) Wide::store(dot + v * W, d[v], v + 1 < NV ? full : last);
  }
}

template <Second S, int... NV>
inline void wide_of(std::integer_sequence<int, NV...>, const float* a, const float* b, Index rows, Index cols, int n,
                    double* sum, double* dot) {
  const int vectors = (n + Wide::W - 1) / Wide::W;
  ((vectors == NV + 1 ? (wide<NV + 1, S>(a, b, rows, cols, n, sum, dot), 0) : 0), ...);
}
#endif

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
#ifdef LOOM_WIDE_COLUMN_SUMS
    if constexpr (std::is_same_v<T, float>) {
      // 75 columns of rows in L1 (conv1's bias sums) took 32 cycles a row in groups of 16, 20 in
      // vectors of 64 and 11; with products, 64 and 41 (Intel Xeon, AVX-512; +4 % training images/s).
      constexpr Index kWide = Wide::W * Wide::kMaxVectors;
      for (Index k = 0; k < cols; k += kWide) {
        wide_of<S>(std::make_integer_sequence<int, Wide::kMaxVectors>{}, ab + k, bb ? bb + k : nullptr, n, cols,
                   static_cast<int>(std::min(kWide, cols - k)), sum + k, at(dot, k));
      }
      continue;
    }
#endif
    Index k = 0;
    for (; k + 16 <= cols; k += 16) group<16, S>(ab + k, at(bb, k), n, cols, sum + k, at(dot, k));
    if (k + 8 <= cols) group<8, S>(ab + k, at(bb, k), n, cols, sum + k, at(dot, k)), k += 8;
    if (k + 4 <= cols) group<4, S>(ab + k, at(bb, k), n, cols, sum + k, at(dot, k)), k += 4;
    for (; k < cols; ++k) group<1, S>(ab + k, at(bb, k), n, cols, sum + k, at(dot, k));
  }
}

}  // namespace loom::detail
