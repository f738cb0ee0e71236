// Conv2D forward at the notebook's three conv shapes, beside a plain Eigen
// GEMM of the same M x K x N (the ceiling for that shape), and the notebook
// model's whole training step. GFLOP/s and images/s are counters, so every
// figure reads as a ratio taken in the same run.
//
//   bench_conv2d [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include "notebook_model.hpp"

using namespace loom;

namespace {

struct ConvShape {
  Index h, w, cin, cout;
};
// The notebook's conv layers: 28x28x1 -> 75, 14x14x75 -> 50, 7x7x50 -> 25, all 3x3 same.
const ConvShape kShapes[] = {{28, 28, 1, 75}, {14, 14, 75, 50}, {7, 7, 50, 25}};

double conv_flops(const ConvShape& s, Index batch) { return 2.0 * batch * s.h * s.w * 9 * s.cin * s.cout; }

void BM_Conv2DForward(benchmark::State& state) {
  const ConvShape s = kShapes[state.range(0)];
  const Index batch = state.range(1);
  Conv2D<float> conv(Conv2DOptions(s.cout, {3, 3}).padding(Padding::Same).activation(Activation::ReLU));
  Rng rng(1);
  conv.build({s.h, s.w, s.cin}, rng);
  Tensor<float> x(Shape{batch, s.h, s.w, s.cin});
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (auto _ : state) benchmark::DoNotOptimize(conv.forward(x, Mode::Train).data());
  state.counters["GFLOP/s"] = benchmark::Counter(conv_flops(s, batch) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_GemmCeiling(benchmark::State& state) {
  const ConvShape s = kShapes[state.range(0)];
  const Index batch = state.range(1);
  const Index m = batch * s.h * s.w, k = 9 * s.cin, n = s.cout;
  Tensor<float> a(Shape{m, k}, 0.5f), b(Shape{k, n}, 0.25f), c(Shape{m, n});
  for (auto _ : state) {
    c.matrix().noalias() = a.matrix() * b.matrix();
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * k * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_NotebookTrainStep(benchmark::State& state) {
  const Index batch = state.range(0);
  auto model = examples::notebook_model<float>(0);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  Tensor<float> x(Shape{batch, 28, 28, 1}), y(Shape{batch});
  Rng rng(2);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (float& v : y) v = static_cast<float>(rng.below(10));
  model.train_step(x, y);
  for (auto _ : state) benchmark::DoNotOptimize(model.train_step(x, y));
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_Conv2DForward)->ArgsProduct({{0, 1, 2}, {32}})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GemmCeiling)->ArgsProduct({{0, 1, 2}, {32}})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_NotebookTrainStep)->Arg(32)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
