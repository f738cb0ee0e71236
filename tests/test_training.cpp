// Losses, optimizers, and Sequential: gradient checks of both losses, two
// optimizer steps against golden values (tests/golden/optimizer_steps.py),
// the notebook model's summary, the errors a user meets, and a short
// end-to-end training run on a synthetic problem.
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "gradient_check.hpp"
#include "notebook_model.hpp"
#include "test_support.hpp"

using namespace loom;
using loom::testing::compare;
using loom::testing::random_fill;

namespace {

using loom::examples::notebook_model;

/// Random probabilities: rows of a softmax of random logits.
Tensor<double> random_probs(Index n, Index k, Rng& rng) {
  Tensor<double> p(Shape{n, k});
  random_fill(p, rng, -2, 2);
  detail::softmax_rows(p.data(), n, k);
  return p;
}

}  // namespace

// ---------------------------------------------------------------- losses

TEST_CASE("gradient check: both cross-entropies, w.r.t. probabilities and fused w.r.t. logits") {
  Rng rng(11);
  const Index n = 5, k = 4;
  Tensor<double> onehot(Shape{n, k}), labels(Shape{n});
  for (Index i = 0; i < n; ++i) {
    labels[i] = static_cast<double>(i % k);
    onehot(i, i % k) = 1;
  }
  CategoricalCrossentropy<double> cce;
  SparseCategoricalCrossentropy<double> scce;
  for (const auto& [loss, y] : {std::pair<const Loss<double>*, Tensor<double>*>{&cce, &onehot}, {&scce, &labels}}) {
    CAPTURE(loss->type());
    Tensor<double> p = random_probs(n, k, rng), grad;
    loss->gradient(p, *y, grad, false);
    compare(loss->type() + " dL/dp", p, grad, [&] { return loss->value(p, *y); }, 100, rng);

    Tensor<double> z(Shape{n, k}), pz(Shape{n, k});
    random_fill(z, rng, -2, 2);
    auto through_softmax = [&] {
      std::copy(z.begin(), z.end(), pz.begin());
      detail::softmax_rows(pz.data(), n, k);
      return loss->value(pz, *y);
    };
    through_softmax();
    loss->gradient(pz, *y, grad, true);
    compare(loss->type() + " fused dL/dz", z, grad, through_softmax, 100, rng);
  }
}

TEST_CASE("from_logits: both cross-entropies take logits, by hand and by finite differences") {
  // z = [1, 2, 0.5], label 1: -log softmax(z)_1 = log(e^1 + e^2 + e^0.5) - 2, no clipping.
  Tensor<double> z(Shape{1, 3}, {1, 2, 0.5}), onehot(Shape{1, 3}, {0, 1, 0}), label(Shape{1}, {1});
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(0.5));
  CategoricalCrossentropy<double> cce;
  SparseCategoricalCrossentropy<double> scce;
  cce.set_from_logits(true);
  scce.set_from_logits(true);
  CHECK(cce.value(z, onehot) == doctest::Approx(lse - 2));
  CHECK(scce.value(z, label) == doctest::Approx(lse - 2));
  Tensor<double> grad;
  scce.gradient(z, label, grad, false);
  CHECK(grad[0] == doctest::Approx(std::exp(1.0 - lse)));
  CHECK(grad[1] == doctest::Approx(std::exp(2.0 - lse) - 1));
  // Far-off logits stay finite (log-sum-exp), where probabilities would clip.
  Tensor<double> big(Shape{1, 3}, {1000, -1000, 0});
  CHECK(scce.value(big, label) == doctest::Approx(2000));
  // A one-hot that is not one-hot (soft targets): the exact gradient p * sum(y) - y.
  Rng rng(5);
  Tensor<double> logits(Shape{4, 5}), soft(Shape{4, 5}), g;
  random_fill(logits, rng, -3, 3);
  random_fill(soft, rng, 0, 1);
  cce.gradient(logits, soft, g, false);
  compare("CategoricalCrossentropy(from_logits) dL/dz", logits, g, [&] { return cce.value(logits, soft); }, 100, rng);
  // It is part of the loss's config, so it is saved with the model.
  CHECK(make_loss<double>("sparse_categorical_crossentropy", scce.config())->from_logits());
  CHECK_FALSE(make_loss<double>("sparse_categorical_crossentropy")->from_logits());
}

TEST_CASE("cross-entropy values by hand, with Keras's clipping") {
  Tensor<double> p(Shape{2, 3}, {0.2, 0.7, 0.1, 0.0, 0.5, 0.5});
  Tensor<double> onehot(Shape{2, 3}, {0, 1, 0, 1, 0, 0}), labels(Shape{2}, {1, 0});
  const double expected = (-std::log(0.7) - std::log(1e-7)) / 2;  // p = 0 is clipped to 1e-7
  CHECK(CategoricalCrossentropy<double>().value(p, onehot) == doctest::Approx(expected));
  CHECK(SparseCategoricalCrossentropy<double>().value(p, labels) == doctest::Approx(expected));
  Tensor<double> labels_col(Shape{2, 1}, {1, 0});  // (N, 1) labels are accepted too
  CHECK(SparseCategoricalCrossentropy<double>().value(p, labels_col) == doctest::Approx(expected));
}

// ---------------------------------------------------------------- optimizers

namespace {

/// Two steps on w = [1, -2] with gradients g1 = [0.5, -1] then g2 = [0.1, 0.2].
template <class T>
std::pair<std::vector<double>, std::vector<double>> two_steps(Optimizer<T>& opt) {
  Tensor<T> w(Shape{2}, {1, -2}), g(Shape{2});
  std::vector<Parameter<T>> params{{"w", &w, &g}};
  std::vector<double> after1, after2;
  g[0] = T(0.5);
  g[1] = T(-1);
  opt.step(params);
  after1 = {double(w[0]), double(w[1])};
  g[0] = T(0.1);
  g[1] = T(0.2);
  opt.step(params);
  after2 = {double(w[0]), double(w[1])};
  CHECK(opt.iterations() == 2);
  return {after1, after2};
}

}  // namespace

