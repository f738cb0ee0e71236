// The ceilings beside loom's conv products, one core each:
//
//   BM_FmaPeak      the machine's measured peak: independent FMAs on the
//                   widest vectors this build targets (no memory traffic)
//   BM_Bf16Peak     the same for vdpbf16ps (AVX512_BF16): two bfloat16
//                   products per float32 lane, each counted as 2 flops
//   BM_Product      loom's detail::Gemm<float> on one product of one conv
//                   layer, at the shape one of two threads runs in Conv2D
//                   (half the batch's rows)
//   BM_ProductBf16  the same Gemm under mixed_bfloat16 (kernels/bf16_gemm.hpp):
//                   bfloat16 operands packed from the float ones, float32 sums
//   BM_ProductInt8  the forward product (col * W) as int8 inference runs it
//                   (kernels/int8_gemm.hpp): u8 columns, s8 weights packed
//                   once, int32 sums dequantized per column; each
//                   multiply-add counted as 2 operations
//   BM_OpenBLAS     OpenBLAS's single-threaded cblas_sgemm on the same shape
//                   and operand layouts (only when built with libopenblas-dev)
//   BM_EigenProduct Eigen's product expression, single-threaded, same shape
//   BM_Direct       loom's direct convolution (kernels/direct_conv.hpp), which
//                   replaces the forward and weights' products of layers
//                   with few input channels (conv1), images padded included;
//                   its flops counted as the product's, so it reads beside
//                   the GEMMs, which leave out im2col's copy
//
// Every figure is GFLOP/s of one core, so the ratios read directly in one
// run. Arguments: /layer/batch/product, layer 0 = 28x28x1 -> 75,
// 1 = 14x14x75 -> 50, 2 = 7x7x50 -> 25; product 0 = forward col * W,
// 1 = weights colT * dz, 2 = input dz * WT (docs/performance.md).
#include <benchmark/benchmark.h>

#include <loom/kernels/int8_gemm.hpp>
#include <loom/loom.hpp>

#include "conv_shapes.hpp"

#ifdef LOOM_BENCH_OPENBLAS
#include <cblas.h>
#endif

using namespace loom;

namespace {

using bench::ConvShape;
using bench::kShapes;

/// One product of a conv layer as one of two threads runs it: C[m x n] = op(A) op(B).
struct Product {
  Index m, n, k;
  bool ta, tb;
  Tensor<float> a, b, c;

  explicit Product(const benchmark::State& state) {
    const ConvShape s = kShapes[state.range(0)];
    const Index rows = state.range(1) / 2 * s.h * s.w, patch = 9 * s.cin;
    switch (state.range(2)) {
      case 0: m = rows, n = s.cout, k = patch, ta = false, tb = false; break;  // col * W
      case 1: m = patch, n = s.cout, k = rows, ta = true, tb = false; break;   // colT * dz
      default: m = rows, n = patch, k = s.cout, ta = false, tb = true; break;  // dz * WT
    }
    a = Tensor<float>(ta ? Shape{k, m} : Shape{m, k}, 0.5f);
    b = Tensor<float>(tb ? Shape{n, k} : Shape{k, n}, 0.25f);
    c = Tensor<float>(Shape{m, n});
  }
  Index lda() const { return ta ? m : k; }
  Index ldb() const { return tb ? k : n; }
  double flops() const { return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k); }
};

