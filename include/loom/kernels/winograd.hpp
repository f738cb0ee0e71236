#pragma once
/// \file kernels/winograd.hpp
/// 3x3, stride-1 convolution by Winograd's minimal filtering F(m x m, 3 x 3)
/// (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
/// 2016), over NHWC images:
///
///     each (m+2) x (m+2) input tile d, with the kernel g of every
///     (input, output) channel pair already transformed to U = G g G^T:
///         V = B^T d B                      per input channel   (adds only)
///         M[xi] = V[xi] * U[xi]            (m+2)^2 GEMMs  [tiles x cin] x [cin x cout]
///         Y = A^T M A                      per output channel, m x m outputs
///
/// The weights' gradient dK[i][j] = sum over outputs of x[. + i][. + j] *
/// dz[.][.] is the same identity read the other way (F(3x3, 4x4)): over
/// the forward's tiles, with E the tile's 4 x 4 values of dL/dz,
///         V = B^T d B,  W = A E A^T        per channel
///         S[xi] += V[xi]^T * W[xi]         (m+2)^2 GEMMs  [cin x tiles] x [tiles x cout]
///         dK = G^T S G                     per channel pair, 3 x 3 outputs
/// (sum over xi of A^T[i][xi] G[xi][k] B^T[xi][j] = [j == i + k], which
/// makes the forward exact, makes this exact too).
///
/// F(4x4, 3x3) does 36 multiplies per input channel and output channel where
/// direct convolution does 144, so the GEMMs shrink fourfold; the transforms
/// are adds and a few constant multiplies, vectorised along the channels
/// that NHWC keeps contiguous. Padding is any (top, left) with any output
/// size, so the same code runs a 'same' or 'valid' forward and the backward
/// to the input (the correlation of dL/dy with the kernel rotated by 180
/// degrees and its channels swapped, `transform_kernel(..., true)`).
///
/// Rounding: the transforms' constants (up to 8 and 1/24) make the result
/// differ from im2col's by a few float ulps of the sums' magnitudes
/// (tests/test_layers.cpp bounds it).

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../tensor.hpp"
#include "gemm.hpp"
#include "im2col.hpp"
#include "pool.hpp"