TEST_CASE_TEMPLATE("optimizers: two steps against hand-computed values", T, float, double) {
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-11;
  SUBCASE("SGD with momentum 0.9, lr 0.1") {
    // v1 = -0.1 g1 = [-0.05, 0.1]; w1 = [0.95, -1.9]; v2 = 0.9 v1 - 0.1 g2 = [-0.055, 0.07]; w2 = [0.895, -1.83]
    SGD<T> sgd(SGDOptions().learning_rate(0.1).momentum(0.9));
    auto [a, b] = two_steps(sgd);
    CHECK(a[0] == doctest::Approx(0.95).epsilon(tol));
    CHECK(a[1] == doctest::Approx(-1.9).epsilon(tol));
    CHECK(b[0] == doctest::Approx(0.895).epsilon(tol));
    CHECK(b[1] == doctest::Approx(-1.83).epsilon(tol));
  }
  SUBCASE("SGD, Nesterov") {
    // w1 = w + 0.9 v1 - 0.1 g1 = [0.905, -1.81]; w2 = w1 + 0.9 v2 - 0.1 g2 = [0.8455, -1.767]
    SGD<T> sgd(SGDOptions().learning_rate(0.1).momentum(0.9).nesterov(true));
    auto [a, b] = two_steps(sgd);
    CHECK(a[0] == doctest::Approx(0.905).epsilon(tol));
    CHECK(a[1] == doctest::Approx(-1.81).epsilon(tol));
    CHECK(b[0] == doctest::Approx(0.8455).epsilon(tol));
    CHECK(b[1] == doctest::Approx(-1.767).epsilon(tol));
  }
  SUBCASE("plain SGD, Keras's default lr 0.01") {
    SGD<T> sgd;
    auto [a, b] = two_steps(sgd);
    CHECK(b[0] == doctest::Approx(1 - 0.01 * 0.6).epsilon(tol));
    CHECK(b[1] == doctest::Approx(-2 - 0.01 * -0.8).epsilon(tol));
  }
  SUBCASE("RMSprop, Keras's defaults: epsilon inside the square root") {
    // a1 = 0.1 g1^2 = [0.025, 0.1]; w1 = w - 1e-3 g1 / sqrt(a1 + 1e-7); a2 = 0.9 a1 + 0.1 g2^2
    RMSprop<T> rms;
    CHECK(rms.options().epsilon_inside_sqrt());
    auto [a, b] = two_steps(rms);
    CHECK(a[0] == doctest::Approx(0.996837728664368).epsilon(tol));
    CHECK(a[1] == doctest::Approx(-1.996837723920969).epsilon(tol));
    CHECK(b[0] == doctest::Approx(0.996185401979242).epsilon(tol));
    CHECK(b[1] == doctest::Approx(-1.997490051647040).epsilon(tol));
  }
  SUBCASE("RMSprop, TensorFlow 2.0-2.10's rule: epsilon outside the square root") {
    // w1 = w - 1e-3 g1 / (sqrt(a1) + 1e-7)
    RMSprop<T> rms(RMSpropOptions().epsilon_inside_sqrt(false));
    auto [a, b] = two_steps(rms);
    CHECK(a[0] == doctest::Approx(0.996837724339830).epsilon(tol));
    CHECK(a[1] == doctest::Approx(-1.996837723339831).epsilon(tol));
    CHECK(b[0] == doctest::Approx(0.996185396692309).epsilon(tol));
    CHECK(b[1] == doctest::Approx(-1.997490051200119).epsilon(tol));
  }
  SUBCASE("Adam, Keras's defaults") {
    Adam<T> adam;
    auto [a, b] = two_steps(adam);
    CHECK(a[0] == doctest::Approx(0.999000006325).epsilon(tol));
    CHECK(a[1] == doctest::Approx(-1.999000003162).epsilon(tol));
    CHECK(b[0] == doctest::Approx(0.998196970329).epsilon(tol));
    CHECK(b[1] == doctest::Approx(-1.998488978670).epsilon(tol));
  }
}

TEST_CASE_TEMPLATE("RMSprop's two rules part where the gradient is near zero", T, float, double) {
  // g = 1e-8: a = 0.1 g^2 = 1e-17. Today's rule divides by sqrt(1e-17 + 1e-7)
  // ~ 3.16e-4 and steps lr g / 3.16e-4 = 3.162e-8; TensorFlow 2.0-2.10's
  // divides by sqrt(1e-17) + 1e-7 ~ 1.03e-7 and steps 9.693e-5, 3,000 times more.
  const auto step_of = [](bool inside) {
    Tensor<T> w(Shape{1}, {0}), g(Shape{1}, {T(1e-8)});
    RMSprop<T> rms(RMSpropOptions().epsilon_inside_sqrt(inside));
    rms.step({{"w", &w, &g}});
    return -double(w[0]);
  };
  CHECK(step_of(true) == doctest::Approx(3.16227766001e-8).epsilon(1e-5));
  CHECK(step_of(false) == doctest::Approx(9.69346569968e-5).epsilon(1e-5));
}

TEST_CASE("RMSprop's rule is part of its config") {
  CHECK(make_optimizer<float>("rmsprop")->config().flag("epsilon_inside_sqrt"));
  CHECK_FALSE(make_optimizer<float>("rmsprop", Config().set("epsilon_inside_sqrt", false))
                  ->config()
                  .flag("epsilon_inside_sqrt"));
}

TEST_CASE("optimizers skip buffers and refuse parameters they were not built for") {
  Tensor<float> w(Shape{2}, {1, 1}), g(Shape{2}, {1, 1}), buf(Shape{2}, {5, 5});
  RMSprop<float> rms;
  rms.step({{"w", &w, &g}, {"buf", &buf, nullptr}});
  CHECK(buf[0] == 5.0f);
  CHECK(w[0] < 1.0f);
  Tensor<float> other(Shape{3}), og(Shape{3});
  CHECK_THROWS_AS(rms.step({{"other", &other, &og}}), ConfigError);
  CHECK_THROWS_AS(make_optimizer<float>("adagrad"), ConfigError);
}

