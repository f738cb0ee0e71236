// A training step allocates nothing once the first batch has run.
//
// This binary counts every allocation (allocation_counter.hpp replaces
// operator new and glibc's malloc family). It is a binary of its own because
// the replacement would fight a sanitizer's, and scripts/run-sanitized-tests
// leaves it out.
#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "notebook_model.hpp"
// After Eigen: its mm_malloc.h declares posix_memalign first.
#include "allocation_counter.hpp"

using namespace loom;

namespace {

/// n random images with random labels (of 10), from Rng(seed).
struct Batch {
  Tensor<float> x, y;
  explicit Batch(std::uint64_t seed, Index n = 32) : x(Shape{n, 28, 28, 1}), y(Shape{n}) {
    Rng rng(seed);
    for (float& v : x) v = static_cast<float>(rng.uniform());
    for (float& v : y) v = static_cast<float>(rng.below(10));
  }
};

}  // namespace

/// Heap allocations in six training steps of `model`, after a first step has sized every buffer.
static long allocations_after_first_step(Sequential<float>& model) {
  const Batch a(1), b(2);
  model.train_step(a.x, a.y);
  AllocationProbe probe;
  for (int step = 0; step < 3; ++step) {
    model.train_step(b.x, b.y);
    model.train_step(a.x, a.y);
  }
  return probe.count();
}

TEST_CASE("the probe sees allocations through operator new and through malloc") {
  AllocationProbe probe;
  auto* v = new std::vector<int>(1000);
  void* m = std::malloc(64);
  Tensor<float> t(Shape{1000});
  CHECK(probe.count() >= 3);
  std::free(m);
  delete v;
}

TEST_CASE("a training step of the notebook's model allocates nothing after the first batch") {
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    for (const std::string optimizer : {"rmsprop", "adam", "sgd"}) {
      CAPTURE(threads);
      CAPTURE(optimizer);
      set_num_threads(threads);
      auto model = examples::notebook_model<float>(3);
      model.compile("sparse_categorical_crossentropy", {"accuracy"}, optimizer);
      CHECK(allocations_after_first_step(model) == 0);
    }
  }
  set_num_threads(saved);
}

TEST_CASE("under mixed_bfloat16 a training step and inference allocate nothing once warm either") {
  if (!detail::bf16_supported()) {
    MESSAGE("skipped: " << detail::bf16_unsupported_reason());
    return;
  }
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    set_num_threads(threads);
    auto model = examples::notebook_model<float>(3);
    model.set_policy(Precision::MixedBFloat16);
    model.compile("sparse_categorical_crossentropy", {"accuracy"});
    CHECK(allocations_after_first_step(model) == 0);
    const Batch data(5, 64);  // two chunks of 32, which the layers split across the threads statically
    model.evaluate(data.x, data.y, 32);
    AllocationProbe probe;
    model.evaluate(data.x, data.y, 32);
    model.evaluate(data.x, data.y, 32);
    CHECK(probe.count() == 0);
  }
  set_num_threads(saved);
}

TEST_CASE("an int8 model's inference allocates nothing once warm") {
  if (!detail::int8_supported()) {
    MESSAGE("skipped: " << detail::int8_unsupported_reason());
    return;
  }
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    set_num_threads(threads);
    auto model = examples::notebook_model<float>(3);
    // Two chunks of 32: the int8 layers themselves split each across the
    // threads, statically. (With more chunks each thread would run whole
    // chunks on its own copy, taking them as it comes free, so which copy
    // first meets which size would depend on the scheduling.)
    const Batch data(5, 64);
    auto int8 = quantize(model, data.x);
    int8.compile("sparse_categorical_crossentropy", {"accuracy"});
    int8.evaluate(data.x, data.y, 32);
    AllocationProbe probe;
    int8.evaluate(data.x, data.y, 32);
    int8.evaluate(data.x, data.y, 32);
    CHECK(probe.count() == 0);
  }
  set_num_threads(saved);
}