namespace loom::detail {

/// What the weights' gradient reads of the forward's input: the input itself
/// (`image`, [N, h, w, cin]), or the V of every tile that the forward kept
/// (`kept`, [tiles, 36, cin]; then `image` is not read).
template <class T>
struct WinogradInput {
  const T* image = nullptr;
  const T* kept = nullptr;
};

/// F(M x M, 3 x 3)'s transforms: G for the kernel (as a matrix), B^T for
/// the input and A^T for the output as code (adds and constant multiplies on
/// vectors of channels). Only F(4x4, 3x3) is here: F(2x2, 3x3) measured 25 %
/// slower on conv2 (its GEMMs are 16/36 as many but 2.25x the work each).
template <int M>
struct WinogradMatrices;

template <>
struct WinogradMatrices<4> {
  static constexpr int kAlpha = 6;
  static constexpr double G[6][3] = {{1.0 / 4, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};
  /// out = B^T in on L lanes, in[k] at in + k * is, out[i] at out + i * os:
  ///     B^T = [4  0 -5  0  1  0]    A^T = [1  1  1  1  1  0]
  ///           [0 -4 -4  1  1  0]          [0  1 -1  2 -2  0]
  ///           [0  4 -4 -1  1  0]          [0  1  1  4  4  0]
  ///           [0 -2 -1  2  1  0]          [0  1 -1  8 -8  1]
  ///           [0  2 -1 -2  1  0]
  ///           [0  4  0 -5  0  1]
  template <class T, int L>
  static void input_1d(const T* in, Index is, T* out, Index os) {
    for (int l = 0; l < L; ++l) {
      const T d0 = in[l], d1 = in[is + l], d2 = in[2 * is + l], d3 = in[3 * is + l], d4 = in[4 * is + l],
              d5 = in[5 * is + l];
      out[l] = T(4) * d0 - T(5) * d2 + d4;
      out[os + l] = d3 + d4 - T(4) * (d1 + d2);
      out[2 * os + l] = d4 - d3 + T(4) * (d1 - d2);
      out[3 * os + l] = d4 - d2 + T(2) * (d3 - d1);
      out[4 * os + l] = d4 - d2 - T(2) * (d3 - d1);
      out[5 * os + l] = T(4) * d1 - T(5) * d3 + d5;
    }
  }
  /// out = A^T in, the same way.
  template <class T, int L>
  static void output_1d(const T* in, Index is, T* out, Index os) {
    for (int l = 0; l < L; ++l) {
      const T m0 = in[l], m1 = in[is + l], m2 = in[2 * is + l], m3 = in[3 * is + l], m4 = in[4 * is + l],
              m5 = in[5 * is + l];
      const T p12 = m1 + m2, d12 = m1 - m2, p34 = m3 + m4, d34 = m3 - m4;
      out[l] = m0 + p12 + p34;
      out[os + l] = d12 + T(2) * d34;
      out[2 * os + l] = p12 + T(4) * p34;
      out[3 * os + l] = d12 + T(8) * d34 + m5;
    }
  }
  /// out = A in (the output transform's transpose: 4 values to 6), the same
  /// way; the weights' gradient transforms dL/dz's tiles with it.
  template <class T, int L>
  static void grad_1d(const T* in, Index is, T* out, Index os) {
    for (int l = 0; l < L; ++l) {
      const T e0 = in[l], e1 = in[is + l], e2 = in[2 * is + l], e3 = in[3 * is + l];
      const T p02 = e0 + e2, p13 = e1 + e3, q02 = e0 + T(4) * e2, q13 = T(2) * e1 + T(8) * e3;
      out[l] = e0;
      out[os + l] = p02 + p13;
      out[2 * os + l] = p02 - p13;
      out[3 * os + l] = q02 + q13;
      out[4 * os + l] = q02 - q13;
      out[5 * os + l] = e3;
    }
  }
};

/// Where a 3x3 stride-1 correlation reads and writes: input h x w, output
/// ho x wo, output (0, 0) centred on input (-pad_top + 1, -pad_left + 1).
struct Winograd2D {
  Index h = 0, w = 0, ho = 0, wo = 0, pad_top = 0, pad_left = 0;
};

template <class T, int M = 4>
class Winograd3x3 {
 public:
  using F = WinogradMatrices<M>;
  static constexpr int kAlpha = F::kAlpha, kPoints = kAlpha * kAlpha;
  /// Output pixels per tile, each way.
  static constexpr int kTile = M;

  /// U's row stride for `cols` columns (run's output channels): whole
  /// vectors of the GEMM's kernel, so that its loads of U's rows start on a
  /// vector and split no cache line (rows of 75 floats, 300 bytes, made
  /// conv2's input gradient GEMM 28 % slower than rows of 80, AVX-512).
  /// `compact`: `cols`, for a call that reads each of U's values once (one
  /// chunk of tiles, as at batch 1), where U's size counts and its rows'
  /// alignment does not: conv2's U is 540 KB instead of 605 KB (AVX2) or
  /// 768 KB (AVX-512), and a batch-1 image's weights, 1.9 MB in all, then
  /// stay nearer the core's L2 (notebook_speed at batch 1, two requests at
  /// once: +8 % images/s; at batch 32 compact rows are 3 % slower; AVX2
  /// build, Intel Xeon).
  static Index u_stride(Index cols, bool compact = false) {
    return compact ? cols : Gemm<T>::aligned_stride(cols);
  }
  /// The values U takes: kPoints x rows x u_stride(cols, compact).
  static Index u_size(Index cin, Index cout, bool input_grad, bool compact = false) {
    return kPoints * (input_grad ? cout : cin) * u_stride(input_grad ? cin : cout, compact);
  }
  /// Whether run's call over `tiles` tiles reads each of U's values once:
  /// then compact rows of U serve it best (u_stride).
  static bool reads_u_once(Index tiles, Index cin, Index cout) { return tiles <= chunk_tiles(cin, cout); }