TEST_CASE("optimizers: the threads share the values and update each as one thread does") {
  // Sizes that are not multiples of the 16-value groups, a buffer between
  // them, and more values than one thread takes: the shares are cut inside
  // the tensors. Every value must be updated once, with the same bits.
  const std::vector<Index> sizes{40001, 5, 70003};
  const int saved = num_threads();
  const auto run = [&](Optimizer<float>& opt, int threads) {
    set_num_threads(threads);
    std::vector<Tensor<float>> w, g;
    for (Index n : sizes) {
      w.emplace_back(Shape{n});
      g.emplace_back(Shape{n});
    }
    Tensor<float> buf(Shape{3}, {5, 5, 5});
    Rng rng(9);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      for (float& v : w[i]) v = float(rng.uniform() - 0.5);
    }
    std::vector<Parameter<float>> params{{"a/kernel", &w[0], &g[0]}, {"buf", &buf, nullptr},
                                         {"b/bias", &w[1], &g[1]}, {"c/kernel", &w[2], &g[2]}};
    for (int step = 0; step < 3; ++step) {
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        for (float& v : g[i]) v = float(rng.uniform() - 0.5);
      }
      opt.step(params);
    }
    CHECK(buf[1] == 5.0f);
    set_num_threads(saved);
    return w;
  };
  const auto same_bits = [&](auto make) {
    auto one = make(), two = make();
    const auto a = run(*one, 1), b = run(*two, 2);
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(std::memcmp(a[i].data(), b[i].data(), sizeof(float) * std::size_t(a[i].size())) == 0);
    }
  };
  same_bits([] { return std::make_unique<SGD<float>>(SGDOptions().learning_rate(0.1).momentum(0.9).nesterov(true)); });
  same_bits([] { return std::make_unique<RMSprop<float>>(); });
  same_bits([] { return std::make_unique<Adam<float>>(); });
  same_bits([] {
    return std::make_unique<AdamW<float>>(AdamOptions().weight_decay(0.1).exclude_from_weight_decay({"bias"}));
  });
  // And against the rule itself: plain SGD moves each value by exactly -lr g, once per step.
  SGD<float> sgd(SGDOptions().learning_rate(0.5));
  set_num_threads(2);
  Tensor<float> w(Shape{100003}), g(Shape{100003});
  for (Index i = 0; i < w.size(); ++i) w[i] = 1.0f, g[i] = float(i % 7);  // lr g is exact in float
  sgd.step({{"w", &w, &g}});
  Index wrong = 0;
  for (Index i = 0; i < w.size(); ++i) wrong += w[i] != 1.0f - 0.5f * float(i % 7);
  set_num_threads(saved);
  CHECK(wrong == 0);
}

// ---------------------------------------------------------------- the notebook's model

TEST_CASE("the notebook's model: Keras's summary, shapes and parameter counts") {
  auto model = notebook_model<float>();
  CHECK(model.count_params() == 256867);
  CHECK(model.count_trainable_params() == 256567);
  std::ostringstream out;
  model.summary(out);
  const std::string expected =
      "Model: \"sequential\"\n"
      "_________________________________________________________________\n"
      "Layer (type)                 Output Shape              Param #   \n"
      "=================================================================\n"
      "conv2d (Conv2D)              (None, 28, 28, 75)        750       \n"
      "_________________________________________________________________\n"
      "batch_normalization (BatchNo (None, 28, 28, 75)        300       \n"
      "_________________________________________________________________\n"
      "max_pooling2d (MaxPooling2D) (None, 14, 14, 75)        0         \n"
      "_________________________________________________________________\n"
      "conv2d_1 (Conv2D)            (None, 14, 14, 50)        33800     \n"
      "_________________________________________________________________\n"
      "dropout (Dropout)            (None, 14, 14, 50)        0         \n"
      "_________________________________________________________________\n"
      "batch_normalization_1 (Batch (None, 14, 14, 50)        200       \n"
      "_________________________________________________________________\n"
      "max_pooling2d_1 (MaxPooling2 (None, 7, 7, 50)          0         \n"
      "_________________________________________________________________\n"
      "conv2d_2 (Conv2D)            (None, 7, 7, 25)          11275     \n"
      "_________________________________________________________________\n"
      "batch_normalization_2 (Batch (None, 7, 7, 25)          100       \n"
      "_________________________________________________________________\n"
      "max_pooling2d_2 (MaxPooling2 (None, 4, 4, 25)          0         \n"
      "_________________________________________________________________\n"
      "flatten (Flatten)            (None, 400)               0         \n"
      "_________________________________________________________________\n"
      "dense (Dense)                (None, 512)               205312    \n"
      "_________________________________________________________________\n"
      "dropout_1 (Dropout)          (None, 512)               0         \n"
      "_________________________________________________________________\n"
      "dense_1 (Dense)              (None, 10)                5130      \n"
      "=================================================================\n"
      "Total params: 256,867\n"
      "Trainable params: 256,567\n"
      "Non-trainable params: 300\n"
      "_________________________________________________________________\n";
  CHECK(out.str() == expected);
}

