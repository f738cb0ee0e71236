#pragma once
/// \file kernels/int8_gemm.hpp
/// The product of int8 inference: C = dequantize(A * B) with A unsigned
/// 8-bit (activations, row-major), B signed 8-bit (weights, packed once) and
/// int32 sums, by VNNI's `vpdpbusd`: each 32-bit lane takes four u8 x s8
/// products at once, so one instruction does the work of four float FMAs
/// (on the AMD EPYC, Zen 5, loom is developed on, it runs conv2's forward
/// product at 808 G operations a second a core, 4.5x loom's float32 GEMM:
/// bench_gemm's BM_ProductInt8 and BM_Product).
///
/// Every value of C is its row's and column's exact integer sum, turned to
/// float and mapped per column, v * scale[j] + shift[j], then ReLU if asked:
/// the dequantization (the activations' and the column's weight scales),
/// the zero point's correction (the activations' zero point times the
/// column's weight sum) and the bias, in one affine map, applied in the
/// tile's registers as the float GEMM's epilogue is.
///
/// Layout: `vpdpbusd` multiplies quads along the depth, so lane j of a B
/// vector holds B(p..p+3, j) and A's quad (A(i, p..p+3)) is broadcast as one
/// 32-bit value. B is packed into slivers of NR columns, quad by quad
/// (pack_b); a row-major A is read in place, its rows padded to a multiple
/// of 4 bytes (with the zero point, or with zeros when B's padding is zero:
/// pack_b zeroes B past the depth, so A's padding never counts).
///
/// Built when the compiler targets AVX512_VNNI (AVX-512) or AVX_VNNI
/// (AVX2); `detail::int8_supported()` says whether this build and CPU can
/// run it.

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "sgemm.hpp"

#if defined(LOOM_OWN_SGEMM) && defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define LOOM_INT8_GEMM 1
#define LOOM_INT8_GEMM_AVX512 1
#elif defined(LOOM_OWN_SGEMM) && !defined(__AVX512F__) && defined(__AVXVNNI__)
#define LOOM_INT8_GEMM 1
#endif

namespace loom::detail {

/// Whether this build has the int8 kernel and the CPU has its instruction.
inline bool int8_supported() {
#if defined(LOOM_INT8_GEMM_AVX512)
  static const bool cpu = __builtin_cpu_supports("avx512vnni");
  return cpu;
#elif defined(LOOM_INT8_GEMM)
  static const bool cpu = __builtin_cpu_supports("avxvnni");
  return cpu;
#else
  return false;
#endif
}

/// One line saying why int8 products cannot run here (empty if they can).
inline std::string int8_unsupported_reason() {
#if defined(LOOM_INT8_GEMM_AVX512)
  return int8_supported() ? "" : "this CPU lacks AVX512_VNNI";
#elif defined(LOOM_INT8_GEMM)
  return int8_supported() ? "" : "this CPU lacks AVX_VNNI";
#elif defined(LOOM_OWN_SGEMM)
  return "this build does not target AVX512_VNNI or AVX_VNNI (build with -march=native on a CPU that has one)";
#else
  return "this build has no x86 kernels for it (AVX512_VNNI or AVX_VNNI)";
#endif
}

/// The int8 product's map from an integer sum to C's value, per column j:
/// v * scale[j] + shift[j], then max(v, 0) when `relu`, then
/// v * post_scale[j] + post_shift[j] when post_scale is given (a
/// BatchNormalization after the activation, in inference).
struct Int8Epilogue {
  const float* scale = nullptr;  ///< required
  const float* shift = nullptr;  ///< null: none
  bool relu = false;
  const float* post_scale = nullptr;
  const float* post_shift = nullptr;  ///< required with post_scale