  /// U[xi][ci][co] = (G g G^T)[xi] from a kernel [3, 3, cin, cout]; with
  /// `input_grad`, of the kernel rotated by 180 degrees with its channels
  /// swapped, U[xi][co][ci] (the backward to the input). Rows of `ldu`
  /// values (u_stride), zero past the last column. Rows [r0, r1) of the
  /// (xi-independent) first U index only, so threads can share the work.
  static void transform_kernel(const T* g, Index cin, Index cout, bool input_grad, Index r0, Index r1, T* u,
                               Index ldu) {
    // kLanes columns at a time, in double: the compiler vectorises the loops
    // over lanes (one pair at a time, scalar, it took 2.5 % of a training step).
    constexpr int L = kLanes;
    const Index rows = input_grad ? cout : cin, cols = input_grad ? cin : cout, stride = ldu;
    for (Index r = r0; r < r1; ++r) {
      for (Index c0 = 0; c0 < cols; c0 += L) {
        const int lanes = static_cast<int>(std::min<Index>(L, cols - c0));
        const int written = static_cast<int>(std::min<Index>(L, stride - c0));
        double k[3][3][L] = {};
        for (int i = 0; i < 3; ++i) {
          for (int j = 0; j < 3; ++j) {
            if (input_grad) {  // rotated, channels swapped: column c is input channel c
              const T* p = g + ((2 - i) * 3 + (2 - j)) * cin * cout + c0 * cout + r;
              for (int l = 0; l < lanes; ++l) k[i][j][l] = double(p[l * cout]);
            } else {
              const T* p = g + (i * 3 + j) * cin * cout + r * cout + c0;
              for (int l = 0; l < lanes; ++l) k[i][j][l] = double(p[l]);
            }
          }
        }
        double t[kAlpha][3][L];  // G k
        for (int a = 0; a < kAlpha; ++a) {
          for (int j = 0; j < 3; ++j) {
            for (int l = 0; l < L; ++l) {
              t[a][j][l] = F::G[a][0] * k[0][j][l] + F::G[a][1] * k[1][j][l] + F::G[a][2] * k[2][j][l];
            }
          }
        }
        for (int a = 0; a < kAlpha; ++a) {  // (G k) G^T
          for (int b = 0; b < kAlpha; ++b) {
            T* out = u + ((a * kAlpha + b) * rows + r) * stride + c0;
            double v[L];
            for (int l = 0; l < L; ++l) v[l] = t[a][0][l] * F::G[b][0] + t[a][1][l] * F::G[b][1] + t[a][2][l] * F::G[b][2];
            for (int l = 0; l < lanes; ++l) out[l] = static_cast<T>(v[l]);
            for (int l = lanes; l < written; ++l) out[l] = T(0);
          }
        }
      }
    }
  }

  /// Tiles run's steps take at a time: their transformed input and products
  /// (36 (cin + cout) values each) within about 384 KiB, a multiple of
  /// kChunkRows rows for the GEMM.
  static Index chunk_tiles(Index cin, Index cout) {
    return tiles_within(Index(384) << 10, cin, cout, 256, kChunkRows);
  }
  /// The GEMM's row tiles that run's chunks fill whole: 8 and 4 rows with
  /// AVX-512 (conv2's forward and input gradient), 8 and 6 in AVX2, where
  /// chunks of 16 left a third of the input gradient's row tiles partial
  /// (packed, 6 rows computed for 4): chunks of 24 made its product 16 %
  /// and the forward's 8 % faster (one core, Intel Xeon, AVX2 build). A
  /// chunk changes no bits: each output is its own tile's sums.
#if defined(__AVX512F__) || !defined(__AVX2__)
  static constexpr Index kChunkRows = 16;
#else
  static constexpr Index kChunkRows = 24;
#endif

