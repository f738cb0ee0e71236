#pragma once
/// \file kernels/sgemm.hpp
/// loom's own single-thread float GEMM for x86: C = op(A) op(B) (or C +=),
/// packed into cache-sized panels and run by a register-blocked FMA
/// micro-kernel, in AVX-512 when the compiler targets it, else in AVX2/FMA.
/// Elsewhere (other ISAs, double) `Gemm<T>` in gemm.hpp uses Eigen's product.
///
/// The structure is the one Goto and van de Geijn described and BLIS made
/// standard (five loops around a micro-kernel), with A read in place:
///
///     for jc in N by NC:
///       for pc in K by KC:
///         pack B[pc.., jc..] into NR-wide slivers, k-major (or, when few
///         row tiles share it, read a row-major B in place)
///         for ic in M by MC:        A block  [MC x KC]  read in place, stays in L2
///           for jr, ir:             C tile   [MR x NR]  in registers
///             micro-kernel: kc rank-1 updates, one B row of NV vectors and
///             MR values broadcast from A's rows each; then the epilogue
///
/// Why loom has its own: Eigen's kernel reaches about 43 % of a core's peak
/// on the conv layers' shapes (whose N is the filter count, 25 to 75), on
/// AVX2 and on AVX-512 alike; see docs/performance.md. The tile shape
/// (MR, NV) is chosen per call from a few compiled ones so that N = 50 or
/// M = 32 waste as little of the tile as possible.

#include <Eigen/Core>  // aligned_allocator
#include <algorithm>
#include <cstring>
#include <iterator>
#include <type_traits>
#include <utility>
#include <vector>

#include "../tensor.hpp"

#if (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))) && !defined(LOOM_EIGEN_GEMM)
#define LOOM_OWN_SGEMM 1
#include <immintrin.h>
#endif

namespace loom::detail {

/// A row-major matrix operand: rows x cols of `data` with row stride `ld`.
/// `transposed` uses it as its transpose (cols x rows) without copying.
template <class T>
struct GemmOperand {
  const T* data;
  Index ld;
  bool transposed = false;
};

/// What happens to C's values once the product is complete, before they are
/// stored: a bias added per column (`bias[j]` for column j, when not null),
/// then ReLU (NaN passes through, as detail::activate's), then an affine map
/// per column, v * scale[j] + shift[j] (when `scale` is not null: a
/// BatchNormalization in inference, absorbed by the layer before it). loom's
/// kernel does it on the tile in registers, which saves the layers passes
/// over their output.
template <class T>
struct GemmEpilogue {
  const T* bias = nullptr;
  bool relu = false;
  const T* scale = nullptr;
  const T* shift = nullptr;

