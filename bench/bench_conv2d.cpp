// The notebook's three Conv2D layers (3x3, same padding, ReLU) at batch 32
// and 256: forward, backward to the weights, the whole backward (weights and
// input), im2col and col2im alone, Winograd against im2col + GEMM; beside them a plain Eigen GEMM of each
// product's M x N x K (the ceiling for that shape, Eigen splitting it across
// the threads itself), the forward product split by rows across threads as
// Conv2D splits it (the GEMM alone, without im2col and the epilogue), and a
// naive direct convolution (the floor). Every
// figure is a GFLOP/s (or GB/s) counter, so each reads as a ratio taken in
// the same run. Backward to the input alone is the whole backward less the
// weights-only one (docs/performance.md reads the table).
//
//   bench_conv2d [--benchmark_filter=...] [--benchmark_repetitions=5]
//
// Arguments: /layer/batch, layer 0 = 28x28x1 -> 75, 1 = 14x14x75 -> 50,
// 2 = 7x7x50 -> 25.
#include <benchmark/benchmark.h>

#include <loom/loom.hpp>

#include "conv_shapes.hpp"

using namespace loom;

namespace {

using bench::ConvShape;
using bench::kShapes;

/// One conv layer of the notebook at a batch size, with random input and
/// output gradient, after one forward and backward (buffers sized).
struct ConvCase {
  ConvShape s;
  Index batch;
  Conv2D<float> conv;
  Tensor<float> x, dy;

