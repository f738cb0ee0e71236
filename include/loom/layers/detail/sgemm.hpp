#pragma once
/// \file detail/sgemm.hpp
/// loom's own single-thread float GEMM for x86: C = op(A) op(B) (or C +=),
/// packed into cache-sized panels and run by a register-blocked FMA
/// micro-kernel, in AVX-512 when the compiler targets it, else in AVX2/FMA.
/// Elsewhere (other ISAs, double) `Gemm<T>` in gemm.hpp uses Eigen's product.
///
/// The structure is the one Goto and van de Geijn described and BLIS made
/// standard (five loops around a micro-kernel):
///
///     for jc in N by NC:            B panel  [KC x NC]  packed once, L3
///       for pc in K by KC:
///         pack B[pc.., jc..] into NR-wide slivers, k-major
///         for ic in M by MC:        A block  [MC x KC]  packed, L2
///           pack A[ic.., pc..] into MR-tall slivers, k-major
///           for jr, ir:             C tile   [MR x NR]  in registers
///             micro-kernel: kc rank-1 updates, one B row of NV vectors and
///             MR broadcast A values each
///
/// Why loom has its own: Eigen's kernel reaches about 43 % of an AVX2 core's
/// peak and 40 % of an AVX-512 one's on the conv layers' shapes (whose N is the
/// filter count, 25 to 75), see docs/performance.md. The tile shape (MR, NV)
/// is chosen per call from a few compiled ones so that N = 50 or M = 32 waste
/// as little of the tile as possible.

#include <Eigen/Core>  // aligned_allocator
#include <algorithm>
#include <cstring>
#include <vector>

#include "../../tensor.hpp"

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

/// The MR x NR tile (NR = NV*W) of C = or += A * B_sliver over kc steps.
/// A is read where it lies, never packed: with `KRows` its element (i, p) is
/// a[i * lda + p] (a row-major op(A): MR rows read along p, which the
/// prefetcher follows), else a[p * lda + i] (a transposed one: the MR values
/// of a step are contiguous). Each value is broadcast once per step, so an
/// unpacked A costs nothing here; measured, it beats packing A, which for a
/// row-major A is a transpose. `b` holds kc groups of NR values (packed,
/// zero-padded). Only the first m rows and n columns of the tile are C's.
template <int MR, int NV, bool KRows>
void micro_kernel(Index kc, const float* __restrict a, Index lda, const float* __restrict b, float* c, Index ldc,
                  int m, int n, bool add) {
  using V = typename Isa::V;
  constexpr int W = Isa::W, NR = NV * W;
  V acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = Isa::zero();
  }
  for (Index p = 0; p < kc; ++p, b += NR) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = Isa::load(b + v * W);
    const float* ap = KRows ? a + p : a + p * lda;
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const V ai = Isa::broadcast(KRows ? ap + i * lda : ap + i);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = Isa::fma(ai, bv[v], acc[i][v]);
    }
  }
  if (n == NR) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      if (i >= m) break;
      float* row = c + i * ldc;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        Isa::store(row + v * W, add ? Isa::add(acc[i][v], Isa::load(row + v * W)) : acc[i][v]);
      }
    }
    return;
  }
  typename Isa::Mask mask[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) mask[v] = Isa::mask(n - v * W);
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    float* row = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (v * W >= n) break;
      const V sum = add ? Isa::add(acc[i][v], Isa::load(row + v * W, mask[v])) : acc[i][v];
      Isa::store(row + v * W, sum, mask[v]);
    }
  }
}

