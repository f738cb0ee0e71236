#pragma once
/// \file kernels/im2col.hpp
/// Window geometry (Keras's "valid"/"same"), and im2col / col2im for NHWC.
///
/// im2col lays every output pixel's receptive field out as one row:
///
///     x: [N, H, W, C]                 col: [N*Ho*Wo, kh*kw*C]
///                                      row (n, oh, ow) =
///     +----+----+----+                  | x[n, ih0, iw0, 0..C) | x[n, ih0, iw0+1, 0..C) | ... |
///     | kh x kw window |  ------>        (i, j, c) with ih = oh*sh - pad_top + i*dh,
///     +----+----+----+                                   iw = ow*sw - pad_left + j*dw
///
/// Cells of the window that fall in the padding are zero. The column order
/// (i, j, c) matches Keras's kernel layout [kh, kw, cin, cout], so with the
/// kernel viewed as a [kh*kw*cin, cout] matrix, col * kernel is the NHWC
/// output [N*Ho*Wo, cout]. col2im is the adjoint: it adds each row back into
/// the window it came from.

#include <algorithm>
#include <cstring>

#include "../enums.hpp"
#include "../error.hpp"
#include "../tensor.hpp"

namespace loom::detail {

/// One spatial axis of a sliding window: output length and padding before.
struct AxisGeometry {
  Index out = 0;
  Index pad_before = 0;
};

/// Keras's rule. valid: out = floor((in - window) / stride) + 1, no padding.
/// same: out = ceil(in / stride), pad_total = max((out - 1) * stride + window - in, 0),
/// pad_before = floor(pad_total / 2) (the extra cell goes after).
inline AxisGeometry window_axis(Index in, Index window, Index stride, Padding padding) {
  AxisGeometry g;
  if (padding == Padding::Same) {
    g.out = (in + stride - 1) / stride;
    const Index total = std::max<Index>((g.out - 1) * stride + window - in, 0);
    g.pad_before = total / 2;
  } else {
    g.out = in >= window ? (in - window) / stride + 1 : 0;
  }
  return g;
}

/// The geometry of a 2-D window over an NHWC batch.
struct Window2D {
  Index n = 0, h = 0, w = 0, c = 0;  // input
  Index kh = 1, kw = 1, sh = 1, sw = 1;
  Index pad_top = 0, pad_left = 0;
  Index ho = 0, wo = 0;  // output
  Index dh = 1, dw = 1;  // dilation: the window's cells are dh rows and dw columns apart
  /// Channel groups (a grouped convolution): with more than one, a column
  /// row holds group 0's window (i, j, c') over its c / groups channels,
  /// then group 1's, and so on, so that each group's columns are a block.
  Index groups = 1;