  /// Makes the scratch a run with these channels needs. A thread that may
  /// be handed no tiles in a step calls it anyway, so that it does not
  /// allocate in a later step when it is handed some.
  void reserve(Index cin, Index cout) {
    const Index chunk = chunk_tiles(cin, cout);
    reserve_tiles(chunk, cin, cout);
    gemm_.reserve_for(chunk, cout, cin);
    if (static_cast<Index>(tile_.size()) < M * M * cout) tile_.resize(static_cast<std::size_t>(M * M * cout));
  }

  /// Whether the weights' sums are kept transposed, s[xi][co][ci] =
  /// W[xi]^T V[xi], because the GEMM pads less of that product (on AVX2,
  /// conv2's 50 x 75 against 75 x 50). The sums' bits are the same either
  /// way: each is the same products added in the same order.
  static bool sums_transposed(Index cin, Index cout) { return Gemm<T>::faster_transposed(cin, cout); }
  /// The sums' rows (cout when transposed, else cin), which finish_weights splits.
  static Index sum_rows(Index cin, Index cout) { return sums_transposed(cin, cout) ? cout : cin; }

  /// One thread's share of the weights' gradient: over output tiles
  /// [first, last) of the forward (x its input, dz [N, ho, wo, cout] the
  /// gradient of its pre-activation output), s[xi][ci][co] = the sums of
  /// V[xi]^T W[xi] (see the file comment), or s[xi][co][ci] when
  /// sums_transposed. finish_weights turns the sum of the threads' s into dK.
  /// `x` is either the forward's input, whose V this transforms again, or
  /// the V of every tile the forward kept (run's `kept`), read as it is:
  /// the same values, in chunks of more tiles (weight_chunk_tiles counts
  /// only W then), so the same sums bit for bit where both take the tiles
  /// in one chunk (up to 224 tiles a thread for conv2 transforming, 576
  /// kept: +1.7 % training images/s on the notebook's model, AVX-512).
  void weights(WinogradInput<T> x, const T* dz, const Winograd2D& geo, Index cin, Index cout, Index first,
               Index last, T* s) {
    const Index per_image = tiles_per_image(geo), total = last - first;
    const bool kept = x.kept != nullptr;
    const Index chunk = weight_chunk_tiles(kept ? 0 : cin, cout);
    const bool transposed = sums_transposed(cin, cout);
    reserve_weights(kept ? 0 : cin, cout, cin);
    std::fill(s, s + kPoints * cin * cout, T(0));
    for (Index t0 = 0; t0 < total; t0 += chunk) {
      const Index tiles = std::min(chunk, total - t0);
      const T* chunk_v = x.kept ? x.kept + (first + t0) * kPoints * cin : v_.data();
      for (Index t = 0; t < tiles; ++t) {
        if (!x.kept) input_tile(x.image, geo, cin, per_image, first + t0 + t, v_.data() + t * kPoints * cin);
        grad_tile(dz, geo, cout, per_image, first + t0 + t, m_.data() + t * kPoints * cout, cout);
      }
      for (int xi = 0; xi < kPoints; ++xi) {
        const T* v = chunk_v + xi * cin;     // V[xi]: tiles x cin, row stride 36 cin
        const T* w = m_.data() + xi * cout;  // W[xi]: tiles x cout
        T* sums = s + xi * cin * cout;
        if (transposed) {
          gemm_(cout, cin, tiles, {w, kPoints * cout, true}, {v, kPoints * cin}, sums, cin, /*accumulate=*/true);
        } else {
          gemm_(cin, cout, tiles, {v, kPoints * cin, true}, {w, kPoints * cout}, sums, cout, /*accumulate=*/true);
        }
      }
    }
  }

