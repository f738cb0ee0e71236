// The notebook model's layers other than Conv2D, one at a time at the shapes
// the notebook gives them, and the whole model's training step and inference:
//
//   Dense 400 -> 512 ReLU (the first Dense) forward and backward    GFLOP/s
//   BatchNormalization train (forward + backward) and inference     elements/s
//   MaxPool2D 2x2/2 "same" forward and backward                     elements/s
//   sparse categorical cross-entropy, value and fused gradient      rows/s
//   the notebook model's train_step on 1 and 2 threads, and         images/s
//   predict of 4000 images in batches of 32 and 1000
//
// The image shapes are arg 0: 0 = 28x28x75, 1 = 14x14x50, 2 = 7x7x25 (the
// inputs of the notebook's BatchNormalization and MaxPool2D layers); the
// batch size is the last arg. Inputs are random; every benchmark runs once
// untimed first, so that the layer sizes its buffers before the timed loop.
// Counters are rates, so every figure reads as a ratio taken in the same run.
//
//   bench_layers [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include "notebook_model.hpp"

using namespace loom;

namespace {

// The per-sample inputs of the notebook's BatchNormalization and MaxPool2D layers.
const Shape kImageShapes[] = {{28, 28, 75}, {14, 14, 50}, {7, 7, 25}};
// The notebook's first Dense: 4x4x25 = 400 features in, 512 ReLU units out.
constexpr Index kDenseIn = 400, kDenseUnits = 512, kClasses = 10;

/// `value` per iteration, reported per second.
benchmark::Counter rate(double value) { return benchmark::Counter(value, benchmark::Counter::kIsIterationInvariantRate); }

Tensor<float> random_tensor(const Shape& shape, Rng& rng) {
  Tensor<float> t(shape);
  for (float& v : t) v = static_cast<float>(rng.uniform(-1, 1));
  return t;
}

/// A random batch of inputs for a built layer, and of gradients of its output.
struct Batch {
  Tensor<float> x, dy;
};

Batch build_with_batch(Layer<float>& layer, const Shape& per_sample, Index batch) {
  Rng rng(1);
  layer.build(per_sample, rng);
  Tensor<float> x = random_tensor(per_sample.with_batch(batch), rng);
  return {std::move(x), random_tensor(layer.output_shape().with_batch(batch), rng)};
}

/// Times forward(x, mode), after one untimed call that sizes the layer's buffers.
void time_forward(benchmark::State& state, Layer<float>& layer, const Batch& b, Mode mode) {
  layer.forward(b.x, mode);
  for (auto _ : state) benchmark::DoNotOptimize(layer.forward(b.x, mode).data());
}

/// Times backward alone (after one forward), or with `with_forward` a
/// Mode::Train forward and the backward together; one untimed round first.
void time_backward(benchmark::State& state, Layer<float>& layer, const Batch& b, bool with_forward) {
  layer.forward(b.x, Mode::Train);
  layer.backward(b.dy);
  for (auto _ : state) {
    if (with_forward) layer.forward(b.x, Mode::Train);
    benchmark::DoNotOptimize(layer.backward(b.dy).data());
  }
}

// --- Dense ---------------------------------------------------------------

Dense<float> notebook_dense() { return Dense<float>(DenseOptions(kDenseUnits).activation(Activation::ReLU)); }
double dense_gflop(Index batch) { return 2.0 * batch * kDenseIn * kDenseUnits * 1e-9; }

void BM_DenseForward(benchmark::State& state) {
  auto dense = notebook_dense();
  time_forward(state, dense, build_with_batch(dense, Shape{kDenseIn}, state.range(0)), Mode::Train);
  state.counters["GFLOP/s"] = rate(dense_gflop(state.range(0)));
}

void BM_DenseBackward(benchmark::State& state) {
  auto dense = notebook_dense();
  time_backward(state, dense, build_with_batch(dense, Shape{kDenseIn}, state.range(0)), false);
  state.counters["GFLOP/s"] = rate(2 * dense_gflop(state.range(0)));  // dW and dx: two GEMMs
}

// --- BatchNormalization and MaxPool2D, at the image shapes ----------------

/// Builds the layer for image shape range(0); a random batch of range(1) samples.
Batch image_batch(Layer<float>& layer, const benchmark::State& state) {
  return build_with_batch(layer, kImageShapes[state.range(0)], state.range(1));
}
/// Counts the input's elements, N*H*W*C per iteration.
void count_elements(benchmark::State& state) {
  state.counters["elements/s"] = rate(static_cast<double>(kImageShapes[state.range(0)].size() * state.range(1)));
}

void BM_BatchNormTrain(benchmark::State& state) {
  BatchNormalization<float> bn;
  time_backward(state, bn, image_batch(bn, state), true);
  count_elements(state);
}

void BM_BatchNormInference(benchmark::State& state) {
  BatchNormalization<float> bn;
  time_forward(state, bn, image_batch(bn, state), Mode::Inference);
  count_elements(state);
}

// As notebook_model.hpp configures it: MaxPool2D((2, 2), strides=2, padding="same").
MaxPool2D<float> notebook_pool() {
  return MaxPool2D<float>(MaxPool2DOptions({2, 2}).strides(Size2{2, 2}).padding(Padding::Same));
}

void BM_MaxPoolForward(benchmark::State& state) {
  auto pool = notebook_pool();
  time_forward(state, pool, image_batch(pool, state), Mode::Train);
  count_elements(state);
}

void BM_MaxPoolBackward(benchmark::State& state) {
  auto pool = notebook_pool();
  time_backward(state, pool, image_batch(pool, state), false);
  count_elements(state);
}

// --- Dropout, at the notebook's two places ------------------------------

/// range(0): 0 is Dropout(0.2) on conv2's output (14x14x50), 1 is
/// Dropout(0.3) on the first Dense's (512); range(1) the batch. Forward in
/// training (a fresh mask) and backward together.
void BM_DropoutTrain(benchmark::State& state) {
  const bool conv = state.range(0) == 0;
  Dropout<float> dropout(conv ? 0.2 : 0.3);
  const Shape shape = conv ? kImageShapes[1] : Shape{kDenseUnits};
  time_backward(state, dropout, build_with_batch(dropout, shape, state.range(1)), true);
  state.counters["elements/s"] = rate(static_cast<double>(shape.size() * state.range(1)));
}

// --- Loss ----------------------------------------------------------------

/// `n` random integer labels in [0, classes), as the model takes them.
Tensor<float> random_labels(Index n, Rng& rng) {
  Tensor<float> y(Shape{n});
  for (float& v : y) v = static_cast<float>(rng.below(kClasses));
  return y;
}

/// The model's loss as train_step calls it after the softmax output: mean
/// loss and the fused dL/dlogits = (p - y) / N, on [N, 10] probabilities.
void BM_SoftmaxCrossEntropy(benchmark::State& state) {
  const Index batch = state.range(0);
  const auto loss = make_loss<float>("sparse_categorical_crossentropy");
  Rng rng(3);
  Tensor<float> p(Shape{batch, kClasses}), grad;
  for (float& v : p) v = static_cast<float>(rng.uniform(0.01, 1));
  for (Index i = 0; i < batch; ++i) p.matrix().row(i) /= p.matrix().row(i).sum();  // rows of a softmax
  const Tensor<float> y = random_labels(batch, rng);
  loss->gradient(p, y, grad, true);
  for (auto _ : state) {
    benchmark::DoNotOptimize(loss->gradient(p, y, grad, true));
    benchmark::ClobberMemory();
  }
  state.counters["rows/s"] = rate(static_cast<double>(batch));
}

// --- The whole notebook model --------------------------------------------

Tensor<float> random_images(Index n, Rng& rng) {
  Tensor<float> x(Shape{n, 28, 28, 1});
  for (float& v : x) v = static_cast<float>(rng.uniform());
  return x;
}

/// Sets the thread count for one benchmark and puts the old one back.
class ThreadsFor {
 public:
  explicit ThreadsFor(int threads) : saved_(num_threads()) { set_num_threads(threads); }
  ~ThreadsFor() { set_num_threads(saved_); }
  ThreadsFor(const ThreadsFor&) = delete;
  ThreadsFor& operator=(const ThreadsFor&) = delete;