  /// The epilogue of columns [j0, ...).
  Int8Epilogue from_column(Index j0) const {
    return {scale + j0, shift ? shift + j0 : nullptr, relu, post_scale ? post_scale + j0 : nullptr,
            post_scale ? post_shift + j0 : nullptr};
  }
};

/// B (k x n, signed 8-bit) packed for int8_gemm: slivers of `nr` columns,
/// each the whole depth in quads (4 bytes per column per quad, zero past the
/// depth and past the last column).
struct Int8PackedB {
  std::vector<std::int8_t> data;
  Index k = 0, n = 0;
  int nr = 0;
};

#ifdef LOOM_INT8_GEMM
namespace int8 {

#ifdef LOOM_INT8_GEMM_AVX512
/// 16 int32 lanes to a vector, 32 vector registers.
struct Isa {
  using I = __m512i;
  using F = __m512;
  using Mask = __mmask16;
  static constexpr int W = 16;
  static I zero() { return _mm512_setzero_si512(); }
  static I load(const void* p) { return _mm512_loadu_si512(p); }
  static I broadcast(const std::uint8_t* p) {
    std::int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
  }
  static I dot(I acc, I a, I b) { return _mm512_dpbusd_epi32(acc, a, b); }
  static Mask mask(int lanes) {
    return lanes >= W ? Mask(0xFFFF) : Mask(lanes <= 0 ? 0 : (1u << lanes) - 1u);
  }
  static F to_float(I v) { return _mm512_cvtepi32_ps(v); }
  static F load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F relu(F a) { return _mm512_max_ps(_mm512_setzero_ps(), a); }
  static void store(float* p, F v, Mask m) { _mm512_mask_storeu_ps(p, m, v); }
};
/// Tiles: MR rows x NV vectors, as sgemm's AVX-512 shapes.
inline constexpr sgemm::TileShape kTiles[] = {{14, 2, 0.95}, {8, 2, 0.95}, {5, 5, 0.90}, {4, 5, 0.80}, {16, 1, 0.70}};
#else
/// 8 int32 lanes to a vector, 16 vector registers (AVX_VNNI).
struct Isa {
  using I = __m256i;
  using F = __m256;
  using Mask = __m256i;
  static constexpr int W = 8;
  static I zero() { return _mm256_setzero_si256(); }
  static I load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static I broadcast(const std::uint8_t* p) {
    std::int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
  }
  static I dot(I acc, I a, I b) { return _mm256_dpbusd_avx_epi32(acc, a, b); }
  static Mask mask(int lanes) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static F to_float(I v) { return _mm256_cvtepi32_ps(v); }
  static F load(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F relu(F a) { return _mm256_max_ps(_mm256_setzero_ps(), a); }
  static void store(float* p, F v, Mask m) { _mm256_maskstore_ps(p, m, v); }
};
inline constexpr sgemm::TileShape kTiles[] = {{6, 2, 0.95}, {5, 2, 0.90}, {12, 1, 0.87}, {8, 1, 0.83}};
#endif

/// The MR x NR tile of C from `quads` depth quads: A's rows at a + i * lda
/// (one 32-bit quad per step), B's quad q at b + q * 4 NR.
template <int MR, int NV>
void micro_kernel(Index quads, const std::uint8_t* a, Index lda, const std::int8_t* __restrict b, float* c, Index ldc,
                  int m, int n, const Int8Epilogue& epi) {
  using I = typename Isa::I;
  using F = typename Isa::F;
  constexpr int W = Isa::W, NR = NV * W;
  I acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = Isa::zero();
  }
  for (Index q = 0; q < quads; ++q, b += 4 * NR) {
    I bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = Isa::load(b + 4 * v * W);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const I ai = Isa::broadcast(a + i * lda + 4 * q);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = Isa::dot(acc[i][v], ai, bv[v]);
    }
  }
  typename Isa::Mask mask[NV];
  F scale[NV], shift[NV], post_scale[NV], post_shift[NV];
  const bool post = epi.post_scale != nullptr;
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    mask[v] = Isa::mask(n - v * W);
    scale[v] = Isa::load(epi.scale + v * W, mask[v]);
    shift[v] = epi.shift ? Isa::load(epi.shift + v * W, mask[v]) : Isa::to_float(Isa::zero());
    post_scale[v] = post ? Isa::load(epi.post_scale + v * W, mask[v]) : shift[v];
    post_shift[v] = post ? Isa::load(epi.post_shift + v * W, mask[v]) : shift[v];
  }
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      if (v * W >= n) break;
      F y = Isa::fma(Isa::to_float(acc[i][v]), scale[v], shift[v]);
      if (epi.relu) y = Isa::relu(y);
      if (post) y = Isa::fma(y, post_scale[v], post_shift[v]);
      Isa::store(c + i * ldc + v * W, y, mask[v]);
    }
  }
}

/// The tile (of kTiles) with the least padded work for m x n.
inline int choose_tile(Index m, Index n) { return sgemm::choose_tile<kTiles>(m, n); }

}  // namespace int8
#endif  // LOOM_INT8_GEMM

/// The columns of B's slivers for products of about m rows: the NR of the
/// tile int8_gemm would choose (16 where there is no kernel).
inline int int8_sliver_columns([[maybe_unused]] Index m, [[maybe_unused]] Index n) {
#ifdef LOOM_INT8_GEMM
  return int8::kTiles[int8::choose_tile(m, n)].nv * int8::Isa::W;
#else
  return 16;
#endif
}