TEST_CASE("a training step of the improved recipe allocates nothing either: augmentation, schedule, decay, clipping") {
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    set_num_threads(threads);
    examples::NotebookModelOptions augmented;
    augmented.augment = true;
    augmented.translation = 0.1;  // every augmentation layer the search tried, not only the recipe's flip
    augmented.erasing = 1;
    auto model = examples::notebook_model<float>(3, 10, augmented);
    auto loss = make_loss<float>("sparse_categorical_crossentropy");
    loss->set_label_smoothing(0.1);
    model.compile(std::move(loss),
                  std::make_unique<AdamW<float>>(AdamW<float>::defaults().global_clipnorm(1.0).learning_rate(
                      std::make_shared<CosineDecay>(0.0, 100, 0.0, 2e-3, 10))),
                  {"accuracy"});
    CHECK(allocations_after_first_step(model) == 0);
  }
  set_num_threads(saved);
}

TEST_CASE("a training step with weight regularizers, LayerNormalization, SpatialDropout2D and GaussianNoise allocates nothing") {
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    set_num_threads(threads);
    Sequential<float> model(3);
    model.add(Conv2D<float>(Conv2DOptions(8, {3, 3}).activation(Activation::ReLU).kernel_regularizer(L2(1e-3)).bias_regularizer(L1(1e-4))),
              Shape{28, 28, 1});
    model.add(SpatialDropout2D<float>(0.2));
    model.add(BatchNormalization<float>(BatchNormalizationOptions().gamma_regularizer(L2(1e-3))));
    model.add(MaxPool2D<float>(MaxPool2DOptions({2, 2})));
    model.add(LayerNormalization<float>(LayerNormalizationOptions().axis({2, 3}).beta_regularizer(L1L2(1e-4, 1e-3))));
    model.add(GaussianNoise<float>(0.1));
    model.add(Flatten<float>());
    model.add(LayerNormalization<float>());
    model.add(Dense<float>(DenseOptions(10).activation(Activation::Softmax).kernel_regularizer(L1L2(1e-4, 1e-3))));
    model.compile("sparse_categorical_crossentropy", {"accuracy"}, "adam");
    CHECK(allocations_after_first_step(model) == 0);
  }
  set_num_threads(saved);
}

TEST_CASE("a functional model's training step and inference allocate nothing once warm: fan-out, Add, Concatenate, a shared layer") {
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    set_num_threads(threads);
    const auto conv = [](Index filters) {
      return Conv2D<float>(Conv2DOptions(filters, {3, 3}).padding(Padding::Same).activation(Activation::ReLU));
    };
    Symbol<float> in = Input<float>({28, 28, 1});
    Symbol<float> x = call(conv(16), in);
    Symbol<float> y = call(BatchNormalization<float>(), call(conv(16), x));
    x = call(MaxPool2D<float>(MaxPool2DOptions({2, 2}).strides(Size2{2, 2})), call(Add<float>(), {x, y}));
    x = call(Concatenate<float>(), {call(conv(8), x), call(Dropout<float>(0.2), x)});
    x = call(Flatten<float>(), x);
    auto hidden = shared(Dense<float>(DenseOptions(32).activation(Activation::ReLU)));
    Symbol<float> h = call(hidden, x);
    x = call(Multiply<float>(), {h, call(hidden, call(Dense<float>(DenseOptions(x.shape()[0])), x))});
    Functional<float> model(in, call(Dense<float>(DenseOptions(10).activation(Activation::Softmax)), x), 3);
    model.compile("sparse_categorical_crossentropy", {"accuracy"}, "adam");
    CHECK(allocations_after_first_step(model) == 0);
    const Batch a(1);
    model.predict(a.x);
    Tensor<float> out;
    const Predictor<float> served(model);
    served.predict(a.x, out, 8);
    AllocationProbe probe;
    served.predict(a.x, out, 8);
    CHECK(probe.count() == 0);
  }
  set_num_threads(saved);
}

TEST_CASE("inference allocates nothing after the first batch of a size") {
  auto model = examples::notebook_model<float>(3);
  model.compile("categorical_crossentropy", {"accuracy"});
  const Batch a(1);
  Tensor<float> onehot(Shape{32, 10});
  for (Index i = 0; i < 32; ++i) onehot.at(i, static_cast<Index>(a.y[i])) = 1;
  model.evaluate(a.x, onehot);
  AllocationProbe probe;
  model.evaluate(a.x, onehot);
  CHECK(probe.count() == 0);
}