  /// The epilogue of one value of column j.
  T operator()(T v, Index j) const {
    if (bias) v += bias[j];
    if (relu) v = std::max(v, T(0));  // NaN passes through
    return scale ? v * scale[j] + shift[j] : v;
  }
  /// The epilogue of columns [j0, ...): a product that writes only those
  /// (a group of a grouped convolution).
  GemmEpilogue from_column(Index j0) const {
    return {bias ? bias + j0 : nullptr, relu, scale ? scale + j0 : nullptr, shift ? shift + j0 : nullptr};
  }
};

#ifdef LOOM_OWN_SGEMM
namespace sgemm {

#if defined(__AVX512F__)
/// 16 floats to a vector, 32 vector registers, per-lane store masks.
struct Isa {
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int W = 16;
  static constexpr const char* name = "AVX-512";
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static Mask mask(int lanes) {
    return lanes >= W ? Mask(0xFFFF) : Mask(lanes <= 0 ? 0 : (1u << lanes) - 1u);
  }
  static V load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, V v, Mask m) { _mm512_mask_storeu_ps(p, m, v); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V relu(V a) { return _mm512_max_ps(_mm512_setzero_ps(), a); }  // max(0, NaN) is NaN
};
#else
/// 8 floats to a vector, 16 vector registers, stores masked by lane vectors.
struct Isa {
  using V = __m256;
  using Mask = __m256i;
  static constexpr int W = 8;
  static constexpr const char* name = "AVX2";
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static Mask mask(int lanes) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V load(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static void store(float* p, V v, Mask m) { _mm256_maskstore_ps(p, m, v); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V relu(V a) { return _mm256_max_ps(_mm256_setzero_ps(), a); }  // max(0, NaN) is NaN
};
#endif

/// Element (i, j) of op(X) is x[i * rs + j * cs].
struct Strided {
  const float* x;
  Index rs, cs;
};

inline Strided strided(const GemmOperand<float>& o) {
  return o.transposed ? Strided{o.data, 1, o.ld} : Strided{o.data, o.ld, 1};
}

using Epilogue = GemmEpilogue<float>;

/// Where a micro-kernel reads A: `step(p)` points at depth step p's values,
/// `at(s, i)` at row i's among them. A is read where it lies, never packed:
/// each value is broadcast once per step, so an unpacked A costs nothing in
/// the kernel; measured, that beats packing A, which for a row-major A is a
/// transpose.
struct ARowMajor {  // op(A)(i, p) = a[i * lda + p]: MR rows read along p, which the prefetcher follows
  const float* a;
  Index lda;
  const float* step(Index p) const { return a + p; }
  const float* at(const float* s, int i) const { return s + i * lda; }
};
struct AColMajor {  // op(A)(i, p) = a[p * lda + i]: a transposed A, or a packed sliver (lda = MR)
  const float* a;
  Index lda;
  const float* step(Index p) const { return a + p * lda; }
  const float* at(const float* s, int i) const { return s + i; }
};

/// Stores the MR x NV tile of sums `acc` into C (only its first m rows and n
/// columns): added to C's values when `add`, then the epilogue if `epi` is
/// given. Shared by the float and the bfloat16 micro-kernels.
template <int MR, int NV>
[[gnu::always_inline]] inline void store_tile(typename Isa::V (&acc)[MR][NV], float* c, Index ldc, int m, int n,
                                              bool add, const Epilogue* epi) {
  using V = typename Isa::V;
  using Mask = typename Isa::Mask;
  constexpr int W = Isa::W, NR = NV * W;
  Mask mask[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) mask[v] = Isa::mask(n - v * W);
  V bias[NV], scale[NV], shift[NV];
  const bool affine = epi && epi->scale;
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    bias[v] = epi && epi->bias ? Isa::load(epi->bias + v * W, mask[v]) : Isa::zero();
    scale[v] = affine ? Isa::load(epi->scale + v * W, mask[v]) : Isa::zero();
    shift[v] = affine ? Isa::load(epi->shift + v * W, mask[v]) : Isa::zero();
  }
  const bool relu = epi && epi->relu;
  const auto finish = [&](V sum, const float* old, int v, auto masked) {
    if (add) sum = Isa::add(sum, masked ? Isa::load(old, mask[v]) : Isa::load(old));
    sum = Isa::add(sum, bias[v]);
    if (relu) sum = Isa::relu(sum);
    return affine ? Isa::fma(sum, scale[v], shift[v]) : sum;
  };
  if (n == NR) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      if (i >= m) break;
      float* row = c + i * ldc;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) Isa::store(row + v * W, finish(acc[i][v], row + v * W, v, std::false_type{}));
    }
    return;
  }
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    float* row = c + i * ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      if (v * W >= n) break;
      Isa::store(row + v * W, finish(acc[i][v], row + v * W, v, std::true_type{}), mask[v]);
    }
  }
}

/// The MR x NR tile (NR = NV*W) of C = or += A * B over kc steps, then the
/// epilogue if `epi` is given (the last depth block's call). A's element
/// (i, p) is read through the view `a` (above; the direct convolution has
/// its own, in kernels/direct_conv.hpp). B's step p is the NR values
/// at b + p * ldb: a packed sliver (ldb = NR, zero-padded) or a row-major
/// op(B) in place, whose columns past n are never read. Only the first m
/// rows and n columns of the tile are C's; A's other rows may be read (and
/// must be readable) but reach no output.
template <int MR, int NV, class AView>
void micro_kernel(Index kc, const AView a, const float* __restrict b, Index ldb, float* c, Index ldc, int m, int n,
                  bool add, const Epilogue* epi) {
  using V = typename Isa::V;
  using Mask = typename Isa::Mask;
  constexpr int W = Isa::W, NR = NV * W;
  Mask mask[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) mask[v] = Isa::mask(n - v * W);
  V acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = Isa::zero();
  }
  const auto steps = [&](auto masked) {
    const float* bp = b;
    for (Index p = 0; p < kc; ++p, bp += ldb) {
      V bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) bv[v] = masked ? Isa::load(bp + v * W, mask[v]) : Isa::load(bp + v * W);
      const float* ap = a.step(p);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        const V ai = Isa::broadcast(a.at(ap, i));
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[i][v] = Isa::fma(ai, bv[v], acc[i][v]);
      }
    }
  };
  // A packed sliver may be read whole; B in place only up to column n.
  if (n == NR || ldb == NR) {
    steps(std::false_type{});
  } else {
    steps(std::true_type{});
  }
  store_tile<MR, NV>(acc, c, ldc, m, n, add, epi);
}