/// Packs B (k x n signed 8-bit, row-major with row stride ldb) for products
/// of about m rows.
inline Int8PackedB int8_pack_b(const std::int8_t* b, Index ldb, Index k, Index n, Index m) {
  Int8PackedB p;
  p.k = k, p.n = n, p.nr = int8_sliver_columns(m, n);
  const Index nr = p.nr, quads = (k + 3) / 4, slivers = (n + nr - 1) / nr;
  p.data.assign(static_cast<std::size_t>(slivers * quads * 4 * nr), 0);
  for (Index s = 0; s < slivers; ++s) {
    std::int8_t* dst = p.data.data() + s * quads * 4 * nr;
    for (Index j = 0; j < std::min(nr, n - s * nr); ++j) {
      for (Index kk = 0; kk < k; ++kk) dst[(kk / 4) * 4 * nr + j * 4 + kk % 4] = b[kk * ldb + s * nr + j];
    }
  }
  return p;
}

/// The bytes a row of A must hold for a product of depth k: k rounded up to
/// a multiple of 4 (the padding's values do not count: B's are zero).
inline Index int8_row_bytes(Index k) { return (k + 3) / 4 * 4; }

/// C[m x n] (row stride ldc) = the epilogue of A * B: A's m rows of
/// int8_row_bytes(b.k) unsigned bytes at a + i * lda; B packed by int8_pack_b.
/// Rows of a last, partial tile past m are not read: they are copied to
/// `edge` (at least 16 rows of lda bytes) with zeros below.
inline void int8_gemm(Index m, const std::uint8_t* a, Index lda, const Int8PackedB& b, float* c, Index ldc,
                      const Int8Epilogue& epilogue, std::vector<std::uint8_t>& edge) {
#ifdef LOOM_INT8_GEMM
  const Index quads = (b.k + 3) / 4;
  // The tile of B's sliver width that pads m rows least.
  int best = -1;
  double best_cost = 0;
  for (int t = 0; t < static_cast<int>(std::size(int8::kTiles)); ++t) {
    if (int8::kTiles[t].nv * int8::Isa::W != b.nr) continue;
    const double cost = sgemm::tile_cost(int8::kTiles[t], m, b.n);
    if (best < 0 || cost < best_cost) best = t, best_cost = cost;
  }
  if (best < 0) throw ConfigError("int8_gemm: B was packed for another instruction set");
  sgemm::with_tile<int8::kTiles>(best, [&](auto mr_c, auto nv_c) {
    constexpr int MR = decltype(mr_c)::value, NV = decltype(nv_c)::value, NR = NV * int8::Isa::W;
    // Column blocks of NR (a sliver stays in L1 across the row tiles) in
    // blocks of rows that stay in L2 (A read in place).
    constexpr Index MC = (168 + MR - 1) / MR * MR;
    for (Index ic = 0; ic < m; ic += MC) {
      const Index mc = std::min(MC, m - ic);
      for (Index jr = 0; jr < b.n; jr += NR) {
        const std::int8_t* bs = b.data.data() + jr * quads * 4;
        const int nr = static_cast<int>(std::min<Index>(NR, b.n - jr));
        const Int8Epilogue epi = epilogue.from_column(jr);
        for (Index ir = 0; ir < mc; ir += MR) {
          const std::uint8_t* as = a + (ic + ir) * lda;
          const int mr = static_cast<int>(std::min<Index>(MR, mc - ir));
          float* cs = c + (ic + ir) * ldc + jr;
          if (mr == MR) {
            int8::micro_kernel<MR, NV>(quads, as, lda, bs, cs, ldc, MR, nr, epi);
          } else {
            const std::size_t need = static_cast<std::size_t>(MR * lda);
            if (edge.size() < need) edge.resize(need);
            std::memcpy(edge.data(), as, static_cast<std::size_t>(mr * lda));
            std::memset(edge.data() + mr * lda, 0, need - static_cast<std::size_t>(mr * lda));
            int8::micro_kernel<MR, NV>(quads, edge.data(), lda, bs, cs, ldc, mr, nr, epi);
          }
        }
      }
    }
  });
#else
  (void)m, (void)a, (void)lda, (void)b, (void)c, (void)ldc, (void)epilogue, (void)edge;
  throw ConfigError("int8 products cannot run here: " + int8_unsupported_reason());
#endif
}

}  // namespace loom::detail