namespace {

using loom::testing::random_images;  // n random images in [0, 1), labels i % 10

/// How far two inference outputs may differ when the same samples take
/// different paths (batch, chunks, threads, copies): not at all with loom's
/// own GEMM, to rounding with Eigen's, whose blocking depends on the sizes.
#ifdef LOOM_OWN_SGEMM
constexpr float kPathTolerance = 0;
#else
constexpr float kPathTolerance = 1e-6f;
#endif

/// The largest difference between two tensors of the same shape.
float worst(const Tensor<float>& a, const Tensor<float>& b) {
  REQUIRE(a.shape() == b.shape());
  float d = 0;
  for (Index i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

/// The notebook's model (seed `model_seed`), compiled with sparse
/// categorical cross-entropy, after one step on random_images(n, data_seed):
/// its moving statistics away from their initial values.
Sequential<float> stepped_model(std::uint64_t model_seed, Index n, std::uint64_t data_seed, Tensor<float>& x,
                                Tensor<float>& y) {
  auto model = notebook_model<float>(model_seed);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  random_images(n, data_seed, x, y);
  model.train_step(x, y);
  return model;
}

}  // namespace

TEST_CASE("the notebook's model trains a batch and predicts probabilities") {
  auto model = notebook_model<float>(1);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  Tensor<float> x, y;
  random_images(8, 2, x, y);
  const double first = model.train_step(x, y);
  CHECK(std::isfinite(first));
  for (int i = 0; i < 20; ++i) model.train_step(x, y);
  CHECK(model.evaluate(x, y).loss < first);
  const Tensor<float> p = model.predict(x);
  CHECK(p.shape() == Shape{8, 10});
  for (Index i = 0; i < 8; ++i) CHECK(p.matrix().row(i).sum() == doctest::Approx(1.0).epsilon(1e-5));
}

TEST_CASE("predict gives the same outputs whatever the batch size: bit for bit with loom's own GEMM") {
  // predict runs at most Sequential::kInferenceChunk samples at a time; with
  // loom's own float kernel no result for a sample depends on the batch (the
  // GEMM's tile shape, Winograd's chunks, threads' shares all vary), so the
  // outputs are identical. Eigen's kernel (builds without AVX2) blocks
  // differently for different sizes: there they agree to rounding.
#ifdef LOOM_OWN_SGEMM
  const auto same = [](const float* p, const float* end, const float* q) { return std::equal(p, end, q); };
#else
  const auto same = [](const float* p, const float* end, const float* q) {
    for (; p != end; ++p, ++q) {
      if (std::abs(*p - *q) > 1e-6f) return false;
    }
    return true;
  };
#endif
  Tensor<float> x, y;
  auto model = stepped_model(4, 70, 5, x, y);
  const Tensor<float> reference = model.predict(x, 1);
  for (const Index b : {Index(7), Index(32), Index(33), Index(1000)}) {
    CAPTURE(b);
    const Tensor<float> p = model.predict(x, b);
    CHECK(same(p.begin(), p.end(), reference.begin()));
  }
  for (const Index b : {Index(1), Index(13), Index(70)}) {  // forward on whole batches, no chunking
    CAPTURE(b);
    for (Index start = 0; start < 70; start += b) {
      const Index rows = std::min(b, 70 - start);
      Tensor<float> xb(Shape{rows, 28, 28, 1});
      std::copy(x.data() + start * 784, x.data() + (start + rows) * 784, xb.data());
      const Tensor<float>& p = model.forward(xb, Mode::Inference);
      CHECK(same(p.begin(), p.end(), reference.data() + start * 10));
    }
  }
}

TEST_CASE("Predictors predict at once on their own threads, one OpenMP thread each, as the model alone") {
  // What notebook_speed --concurrent times (requests at once, as a server with
  // a worker per core): each worker its own Predictor of the model, and
  // loom::set_num_threads(1), which is the calling thread's own setting.
  // Batch 1 runs the GEMM's one-row tile in Dense and Winograd's transforms,
  // made once, in the convolutions.
  Tensor<float> x, y;
  auto model = stepped_model(6, 24, 7, x, y);
  const Tensor<float> reference = model.predict(x, 1);
  std::vector<Predictor<float>> copies;
  for (int w = 0; w < 2; ++w) copies.emplace_back(model);
  Tensor<float> outputs(reference.shape());  // each image's row written by the worker that took it
  std::vector<int> threads_seen(2, 0);
  std::atomic<Index> next{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&, w] {
      set_num_threads(1);
      threads_seen[static_cast<std::size_t>(w)] = num_threads();
      Tensor<float> xi(Shape{1, 28, 28, 1});
      for (Index i = next++; i < 24; i = next++) {
        std::copy(x.data() + i * 784, x.data() + (i + 1) * 784, xi.data());
        const Tensor<float> p = copies[static_cast<std::size_t>(w)].predict(xi, 1);
        std::copy(p.begin(), p.end(), outputs.data() + i * 10);
      }
    });
  }
  for (auto& worker : workers) worker.join();
  CHECK(threads_seen == std::vector<int>{1, 1});
  for (Index i = 0; i < reference.size(); ++i) {
    CAPTURE(i);
#ifdef LOOM_OWN_SGEMM
    CHECK(outputs[i] == reference[i]);
#else
    CHECK(outputs[i] == doctest::Approx(reference[i]).epsilon(1e-6));
#endif
  }
}

