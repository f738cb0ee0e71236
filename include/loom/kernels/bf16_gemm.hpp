#pragma once
/// \file kernels/bf16_gemm.hpp
/// The GEMM of the mixed_bfloat16 policy: C = op(A) op(B) (or C +=) with
/// both operands rounded to bfloat16 (to nearest, ties to even) and the
/// products summed in float32, by AVX512_BF16's `vdpbf16ps`. Each of its
/// instructions takes two bfloat16 products per float32 lane, so one
/// instruction does the work of two FMAs: on the AMD EPYC (Zen 5) loom is
/// developed on, 460 GFLOP/s a core where float32's FMAs reach 250
/// (bench_gemm's BM_Bf16Peak and BM_FmaPeak).
///
/// It has sgemm's loops (sgemm.hpp) with both operands packed, since each
/// must be converted anyway. `vdpbf16ps` multiplies pairs along the depth:
/// lane j of a B vector holds B(p, j) and B(p+1, j), and A's pair
/// (A(i, p), A(i, p+1)) is broadcast as one 32-bit value. So B is packed
/// into slivers of NR columns, pair by pair (a pair is a uint32: depth p in
/// its low half), and A into its own pairs: a row-major A row by row (its
/// pairs are adjacent already), a transposed A pair-row by pair-row. An odd
/// depth pads its last pair with zeros.
///
/// Built only when the compiler targets AVX512_BF16 (`__AVX512BF16__`, as
/// -march=native gives on such a CPU); `detail::bf16_supported()` says
/// whether this build and this CPU can run it.

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "sgemm.hpp"

#if defined(LOOM_OWN_SGEMM) && defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define LOOM_BF16_GEMM 1
#endif

