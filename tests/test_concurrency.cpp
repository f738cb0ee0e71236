// One Predictor called from many threads at once (model/predictor.hpp).
//
// A binary of its own so that scripts/run-tsan-tests can build it alone under
// ThreadSanitizer (clang, loom without OpenMP: every call runs on its caller's
// thread, since libgomp is not instrumented). The outputs are compared bit for
// bit with what one thread gives for the very same calls, in every build.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include <loom/loom.hpp>

#include "notebook_model.hpp"
#include "test_support.hpp"

using namespace loom;
using loom::examples::notebook_model;
using loom::testing::random_images;
using loom::testing::TempDir;

namespace {

/// The notebook's model after two steps on random images: its moving
/// statistics and weights away from their initial values.
Sequential<float> trained_model(std::uint64_t seed, Tensor<float>& x, Tensor<float>& y) {
  auto model = notebook_model<float>(seed);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  random_images(64, seed + 100, x, y);
  model.train_step(x, y);
  model.train_step(x, y);
  return model;
}

/// One predict call: images [start, start + n) at batch_size.
struct Call {
  Index start, n, batch_size;
};

/// `count` calls of mixed sizes over 64 images, from Rng(seed): mostly
/// single images (a server's requests), some small batches, a few larger
/// than a chunk (32).
std::vector<Call> mixed_calls(int count, std::uint64_t seed) {
  static const Index sizes[] = {1, 1, 1, 1, 2, 3, 4, 7, 8, 16, 33};
  Rng rng(seed);
  std::vector<Call> calls;
  for (int i = 0; i < count; ++i) {
    const Index n = sizes[rng.below(sizeof(sizes) / sizeof(sizes[0]))];
    const Index start = static_cast<Index>(rng.below(static_cast<std::uint64_t>(64 - n + 1)));
    const Index batch = rng.below(3) == 0 ? 1 + static_cast<Index>(rng.below(8)) : 32;
    calls.push_back({start, n, batch});
  }
  return calls;
}

/// Runs `calls` on `predictor` into one output tensor per call.
void run_calls(const Predictor<float>& predictor, const Tensor<float>& x, const std::vector<Call>& calls,
               std::vector<Tensor<float>>& out) {
  out.resize(calls.size());
  Tensor<float> xb;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    Inference<float>::slice(x, calls[i].start, calls[i].n, xb);
    predictor.predict(xb, out[i], calls[i].batch_size);
  }
}

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0;
}

}  // namespace

TEST_CASE("one Predictor serves 8 threads at once, 500 calls each of mixed batch sizes: bit for bit one thread's") {
  const int saved = num_threads();
  Tensor<float> x, y;
  auto model = trained_model(5, x, y);
  const Predictor<float> served(model);
  constexpr int kThreads = 8, kCalls = 500;
  std::vector<std::vector<Call>> calls;
  for (int t = 0; t < kThreads; ++t) calls.push_back(mixed_calls(kCalls, 40 + std::uint64_t(t)));
  // Each thread's calls on this thread alone first, one loom thread: the truth.
  set_num_threads(1);
  std::vector<std::vector<Tensor<float>>> alone(kThreads), together(kThreads);
  for (int t = 0; t < kThreads; ++t) run_calls(served, x, calls[std::size_t(t)], alone[std::size_t(t)]);
  REQUIRE(served.sessions() == 1);
  // ... which is the model's own predict's for the same calls (bit for bit with loom's own GEMM).
  float worst = 0;
  for (std::size_t i = 0; i < calls[0].size(); ++i) {
    Tensor<float> xb;
    Inference<float>::slice(x, calls[0][i].start, calls[0][i].n, xb);
    const Tensor<float> expected = model.predict(xb, calls[0][i].batch_size);
    REQUIRE(expected.shape() == alone[0][i].shape());
    for (Index e = 0; e < expected.size(); ++e) worst = std::max(worst, std::abs(expected[e] - alone[0][i][e]));
  }
#ifdef LOOM_OWN_SGEMM
  CHECK(worst == 0);
#else
  CHECK(worst <= 1e-6f);
#endif
  // The same calls from 8 threads at once, each with one loom thread (a
  // server's workers), then each with two: a call of more than two chunks
  // then runs on its session's own threads' copies, which share the weights too.
  for (const int inner : {1, 2}) {
    CAPTURE(inner);
#ifndef _OPENMP
    if (inner > 1) break;  // (no threads inside a call: the same as one)
#endif
    std::vector<std::thread> clients;
    std::atomic<int> ready{0};
    for (int t = 0; t < kThreads; ++t) {
      clients.emplace_back([&, t] {
        set_num_threads(inner);
        ++ready;
        while (ready.load() < kThreads) std::this_thread::yield();  // all start at once
        run_calls(served, x, calls[std::size_t(t)], together[std::size_t(t)]);
      });
    }
    for (auto& c : clients) c.join();
    int differing = 0;
    for (int t = 0; t < kThreads; ++t) {
      for (int i = 0; i < kCalls; ++i) {
        if (!same_bits(together[std::size_t(t)][std::size_t(i)], alone[std::size_t(t)][std::size_t(i)])) ++differing;
      }
    }
    CHECK(differing == 0);
    // The pool made no more sessions than there were callers.
    CHECK(served.sessions() >= 1);
    CHECK(served.sessions() <= std::size_t(kThreads));
  }
  set_num_threads(saved);
}