TEST_CASE("a Predictor is the model frozen when made: the model's predict bit for bit, deaf to later steps") {
  // It copies the layers and weights and seals them (Layer::seal_parameters):
  // its Conv2Ds make Winograd's transform of their kernel once, where the
  // model's compare the kernel with the one transformed before every call.
  const int saved = num_threads();
  Tensor<float> x, y;
  auto model = stepped_model(21, 80, 4, x, y);
  const Tensor<float> before = model.predict(x, 32);
  Predictor<float> frozen(model);
  CHECK(frozen.input_shape() == Shape{28, 28, 1});
  CHECK(frozen.output_shape() == Shape{10});
  for (const int threads : {1, 2}) {
    set_num_threads(threads);
    for (const Index b : {Index(1), Index(5), Index(32), Index(80)}) {  // 80, 16, 3 and 3 chunks
      CAPTURE(threads);
      CAPTURE(b);
      CHECK(worst(frozen.predict(x, b), before) <= kPathTolerance);
    }
  }
  set_num_threads(saved);
  // A step moves the model's weights: its predict follows, the Predictor's
  // (its transforms already made) does not, and a new Predictor follows.
  model.train_step(x, y);
  const Tensor<float> after = model.predict(x, 1);
  REQUIRE(worst(after, before) > 0);
  CHECK(worst(frozen.predict(x, 1), before) <= kPathTolerance);
  CHECK(worst(Predictor<float>(model).predict(x, 1), after) <= kPathTolerance);
  // On two threads, 129 images at batch 32: the threads' copies of the layers
  // run the chunks, and the last, of one image, makes U in compact rows on
  // one thread alone (a barrier there once waited for the other forever).
  Tensor<float> many, labels;
  random_images(129, 17, many, labels);
  set_num_threads(1);
  const Tensor<float> alone = model.predict(many, 32);
  set_num_threads(2);
  Predictor<float> now(model);
  CHECK(worst(now.predict(many, 32), alone) <= kPathTolerance);
  CHECK(worst(model.predict(many, 32), alone) <= kPathTolerance);
  set_num_threads(saved);
  // Its inputs are checked as the model's are.
  CHECK_THROWS_WITH_AS(frozen.predict(Tensor<float>(Shape{2, 28, 27, 1})),
                       "predict: model 'sequential' expects inputs (N, 28, 28, 1), got (N, 28, 27, 1)", ShapeError);
  CHECK_THROWS_AS(frozen.predict(Tensor<float>(Shape{0, 28, 28, 1})), ShapeError);
  CHECK_THROWS_AS(frozen.predict(x, 0), ConfigError);
  // A model that is not built has nothing to copy.
  Sequential<float> empty;
  CHECK_THROWS_AS(Predictor<float>{empty}, ConfigError);
}

TEST_CASE("evaluate keeping its predictions: one pass gives evaluate's loss and accuracy and predict's outputs") {
  // What the experiment scores the test images with (loss, accuracy and the
  // confusion matrix's predicted classes): the same numbers, bit for bit, as
  // evaluate and then predict, at every batch size and on one or two threads.
  const int saved = num_threads();
  Tensor<float> x, y;
  auto model = stepped_model(14, 77, 3, x, y);
  for (const int threads : {1, 2}) {
    set_num_threads(threads);
    for (const Index b : {Index(1), Index(8), Index(32), Index(100)}) {
      CAPTURE(threads);
      CAPTURE(b);
      Tensor<float> p(Shape{3, 3});  // the wrong shape: resized
      const Evaluation both = model.evaluate(x, y, b, p);
      const Evaluation alone = model.evaluate(x, y, b);
      const Tensor<float> predicted = model.predict(x, b);
      CHECK(both.loss == alone.loss);
      CHECK(both.accuracy == alone.accuracy);
      REQUIRE(p.shape() == predicted.shape());
      CHECK(std::equal(p.begin(), p.end(), predicted.begin()));
    }
  }
  set_num_threads(saved);
  Tensor<float> p;
  Tensor<float> wrong_y(Shape{76});
  CHECK_THROWS_AS(model.evaluate(x, wrong_y, 32, p), ShapeError);
}

TEST_CASE("predict and evaluate on two threads run whole chunks on copies of the layers, with the same results") {
  // With at least two chunks per thread, each thread runs its chunks on its
  // own copy of the layers (Inference::chunks, model/inference.hpp); otherwise, and on one
  // thread, the model's own layers run every chunk. Same bits either way
  // with loom's own GEMM; to rounding with Eigen's.
  const int saved = num_threads();
  Tensor<float> x, y;
  auto model = stepped_model(12, 150, 9, x, y);
  const auto both = [&](auto&& run) {  // run() on one thread, then on two
    set_num_threads(1);
    auto one = run();
    set_num_threads(2);
    auto two = run();
    CHECK(num_threads() == 2);  // the copies' threads ran with one thread each, not the caller
    return std::make_pair(std::move(one), std::move(two));
  };
  for (const Index b : {Index(1), Index(8), Index(32), Index(40)}) {  // 150, 19, 5 and 5 chunks: all copies
    CAPTURE(b);
    const auto [one, two] = both([&] { return model.predict(x, b); });
    CHECK(worst(one, two) <= kPathTolerance);
    const auto [e1, e2] = both([&] { return model.evaluate(x, y, b); });
    CHECK(e1.accuracy == e2.accuracy);
    CHECK(e1.loss == doctest::Approx(e2.loss).epsilon(1e-12));
  }
  // The copies take the model's parameters before each use: after a step
  // that moves them, two threads still agree with one.
  model.train_step(x, y);
  {
    const auto [one, two] = both([&] { return model.predict(x, 8); });
    CHECK(worst(one, two) <= kPathTolerance);
  }
  // ... and its settings: im2col rounds differently from Winograd, so a copy
  // still running Winograd would not agree bit for bit.
  auto& conv = dynamic_cast<Conv2D<float>&>(model.layer(3));
  REQUIRE(conv.algorithm() == ConvAlgorithm::Winograd);
  const Tensor<float> winograd = model.predict(x, 8);
  conv.set_algorithm(ConvAlgorithm::Im2col);
  {
    const auto [one, two] = both([&] { return model.predict(x, 8); });
    CHECK(worst(one, two) <= kPathTolerance);
    CHECK(worst(two, winograd) > 0);
    CHECK(worst(two, winograd) < 1e-4f);
  }
  set_num_threads(saved);
}

TEST_CASE("in inference each Conv2D absorbs the BatchNormalization and MaxPool2D after it, to rounding") {
  // Sequential::forward lets a Conv2D apply the next BatchNormalization in
  // its epilogue, past conv2's Dropout, and pool its own output (conv1 runs
  // the direct kernel, conv2 and conv3 Winograd); the layers run one by one
  // must agree within float rounding.
  auto model = notebook_model<float>(6);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  Tensor<float> x, y;
  random_images(40, 8, x, y);
  for (int i = 0; i < 3; ++i) model.train_step(x, y);  // moving statistics and gammas away from 0 and 1
  const Tensor<float> fused = model.predict(x, 40);
  const Tensor<float>* out = &x;
  for (const auto& layer : model.layers()) out = &layer->forward(*out, Mode::Inference);
  REQUIRE(out->shape() == fused.shape());
  float worst = 0;
  for (Index i = 0; i < fused.size(); ++i) worst = std::max(worst, std::abs(fused[i] - (*out)[i]));
  CHECK(worst < 1e-5f);  // probabilities
  CHECK(worst > 0.0f);   // the fused path did run: it rounds differently
}