/// Packs columns [j0, j0+cols) x depth [p0, p0+depth) of op(B) into slivers
/// of NR columns: sliver s holds depth groups of NR values, columns past the
/// end are zero. (Given op(A)^T, it packs rows of op(A) the same way.)
template <int NR>
void pack_b(const Strided& b, Index j0, Index cols, Index p0, Index depth, float* __restrict dst) {
  for (Index s = 0; s < cols; s += NR, dst += NR * depth) {
    const Index r = std::min<Index>(NR, cols - s);
    const float* src = b.x + p0 * b.rs + (j0 + s) * b.cs;
    if (b.cs == 1) {  // a row of op(B): r contiguous values per depth step, then zeros
      // Copies of NR values, which g++ 12 makes whole (or masked) vectors:
      // a loop over r values, or even over NR, it made a call of memmove for
      // every step (3 % of a training step).
      // A partial sliver (N = 75 in slivers of 80) is copied by masked
      // vector loads, which read zeros past column r: element by element,
      // packing was 16 % of conv2's weights' gradient, now 11 %, most of it
      // the first read of the forward's kept V (bench_conv2d, AVX-512).
      constexpr int W = Isa::W;
      [[maybe_unused]] typename Isa::Mask mask[NR / W + 1];
      if constexpr (NR % W == 0) {
        for (int v = 0; v < NR / W; ++v) mask[v] = Isa::mask(static_cast<int>(r) - v * W);
      }
      for (Index p = 0; p < depth; ++p) {
        float* __restrict d = dst + p * NR;
        const float* __restrict q = src + p * b.rs;
        if (r == NR) {
          std::memcpy(d, q, sizeof(float) * NR);
        } else if constexpr (NR % W == 0) {
#pragma GCC unroll 8
          for (int v = 0; v < NR / W; ++v) Isa::store(d + v * W, Isa::load(q + v * W, mask[v]));
        } else {
          for (Index j = 0; j < NR; ++j) d[j] = j < r ? q[j] : 0.0f;
        }
      }
    } else {  // a transposed op(B): each column is contiguous along depth
      for (Index j = 0; j < r; ++j) {
        const float* q = src + j * b.cs;
        for (Index p = 0; p < depth; ++p) dst[p * NR + j] = q[p * b.rs];
      }
      for (Index j = r; j < NR; ++j) {
        for (Index p = 0; p < depth; ++p) dst[p * NR + j] = 0.0f;
      }
    }
  }
}

/// The epilogue of C's columns from j on.
inline Epilogue from_column(Epilogue e, Index j) {
  if (e.bias) e.bias += j;
  if (e.scale) e.scale += j, e.shift += j;
  return e;
}

/// Cache blocking: KC steps of depth keep a B sliver (KC x NR) in L1 beside
/// MR rows of A; MC rows of A (MC x KC) stay in L2 while every sliver of the
/// B panel passes over them; the packed panel (KC x NC) sits in L2/L3.
constexpr Index KC = 256, MC_TARGET = 168, NC = 2048;

using Buffer = std::vector<float, Eigen::aligned_allocator<float>>;