/// Packs columns [j0, j0+cols) x depth [p0, p0+depth) of op(B) into slivers
/// of NR columns: sliver s holds depth groups of NR values, columns past the
/// end are zero. (Given op(A)^T, it packs rows of op(A) the same way.)
template <int NR>
void pack_b(const Strided& b, Index j0, Index cols, Index p0, Index depth, float* __restrict dst) {
  for (Index s = 0; s < cols; s += NR, dst += NR * depth) {
    const Index r = std::min<Index>(NR, cols - s);
    const float* src = b.x + p0 * b.rs + (j0 + s) * b.cs;
    if (b.cs == 1) {  // a row of op(B): NR contiguous values per depth step
      for (Index p = 0; p < depth; ++p) {
        float* d = dst + p * NR;
        const float* q = src + p * b.rs;
        for (Index j = 0; j < r; ++j) d[j] = q[j];
        for (Index j = r; j < NR; ++j) d[j] = 0.0f;
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

/// Cache blocking: KC steps of depth keep a B sliver (KC x NR) in L1 beside
/// MR rows of A; MC rows of A (MC x KC) stay in L2 while every sliver of the
/// B panel passes over them; the packed panel (KC x NC) sits in L2/L3.
constexpr Index KC = 256, MC_TARGET = 168, NC = 2048;

using Buffer = std::vector<float, Eigen::aligned_allocator<float>>;

template <int MR, int NV, bool KRows>
void run(Index m, Index n, Index k, const Strided& a, const Strided& b, float* c, Index ldc, bool accumulate,
         Buffer& bpack) {
  constexpr Index NR = NV * Isa::W;
  constexpr Index MC = (MC_TARGET + MR - 1) / MR * MR;
  const Index lda = KRows ? a.rs : a.cs;
  const Index nc_max = std::min<Index>(NC, (n + NR - 1) / NR * NR);
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
      pack_b<NR>(b, jc, nc, pc, kc, bpack.data());
      for (Index ic = 0; ic < m; ic += MC) {
        const Index mc = std::min(MC, m - ic);
        for (Index jr = 0; jr < nc; jr += NR) {
          const float* bs = bpack.data() + jr * kc;
          const int nr = static_cast<int>(std::min(NR, nc - jr));
          for (Index ir = 0; ir < mc; ir += MR) {
            const float* as = a.x + (ic + ir) * a.rs + pc * a.cs;
            float* cs = c + (ic + ir) * ldc + jc + jr;
            const Index mr = std::min<Index>(MR, mc - ir);
            if (mr == MR) {
              micro_kernel<MR, NV, KRows>(kc, as, lda, bs, cs, ldc, MR, nr, add);
            } else {
              float* edge = bpack.data() + edge_at;
              if (jr == 0) pack_b<MR>(Strided{as, a.cs, a.rs}, 0, mr, 0, kc, edge);
              micro_kernel<MR, NV, false>(kc, edge, MR, bs, cs, ldc, static_cast<int>(mr), nr, add);
            }
          }
        }
      }
    }
  }
}

/// The compiled tile shapes (MR, NV), NR = NV * W, fastest first, and the
/// rate each reached in its micro-kernel alone (share of the FMA peak, on
/// the AMD EPYC loom is developed on). The smaller shapes are there for an
/// N or M that would leave most of a big tile empty (N = 50, a batch of 32).
#if defined(__AVX512F__)
#define LOOM_SGEMM_TILES(X) X(14, 2, 0.95) X(8, 2, 0.95) X(16, 1, 0.70)
#else
#define LOOM_SGEMM_TILES(X) X(6, 2, 0.95) X(5, 2, 0.90) X(12, 1, 0.87) X(8, 1, 0.83)
#endif

/// The tile with the least padded work for m x n at its rate, the earlier on ties.
inline int choose_tile(Index m, Index n) {
  int best = 0, index = 0;
  double best_cost = 0;
  const auto consider = [&](int mr, int nv, double rate) {
    const Index nr = nv * Isa::W;
    const double cost = double((m + mr - 1) / mr * mr) * double((n + nr - 1) / nr * nr) / rate;
    if (index == 0 || cost < best_cost) best = index, best_cost = cost;
    ++index;
  };
#define LOOM_SGEMM_CONSIDER(MR, NV, RATE) consider(MR, NV, RATE);
  LOOM_SGEMM_TILES(LOOM_SGEMM_CONSIDER)
#undef LOOM_SGEMM_CONSIDER
  return best;
}

/// C[m x n] (row stride ldc) = op(A) op(B), or += when `accumulate`.
inline void gemm(Index m, Index n, Index k, const GemmOperand<float>& a, const GemmOperand<float>& b, float* c,
                 Index ldc, bool accumulate, Buffer& bpack) {
  const Strided sa = strided(a), sb = strided(b);
  int index = 0;
  const int tile = choose_tile(m, n);
#define LOOM_SGEMM_RUN(MR, NV, RATE)                                                   \
  if (index++ == tile) {                                                               \
    if (a.transposed) return run<MR, NV, false>(m, n, k, sa, sb, c, ldc, accumulate, bpack); \
    return run<MR, NV, true>(m, n, k, sa, sb, c, ldc, accumulate, bpack);              \
  }
  LOOM_SGEMM_TILES(LOOM_SGEMM_RUN)
#undef LOOM_SGEMM_RUN
}

}  // namespace sgemm
#endif  // LOOM_OWN_SGEMM

}  // namespace loom::detail