TEST_CASE("in training each BatchNormalization takes the MaxPool2D after it, for one step, to rounding") {
  // The trainer fuses the three BatchNormalization + MaxPool2D pairs of the
  // notebook's model, and leaves each Conv2D's ReLU derivative to the
  // BatchNormalization after it (past the Dropout after conv2); the layers
  // run one by one, unfused, must give the same gradients within float rounding.
  auto model = notebook_model<float>(6);
  model.compile(SparseCategoricalCrossentropy<float>(), SGD<float>(SGDOptions().learning_rate(0)));
  Tensor<float> x, y;
  random_images(16, 9, x, y);
  for (const auto& l : model.layers()) l->seed(77);
  model.train_step(x, y);
  std::vector<Tensor<float>> fused;
  for (const auto& p : model.parameters()) {
    if (p.trainable()) fused.push_back(*p.grad);
  }
  for (const auto& l : model.layers()) {  // for the step only
    CHECK(l->fused_next() == nullptr);
    CHECK_FALSE(fusion::relu_grad_left(*l));
    CHECK_FALSE(fusion::takes_input_relu_grad(*l));
  }

  for (const auto& l : model.layers()) l->seed(77);
  const Tensor<float>* out = &x;
  for (const auto& l : model.layers()) out = &l->forward(*out, Mode::Train);
  Tensor<float> g;
  model.loss().gradient(*out, y, g, model.layers().back()->fused_softmax_grad());
  const Tensor<float>* grad = &g;
  for (auto it = model.layers().rbegin(); it != model.layers().rend(); ++it) grad = &(*it)->backward(*grad);
  std::size_t k = 0;
  for (const auto& p : model.parameters()) {
    if (!p.trainable()) continue;
    CAPTURE(p.name);
    const Tensor<float>& a = fused[k++];
    double worst = 0, scale = 0;
    for (Index i = 0; i < a.size(); ++i) {
      worst = std::max(worst, std::fabs(double(a[i]) - double((*p.grad)[i])));
      scale = std::max(scale, std::fabs(double((*p.grad)[i])));
    }
    CHECK(worst <= 1e-5 * scale);
  }

  Tensor<float> bad = x;
  bad[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(model.train_step(bad, y), NumericError);
  for (const auto& l : model.layers()) {  // also after a throw
    CHECK(l->fused_next() == nullptr);
    CHECK_FALSE(fusion::relu_grad_left(*l));
  }
}

TEST_CASE("the notebook's model gives the same results on one thread and on two") {
  // Threads split batches, units and rows differently, and add partial sums
  // in another grouping: results agree to float rounding, not bit for bit.
  // The gradients of one step are compared, each tensor's within 1e-5 of
  // its largest entry: over more steps, rounding is amplified where a
  // channel of random data is nearly dead and BatchNormalization divides by
  // its tiny variance, so whole trajectories are compared by loss only.
  const int saved = num_threads();
  Tensor<float> x(Shape{32, 28, 28, 1}), y(Shape{32});
  Rng rng(3);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (Index i = 0; i < 32; ++i) y[i] = static_cast<float>(rng.below(10));
  std::vector<std::vector<std::vector<float>>> grads;
  std::vector<double> losses;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    auto model = notebook_model<float>(7);
    model.compile("sparse_categorical_crossentropy", {"accuracy"}, "sgd");
    losses.push_back(model.train_step(x, y));
    std::vector<std::vector<float>> g;
    for (const auto& layer : model.layers()) {
      for (const auto& p : layer->parameters()) {
        if (p.grad != nullptr) g.emplace_back(p.grad->begin(), p.grad->end());
      }
    }
    grads.push_back(std::move(g));
    for (int step = 0; step < 2; ++step) losses.push_back(model.train_step(x, y));
  }
  set_num_threads(saved);
  for (int step = 0; step < 3; ++step) CHECK(losses[step] == doctest::Approx(losses[3 + step]).epsilon(1e-5));
  REQUIRE(grads[0].size() == grads[1].size());
  for (std::size_t t = 0; t < grads[0].size(); ++t) {
    float largest = 0, worst = 0;
    for (std::size_t i = 0; i < grads[0][t].size(); ++i) {
      largest = std::max(largest, std::abs(grads[0][t][i]));
      worst = std::max(worst, std::abs(grads[0][t][i] - grads[1][t][i]));
    }
    CAPTURE(t);
    CHECK(worst <= 1e-5f * largest);
  }
}

TEST_CASE("the notebook's model on two threads: the same weights bit for bit, run after run") {
  // Winograd's tiles go to whichever thread asks (detail::WorkQueue), so
  // which thread computes what differs from run to run; the results must not.
  const int saved = num_threads();
  set_num_threads(2);
  Tensor<float> x(Shape{32, 28, 28, 1}), y(Shape{32});
  Rng rng(4);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (Index i = 0; i < 32; ++i) y[i] = static_cast<float>(rng.below(10));
  auto train = [&] {
    auto model = notebook_model<float>(11);
    model.compile("sparse_categorical_crossentropy", {"accuracy"}, "rmsprop");
    for (int step = 0; step < 5; ++step) model.train_step(x, y);
    std::vector<float> w;
    for (const auto& p : model.parameters()) w.insert(w.end(), p.value->begin(), p.value->end());
    const Tensor<float> p = model.predict(x);
    w.insert(w.end(), p.begin(), p.end());
    return w;
  };
  const auto first = train();
  for (int run = 0; run < 3; ++run) CHECK(train() == first);
  set_num_threads(saved);
}