template <int MR, int NV, bool KRows>
void run(Index m, Index n, Index k, const Strided& a, const Strided& b, float* c, Index ldc, bool accumulate,
         const Epilogue& epilogue, Buffer& bpack) {
  constexpr Index NR = NV * Isa::W;
  constexpr Index MC = (MC_TARGET + MR - 1) / MR * MR;
  const Index lda = KRows ? a.rs : a.cs;
  // A transposed op(B) is packed, once per depth block, for all of A's rows.
  // A row-major one is read in place when fewer than 8 row tiles share it:
  // packing costs about a cycle per value, which a few tiles do not earn
  // back (Dense's batch of 32: 165 GFLOP/s in place, 130 packed), while a
  // packed sliver stays in L1 for the many tiles of a tall A.
  const bool pack = b.cs != 1 || m >= 8 * MR;
  const Index nc_max = pack ? std::min<Index>(NC, (n + NR - 1) / NR * NR) : 0;
  const Index kc_max = std::min<Index>(KC, k);
  // The B panel, then room for one A sliver of a last, partial row tile:
  // its missing rows must read as zeros, not past the end of A.
  const Index edge_at = nc_max * kc_max;
  if (static_cast<Index>(bpack.size()) < edge_at + MR * kc_max) {
    bpack.resize(static_cast<std::size_t>(edge_at + MR * kc_max));
  }
  for (Index jc = 0; jc < n; jc += NC) {
    const Index nc = std::min(NC, n - jc);
    for (Index pc = 0; pc < k; pc += KC) {
      const Index kc = std::min(KC, k - pc);
      const bool add = accumulate || pc > 0;
      if (pack) pack_b<NR>(b, jc, nc, pc, kc, bpack.data());
      for (Index ic = 0; ic < m; ic += MC) {
        const Index mc = std::min(MC, m - ic);
        for (Index jr = 0; jr < nc; jr += NR) {
          const float* bs = pack ? bpack.data() + jr * kc : b.x + pc * b.rs + jc + jr;
          const Index ldb = pack ? NR : b.rs;
          const int nr = static_cast<int>(std::min(NR, nc - jr));
          const Epilogue tile_epilogue = from_column(epilogue, jc + jr);
          const Epilogue* epi = pc + kc == k ? &tile_epilogue : nullptr;
          for (Index ir = 0; ir < mc; ir += MR) {
            const float* as = a.x + (ic + ir) * a.rs + pc * a.cs;
            float* cs = c + (ic + ir) * ldc + jc + jr;
            const Index mr = std::min<Index>(MR, mc - ir);
            if (mr == MR && KRows) {
              micro_kernel<MR, NV>(kc, ARowMajor{as, lda}, bs, ldb, cs, ldc, MR, nr, add, epi);
            } else if (mr == MR) {
              micro_kernel<MR, NV>(kc, AColMajor{as, lda}, bs, ldb, cs, ldc, MR, nr, add, epi);
            } else {
              float* edge = bpack.data() + edge_at;
              if (jr == 0) pack_b<MR>(Strided{as, a.cs, a.rs}, 0, mr, 0, kc, edge);
              micro_kernel<MR, NV>(kc, AColMajor{edge, MR}, bs, ldb, cs, ldc, static_cast<int>(mr), nr, add, epi);
            }
          }
        }
      }
    }
  }
}

/// A compiled tile shape: MR rows, NV vectors (NR = NV * W columns), and the
/// rate its micro-kernel reached alone (share of the FMA peak, on the AMD
/// EPYC loom is developed on).
struct TileShape {
  int mr, nv;
  double rate;
};

/// The GEMM's tiles, fastest first. The smaller shapes are there for an N or
/// M that would leave most of a big tile empty (N = 50, a batch of 32). The
/// last, one row by 8 vectors, is for products of one or two rows (a Dense
/// layer at batch 1): its 8 accumulators are 8 independent FMA chains, each
/// step loading 8 vectors of B for one broadcast of A, where the 8-row tile
/// did 8 times the FMAs, 7 on rows that do not exist (notebook_speed at
/// batch 1, one thread: Dense's forward was 22 % of the time). Its rate is
/// that of reading B from L2, below the FMA peak's. The five-vector tiles
/// fit N = 75 (80 columns, where two vectors pad it to 96): conv2's
/// weights' sums taken transposed (50 x 75, rows of 5) and its input
/// gradient (16-tile chunks, rows of 4), and conv1's direct kernel (28
/// columns x 75 filters). Their rates were measured on an Intel Xeon
/// (AVX-512), where with pack_b's masked copies they made the notebook's
/// training step 6.7 % faster. A tile changes no bits: every value of C is
/// its depth steps added in order, whatever the tile.
#if defined(__AVX512F__)
inline constexpr TileShape kTiles[] = {{14, 2, 0.95}, {8, 2, 0.95}, {5, 5, 0.90},
                                       {4, 5, 0.80},  {16, 1, 0.70}, {1, 8, 0.25}};