 private:
  int saved_;
};

/// train_step at batch range(0) on range(1) threads (0: the default).
void BM_NotebookTrainStep(benchmark::State& state) {
  const Index batch = state.range(0);
  const ThreadsFor threads(state.range(1) > 0 ? static_cast<int>(state.range(1)) : num_threads());
  auto model = examples::notebook_model<float>(0);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  Rng rng(2);
  const Tensor<float> x = random_images(batch, rng), y = random_labels(batch, rng);
  model.train_step(x, y);
  for (auto _ : state) benchmark::DoNotOptimize(model.train_step(x, y));
  state.counters["images/s"] = rate(static_cast<double>(batch));
}

/// predict() of 4000 images in batches of range(0).
void BM_NotebookInference(benchmark::State& state) {
  constexpr Index kImages = 4000;
  const Index batch = state.range(0);
  auto model = examples::notebook_model<float>(0);
  Rng rng(2);
  const Tensor<float> x = random_images(kImages, rng);
  model.predict(random_images(batch, rng), batch);  // sizes every buffer for `batch`
  for (auto _ : state) benchmark::DoNotOptimize(model.predict(x, batch).data());
  state.counters["images/s"] = rate(static_cast<double>(kImages));
}

}  // namespace

BENCHMARK(BM_DenseForward)->Arg(32)->Arg(256)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DenseBackward)->Arg(32)->Arg(256)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BatchNormTrain)->ArgsProduct({{0, 1, 2}, {32, 256}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BatchNormInference)->ArgsProduct({{0, 1, 2}, {32, 256}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MaxPoolForward)->ArgsProduct({{0, 1, 2}, {32, 256}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MaxPoolBackward)->ArgsProduct({{0, 1, 2}, {32, 256}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DropoutTrain)->ArgsProduct({{0, 1}, {32, 256}})->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SoftmaxCrossEntropy)->Arg(32)->Arg(256)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_NotebookTrainStep)
    ->ArgsProduct({{32}, {1, 2}})
    ->ArgNames({"batch", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_NotebookInference)->Arg(32)->Arg(1000)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