  /// dK [3, 3, cin, cout] from rows [r0, r1) of the threads' sums s[0..parts)
  /// (sum_rows: input channels, or output channels when sums_transposed),
  /// added in their order, in double, by dK = G^T S G. Runs along kLanes
  /// columns of a row at a time: each thread's sums are read in rows, not
  /// one value per 36 planes.
  static void finish_weights(const T* const* s, int parts, Index cin, Index cout, Index r0, Index r1, T* dk) {
    constexpr int L = kLanes;
    const Index plane = cin * cout;
    const bool transposed = sums_transposed(cin, cout);
    const Index cols = transposed ? cin : cout, stride = transposed ? cout : 1;  // dK's step from column to column
    double m[kPoints][L], t[kAlpha][3][L];
    for (Index r = r0; r < r1; ++r) {
      for (Index c0 = 0; c0 < cols; c0 += L) {
        const int lanes = static_cast<int>(std::min<Index>(L, cols - c0));
        const Index at = r * cols + c0;
        for (int xi = 0; xi < kPoints; ++xi) {
          double* sum = m[xi];
          std::fill(sum, sum + L, 0.0);
          for (int p = 0; p < parts; ++p) {
            const T* q = s[p] + xi * plane + at;
            for (int l = 0; l < lanes; ++l) sum[l] += double(q[l]);
          }
        }
        for (int a = 0; a < kAlpha; ++a) {  // S G
          for (int j = 0; j < 3; ++j) {
            double* v = t[a][j];
            std::fill(v, v + L, 0.0);
            for (int b = 0; b < kAlpha; ++b) {
              const double g = F::G[b][j];
              for (int l = 0; l < L; ++l) v[l] += m[a * kAlpha + b][l] * g;
            }
          }
        }
        const Index first = transposed ? c0 * cout + r : r * cout + c0;  // dK's (ci, co) of lane 0
        for (int i = 0; i < 3; ++i) {  // G^T (S G)
          for (int j = 0; j < 3; ++j) {
            double v[L] = {};
            for (int a = 0; a < kAlpha; ++a) {
              const double g = F::G[a][i];
              for (int l = 0; l < L; ++l) v[l] += g * t[a][j][l];
            }
            T* out = dk + (i * 3 + j) * plane + first;
            for (int l = 0; l < lanes; ++l) out[l * stride] = static_cast<T>(v[l]);
          }
        }
      }
    }
  }

  /// Tiles the weights' gradient transforms before its GEMMs: their V
  /// (unless the forward kept them: `transformed` 0) and W of `cout`
  /// channels within 4 MiB. Its GEMMs' depth is this many tiles, and every
  /// one reads and writes all of S: with the forward's chunks (16 tiles for
  /// conv2) the backward was 17 % (conv2) and 67 % (conv3) slower than with
  /// im2col's weights' gradient; with 1 MiB, 1 % and 8 % slower than with 4
  /// (bench_conv2d, batch 32, AVX-512).
  static Index weight_chunk_tiles(Index transformed, Index cout) {
    return tiles_within(Index(4) << 20, transformed, cout, 4096);
  }
  /// The scratch of weights() for V of `transformed` channels (0 when kept)
  /// and W of cout, with cin input channels.
  void reserve_weights(Index transformed, Index cout, Index cin) {
    const Index chunk = weight_chunk_tiles(transformed, cout);
    reserve_tiles(chunk, transformed, cout);
    if (sums_transposed(cin, cout)) {
      gemm_.reserve_for(cout, cin, chunk);
    } else {
      gemm_.reserve_for(cin, cout, chunk);
    }
  }

  /// Tiles of the output per image.
  static Index tiles_per_image(const Winograd2D& g) { return ((g.ho + M - 1) / M) * ((g.wo + M - 1) / M); }