void gflops(benchmark::State& state, double per_iteration) {
  state.counters["GFLOP/s"] = benchmark::Counter(per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

/// The kernel's own vectors (detail::sgemm::Isa), so the peak is measured in
/// exactly the instructions loom's GEMM uses.
void BM_FmaPeak(benchmark::State& state) {
#ifdef LOOM_OWN_SGEMM
  using Isa = detail::sgemm::Isa;
  using V = Isa::V;
  const float one_value = 1.0000001f, tiny_value = 1e-7f;
  const V one = Isa::broadcast(&one_value), tiny = Isa::broadcast(&tiny_value);
  // 12 independent chains in registers: enough to cover the FMA latency on
  // two pipes. Only their sum escapes, so no chain goes through memory; they
  // start from values the compiler cannot see, so it cannot merge them.
  constexpr int kChains = 12, kSteps = 1000;
  float start[kChains];
  for (int i = 0; i < kChains; ++i) start[i] = tiny_value * static_cast<float>(i + 1);
  benchmark::DoNotOptimize(start);
  for (auto _ : state) {
    V acc[kChains];
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = Isa::broadcast(start + i);
    for (int s = 0; s < kSteps; ++s) {
#pragma GCC unroll 12
      for (int i = 0; i < kChains; ++i) acc[i] = Isa::fma(acc[i], one, tiny);
    }
    V sum = acc[0];
#pragma GCC unroll 12
    for (int i = 1; i < kChains; ++i) sum = Isa::add(sum, acc[i]);
    benchmark::DoNotOptimize(sum);
  }
  state.SetLabel(Isa::name);
  gflops(state, 2.0 * Isa::W * kChains * kSteps);
#else
  state.SkipWithError("loom's own GEMM is not in this build (no AVX2/FMA or AVX-512 target)");
#endif
}

void BM_Bf16Peak(benchmark::State& state) {
#ifdef LOOM_BF16_GEMM
  if (!detail::bf16_supported()) return state.SkipWithError(detail::bf16_unsupported_reason().c_str());
  constexpr int kChains = 12, kSteps = 1000;
  float start[kChains];
  for (int i = 0; i < kChains; ++i) start[i] = 1e-7f * static_cast<float>(i + 1);
  benchmark::DoNotOptimize(start);
  const __m512bh one = (__m512bh)_mm512_set1_epi32(0x3f803f80);  // (1, 1) in bfloat16
  const __m512bh tiny = (__m512bh)_mm512_set1_epi32(0x33d633d6);  // (1e-7, 1e-7), about
  for (auto _ : state) {
    __m512 acc[kChains];
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(start[i]);
    for (int s = 0; s < kSteps; ++s) {
#pragma GCC unroll 12
      for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], one, tiny);
    }
    __m512 sum = acc[0];
#pragma GCC unroll 12
    for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
    benchmark::DoNotOptimize(sum);
  }
  state.SetLabel("AVX512_BF16");
  gflops(state, 4.0 * 16 * kChains * kSteps);
#else
  state.SkipWithError(detail::bf16_unsupported_reason().c_str());
#endif
}

void BM_ProductBf16(benchmark::State& state) {
  if (!detail::bf16_supported()) return state.SkipWithError(detail::bf16_unsupported_reason().c_str());
  Product p(state);
  detail::Gemm<float> gemm;
  gemm.set_precision(Precision::MixedBFloat16);
  for (auto _ : state) {
    gemm(p.m, p.n, p.k, {p.a.data(), p.lda(), p.ta}, {p.b.data(), p.ldb(), p.tb}, p.c.data(), p.n);
    benchmark::ClobberMemory();
  }
  state.SetLabel("bfloat16");
  gflops(state, p.flops());
}

void BM_ProductInt8(benchmark::State& state) {
  if (!detail::int8_supported()) return state.SkipWithError(detail::int8_unsupported_reason().c_str());
  const Product p(state);
  const Index lda = detail::int8_row_bytes(p.k);
  std::vector<std::uint8_t> a(static_cast<std::size_t>(p.m * lda), 3), edge;
  const std::vector<std::int8_t> b(static_cast<std::size_t>(p.k * p.n), 2);
  const std::vector<float> scale(static_cast<std::size_t>(p.n), 1e-3f);
  std::vector<float> c(static_cast<std::size_t>(p.m * p.n));
  const detail::Int8PackedB packed = detail::int8_pack_b(b.data(), p.n, p.k, p.n, p.m);
  for (auto _ : state) {
    detail::int8_gemm(p.m, a.data(), lda, packed, c.data(), p.n, {scale.data()}, edge);
    benchmark::ClobberMemory();
  }
  state.SetLabel("int8");
  gflops(state, p.flops());
}