// ---------------------------------------------------------------- errors a user meets

TEST_CASE("Sequential: clear errors for bad data and bad order") {
  Sequential<float> model;
  model.add(Flatten<float>(), Shape{2, 2, 1});
  model.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  Tensor<float> x(Shape{4, 2, 2, 1}), onehot(Shape{4, 3}), labels(Shape{4}, {0, 1, 2, 1});
  for (Index i = 0; i < 4; ++i) onehot(i, i % 3) = 1;

  CHECK_THROWS_WITH_AS(model.fit(x, onehot),
                       "fit: model 'sequential' is not compiled: call compile() first", ConfigError);
  model.compile("categorical_crossentropy", {"accuracy"});
  const auto silent = FitOptions<float>().verbose(0);

  CHECK_THROWS_WITH_AS(model.fit(x, Tensor<float>(Shape{3, 3}), silent),
                       "fit: x and y must hold the same number of samples, got x (4, 2, 2, 1) and y (3, 3)",
                       ShapeError);
  CHECK_THROWS_WITH_AS(model.fit(x, Tensor<float>(Shape{4, 5}), silent),
                       "CategoricalCrossentropy expects one-hot targets of shape (N, 3) to match the model's 3 "
                       "outputs, got (4, 5)",
                       ShapeError);
  CHECK_THROWS_WITH_AS(model.fit(x, labels, silent),
                       "CategoricalCrossentropy expects one-hot targets of shape (N, 3), got integer labels of "
                       "shape (4,): use SparseCategoricalCrossentropy for integer labels, or one-hot encode them "
                       "with to_categorical",
                       ShapeError);
  CHECK_THROWS_WITH_AS(model.fit(Tensor<float>(Shape{0, 2, 2, 1}), Tensor<float>(Shape{0, 3}), silent),
                       "fit: empty dataset, x has shape (0, 2, 2, 1)", ShapeError);
  CHECK_THROWS_WITH_AS(model.fit(Tensor<float>(Shape{4, 3, 3, 1}), onehot, silent),
                       "model 'sequential' expects inputs (N, 2, 2, 1), got (N, 3, 3, 1)", ShapeError);
  CHECK_THROWS_AS(model.fit(x, onehot, FitOptions<float>().batch_size(0)), ConfigError);

  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  Tensor<float> out_of_range(Shape{4}, {0, 1, 3, 1});
  CHECK_THROWS_WITH_AS(model.fit(x, out_of_range, silent),
                       "SparseCategoricalCrossentropy: label 3 of sample 2 is not an integer in [0, 3)", FormatError);
  Tensor<float> fractional(Shape{4}, {0, 1, 1.5f, 1});
  CHECK_THROWS_AS(model.fit(x, fractional, silent), FormatError);
  CHECK_THROWS_WITH_AS(model.fit(x, onehot, silent),
                       "SparseCategoricalCrossentropy expects integer labels of shape (N,) or (N, 1), got (4, 3): "
                       "these look one-hot, use CategoricalCrossentropy",
                       ShapeError);
  CHECK_THROWS_AS(model.compile("mse"), ConfigError);
  CHECK_THROWS_AS(model.compile("categorical_crossentropy", {"auc"}), ConfigError);
}

TEST_CASE("Sequential: a layer that cannot take its input fails at add, naming itself and both shapes") {
  Sequential<float> model;
  model.add(Conv2D<float>(Conv2DOptions(8, {3, 3})), Shape{28, 28, 1});
  CHECK_THROWS_WITH_AS(model.add(Dense<float>(DenseOptions(10))),
                       "Dense 'dense': expected input (None, features): add a Flatten layer before Dense, got "
                       "(None, 26, 26, 8)",
                       ShapeError);
  CHECK_THROWS_AS(model.add(Flatten<float>(), Shape{4}), ConfigError);  // only the first layer takes a shape
  Sequential<float> unbuilt;
  unbuilt.add(Flatten<float>());
  CHECK_THROWS_AS(unbuilt.summary(), ConfigError);
}

// ---------------------------------------------------------------- training end to end

namespace {

/// A 3-class problem of 8x8 images: a horizontal bar, a vertical bar or a
/// diagonal, at a random position, on noise.
void make_bars(Index n, Rng& rng, Tensor<float>& x, Tensor<float>& y) {
  x = Tensor<float>(Shape{n, 8, 8, 1});
  y = Tensor<float>(Shape{n});
  for (Index i = 0; i < n; ++i) {
    const Index cls = static_cast<Index>(rng.below(3)), pos = static_cast<Index>(rng.below(6)) + 1;
    y[i] = static_cast<float>(cls);
    for (Index r = 0; r < 8; ++r) {
      for (Index c = 0; c < 8; ++c) {
        const bool on = cls == 0 ? r == pos : cls == 1 ? c == pos : r == c;
        x(i, r, c, 0) = (on ? 1.0f : 0.0f) + static_cast<float>(rng.uniform(-0.3, 0.3));
      }
    }
  }
}

Sequential<float> small_cnn(std::uint64_t seed) {
  Sequential<float> model(seed);
  model.add(Conv2D<float>(Conv2DOptions(8, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)),
            Shape{8, 8, 1});
  model.add(BatchNormalization<float>());
  model.add(MaxPool2D<float>(MaxPool2DOptions({2, 2}).padding(Padding::Same)));
  model.add(Dropout<float>(0.1));
  model.add(Flatten<float>());
  model.add(Dense<float>(DenseOptions(16).activation(Activation::ReLU)));
  model.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  return model;
}

}  // namespace

