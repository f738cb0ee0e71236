#pragma once
/// \file kernels/pool.hpp
/// Max-pooling's inner loops, shared by MaxPool2D and by the Conv2D that
/// pools its own output in inference (Sequential::forward's fusion). Pixels
/// are NHWC: a pixel's channels are contiguous. A NaN in a window wins (the
/// first one, and it stays), so pooling never hides one.

#include <algorithm>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../parallel.hpp"
#include "im2col.hpp"

namespace loom::detail {

/// v where it is larger than the best so far b, or NaN (b itself when b is
/// NaN). Branch-free (`|` and `&`, not `||` and `&&`), so that loops of it
/// vectorize.
template <class T>
inline T larger(T b, T v) {
  return (v > b) | ((v != v) & (b == b)) ? v : b;
}

/// best[c] <- larger(best[c], src[c]).
template <class T>
inline void take_larger(const T* __restrict src, Index channels, T* __restrict best) {
  for (Index c = 0; c < channels; ++c) best[c] = larger(best[c], src[c]);
}

/// The cells of one row of a pooling's windows, from the input rows they
/// cover (`rows` rows of `pool.w` pixels, the window rows already clipped
/// to the input): for output column ow, first(ow, cell) for the window's
/// first cell, then more(ow, cell) for each other, row by row, a cell being
/// the offset of its pixel's first channel from the first row's start.
/// Window columns are clipped the same way, so padded cells never win.
template <class First, class More>
void visit_pool_row(Index rows, const Window2D& pool, First&& first, More&& more) {
  const Index c = pool.c, row = pool.w * c;
  for (Index ow = 0; ow < pool.wo; ++ow) {
    const Index w0 = std::max<Index>(ow * pool.sw - pool.pad_left, 0);
    const Index w1 = std::min<Index>(ow * pool.sw - pool.pad_left + pool.kw, pool.w);
    first(ow, w0 * c);
    for (Index r = 0; r < rows; ++r) {
      for (Index iw = r == 0 ? w0 + 1 : w0; iw < w1; ++iw) more(ow, r * row + iw * c);
    }
  }
}

/// out[i] <- the larger of a[i] and b[i], a first.
template <class T>
inline void max_of_two(const T* __restrict a, const T* __restrict b, Index n, T* __restrict out) {
  for (Index i = 0; i < n; ++i) out[i] = larger(a[i], b[i]);
}

/// out[i] <- the largest of a[i], b[i], c[i] and d[i] by `x > m ? x : m`,
/// which is larger's value, bits and ties included, when none is NaN. The
/// NaN test is left out of the loop, whose maxima and sums then vectorize
/// to a few instructions; instead it returns whether any sum of the four was
/// NaN (a NaN, or infinities of both signs), for the caller to redo the
/// cells with larger.
template <class T>
inline bool max_of_four(const T* __restrict a, const T* __restrict b, const T* __restrict c, const T* __restrict d,
                        Index n, T* __restrict out) {
  int unordered = 0;
  for (Index i = 0; i < n; ++i) {
    T m = b[i] > a[i] ? b[i] : a[i];
    m = c[i] > m ? c[i] : m;
    out[i] = d[i] > m ? d[i] : m;
    const T sum = (a[i] + b[i]) + (c[i] + d[i]);
    unordered |= static_cast<int>(sum != sum);
  }
  return unordered != 0;
}

#if defined(__AVX512F__)
/// max_of_four for float with AVX-512: the same maxima, the last 1-15
/// channels under a mask rather than in a scalar loop (a pixel of the
/// notebook's 75, 50 or 25 channels ends in 11, 2 or 9 of them). It tests
/// the four for NaN directly (two unordered comparisons) rather than their
/// sum: it returns true for a NaN only, not for infinities of both signs,
/// which the maxima take right.
inline bool max_of_four(const float* __restrict a, const float* __restrict b, const float* __restrict c,
                        const float* __restrict d, Index n, float* __restrict out) {
  __mmask16 unordered = 0;
  for (Index i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 va = _mm512_maskz_loadu_ps(k, a + i), vb = _mm512_maskz_loadu_ps(k, b + i);
    const __m512 vc = _mm512_maskz_loadu_ps(k, c + i), vd = _mm512_maskz_loadu_ps(k, d + i);
    // _mm512_max_ps(x, y) is x > y ? x : y, as the scalar loop's comparisons.
    const __m512 m = _mm512_max_ps(vd, _mm512_max_ps(vc, _mm512_max_ps(vb, va)));
    _mm512_mask_storeu_ps(out + i, k, m);
    unordered |= _mm512_cmp_ps_mask(va, vb, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(vc, vd, _CMP_UNORD_Q);
  }
  return unordered != 0;
}
#endif

/// One row of a max-pooling's output (pool.wo pixels) from the `rows` input
/// rows at `band` that its windows cover. 2x2 windows (the notebook's) take
/// max_of_four, and larger's loops only where it finds a NaN.
template <class T>
void pool_row(const T* band, Index rows, const Window2D& pool, T* out) {
  const Index c = pool.c;
  if (rows == 2 && pool.kw == 2 && pool.sw == 2 && pool.pad_left == 0) {
    const Index row = pool.w * c;
    for (Index ow = 0; ow < pool.wo; ++ow, out += c) {
      const T* top = band + 2 * ow * c;
      if (2 * ow + 1 < pool.w) {
        // g++ 12 vectorizes none of the one-loop forms of larger over four
        // cells tried (larger of larger, pairs, a running maximum): three
        // short loops then, after a NaN.
        if (max_of_four(top, top + c, top + row, top + row + c, c, out)) {
          max_of_two(top, top + c, c, out);
          take_larger(top + row, c, out);
          take_larger(top + row + c, c, out);
        }
      } else {  // the last column of an odd width, clipped
        max_of_two(top, top + row, c, out);
      }
    }
    return;
  }
  visit_pool_row(
      rows, pool, [&](Index ow, Index cell) { std::copy(band + cell, band + cell + c, out + ow * c); },
      [&](Index ow, Index cell) { take_larger(band + cell, c, out + ow * c); });
}

/// The input rows [first, last) that output row `oh` of a pooling pools.
inline Range pool_rows(const Window2D& pool, Index oh) {
  return {std::max<Index>(oh * pool.sh - pool.pad_top, 0), std::min<Index>(oh * pool.sh - pool.pad_top + pool.kh, pool.h)};
}

}  // namespace loom::detail
