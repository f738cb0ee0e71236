#pragma once
/// \file kernels/direct_conv.hpp
/// Direct convolution for layers with few input channels (the notebook's
/// first layer: 28x28x1, 3x3): the GEMM of im2col + GEMM, with the column
/// matrix read from the image where it lies instead of copied out.
///
/// With one input channel, im2col copies a single float per call and writes
/// 9 times the image, at about 5 GB/s: half of conv1's forward. Here each
/// image is copied once into a zero-bordered buffer (`pad`), after which
/// every window cell of output pixel (oh, ow) lies at a fixed offset from
/// the pixel's window corner:
///
///     col[(oh, ow)][p] = xpad[(oh*sh*wp + ow*sw) * c + off[p]],
///     off[(i, j, ci)] = (i*wp + j) * c + ci
///
/// So an output row is a GEMM whose A rows are sw*c apart, and loom's
/// micro-kernel reads them through a view (sgemm::AWindows): y's row tile
/// = A * K + bias, then its epilogue, as im2col's GEMM computes it. The
/// weights' gradient reads the transpose (sgemm::ACells): dK[p][co] +=
/// sum over a row's pixels of col[pixel][p] * dz[pixel][co].
///
/// Double, and builds without loom's own float kernel, run the same
/// arithmetic as plain loops, so the double gradient checks test the
/// geometry this file shares with the float kernels.

#include <algorithm>
#include <vector>

#include "../tensor.hpp"
#include "gemm.hpp"
#include "im2col.hpp"

namespace loom::detail {

#ifdef LOOM_OWN_SGEMM
namespace sgemm {

/// Where the micro-kernel reads A (see ARowMajor in sgemm.hpp) when A is the
/// im2col matrix read from the padded image itself: row i an output pixel,
/// lda apart, step p a window cell at offset off[p] from the pixel's window
/// corner.
struct AWindows {
  const float* a;
  Index lda;
  const Index* off;
  const float* step(Index p) const { return a + off[p]; }
  const float* at(const float* s, int i) const { return s + i * lda; }
};
/// Its transpose: row i a window cell at offset off[i], step p an output
/// pixel, lda apart (the weights' gradient).
struct ACells {
  const float* a;
  Index lda;
  const Index* off;
  const float* step(Index p) const { return a + p * lda; }
  const float* at(const float* s, int i) const { return s + off[i]; }
};

/// The tiles of the weights' gradient (DirectConv::weights), fastest first:
/// rows are window cells (9 for a 3x3 kernel on one channel), columns the
/// filters, and every shape uses (nearly) all of the vector registers. The
/// rates are relative, from conv1's weights' gradient (bench_conv2d, batch
/// 32), where the shapes with more padding won: on AVX-512, 9 x 3 took
/// 0.58 ms and 5 x 5 0.64; on AVX2, 3 x 3 0.72 ms and 2 x 5 0.81-0.86.
#if defined(__AVX512F__)
inline constexpr TileShape kCellTiles[] = {{9, 3, 0.95}, {5, 5, 0.85}, {14, 2, 0.95}, {8, 2, 0.95}};
#else
inline constexpr TileShape kCellTiles[] = {{3, 3, 0.95}, {2, 5, 0.80}, {6, 2, 0.95}, {5, 2, 0.90}};
#endif

}  // namespace sgemm
#endif  // LOOM_OWN_SGEMM

template <class T>
class DirectConv {
 public:
  /// Sets the geometry; allocates only when the window grows.
  void set(const Window2D& g) {
    g_ = g;
    hp_ = (g.ho - 1) * g.sh + g.kh;
    wp_ = (g.wo - 1) * g.sw + g.kw;
    const Index k = g.patch();
    off_.assign(static_cast<std::size_t>(k + kMaxRows), 0);  // rows past k read offset 0 (no output)
    for (Index i = 0; i < g.kh; ++i) {
      for (Index j = 0; j < g.kw; ++j) {
        for (Index ci = 0; ci < g.c; ++ci) off_[static_cast<std::size_t>((i * g.kw + j) * g.c + ci)] = (i * wp_ + j) * g.c + ci;
      }
    }
  }

  /// Values of one padded image, and of a buffer for `images` of them: past
  /// the last, a tile's rows beyond the output may be read.
  Index padded_image() const { return hp_ * wp_ * g_.c; }
  Index padded_size(Index images) const { return images * padded_image() + kMaxRows * g_.sw * g_.c; }

  /// Images [n0, n1) of x [N, h, w, c] into xpad (padded_size(N) values,
  /// image n at n * padded_image()), zeros where the window reaches past the
  /// image. The slack after the last image is zeroed by the caller of n1 = N.
  void pad(const T* x, Index n0, Index n1, T* xpad) const {
    const Index c = g_.c, row = wp_ * c;
    for (Index n = n0; n < n1; ++n) {
      T* out = xpad + n * padded_image();
      for (Index r = 0; r < hp_; ++r, out += row) {
        const Index ih = r - g_.pad_top;
        if (ih < 0 || ih >= g_.h) {
          std::fill(out, out + row, T(0));
          continue;
        }
        const Index left = std::min(g_.pad_left, wp_), cols = std::clamp<Index>(g_.w, 0, wp_ - left);
        std::fill(out, out + left * c, T(0));
        const T* in = x + ((n * g_.h + ih) * g_.w) * c;
        std::copy(in, in + cols * c, out + left * c);
        std::fill(out + (left + cols) * c, out + row, T(0));
      }
    }
    if (n1 == g_.n) std::fill(xpad + g_.n * padded_image(), xpad + padded_size(g_.n), T(0));
  }