namespace loom::detail {

/// Whether this build has the bfloat16 kernels and the CPU it runs on has
/// the instructions they use (AVX512_BF16).
inline bool bf16_supported() {
#ifdef LOOM_BF16_GEMM
  static const bool cpu = __builtin_cpu_supports("avx512bf16");
  return cpu;
#else
  return false;
#endif
}

/// One line saying why bfloat16 products cannot run here (empty if they can).
inline std::string bf16_unsupported_reason() {
#ifdef LOOM_BF16_GEMM
  return bf16_supported() ? "" : "this CPU lacks AVX512_BF16";
#elif defined(LOOM_OWN_SGEMM)
  return "this build does not target AVX512_BF16 (build with -march=native on a CPU that has it)";
#else
  return "this build has no x86 kernels for it (AVX512_BF16)";
#endif
}

/// float -> bfloat16, rounded to nearest even; NaN stays a (quiet) NaN.
inline std::uint16_t to_bf16(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
/// bfloat16 -> float (exact).
inline float from_bf16(std::uint16_t h) {
  const std::uint32_t u = std::uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
/// x rounded to the nearest bfloat16, as a float.
inline float round_bf16(float x) { return from_bf16(to_bf16(x)); }

#ifdef LOOM_BF16_GEMM
namespace bf16 {

using sgemm::Epilogue;
using sgemm::Isa;
using sgemm::Strided;
using Pairs = std::vector<std::uint32_t, Eigen::aligned_allocator<std::uint32_t>>;

/// Two rows of 16 floats -> 16 pairs (row p in each low half), rounded.
inline __m512i pair16(__m512 lo, __m512 hi) {
  // cvtne2ps_pbh(hi, lo) puts lo's 16 in the low half, hi's in the high one;
  // the permute interleaves them: lo0 hi0 lo1 hi1 ...
  const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
  const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(order, both);
}

/// 32 consecutive floats -> 16 pairs (float 2q in pair q's low half).
inline __m512i adjacent16(const float* x, __mmask16 lo_mask, __mmask16 hi_mask) {
  return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi_mask, x + 16), _mm512_maskz_loadu_ps(lo_mask, x));
}

/// Packs depth [p0, p0+depth) x columns [j0, j0+cols) of op(B) into slivers
/// of NR columns: sliver s holds, pair by pair, NR pairs (columns past the
/// end and the pad of an odd depth are zero).
template <int NR>
void pack_b(const Strided& b, Index j0, Index cols, Index p0, Index depth, std::uint32_t* __restrict dst) {
  const Index pairs = (depth + 1) / 2;
  for (Index s = 0; s < cols; s += NR, dst += NR * pairs) {
    const int r = static_cast<int>(std::min<Index>(NR, cols - s));
    const float* src = b.x + p0 * b.rs + (j0 + s) * b.cs;
    if (b.cs == 1) {  // rows of op(B): two rows make NR pairs, 16 columns at a time
      for (Index q = 0; q < pairs; ++q) {
        const float* row0 = src + 2 * q * b.rs;
        const bool odd = 2 * q + 1 == depth;
        std::uint32_t* d = dst + q * NR;
#pragma GCC unroll 8
        for (int v = 0; v < NR / 16; ++v) {
          const __mmask16 m = Isa::mask(r - v * 16);
          const __m512 lo = _mm512_maskz_loadu_ps(m, row0 + v * 16);
          const __m512 hi = odd ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, row0 + b.rs + v * 16);
          _mm512_storeu_si512(d + v * 16, pair16(lo, hi));
        }
      }
    } else {  // a transposed op(B): each column's depth is contiguous, its pairs adjacent
      const __mmask16 all = 0xFFFF;
      for (int j = 0; j < NR; ++j) {
        if (j >= r) {
          for (Index q = 0; q < pairs; ++q) dst[q * NR + j] = 0;
          continue;
        }
        const float* col = src + j * b.cs;
        alignas(64) std::uint32_t buf[16];
        for (Index q0 = 0; q0 < pairs; q0 += 16) {
          const Index left = depth - 2 * q0;  // floats of this column still to read
          const __mmask16 lo = left >= 16 ? all : Isa::mask(static_cast<int>(left));
          const __mmask16 hi = left >= 32 ? all : Isa::mask(static_cast<int>(left - 16));
          _mm512_store_si512(buf, adjacent16(col + 2 * q0, lo, hi));
          const Index n = std::min<Index>(16, pairs - q0);
          for (Index q = 0; q < n; ++q) dst[(q0 + q) * NR + j] = buf[q];
        }
      }
    }
  }
}

/// Packs rows [0, rows) x depth [p0, p0+depth) of op(A) (`a` at its row 0)
/// for a kernel that reads MR rows at a time: a row-major A row by row
/// (row i's pairs at dst + i * ld, ld = pairs rounded up to 16), a
/// transposed A pair-row by pair-row (pair q's rows at dst + q * ld, ld =
/// rows rounded up to MR). Rows up to a multiple of MR are zero. Returns ld.
template <int MR>
Index pack_a(const Strided& a, Index rows, Index p0, Index depth, std::uint32_t* __restrict dst) {
  const Index pairs = (depth + 1) / 2, padded = (rows + MR - 1) / MR * MR;
  if (a.cs == 1) {
    const Index ld = (pairs + 15) / 16 * 16;
    for (Index i = 0; i < padded; ++i) {
      std::uint32_t* d = dst + i * ld;
      if (i >= rows) {
        std::fill(d, d + pairs, 0u);
        continue;
      }
      const float* row = a.x + i * a.rs + p0;
      for (Index q0 = 0; q0 < pairs; q0 += 16) {
        const Index left = depth - 2 * q0;
        const __mmask16 lo = left >= 16 ? __mmask16(0xFFFF) : Isa::mask(static_cast<int>(left));
        const __mmask16 hi = left >= 32 ? __mmask16(0xFFFF) : Isa::mask(static_cast<int>(left - 16));
        _mm512_storeu_si512(d + q0, adjacent16(row + 2 * q0, lo, hi));  // ld leaves room for a whole vector
      }
    }
    return ld;
  }
  // Transposed: op(A)(i, p) = a.x[p * a.cs + i]; rows p and p+1 of memory make a pair-row.
  const Index ld = padded;
  for (Index q = 0; q < pairs; ++q) {
    const float* r0 = a.x + (p0 + 2 * q) * a.cs;
    const bool odd = 2 * q + 1 == depth;
    std::uint32_t* d = dst + q * ld;
    for (Index i = 0; i < padded; i += 16) {
      const __mmask16 m = Isa::mask(static_cast<int>(std::min<Index>(16, rows - i)));
      const __m512 lo = _mm512_maskz_loadu_ps(m, r0 + i);
      const __m512 hi = odd ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, r0 + a.cs + i);
      const __m512i p = pair16(lo, hi);
      if (i + 16 <= padded) {
        _mm512_storeu_si512(d + i, p);
      } else {
        _mm512_mask_storeu_epi32(d + i, Isa::mask(static_cast<int>(padded - i)), p);
      }
    }
  }
  return ld;
}

/// The MR x NR tile of C = or += A * B over `pairs` depth pairs, then the
/// epilogue if `epi` is given. A's pair (i, q) is at a[i * ars + q * acs];
/// B's pair q is NR pairs at b + q * NR.
template <int MR, int NV>
void micro_kernel(Index pairs, const std::uint32_t* a, Index ars, Index acs, const std::uint32_t* __restrict b,
                  float* c, Index ldc, int m, int n, bool add, const Epilogue* epi) {
  constexpr int W = Isa::W, NR = NV * W;
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  }
  for (Index q = 0; q < pairs; ++q, b += NR, a += acs) {
    __m512bh bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + v * W);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i * ars]));
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], ai, bv[v]);
    }
  }
  sgemm::store_tile<MR, NV>(acc, c, ldc, m, n, add, epi);
}