void BM_Product(benchmark::State& state) {
  Product p(state);
  detail::Gemm<float> gemm;
  for (auto _ : state) {
    gemm(p.m, p.n, p.k, {p.a.data(), p.lda(), p.ta}, {p.b.data(), p.ldb(), p.tb}, p.c.data(), p.n);
    benchmark::ClobberMemory();
  }
  state.SetLabel(detail::float_gemm_kernel());
  gflops(state, p.flops());
}

void BM_EigenProduct(benchmark::State& state) {
  Product p(state);
  Eigen::setNbThreads(1);
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const RowMat> a(p.a.data(), p.a.dim(0), p.a.dim(1)), b(p.b.data(), p.b.dim(0), p.b.dim(1));
  Eigen::Map<RowMat> c(p.c.data(), p.m, p.n);
  for (auto _ : state) {
    if (p.ta) {
      c.noalias() = a.transpose() * b;
    } else if (p.tb) {
      c.noalias() = a * b.transpose();
    } else {
      c.noalias() = a * b;
    }
    benchmark::ClobberMemory();
  }
  gflops(state, p.flops());
}

#ifdef LOOM_BENCH_OPENBLAS
void BM_OpenBLAS(benchmark::State& state) {
  Product p(state);
  openblas_set_num_threads(1);
  const auto m = static_cast<blasint>(p.m), n = static_cast<blasint>(p.n), k = static_cast<blasint>(p.k);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, p.ta ? CblasTrans : CblasNoTrans, p.tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f,
                p.a.data(), static_cast<blasint>(p.lda()), p.b.data(), static_cast<blasint>(p.ldb()), 0.0f,
                p.c.data(), n);
    benchmark::ClobberMemory();
  }
  gflops(state, p.flops());
}
#endif

void BM_Direct(benchmark::State& state) {
  const Product p(state);
  const ConvShape s = kShapes[state.range(0)];
  const Index images = state.range(1) / 2;
  detail::Window2D g{images, s.h, s.w, s.cin, 3, 3, 1, 1, 1, 1, s.h, s.w};  // 3x3, 'same'
  detail::DirectConv<float> direct;
  direct.set(g);
  Tensor<float> x(Shape{images, s.h, s.w, s.cin}, 0.5f), kernel(Shape{g.patch(), s.cout}, 0.25f);
  Tensor<float> xpad(Shape{direct.padded_size(images)}), y(Shape{images * s.h * s.w, s.cout}, 0.25f);
  Tensor<float> dk(kernel.shape());
  direct.pad(x.data(), 0, images, xpad.data());
  direct.set_kernel(kernel.data(), s.cout);
  const bool forward = state.range(2) == 0;
  for (auto _ : state) {
    if (forward) {
      direct.pad(x.data(), 0, images, xpad.data());
      direct.forward(xpad.data(), 0, images * s.h, y.data(), {});
    } else {
      std::fill(dk.begin(), dk.end(), 0.0f);
      direct.weights(xpad.data(), y.data(), 0, images * s.h, s.cout, dk.data());
    }
    benchmark::ClobberMemory();
  }
  state.SetLabel(detail::float_gemm_kernel());
  gflops(state, p.flops());
}

void product_args(benchmark::internal::Benchmark* b) {
  b->ArgsProduct({{0, 1, 2}, {32, 256}, {0, 1, 2}})
      ->ArgNames({"layer", "batch", "product"})
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK(BM_FmaPeak)->UseRealTime();
BENCHMARK(BM_Bf16Peak)->UseRealTime();
BENCHMARK(BM_Product)->Apply(product_args);
BENCHMARK(BM_ProductBf16)->Apply(product_args);
BENCHMARK(BM_ProductInt8)
    ->ArgsProduct({{0, 1, 2}, {32, 256}, {0}})
    ->ArgNames({"layer", "batch", "product"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
#ifdef LOOM_BENCH_OPENBLAS
BENCHMARK(BM_OpenBLAS)->Apply(product_args);
#endif
BENCHMARK(BM_EigenProduct)->Apply(product_args);
BENCHMARK(BM_Direct)
    ->ArgsProduct({{0}, {32, 256}, {0, 1}})
    ->ArgNames({"layer", "batch", "product"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