#else
inline constexpr TileShape kTiles[] = {{6, 2, 0.95}, {5, 2, 0.90}, {12, 1, 0.87}, {8, 1, 0.83}, {1, 8, 0.25}};
#endif

/// The padded work of an m x n product in tiles of `tile`, at its rate.
inline double tile_cost(const TileShape& tile, Index m, Index n) {
  const Index mr = tile.mr, nr = tile.nv * Isa::W;
  return double((m + mr - 1) / mr * mr) * double((n + nr - 1) / nr * nr) / tile.rate;
}

/// The tile of `Tiles` with the least padded work for m x n at its rate, the
/// earlier on ties.
template <const auto& Tiles>
int choose_tile(Index m, Index n) {
  int best = 0;
  double best_cost = tile_cost(Tiles[0], m, n);
  for (int t = 1; t < static_cast<int>(std::size(Tiles)); ++t) {
    const double cost = tile_cost(Tiles[t], m, n);
    if (cost < best_cost) best = t, best_cost = cost;
  }
  return best;
}

/// Whether the transposed product, n x m, pads less work than m x n in
/// gemm's best tiles (with vectors along N, N = 50 pads to 56 or 64 where
/// M = 50 pads to 50 or 54).
inline bool faster_transposed(Index m, Index n) {
  return tile_cost(kTiles[choose_tile<kTiles>(n, m)], n, m) < tile_cost(kTiles[choose_tile<kTiles>(m, n)], m, n);
}

template <const auto& Tiles, class F, std::size_t... I>
void with_tile(int tile, F&& f, std::index_sequence<I...>) {
  ((tile == static_cast<int>(I) ? (f(std::integral_constant<int, Tiles[I].mr>{},
                                     std::integral_constant<int, Tiles[I].nv>{}),
                                   0)
                                : 0),
   ...);
}
/// Calls f(MR, NV) (as std::integral_constant) with tile number `tile` of `Tiles`.
template <const auto& Tiles, class F>
void with_tile(int tile, F&& f) {
  with_tile<Tiles>(tile, f, std::make_index_sequence<std::size(Tiles)>{});
}

/// Grows bpack to what any product of at most n columns and depth k needs,
/// whatever its rows, the tile it chooses and whether it packs B (so that a
/// later call of gemm on the same buffer does not allocate).
inline void reserve(Index n, Index k, Buffer& bpack) {
  Index need = 0;
  for (const TileShape& t : kTiles) {
    const Index nr = t.nv * Isa::W, kc = std::min<Index>(KC, k);
    const Index panel = std::min<Index>(NC, (n + nr - 1) / nr * nr) * kc;
    need = std::max<Index>(need, panel + t.mr * kc);
  }
  if (static_cast<Index>(bpack.size()) < need) bpack.resize(static_cast<std::size_t>(need));
}

/// C[m x n] (row stride ldc) = op(A) op(B), or += when `accumulate`, then
/// the epilogue. k >= 1.
inline void gemm(Index m, Index n, Index k, const GemmOperand<float>& a, const GemmOperand<float>& b, float* c,
                 Index ldc, bool accumulate, const Epilogue& epilogue, Buffer& bpack) {
  const Strided sa = strided(a), sb = strided(b);
  with_tile<kTiles>(choose_tile<kTiles>(m, n), [&](auto mr, auto nv) {
    if (a.transposed) return run<mr, nv, false>(m, n, k, sa, sb, c, ldc, accumulate, epilogue, bpack);
    run<mr, nv, true>(m, n, k, sa, sb, c, ldc, accumulate, epilogue, bpack);
  });
}

}  // namespace sgemm
#endif  // LOOM_OWN_SGEMM

}  // namespace loom::detail