/// KC is even, so only a product's last depth block has an odd depth.
constexpr Index KC = sgemm::KC, MC_TARGET = sgemm::MC_TARGET, NC = sgemm::NC;
static_assert(KC % 2 == 0);

/// The buffers: B's packed panel and A's packed block.
struct Buffers {
  Pairs b, a;
};

template <int MR, int NV>
constexpr Index a_block_size(Index kc) {
  constexpr Index MC = (MC_TARGET + MR - 1) / MR * MR;
  const Index pairs = (kc + 1) / 2;
  return std::max(MC * ((pairs + 15) / 16 * 16), pairs * MC);
}

template <int MR, int NV>
void run(Index m, Index n, Index k, const Strided& a, const Strided& b, float* c, Index ldc, bool accumulate,
         const Epilogue& epilogue, Buffers& buf) {
  constexpr Index NR = NV * Isa::W;
  constexpr Index MC = (MC_TARGET + MR - 1) / MR * MR;
  const Index kc_max = std::min<Index>(KC, k);
  const Index b_need = std::min<Index>(NC, (n + NR - 1) / NR * NR) * ((kc_max + 1) / 2);
  const Index a_need = a_block_size<MR, NV>(kc_max);
  if (static_cast<Index>(buf.b.size()) < b_need) buf.b.resize(static_cast<std::size_t>(b_need));
  if (static_cast<Index>(buf.a.size()) < a_need) buf.a.resize(static_cast<std::size_t>(a_need));
  for (Index jc = 0; jc < n; jc += NC) {
    const Index nc = std::min(NC, n - jc);
    for (Index pc = 0; pc < k; pc += KC) {
      const Index kc = std::min(KC, k - pc), pairs = (kc + 1) / 2;
      const bool add = accumulate || pc > 0;
      pack_b<NR>(b, jc, nc, pc, kc, buf.b.data());
      for (Index ic = 0; ic < m; ic += MC) {
        const Index mc = std::min(MC, m - ic);
        const Strided block{a.x + ic * a.rs, a.rs, a.cs};
        const Index ld = pack_a<MR>(block, mc, pc, kc, buf.a.data());
        const Index ars = a.cs == 1 ? ld : 1, acs = a.cs == 1 ? 1 : ld;
        for (Index jr = 0; jr < nc; jr += NR) {
          const std::uint32_t* bs = buf.b.data() + jr * pairs;
          const int nr = static_cast<int>(std::min(NR, nc - jr));
          const Epilogue tile_epilogue = sgemm::from_column(epilogue, jc + jr);
          const Epilogue* epi = pc + kc == k ? &tile_epilogue : nullptr;
          for (Index ir = 0; ir < mc; ir += MR) {
            const std::uint32_t* as = buf.a.data() + ir * ars;
            const int mr = static_cast<int>(std::min<Index>(MR, mc - ir));
            micro_kernel<MR, NV>(pairs, as, ars, acs, bs, c + (ic + ir) * ldc + jc + jr, ldc, mr, nr, add, epi);
          }
        }
      }
    }
  }
}

/// Grows the buffers to what any product of at most n columns and depth k
/// needs, whatever its rows and tile (so that later calls do not allocate).
inline void reserve(Index n, Index k, Buffers& buf) {
  Index b_need = 0, a_need = 0;
  const Index kc = std::min<Index>(KC, k);
  for (int t = 0; t < static_cast<int>(std::size(sgemm::kTiles)); ++t) {
    sgemm::with_tile<sgemm::kTiles>(t, [&](auto mr, auto nv) {
      constexpr Index NR = decltype(nv)::value * Isa::W;
      b_need = std::max<Index>(b_need, std::min<Index>(NC, (n + NR - 1) / NR * NR) * ((kc + 1) / 2));
      a_need = std::max<Index>(a_need, a_block_size<decltype(mr)::value, decltype(nv)::value>(kc));
    });
  }
  if (static_cast<Index>(buf.b.size()) < b_need) buf.b.resize(static_cast<std::size_t>(b_need));
  if (static_cast<Index>(buf.a.size()) < a_need) buf.a.resize(static_cast<std::size_t>(a_need));
}

/// C[m x n] (row stride ldc) = op(A) op(B) in bfloat16 products, or += when
/// `accumulate`, then the epilogue. k >= 1.
inline void gemm(Index m, Index n, Index k, const GemmOperand<float>& a, const GemmOperand<float>& b, float* c,
                 Index ldc, bool accumulate, const Epilogue& epilogue, Buffers& buf) {
  const Strided sa = sgemm::strided(a), sb = sgemm::strided(b);
  sgemm::with_tile<sgemm::kTiles>(sgemm::choose_tile<sgemm::kTiles>(m, n), [&](auto mr, auto nv) {
    run<mr, nv>(m, n, k, sa, sb, c, ldc, accumulate, epilogue, buf);
  });
}

}  // namespace bf16
#endif  // LOOM_BF16_GEMM

}  // namespace loom::detail
