#pragma once
/// \file detail/pool.hpp
/// Max-pooling's inner loops, shared by MaxPool2D and by the Conv2D that
/// pools its own output in inference (Sequential::forward's fusion). Pixels
/// are NHWC: a pixel's channels are contiguous. A NaN in a window wins (the
/// first one, and it stays), so pooling never hides one.

#include <algorithm>

#include "../../parallel.hpp"
#include "im2col.hpp"

namespace loom::detail {

/// best[c] <- src[c] where src[c] is larger, or NaN. Branch-free (`|` and
/// `&`, not `||` and `&&`), so the compiler vectorizes it wherever it is
/// inlined.
template <class T>
inline void take_larger(const T* __restrict src, Index channels, T* __restrict best) {
  for (Index c = 0; c < channels; ++c) {
    const T v = src[c], b = best[c];
    best[c] = (v > b) | ((v != v) & (b == b)) ? v : b;
  }
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

/// One row of a max-pooling's output (pool.wo pixels) from the `rows` input
/// rows at `band` that its windows cover.
template <class T>
void pool_row(const T* band, Index rows, const Window2D& pool, T* out) {
  const Index c = pool.c;
  visit_pool_row(
      rows, pool, [&](Index ow, Index cell) { std::copy(band + cell, band + cell + c, out + ow * c); },
      [&](Index ow, Index cell) { take_larger(band + cell, c, out + ow * c); });
}

/// The input rows [first, last) that output row `oh` of a pooling pools.
inline Range pool_rows(const Window2D& pool, Index oh) {
  return {std::max<Index>(oh * pool.sh - pool.pad_top, 0), std::min<Index>(oh * pool.sh - pool.pad_top + pool.kh, pool.h)};
}

}  // namespace loom::detail