  /// One thread: output tiles [first, last) of the batch, numbered image by
  /// image, row by row (so threads can split a single image), of
  /// x [N, h, w, cin] into y [N, ho, wo, cout] through U from
  /// transform_kernel (rows of ldu values), then the epilogue (bias, ReLU). With `pool`, a
  /// max-pooling of y [N, ho, wo, cout] (pool->h x pool->w) whose windows
  /// lie within the tiles (strides equal to a size that divides kTile, no
  /// padding before), y is the pooling's output [N, pool->ho, pool->wo, cout].
  /// With `kept`, the V of tile i goes to kept + 36 cin i and stays there
  /// (for the weights' gradient, in training). Allocates only when a call
  /// needs more scratch than every earlier one.
  void run(const T* x, const Winograd2D& geo, Index cin, Index first, Index last, const T* u, Index ldu, Index cout,
           T* y, GemmEpilogue<T> epilogue, const Window2D* pool = nullptr, T* kept = nullptr) {
    const Index per_image = tiles_per_image(geo), total = last - first;
    const Index chunk = chunk_tiles(cin, cout);
    reserve(cin, cout);
    for (Index t0 = 0; t0 < total; t0 += chunk) {
      const Index tiles = std::min(chunk, total - t0);
      T* v = kept ? kept + (first + t0) * kPoints * cin : v_.data();
      for (Index t = 0; t < tiles; ++t) input_tile(x, geo, cin, per_image, first + t0 + t, v + t * kPoints * cin);
      // V is [tile][xi][cin], so V[xi] is a row-major matrix with row stride 36 cin.
      for (int xi = 0; xi < kPoints; ++xi) {
        gemm_(tiles, cout, cin, {v + xi * cin, kPoints * cin}, {u + xi * cin * ldu, ldu}, m_.data() + xi * cout,
              kPoints * cout);
      }
      for (Index t = 0; t < tiles; ++t) {
        output_tile(m_.data() + t * kPoints * cout, geo, cout, per_image, first + t0 + t, y, epilogue, pool);
      }
    }
  }

 private:
  static constexpr int kLanes = 16;  // channels per step of the transforms (the compiler's vectors)

  /// f(c0, lanes, L) for the channel groups of the transforms: whole groups
  /// of kLanes, then the channels left on the narrowest of 4, 8 or kLanes
  /// lanes that holds them (L, a std::integral_constant). The arithmetic
  /// runs on all L lanes, so 50 channels on 16-lane groups cost 64 channels'
  /// work; their last 2 on 4 lanes, 52.
  template <class F>
  static void for_lane_groups(Index channels, F&& f) {
    Index c0 = 0;
    for (; c0 + kLanes <= channels; c0 += kLanes) f(c0, kLanes, std::integral_constant<int, kLanes>{});
    const int rest = static_cast<int>(channels - c0);
    if (rest == 0) return;
    if (rest <= 4) {
      f(c0, rest, std::integral_constant<int, 4>{});
    } else if (rest <= 8) {
      f(c0, rest, std::integral_constant<int, 8>{});
    } else {
      f(c0, rest, std::integral_constant<int, kLanes>{});
    }
  }

  /// Tiles whose transforms (36 (cin + cout) values each) fit in `budget`
  /// bytes: a multiple of `rows` (the GEMM's rows), from `rows` to `most`.
  static Index tiles_within(Index budget, Index cin, Index cout, Index most, Index rows = 16) {
    const Index bytes = kPoints * (cin + cout) * static_cast<Index>(sizeof(T));
    return std::clamp<Index>(budget / bytes / rows * rows, rows, most);
  }

  /// v_ and m_ for `tiles` tiles of cin and cout channels.
  void reserve_tiles(Index tiles, Index cin, Index cout) {
    const Index need_v = tiles * kPoints * cin, need_m = tiles * kPoints * cout;
    if (static_cast<Index>(v_.size()) < need_v) v_.resize(static_cast<std::size_t>(need_v));
    if (static_cast<Index>(m_.size()) < need_m) m_.resize(static_cast<std::size_t>(need_m));
  }

  /// V[xi][c] of one tile: B^T d B for every input channel.
  static void input_tile(const T* x, const Winograd2D& geo, Index cin, Index per_image, Index tile,
                         T* v) {
    const Index tiles_w = (geo.wo + M - 1) / M;
    const Index n = tile / per_image, ti = tile % per_image / tiles_w, tj = tile % per_image % tiles_w;
    const Index top = ti * M - geo.pad_top, left = tj * M - geo.pad_left;
    const T* image = x + n * geo.h * geo.w * cin;
    for_lane_groups(cin, [&](Index c0, int lanes, auto l) {
      input_channels<decltype(l)::value>(image, geo, cin, top, left, c0, lanes, v);
    });
  }