  Index rows() const { return n * ho * wo; }   // rows of the column matrix
  Index patch() const { return kh * kw * c; }  // columns of the column matrix
};

/// The window of a (maybe dilated) kernel over an NHWC batch, and the
/// checks Keras makes of it: sizes >= 1, and no stride > 1 with a dilation
/// > 1. `what` names the layer in errors.
inline void check_window(const char* what, Size2 kernel, Size2 strides, Size2 dilation) {
  for (int a = 0; a < 2; ++a) {
    if (kernel[a] < 1 || strides[a] < 1 || dilation[a] < 1) {
      throw ConfigError(str(what, ": kernel_size, strides and dilation_rate must be >= 1, got kernel_size=(", kernel[0],
                            ", ", kernel[1], ") strides=(", strides[0], ", ", strides[1], ") dilation_rate=(",
                            dilation[0], ", ", dilation[1], ")"));
    }
  }
  if ((strides[0] > 1 || strides[1] > 1) && (dilation[0] > 1 || dilation[1] > 1)) {
    throw ConfigError(str(what, ": strides > 1 with dilation_rate > 1 (Keras refuses them together)"));
  }
}

/// The geometry of a dilated window on images (H, W, C): a window of
/// (k - 1) * d + 1 cells per axis, Keras's valid or same.
inline Window2D dilated_window(const Shape& in, Size2 kernel, Size2 strides, Size2 dilation, Padding padding) {
  Window2D g;
  g.h = in[0];
  g.w = in[1];
  g.c = in[2];
  g.kh = kernel[0];
  g.kw = kernel[1];
  g.sh = strides[0];
  g.sw = strides[1];
  g.dh = dilation[0];
  g.dw = dilation[1];
  const AxisGeometry rows = window_axis(g.h, (g.kh - 1) * g.dh + 1, g.sh, padding);
  const AxisGeometry cols = window_axis(g.w, (g.kw - 1) * g.dw + 1, g.sw, padding);
  g.ho = rows.out;
  g.wo = cols.out;
  g.pad_top = rows.pad_before;
  g.pad_left = cols.pad_before;
  return g;
}

/// Copies n values. Window rows of a first layer are a few values long (3
/// for a 3x3 kernel on one channel), and Winograd's transforms copy the last
/// few channels of a pixel (up to 15): there a call to memcpy costs more than
/// the copy. Sizes up to 16 get a memcpy of constant size, which compilers
/// turn into a move or two.
template <class T>
inline void copy_small(const T* from, Index n, T* to) {
  switch (n) {
#define LOOM_COPY_CASE(k) \
  case k: std::memcpy(to, from, k * sizeof(T)); return;
    LOOM_COPY_CASE(1) LOOM_COPY_CASE(2) LOOM_COPY_CASE(3) LOOM_COPY_CASE(4)
    LOOM_COPY_CASE(5) LOOM_COPY_CASE(6) LOOM_COPY_CASE(7) LOOM_COPY_CASE(8)
    LOOM_COPY_CASE(9) LOOM_COPY_CASE(10) LOOM_COPY_CASE(11) LOOM_COPY_CASE(12)
    LOOM_COPY_CASE(13) LOOM_COPY_CASE(14) LOOM_COPY_CASE(15) LOOM_COPY_CASE(16)
#undef LOOM_COPY_CASE
    default: std::memcpy(to, from, sizeof(T) * static_cast<std::size_t>(n));
  }
}

/// Images [n0, n1) of x [N, H, W, C] -> their rows of col [N*Ho*Wo, kh*kw*C];
/// `col` points at image n0's first row. One thread's work: the layer splits
/// the batch across threads and calls this on small groups of images, so the
/// rows it writes are still in cache when the GEMM reads them.
template <class T>
void im2col_grouped(const T* x, const Window2D& g, Index n0, Index n1, T* col);
template <class T>
void col2im_grouped(const T* col, const Window2D& g, Index n0, Index n1, T* dx);

template <class T>
void im2col(const T* x, const Window2D& g, Index n0, Index n1, T* col) {
  if (g.groups > 1) return im2col_grouped(x, g, n0, n1, col);
  const Index span = g.kw * g.c;
  T* out = col;
  for (Index n = n0; n < n1; ++n) {
    for (Index oh = 0; oh < g.ho; ++oh) {
      for (Index ow = 0; ow < g.wo; ++ow) {
        const Index iw0 = ow * g.sw - g.pad_left;
        const bool inside = g.dw == 1 && iw0 >= 0 && iw0 + g.kw <= g.w;
        for (Index i = 0; i < g.kh; ++i, out += span) {
          const Index ih = oh * g.sh - g.pad_top + i * g.dh;
          if (ih < 0 || ih >= g.h) {
            std::fill(out, out + span, T(0));
            continue;
          }
          const T* in_row = x + ((n * g.h + ih) * g.w) * g.c;
          if (inside) {  // the whole window row is inside the image
            copy_small(in_row + iw0 * g.c, span, out);
            continue;
          }
          for (Index j = 0; j < g.kw; ++j) {
            const Index iw = iw0 + j * g.dw;
            T* o = out + j * g.c;
            if (iw < 0 || iw >= g.w) {
              std::fill(o, o + g.c, T(0));
            } else {
              std::memcpy(o, in_row + iw * g.c, sizeof(T) * static_cast<std::size_t>(g.c));
            }
          }
        }
      }
    }
  }
}

/// The adjoint of im2col for images [n0, n1): their samples of dx [N, H, W, C]
/// are overwritten with the sum of every column entry im2col copied from each
/// input cell. `col` points at image n0's first row; samples share no input
/// cells, so threads may work on different images at once.
template <class T>
void col2im(const T* col, const Window2D& g, Index n0, Index n1, T* dx) {
  if (g.groups > 1) return col2im_grouped(col, g, n0, n1, dx);
  const Index row_len = g.patch();
  const Index sample = g.h * g.w * g.c;
  const T* in = col;
  for (Index n = n0; n < n1; ++n) {
    T* dxn = dx + n * sample;
    std::fill(dxn, dxn + sample, T(0));
    for (Index oh = 0; oh < g.ho; ++oh) {
      for (Index ow = 0; ow < g.wo; ++ow, in += row_len) {
        for (Index i = 0; i < g.kh; ++i) {
          const Index ih = oh * g.sh - g.pad_top + i * g.dh;
          if (ih < 0 || ih >= g.h) continue;
          for (Index j = 0; j < g.kw; ++j) {
            const Index iw = ow * g.sw - g.pad_left + j * g.dw;
            if (iw < 0 || iw >= g.w) continue;
            T* d = dxn + (ih * g.w + iw) * g.c;
            const T* s = in + (i * g.kw + j) * g.c;
            for (Index c = 0; c < g.c; ++c) d[c] += s[c];
          }
        }
      }
    }
  }
}

/// Calls f(source, offset) for each cell (i, j) of each output pixel's
/// window of images [n0, n1), in column order: `source` is the cell's first
/// channel in the image (null in the padding), `offset` the cell's first
/// column within its group's block, (i * kw + j) * c / groups. Between
/// pixels `next_row()` is called.
template <class F, class R>
void for_window_cells(const Window2D& g, Index n0, Index n1, F&& f, R&& next_row) {
  const Index cg = g.c / g.groups;
  for (Index n = n0; n < n1; ++n) {
    for (Index oh = 0; oh < g.ho; ++oh) {
      for (Index ow = 0; ow < g.wo; ++ow, next_row()) {
        for (Index i = 0; i < g.kh; ++i) {
          const Index ih = oh * g.sh - g.pad_top + i * g.dh;
          for (Index j = 0; j < g.kw; ++j) {
            const Index iw = ow * g.sw - g.pad_left + j * g.dw;
            const bool inside = ih >= 0 && ih < g.h && iw >= 0 && iw < g.w;
            f(inside ? ((n * g.h + ih) * g.w + iw) * g.c : Index(-1), (i * g.kw + j) * cg);
          }
        }
      }
    }
  }
}

/// im2col with the column order of groups > 1 (see Window2D::groups).
template <class T>
void im2col_grouped(const T* x, const Window2D& g, Index n0, Index n1, T* col) {
  const Index cg = g.c / g.groups, block = g.kh * g.kw * cg;
  T* row = col;
  for_window_cells(
      g, n0, n1,
      [&](Index source, Index offset) {
        for (Index gi = 0; gi < g.groups; ++gi) {
          T* o = row + gi * block + offset;
          if (source < 0) {
            std::fill(o, o + cg, T(0));
          } else {
            copy_small(x + source + gi * cg, cg, o);
          }
        }
      },
      [&] { row += g.patch(); });
}

/// col2im with the column order of groups > 1: its adjoint.
template <class T>
void col2im_grouped(const T* col, const Window2D& g, Index n0, Index n1, T* dx) {
  const Index cg = g.c / g.groups, block = g.kh * g.kw * cg, sample = g.h * g.w * g.c;
  std::fill(dx + n0 * sample, dx + n1 * sample, T(0));
  const T* row = col;
  for_window_cells(
      g, n0, n1,
      [&](Index source, Index offset) {
        if (source < 0) return;
        for (Index gi = 0; gi < g.groups; ++gi) {
          const T* s = row + gi * block + offset;
          T* d = dx + source + gi * cg;
          for (Index c = 0; c < cg; ++c) d[c] += s[c];
        }
      },
      [&] { row += g.patch(); });
}

}  // namespace loom::detail