TEST_CASE("inference on two threads' copies of the layers allocates nothing after the first call") {
  // 150 samples in chunks of 8: each thread runs whole chunks on its own
  // copy of the layers (Sequential::infer_chunks), the last chunk smaller.
  const int saved = num_threads();
  set_num_threads(2);
  auto model = examples::notebook_model<float>(3);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  const Batch data(5, 150);
  // The threads take chunks as they come free: a copy whose thread was late
  // in one call may meet a full chunk first in the next. Warm with several.
  for (int warm = 0; warm < 5; ++warm) model.evaluate(data.x, data.y, 8);
  {
    AllocationProbe probe;
    model.evaluate(data.x, data.y, 8);
    model.evaluate(data.x, data.y, 8);
    CHECK(probe.count() == 0);
  }
  set_num_threads(saved);
}

TEST_CASE("a Predictor's calls allocate nothing once its pool has a session for each caller") {
  // Requests of one image from two threads at once (a server's workers, one
  // loom thread each), into each caller's own output tensor; and from one
  // thread, batches of the sizes it has seen, on two loom threads.
  const int saved = num_threads();
  auto model = examples::notebook_model<float>(3);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  const Batch data(6, 64);
  const Predictor<float> served(model);
  std::vector<Tensor<float>> image(2), out(2);
  for (int t = 0; t < 2; ++t) Inference<float>::slice(data.x, t, 1, image[std::size_t(t)]);
  // Two clients at once, `calls` calls each; the allocations made while both call, if `probe`
  // (counted from inside the threads once both run: starting a std::thread allocates).
  const auto clients = [&](int calls, const AllocationProbe* probe) {
    std::atomic<int> ready{0};
    std::atomic<long> during{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        set_num_threads(1);
        ++ready;
        while (ready.load() < 2) std::this_thread::yield();
        const long before = probe ? probe->count() : 0;
        for (int i = 0; i < calls; ++i) served.predict(image[std::size_t(t)], out[std::size_t(t)], 1);
        if (probe) during += probe->count() - before;
      });
    }
    for (auto& th : threads) th.join();
    return during.load();
  };
  for (int tries = 0; tries < 20 && served.sessions() < 2; ++tries) clients(50, nullptr);  // until both ran at once
  REQUIRE(served.sessions() == 2);
  {
    AllocationProbe probe;
    CHECK(clients(100, &probe) == 0);
  }
  set_num_threads(2);
  Tensor<float> y;
  // A thread of the session may take none of a call's chunks (Predictor::predict): warm with several calls.
  for (int warm = 0; warm < 10; ++warm) {
    served.predict(data.x, y, 8);
    served.predict(data.x, y, 32);
  }
  {
    AllocationProbe probe;
    served.predict(data.x, y, 8);
    served.predict(data.x, y, 32);
    CHECK(probe.count() == 0);
  }
  set_num_threads(saved);
}

TEST_CASE("fit's batches allocate nothing after the first: gather, step, logs and callbacks") {
  auto model = examples::notebook_model<float>(3);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  const Batch data(4, 160);
  // Counts from the end of batch 2 to the end of batch 5 (of 5): three whole
  // batches of fit's loop, each with on_batch_end and its running logs.
  long counted = -1;
  double seen_loss = 0;
  auto probe = std::make_shared<LambdaCallback<float>>();
  probe->on_batch_end_fn = [&](Model<float>&, long batch, const Logs& logs) {
    seen_loss += logs["loss"];
    if (batch == 2) {
      allocations = 0;
      armed = true;
    } else if (batch == 5) {
      armed = false;
      counted = allocations.load();
    }
  };
  model.fit(data.x, data.y, FitOptions<float>().epochs(1).batch_size(32).verbose(0).callback(probe));
  CHECK(seen_loss > 0);
  CHECK(counted == 0);
}