TEST_CASE("a model is saved and trained on one thread while others predict from its Predictor") {
  const int saved_threads = num_threads();
  Tensor<float> x, y;
  auto model = trained_model(8, x, y);
  const Predictor<float> served(model);
  const std::vector<Call> calls = mixed_calls(200, 3);
  set_num_threads(1);
  std::vector<Tensor<float>> alone;
  run_calls(served, x, calls, alone);
  const Tensor<float> before = model.predict(x, 32);

  TempDir dir;
  constexpr int kClients = 4;
  std::vector<std::vector<Tensor<float>>> together(kClients);
  std::atomic<bool> saved{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      set_num_threads(1);
      run_calls(served, x, calls, together[std::size_t(t)]);
    });
  }
  threads.emplace_back([&] {
    set_num_threads(1);
    model.save(dir.file("model.loom"));  // const: reads the model's weights, not the Predictor's
    saved = true;
    model.train_step(x, y);  // moves the model's weights; the Predictor keeps its own
  });
  for (auto& t : threads) t.join();
  REQUIRE(saved);
  for (int t = 0; t < kClients; ++t) {
    for (std::size_t i = 0; i < calls.size(); ++i) CHECK(same_bits(together[std::size_t(t)][i], alone[i]));
  }
  // The file holds the model as it was when saved: it predicts what the model did then.
  auto loaded = Sequential<float>::load(dir.file("model.loom"));
  CHECK(same_bits(loaded.predict(x, 32), before));
  // The step reached the model and not the Predictor.
  CHECK(!same_bits(model.predict(x, 32), before));
  Tensor<float> again;
  served.predict(x, again, 32);
  CHECK(same_bits(again, served.predict(x, 32)));
  set_num_threads(saved_threads);
}

TEST_CASE("a session's layers read the Predictor's weights: none of their own, and they refuse to train") {
  // Layer::share_parameters_of for each layer type with parameters: the
  // copy's output is the source's bit for bit, its own tensors are freed.
  Rng rng(3);
  Tensor<float> x(Shape{4, 10, 10, 12});
  for (float& v : x) v = static_cast<float>(rng.uniform() - 0.5);
  const auto check_shared = [&](Layer<float>& source, const Shape& in) {
    CAPTURE(source.type());
    Rng build_rng(9);
    source.build(in, build_rng);
    for (const auto& p : source.parameters()) {  // away from their initial values (BatchNormalization's are 0 and 1)
      for (float& v : *p.value) v = static_cast<float>(0.5 + 0.5 * rng.uniform());
    }
    source.seal_parameters();
    std::unique_ptr<Layer<float>> copy = source.inference_copy();
    REQUIRE(copy != nullptr);
    copy->build(in, build_rng);
    source.copy_settings_to(*copy);
    REQUIRE(copy->share_parameters_of(source));
    for (const auto& p : copy->parameters()) CHECK(p.value->size() == 0);
    Tensor<float> input(in.with_batch(4));
    for (float& v : input) v = static_cast<float>(rng.uniform() - 0.5);
    const Tensor<float> expected = source.forward(input, Mode::Inference);
    CHECK(same_bits(copy->forward(input, Mode::Inference), expected));
    CHECK_THROWS_AS(copy->forward(input, Mode::Train), ConfigError);
    // A source of another type or input is not shared.
    Dense<float> other(DenseOptions(3));
    Rng r(1);
    other.build(Shape{5}, r);
    CHECK(!source.inference_copy()->share_parameters_of(other));
  };
  Conv2D<float> winograd(Conv2DOptions(16, {3, 3}).padding(Padding::Same).activation(Activation::ReLU));
  check_shared(winograd, Shape{10, 10, 12});
  CHECK(winograd.algorithm() == ConvAlgorithm::Winograd);
  Conv2D<float> direct(Conv2DOptions(8, {3, 3}));
  check_shared(direct, Shape{10, 10, 3});
  CHECK(direct.algorithm() == ConvAlgorithm::Direct);
  Conv2D<float> im2col(Conv2DOptions(8, {2, 2}).strides({2, 2}));
  check_shared(im2col, Shape{10, 10, 12});
  CHECK(im2col.algorithm() == ConvAlgorithm::Im2col);
  Dense<float> dense(DenseOptions(20).activation(Activation::Softmax));
  check_shared(dense, Shape{30});
  BatchNormalization<float> bn(BatchNormalizationOptions{});
  check_shared(bn, Shape{6, 6, 5});
}