  /// Channels [c0, c0 + lanes) of one tile. The arithmetic always runs on
  /// L channels (the missing ones are zeros) so it stays vectorised.
  template <int L>
  static void input_channels(const T* image, const Winograd2D& geo, Index cin, Index top, Index left, Index c0,
                             int lanes, T* v) {
    T d[kAlpha][kAlpha][L];
    for (int i = 0; i < kAlpha; ++i) {
      const Index ih = top + i;
      for (int j = 0; j < kAlpha; ++j) {
        const Index iw = left + j;
        if (ih < 0 || ih >= geo.h || iw < 0 || iw >= geo.w || lanes < L) {
          for (int l = 0; l < L; ++l) d[i][j][l] = T(0);
        }
        if (ih >= 0 && ih < geo.h && iw >= 0 && iw < geo.w) {
          const T* p = image + (ih * geo.w + iw) * cin + c0;
          if (lanes == L) {
            for (int l = 0; l < L; ++l) d[i][j][l] = p[l];
          } else {
            copy_small(p, lanes, d[i][j]);
          }
        }
      }
    }
    T t[kAlpha][kAlpha][L], r[kAlpha][kAlpha][L];
    for (int j = 0; j < kAlpha; ++j) F::template input_1d<T, L>(d[0][j], kAlpha * L, t[0][j], kAlpha * L);  // B^T d
    for (int a = 0; a < kAlpha; ++a) F::template input_1d<T, L>(t[a][0], L, r[a][0], L);  // (B^T d) B
    for (int k = 0; k < kPoints; ++k) {
      T* out = v + k * cin + c0;
      const T* q = r[k / kAlpha][k % kAlpha];
      if (lanes == L) {
        for (int l = 0; l < L; ++l) out[l] = q[l];
      } else {
        copy_small(q, lanes, out);
      }
    }
  }

  /// W[xi][c] of one tile of dL/dz: A E A^T for every output channel, the
  /// tile's values beyond the output being zeros.
  static void grad_tile(const T* dz, const Winograd2D& geo, Index cout, Index per_image, Index tile, T* w,
                        Index point_stride) {
    const Index tiles_w = (geo.wo + M - 1) / M;
    const Index n = tile / per_image, oh0 = tile % per_image / tiles_w * M, ow0 = tile % per_image % tiles_w * M;
    const T* image = dz + n * geo.ho * geo.wo * cout;
    for_lane_groups(cout, [&](Index c0, int lanes, auto l) {
      grad_channels<decltype(l)::value>(image, geo, cout, oh0, ow0, c0, lanes, w, point_stride);
    });
  }

  /// Channels [c0, c0 + lanes) of one tile of dL/dz, computed on L.
  template <int L>
  static void grad_channels(const T* image, const Winograd2D& geo, Index cout, Index oh0, Index ow0, Index c0,
                            int lanes, T* w, Index point_stride) {
    T e[M][M][L];
    for (int r = 0; r < M; ++r) {
      for (int q = 0; q < M; ++q) {
        const bool inside = oh0 + r < geo.ho && ow0 + q < geo.wo;
        if (!inside || lanes < L) {
          for (int l = 0; l < L; ++l) e[r][q][l] = T(0);
        }
        if (inside) {
          const T* p = image + ((oh0 + r) * geo.wo + ow0 + q) * cout + c0;
          if (lanes == L) {
            for (int l = 0; l < L; ++l) e[r][q][l] = p[l];
          } else {
            copy_small(p, lanes, e[r][q]);
          }
        }
      }
    }
    T t[kAlpha][M][L], o[kAlpha][kAlpha][L];
    for (int q = 0; q < M; ++q) F::template grad_1d<T, L>(e[0][q], M * L, t[0][q], M * L);  // A E
    for (int a = 0; a < kAlpha; ++a) F::template grad_1d<T, L>(t[a][0], L, o[a][0], L);    // (A E) A^T
    for (int k = 0; k < kPoints; ++k) {
      T* out = w + k * point_stride + c0;
      const T* q = o[k / kAlpha][k % kAlpha];
      if (lanes == L) {
        for (int l = 0; l < L; ++l) out[l] = q[l];
      } else {
        copy_small(q, lanes, out);
      }
    }
  }