  /// The forward's kernel [kh*kw*c, cout], for the forwards until the next
  /// call. loom's float kernel gets a copy packed as its GEMM packs B: a
  /// sliver of NR columns per tile, zero-padded, read without masks (on
  /// AVX2, conv1's forward on one core went from 40 to 51 GFLOP/s,
  /// bench_gemm's BM_Direct). One thread calls it, before the forwards.
  void set_kernel(const T* kernel, Index cout) {
    kernel_ = kernel;
    cout_ = cout;
#ifdef LOOM_OWN_SGEMM
    if constexpr (std::is_same_v<T, float>) {
      using namespace sgemm;
      with_tile<kTiles>(choose_tile<kTiles>(g_.wo, cout), [&](auto, auto nv) {
        constexpr Index NR = nv * Isa::W;
        packed_.resize(static_cast<std::size_t>((cout + NR - 1) / NR * NR * g_.patch()));
        pack_b<NR>(Strided{kernel, cout, 1}, 0, cout, 0, g_.patch(), packed_.data());
      });
    }
#endif
  }

  /// Output rows [r0, r1) of the batch (row r = image r / ho, row r % ho)
  /// from xpad: y = epilogue(col * kernel), where y holds rows [r0, r1) of
  /// the output [N, ho, wo, cout] (wo * cout values each, from row r0).
  void forward(const T* xpad, Index r0, Index r1, T* y, const GemmEpilogue<T>& epilogue) const {
    const Index k = g_.patch(), wo = g_.wo, cout = cout_;
#ifdef LOOM_OWN_SGEMM
    if constexpr (std::is_same_v<T, float>) {
      using namespace sgemm;
      with_tile<kTiles>(choose_tile<kTiles>(wo, cout), [&](auto mr, auto nv) {
        constexpr Index MR = mr, NR = nv * Isa::W;
        for (Index r = r0; r < r1; ++r) {
          const float* corner = xpad + image_row(r);
          for (Index j = 0; j < cout; j += NR) {
            const Epilogue e = from_column(epilogue, j);
            const int n = static_cast<int>(std::min(NR, cout - j));
            for (Index ow = 0; ow < wo; ow += MR) {
              micro_kernel<mr, nv>(k, AWindows{corner + ow * g_.sw * g_.c, g_.sw * g_.c, off_.data()},
                                   packed_.data() + j * k, NR, y + ((r - r0) * wo + ow) * cout + j, cout,
                                   static_cast<int>(std::min(MR, wo - ow)), n, /*add=*/false, &e);
            }
          }
        }
      });
      return;
    }
#endif
    const T* kernel = kernel_;
    for (Index r = r0; r < r1; ++r) {
      const T* corner = xpad + image_row(r);
      for (Index ow = 0; ow < wo; ++ow) {
        const T* a = corner + ow * g_.sw * g_.c;
        T* out = y + ((r - r0) * wo + ow) * cout;
        std::fill(out, out + cout, T(0));
        for (Index p = 0; p < k; ++p) {
          const T v = a[off_[static_cast<std::size_t>(p)]];
          const T* w = kernel + p * cout;
          for (Index co = 0; co < cout; ++co) out[co] += v * w[co];
        }
        for (Index co = 0; co < cout; ++co) out[co] = epilogue(out[co], co);
      }
    }
  }

  /// dk [kh*kw*c, cout] += the weights' gradient of output rows [r0, r1):
  /// sum over their pixels of col[pixel]^T dz[pixel], dz [N, ho, wo, cout].
  void weights(const T* xpad, const T* dz, Index r0, Index r1, Index cout, T* dk) const {
    for (Index r = r0; r < r1; ++r) weights_row(xpad, dz + r * g_.wo * cout, r, cout, dk);
  }

  /// dk += the weights' gradient of output row r alone, its dz (wo x cout) at dz_row.
  void weights_row(const T* xpad, const T* dz_row, Index r, Index cout, T* dk) const {
    const Index k = g_.patch(), wo = g_.wo;
    const T* corner = xpad + image_row(r);
#ifdef LOOM_OWN_SGEMM
    if constexpr (std::is_same_v<T, float>) {
      using namespace sgemm;
      with_tile<kCellTiles>(choose_tile<kCellTiles>(k, cout), [&](auto mr, auto nv) {
        constexpr Index MR = mr, NR = nv * Isa::W;
        for (Index p = 0; p < k; p += MR) {
          for (Index j = 0; j < cout; j += NR) {
            micro_kernel<mr, nv>(wo, ACells{corner, g_.sw * g_.c, off_.data() + p}, dz_row + j, cout,
                                 dk + p * cout + j, cout, static_cast<int>(std::min(MR, k - p)),
                                 static_cast<int>(std::min(NR, cout - j)), /*add=*/true, nullptr);
          }
        }
      });
      return;
    }
#endif
    for (Index ow = 0; ow < wo; ++ow) {
      const T* a = corner + ow * g_.sw * g_.c;
      const T* d = dz_row + ow * cout;
      for (Index p = 0; p < k; ++p) {
        const T v = a[off_[static_cast<std::size_t>(p)]];
        T* out = dk + p * cout;
        for (Index co = 0; co < cout; ++co) out[co] += v * d[co];
      }
    }
  }

 private:
  static constexpr Index kMaxRows = 32;  // at least every tile's MR

  /// Where output row r's windows start in xpad.
  Index image_row(Index r) const { return (r / g_.ho) * padded_image() + (r % g_.ho) * g_.sh * wp_ * g_.c; }

  Window2D g_;
  Index hp_ = 0, wp_ = 0;
  std::vector<Index> off_;  // window cell p's offset from the window's corner, then kMaxRows zeros
  const T* kernel_ = nullptr;
  Index cout_ = 0;
#ifdef LOOM_OWN_SGEMM
  sgemm::Buffer packed_;  // the kernel in NR-wide slivers (float)
#endif
};

}  // namespace loom::detail