  explicit ConvCase(const benchmark::State& state)
      : s(kShapes[state.range(0)]),
        batch(state.range(1)),
        conv(Conv2DOptions(s.cout, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)) {
    Rng rng(1);
    conv.build({s.h, s.w, s.cin}, rng);
    x = Tensor<float>(Shape{batch, s.h, s.w, s.cin});
    dy = Tensor<float>(Shape{batch, s.h, s.w, s.cout});
    for (float& v : x) v = static_cast<float>(rng.uniform());
    for (float& v : dy) v = static_cast<float>(rng.uniform(-1, 1));
    conv.forward(x, Mode::Train);
    conv.backward(dy);
  }
  Index rows() const { return batch * s.h * s.w; }  // M of the forward GEMM
  Index patch() const { return 9 * s.cin; }         // K of the forward GEMM
  double gemm_flops() const { return 2.0 * static_cast<double>(rows() * patch() * s.cout); }
  detail::Window2D window() const { return {batch, s.h, s.w, s.cin, 3, 3, 1, 1, 1, 1, s.h, s.w}; }
};

void rate(benchmark::State& state, const char* name, double per_iteration) {
  state.counters[name] = benchmark::Counter(per_iteration, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Conv2DForward(benchmark::State& state) {
  ConvCase c(state);
  for (auto _ : state) benchmark::DoNotOptimize(c.conv.forward(c.x, Mode::Train).data());
  rate(state, "GFLOP/s", c.gemm_flops() * 1e-9);
}

void BM_Conv2DForwardInference(benchmark::State& state) {
  ConvCase c(state);
  for (auto _ : state) benchmark::DoNotOptimize(c.conv.forward(c.x, Mode::Inference).data());
  rate(state, "GFLOP/s", c.gemm_flops() * 1e-9);
  state.SetLabel(c.conv.algorithm() == ConvAlgorithm::Winograd ? "winograd" : "im2col");
}

/// Inference forward and the whole backward with the algorithm forced
/// (/algorithm: 0 = im2col + GEMM, 1 = Winograd F(4x4, 3x3)), for the rule
/// ConvAlgorithm::Auto follows. GFLOP/s are the direct convolution's flops
/// over the time, so Winograd's "effective" rate can pass the GEMM's.
void BM_Conv2DAlgorithm(benchmark::State& state) {
  ConvCase c(state);
  c.conv.set_algorithm(state.range(2) == 1 ? ConvAlgorithm::Winograd : ConvAlgorithm::Im2col);
  const bool backward = state.range(3) == 1;
  if (backward) c.conv.forward(c.x, Mode::Train);
  for (auto _ : state) {
    if (backward) {
      benchmark::DoNotOptimize(c.conv.backward(c.dy).data());
    } else {
      benchmark::DoNotOptimize(c.conv.forward(c.x, Mode::Inference).data());
    }
  }
  rate(state, "GFLOP/s", (backward ? 2 : 1) * c.gemm_flops() * 1e-9);
}

void BM_Conv2DBackwardWeights(benchmark::State& state) {
  ConvCase c(state);
  c.conv.set_needs_input_grad(false);
  for (auto _ : state) benchmark::DoNotOptimize(c.conv.backward(c.dy).data());
  rate(state, "GFLOP/s", c.gemm_flops() * 1e-9);
}

void BM_Conv2DBackward(benchmark::State& state) {  // weights and input
  ConvCase c(state);
  for (auto _ : state) benchmark::DoNotOptimize(c.conv.backward(c.dy).data());
  rate(state, "GFLOP/s", 2 * c.gemm_flops() * 1e-9);
}

void BM_Im2col(benchmark::State& state) {
  ConvCase c(state);
  const detail::Window2D g = c.window();
  Tensor<float> col(Shape{c.rows(), c.patch()});
  for (auto _ : state) {
    detail::parallel(detail::threads_for(c.batch), [&](int t, int nt) {
      const detail::Range r = detail::split(c.batch, t, nt);
      detail::im2col(c.x.data(), g, r.begin, r.end, col.data() + r.begin * c.s.h * c.s.w * c.patch());
    });
    benchmark::DoNotOptimize(col.data());
  }
  rate(state, "GB/s", static_cast<double>(col.size()) * sizeof(float) * 1e-9);
}

void BM_Col2im(benchmark::State& state) {
  ConvCase c(state);
  const detail::Window2D g = c.window();
  Tensor<float> col(Shape{c.rows(), c.patch()}, 0.5f), dx(c.x.shape());
  for (auto _ : state) {
    detail::parallel(detail::threads_for(c.batch), [&](int t, int nt) {
      const detail::Range r = detail::split(c.batch, t, nt);
      detail::col2im(col.data() + r.begin * c.s.h * c.s.w * c.patch(), g, r.begin, r.end, dx.data());
    });
    benchmark::DoNotOptimize(dx.data());
  }
  rate(state, "GB/s", static_cast<double>(col.size()) * sizeof(float) * 1e-9);
}

/// The ceiling: Eigen's own GEMM (all threads) on matrices of the shape of
/// one of the layer's products. product 0: forward col[M,K] * W[K,N];
/// 1: weights colT * dz; 2: input dz * WT.
void BM_GemmCeiling(benchmark::State& state) {
  const ConvShape s = kShapes[state.range(0)];
  const Index rows = state.range(1) * s.h * s.w, k = 9 * s.cin, n = s.cout;
  Tensor<float> col(Shape{rows, k}, 0.5f), w(Shape{k, n}, 0.25f), y(Shape{rows, n}, 0.1f), dw(Shape{k, n});
  Tensor<float> dcol(Shape{rows, k});
  for (auto _ : state) {
    switch (state.range(2)) {
      case 0: y.matrix().noalias() = col.matrix() * w.matrix(); break;
      case 1: dw.matrix().noalias() = col.matrix().transpose() * y.matrix(); break;
      default: dcol.matrix().noalias() = y.matrix() * w.matrix().transpose(); break;
    }
    benchmark::ClobberMemory();
  }
  rate(state, "GFLOP/s", 2.0 * static_cast<double>(rows * k * n) * 1e-9);
}

/// The other ceiling: the forward product with the rows split across the
/// threads, each running Eigen's kernel on one core through detail::Gemm, as
/// Conv2D does, but with no im2col and no epilogue. Conv2D's forward against
/// this is what im2col and the epilogue cost.
void BM_GemmRowsPerThread(benchmark::State& state) {
  const ConvShape s = kShapes[state.range(0)];
  const Index rows = state.range(1) * s.h * s.w, k = 9 * s.cin, n = s.cout;
  Tensor<float> col(Shape{rows, k}, 0.5f), w(Shape{k, n}, 0.25f), y(Shape{rows, n});
  std::vector<detail::Gemm<float>> gemm(static_cast<std::size_t>(num_threads()));
  for (auto _ : state) {
    detail::parallel(num_threads(), [&](int t, int nt) {
      const detail::Range r = detail::split(rows, t, nt);
      gemm[static_cast<std::size_t>(t)](r.size(), n, k, {col.data() + r.begin * k, k}, {w.data(), n},
                                        y.data() + r.begin * n, n);
    });
    benchmark::ClobberMemory();
  }
  rate(state, "GFLOP/s", 2.0 * static_cast<double>(rows * k * n) * 1e-9);
}

/// The floor: a direct convolution, seven plain loops, samples across threads.
void BM_NaiveDirectConv(benchmark::State& state) {
  ConvCase c(state);
  const ConvShape s = c.s;
  const Tensor<float>& kernel = *c.conv.parameters()[0].value;
  Tensor<float> y(Shape{c.batch, s.h, s.w, s.cout});
  for (auto _ : state) {
#pragma omp parallel for schedule(static)
    for (Index n = 0; n < c.batch; ++n) {
      for (Index oh = 0; oh < s.h; ++oh) {
        for (Index ow = 0; ow < s.w; ++ow) {
          for (Index o = 0; o < s.cout; ++o) {
            float sum = 0;
            for (Index i = 0; i < 3; ++i) {
              for (Index j = 0; j < 3; ++j) {
                const Index ih = oh + i - 1, iw = ow + j - 1;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                for (Index ci = 0; ci < s.cin; ++ci) {
                  sum += c.x[((n * s.h + ih) * s.w + iw) * s.cin + ci] * kernel[((i * 3 + j) * s.cin + ci) * s.cout + o];
                }
              }
            }
            y[((n * s.h + oh) * s.w + ow) * s.cout + o] = sum;
          }
        }
      }
    }
    benchmark::DoNotOptimize(y.data());
  }
  rate(state, "GFLOP/s", c.gemm_flops() * 1e-9);
}

void conv_args(benchmark::internal::Benchmark* b) {
  b->ArgsProduct({{0, 1, 2}, {32, 256}})->ArgNames({"layer", "batch"})->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK(BM_Conv2DForward)->Apply(conv_args);
BENCHMARK(BM_Conv2DForwardInference)->Apply(conv_args);
BENCHMARK(BM_Conv2DAlgorithm)
    ->ArgsProduct({{1, 2}, {32, 256}, {0, 1}, {0, 1}})
    ->ArgNames({"layer", "batch", "algorithm", "backward"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv2DBackwardWeights)->Apply(conv_args);
BENCHMARK(BM_Conv2DBackward)->Apply(conv_args);
BENCHMARK(BM_Im2col)->Apply(conv_args);
BENCHMARK(BM_Col2im)->Apply(conv_args);
BENCHMARK(BM_GemmCeiling)
    ->ArgsProduct({{0, 1, 2}, {32, 256}, {0, 1, 2}})
    ->ArgNames({"layer", "batch", "product"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GemmRowsPerThread)->Apply(conv_args);
BENCHMARK(BM_NaiveDirectConv)->Apply(conv_args);

BENCHMARK_MAIN();