  /// One tile's outputs: A^T M A for every output channel, then the
  /// epilogue (and the pooling, as in run).
  void output_tile(const T* m, const Winograd2D& geo, Index cout, Index per_image, Index tile, T* y,
                   const GemmEpilogue<T>& epilogue, const Window2D* pool) {
    const Index tiles_w = (geo.wo + M - 1) / M;
    const Index n = tile / per_image, ti = tile % per_image / tiles_w, tj = tile % per_image % tiles_w;
    if (pool) {  // the tile's outputs to tile_, as an image of their own, then pooled
      const Winograd2D band{0, 0, std::min<Index>(M, geo.ho - ti * M), std::min<Index>(M, geo.wo - tj * M), 0, 0};
      for_lane_groups(cout, [&](Index c0, int lanes, auto l) {
        output_channels<decltype(l)::value>(m, band, cout, 0, 0, c0, lanes, tile_.data(), epilogue);
      });
      pool_tile(tile_.data(), band, ti * M, tj * M, cout, *pool, y + n * pool->ho * pool->wo * cout);
      return;
    }
    T* image = y + n * geo.ho * geo.wo * cout;
    for_lane_groups(cout, [&](Index c0, int lanes, auto l) {
      output_channels<decltype(l)::value>(m, geo, cout, ti * M, tj * M, c0, lanes, image, epilogue);
    });
  }

  /// Channels [c0, c0 + lanes) of one tile's outputs, computed on L.
  template <int L>
  static void output_channels(const T* m, const Winograd2D& geo, Index cout, Index oh0, Index ow0, Index c0,
                              int lanes, T* image, const GemmEpilogue<T>& epilogue) {
    T in[kAlpha][kAlpha][L];
    for (int k = 0; k < kPoints; ++k) {
      const T* p = m + k * cout + c0;
      T* q = in[k / kAlpha][k % kAlpha];
      if (lanes == L) {
        for (int l = 0; l < L; ++l) q[l] = p[l];
      } else {
        std::fill(q, q + L, T(0));
        copy_small(p, lanes, q);
      }
    }
    T t[M][kAlpha][L], o[M][M][L];
    for (int j = 0; j < kAlpha; ++j) F::template output_1d<T, L>(in[0][j], kAlpha * L, t[0][j], kAlpha * L);  // A^T M
    for (int r = 0; r < M; ++r) F::template output_1d<T, L>(t[r][0], L, o[r][0], L);  // (A^T M) A
    for (int r = 0; r < M && oh0 + r < geo.ho; ++r) {
      for (int s = 0; s < M && ow0 + s < geo.wo; ++s) {
        const T* q = o[r][s];
        T* out = image + ((oh0 + r) * geo.wo + ow0 + s) * cout + c0;
        for (int l = 0; l < lanes; ++l) out[l] = epilogue(q[l], c0 + l);
      }
    }
  }

  /// Pools one tile's outputs, `tile` [band.ho, band.wo, cout] (the part of
  /// the tile at (oh0, ow0) inside the output), into the pooled image, with
  /// MaxPool2D's loops: the pooling's windows lie within the tile.
  static void pool_tile(const T* tile, const Winograd2D& band, Index oh0, Index ow0, Index cout, const Window2D& pool,
                        T* image) {
    Window2D part = pool;  // the pooling of this tile alone
    part.h = band.ho;
    part.w = band.wo;
    part.ho = std::min<Index>(M / pool.kh, pool.ho - oh0 / pool.kh);
    part.wo = std::min<Index>(M / pool.kw, pool.wo - ow0 / pool.kw);
    for (Index a = 0; a < part.ho; ++a) {
      const Range rows = pool_rows(part, a);
      pool_row(tile + rows.begin * part.w * cout, rows.size(), part,
               image + ((oh0 / pool.kh + a) * pool.wo + ow0 / pool.kw) * cout);
    }
  }

  std::vector<T> v_, m_, tile_;  // tile_: one tile's outputs, when pooled
  Gemm<T> gemm_;
};

}  // namespace loom::detail
