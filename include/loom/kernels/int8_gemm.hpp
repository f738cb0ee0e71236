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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "sgemm.hpp"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

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
/// Tiles: MR rows x NV vectors, as sgemm's AVX-512 shapes, and 7 x 2 for
/// a convolution's row of 7 outputs read in place (conv3's), which 8 x 2
/// would finish through the edge copy.
inline constexpr sgemm::TileShape kTiles[] = {{14, 2, 0.95}, {8, 2, 0.95}, {7, 2, 0.90}, {5, 5, 0.90},
                                              {4, 5, 0.80},  {16, 1, 0.70}};
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

/// The MR x NR tile of C from `segments` runs of `quads` depth quads each:
/// A's row i at a + i * lda, its run s at s * segment_stride from there (one
/// 32-bit quad per step); B's quads one after another, 4 NR bytes each.
template <int MR, int NV>
void micro_kernel(Index segments, Index quads, Index segment_stride, const std::uint8_t* a, Index lda,
                  const std::int8_t* __restrict b, float* c, Index ldc, int m, int n, const Int8Epilogue& epi) {
  using I = typename Isa::I;
  using F = typename Isa::F;
  constexpr int W = Isa::W, NR = NV * W;
  I acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = Isa::zero();
  }
  for (Index s = 0; s < segments; ++s, a += segment_stride) {
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

/// Quantizes n floats of x into unsigned bytes:
/// q = clamp(nearbyint(x * inv_scale) + zero_point, 0, 255), rounding half to
/// even (the default rounding mode). Vectorized where the build targets
/// AVX-512 or AVX2, with the same results as the scalar loop (NaN gives 0).
inline void int8_quantize(const float* x, Index n, float inv_scale, int zero_point, std::uint8_t* q) {
  Index i = 0;
  const float lo = static_cast<float>(-zero_point), hi = static_cast<float>(255 - zero_point);
#if defined(__AVX512F__)
  {
    const __m512 vinv = _mm512_set1_ps(inv_scale), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    const __m512i vzp = _mm512_set1_epi32(zero_point);
    for (; i + 16 <= n; i += 16) {
      __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);  // rounded, then clamped: the bytes' range
      const __m512i u = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzp);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(u));
    }
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    if (i < n) {  // the last 1-15 values under a mask (a pixel's 75 channels: 4 vectors, the last masked)
      const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
      __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vinv),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
      _mm_mask_storeu_epi8(q + i, m, _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v), vzp)));
      i = n;
    }
#endif
  }
#elif defined(__AVX2__)
  {
    const __m256 vinv = _mm256_set1_ps(inv_scale), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    const __m256i vzp = _mm256_set1_epi32(zero_point);
    // The low byte of each 32-bit value, gathered to the front of its 128-bit lane.
    const __m256i low_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                               0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    for (; i + 8 <= n; i += 8) {
      __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm256_min_ps(_mm256_max_ps(v, vlo), vhi);
      const __m256i b = _mm256_shuffle_epi8(_mm256_add_epi32(_mm256_cvtps_epi32(v), vzp), low_bytes);
      const __m128i both = _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), both);
    }
  }
#endif
  for (; i < n; ++i) {
    const float r = std::min(hi, std::max(lo, std::nearbyint(x[i] * inv_scale)));  // NaN: lo, as the vectors
    q[i] = static_cast<std::uint8_t>(static_cast<int>(r) + zero_point);
  }
}

/// Where int8_gemm reads A: row i at a + i * lda, made of `segments` runs
/// of `segment_bytes` bytes (a multiple of 4), run s at s * segment_stride
/// from the row's start. One run is a plain row-major A; several read a
/// convolution's windows in place from a padded image (a run per row of
/// the window, segment_stride an image row apart), with no im2col.
struct Int8Rows {
  const std::uint8_t* a = nullptr;
  Index lda = 0;
  Index segments = 1, segment_bytes = 0, segment_stride = 0;
  /// Rows past the m of a product that may be read (their sums are
  /// dropped): a last, partial tile then reads them in place instead of
  /// being copied to `edge`.
  Index readable_past = 0;

  /// A row-major A of rows `lda` bytes apart, each depth k.
  static Int8Rows row_major(const std::uint8_t* a, Index lda, Index k) { return {a, lda, 1, int8_row_bytes(k), 0, 0}; }
};

/// C[m x n] (row stride ldc) = the epilogue of A * B: A's m rows as `rows`
/// says (their depth, segments times segment_bytes, at least b.k rounded up
/// to 4); B packed by int8_pack_b. Rows of a last, partial tile past m are
/// not read: they are copied to `edge` (at least 16 rows of the depth) with
/// zeros below.
inline void int8_gemm(Index m, const Int8Rows& rows, const Int8PackedB& b, float* c, Index ldc,
                      const Int8Epilogue& epilogue, std::vector<std::uint8_t>& edge) {
#ifdef LOOM_INT8_GEMM
  const Index quads = (b.k + 3) / 4, depth = rows.segments * rows.segment_bytes;
  if (rows.segment_bytes % 4 != 0 || depth < 4 * quads) {
    throw ConfigError(detail::str("int8_gemm: rows of ", rows.segments, " runs of ", rows.segment_bytes,
                                  " bytes do not hold a depth of ", b.k, " in quads"));
  }
  const Index lda = rows.lda, segment_quads = rows.segment_bytes / 4;
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
          const std::uint8_t* as = rows.a + (ic + ir) * lda;
          const int mr = static_cast<int>(std::min<Index>(MR, mc - ir));
          float* cs = c + (ic + ir) * ldc + jr;
          if (mr == MR || MR - mr <= rows.readable_past) {
            int8::micro_kernel<MR, NV>(rows.segments, segment_quads, rows.segment_stride, as, lda, bs, cs, ldc, mr,
                                       nr, epi);
          } else {  // the last rows, gathered into whole rows of the depth, zeros below them
            const std::size_t need = static_cast<std::size_t>(MR * depth);
            if (edge.size() < need) edge.resize(need);
            for (int i = 0; i < mr; ++i) {
              for (Index s = 0; s < rows.segments; ++s) {
                std::memcpy(edge.data() + i * depth + s * rows.segment_bytes, as + i * lda + s * rows.segment_stride,
                            static_cast<std::size_t>(rows.segment_bytes));
              }
            }
            std::memset(edge.data() + mr * depth, 0, need - static_cast<std::size_t>(mr * depth));
            int8::micro_kernel<MR, NV>(1, depth / 4, 0, edge.data(), depth, bs, cs, ldc, mr, nr, epi);
          }
        }
      }
    }
  });
#else
  (void)m, (void)rows, (void)b, (void)c, (void)ldc, (void)epilogue, (void)edge;
  throw ConfigError("int8 products cannot run here: " + int8_unsupported_reason());
#endif
}

/// int8_gemm of a row-major A: m rows of int8_row_bytes(b.k) bytes, lda apart.
inline void int8_gemm(Index m, const std::uint8_t* a, Index lda, const Int8PackedB& b, float* c, Index ldc,
                      const Int8Epilogue& epilogue, std::vector<std::uint8_t>& edge) {
  int8_gemm(m, Int8Rows::row_major(a, lda, b.k), b, c, ldc, epilogue, edge);
}

}  // namespace loom::detail