TEST_CASE("end to end: a small CNN learns a synthetic 3-class problem to >= 95 % held-out accuracy") {
  Rng rng(2024);
  Tensor<float> x, y, xt, yt;
  make_bars(600, rng, x, y);
  make_bars(300, rng, xt, yt);
  auto model = small_cnn(1);
  std::ostringstream log;
  const History h = model.fit(x, y, FitOptions<float>().epochs(8).verbose(2).output(&log).validation_data(xt, yt));
  CHECK(h.epochs() == 8);
  CHECK(h["loss"].back() < h["loss"].front());
  CHECK(h["val_accuracy"].size() == 8);
  const Evaluation e = model.evaluate(xt, yt);
  MESSAGE("held-out accuracy " << e.accuracy << ", loss " << e.loss);
  CHECK(e.accuracy >= 0.95);
  CHECK(e.accuracy == doctest::Approx(h["val_accuracy"].back()));
  // verbose 2 prints "Epoch i/8" and one finished line per epoch.
  const std::string text = log.str();
  CHECK(text.find("Epoch 8/8\n19/19 - ") != std::string::npos);
  CHECK(text.find("/step - loss: ") != std::string::npos);
  CHECK(text.find(" - val_accuracy: ") != std::string::npos);
  // One more epoch: as Keras, no "Epoch 1/1" header for a fit of one epoch.
  std::ostringstream one;
  model.fit(x, y, FitOptions<float>().epochs(1).verbose(2).output(&one));
  CHECK(one.str().rfind("19/19 - ", 0) == 0);
}

TEST_CASE("a LambdaCallback sees every hook in Keras's order and can stop training") {
  Rng rng(3);
  Tensor<float> x, y;
  make_bars(64, rng, x, y);
  auto model = small_cnn(2);
  std::vector<std::string> calls;
  auto cb = std::make_shared<LambdaCallback<float>>();
  cb->on_train_begin_fn = [&](Model<float>&) { calls.push_back("train_begin"); };
  cb->on_epoch_begin_fn = [&](Model<float>&, int e) { calls.push_back("epoch_begin " + std::to_string(e)); };
  cb->on_batch_end_fn = [&](Model<float>&, long b, const Logs& logs) {
    calls.push_back("batch " + std::to_string(b));
    CHECK(logs.has("loss"));
    CHECK_FALSE(logs.has("val_loss"));
  };
  cb->on_epoch_end_fn = [&](Model<float>& m, int e, const Logs& logs) {
    calls.push_back("epoch_end " + std::to_string(e));
    CHECK(m.history().epochs() == static_cast<std::size_t>(e));  // the epoch is in the history already
    CHECK(logs["loss"] == m.history()["loss"].back());
    if (e == 3) m.trainer().stop_training();
  };
  cb->on_train_end_fn = [&](Model<float>&) { calls.push_back("train_end"); };
  const History h = model.fit(x, y, FitOptions<float>().epochs(5).batch_size(32).verbose(0).callback(cb));
  CHECK(h.epochs() == 3);
  const std::vector<std::string> expected{"train_begin", "epoch_begin 1", "batch 1", "batch 2", "epoch_end 1",
                                          "epoch_begin 2", "batch 1", "batch 2", "epoch_end 2",
                                          "epoch_begin 3", "batch 1", "batch 2", "epoch_end 3", "train_end"};
  CHECK(calls == expected);
}

namespace {
// Detects whether validation_data(x, y) compiles for these argument kinds.
template <class X, class Y, class = void>
struct takes_validation_data : std::false_type {};
template <class X, class Y>
struct takes_validation_data<X, Y, std::void_t<decltype(FitOptions<float>().validation_data(std::declval<X>(), std::declval<Y>()))>>
    : std::true_type {};
}  // namespace

TEST_CASE("validation_data keeps pointers, so it takes no temporaries") {
  static_assert(takes_validation_data<const Tensor<float>&, const Tensor<float>&>::value);
  static_assert(takes_validation_data<Tensor<float>&, Tensor<float>&>::value);
  static_assert(!takes_validation_data<const Tensor<float>&, Tensor<float>>::value,
                "validation_data(x, to_categorical(y, 10)) would read freed memory");
  static_assert(!takes_validation_data<Tensor<float>, const Tensor<float>&>::value);
  static_assert(!takes_validation_data<Tensor<float>, Tensor<float>>::value);
  CHECK(true);
}

TEST_CASE("progress line in Keras's format when the output is not a terminal") {
  std::ostringstream out;
  Progress p(&out, 1, 1500, false);
  p.begin_epoch(3, 20);
  p.update(10, {{"loss", 1.0}});  // not a terminal: nothing until the end
  p.end_epoch({{"loss", 0.26012}, {"accuracy", 0.90461}, {"val_loss", 0.2672}, {"val_accuracy", 0.9038}});
  const std::string s = out.str();
  CHECK(s.rfind("Epoch 3/20\n1500/1500 [==============================] - ", 0) == 0);
  CHECK(s.find("/step - loss: 0.2601 - accuracy: 0.9046 - val_loss: 0.2672 - val_accuracy: 0.9038\n") !=
        std::string::npos);
  // Keras's Progbar: "%.4f" if abs(avg) > 1e-3, else "%.4e" (zero and 1e-3 included).
  std::ostringstream small;
  Progress q(&small, 2, 1500, false);
  q.begin_epoch(1, 1);
  q.end_epoch({{"a", 0.0}, {"b", 1e-3}, {"c", 0.0012}, {"d", -5e-4}, {"e", -0.25}});
  CAPTURE(small.str());
  CHECK(small.str().find(" - a: 0.0000e+00 - b: 1.0000e-03 - c: 0.0012 - d: -5.0000e-04 - e: -0.2500\n") !=
        std::string::npos);
}

TEST_CASE("the same seed gives the same weights, another seed does not") {
  Rng rng(5);
  Tensor<float> x, y;
  make_bars(96, rng, x, y);
  auto train = [&](std::uint64_t seed) {
    auto model = small_cnn(seed);
    model.fit(x, y, FitOptions<float>().epochs(2).verbose(0));
    std::vector<float> w;
    for (const auto& p : model.parameters()) w.insert(w.end(), p.value->begin(), p.value->end());
    return w;
  };
  const auto a = train(7), b = train(7), c = train(8);
  CHECK(a == b);
  CHECK(a != c);
}
