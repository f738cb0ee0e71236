// Training beyond the notebook (issue 12): learning-rate schedules at chosen
// steps, an optimizer following one, decoupled weight decay and AdamW,
// gradient clipping, label smoothing, and the learning-rate callbacks with
// their state across a resume. Every expected value is worked out by hand
// in the comments (Keras's formulas, keras/src/optimizers/).
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <sstream>

#include <loom/loom.hpp>

#include "test_support.hpp"

using namespace loom;
using loom::testing::error_of;
using loom::testing::TempDir;

namespace {

/// One parameter w0 with the constant gradient g0, stepped n times by `opt`; returns w.
template <class Opt>
double stepped(Opt&& opt, double w0, double g0, int n) {
  Tensor<double> w(Shape{1}, {w0}), g(Shape{1}, {g0});
  for (int i = 0; i < n; ++i) {
    g[0] = g0;
    opt.step({{"w", &w, &g}});
  }
  return w[0];
}

/// Two Gaussian clusters per class in 6 dimensions, labels 0..2.
void blobs(Index n, Tensor<float>& x, Tensor<float>& y, std::uint64_t seed) {
  Rng rng(seed);
  x = Tensor<float>(Shape{n, 6});
  y = Tensor<float>(Shape{n});
  for (Index i = 0; i < n; ++i) {
    const Index c = static_cast<Index>(rng.below(3));
    y[i] = static_cast<float>(c);
    for (Index j = 0; j < 6; ++j) x[i * 6 + j] = static_cast<float>(rng.uniform(-1, 1) + (j % 3 == c ? 1.5 : 0.0));
  }
}

Sequential<float> dense_model(std::uint64_t seed, std::unique_ptr<Optimizer<float>> opt) {
  Sequential<float> m(seed);
  m.add(Dense<float>(DenseOptions(8).activation(Activation::ReLU)), Shape{6});
  m.add(Dropout<float>(0.25));
  m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  m.compile(std::make_unique<SparseCategoricalCrossentropy<float>>(), std::move(opt), {"accuracy"});
  return m;
}

}  // namespace

// ---------------------------------------------------------------- schedules

TEST_CASE("ExponentialDecay: initial * rate ^ (step / decay_steps), rounded down with staircase") {
  const ExponentialDecay smooth(0.1, 10, 0.5), stairs(0.1, 10, 0.5, true);
  CHECK(smooth(0) == doctest::Approx(0.1));
  CHECK(smooth(5) == doctest::Approx(0.1 * std::sqrt(0.5)));  // 0.0707...
  CHECK(smooth(20) == doctest::Approx(0.025));
  CHECK(stairs(9) == doctest::Approx(0.1));
  CHECK(stairs(15) == doctest::Approx(0.05));
  CHECK(error_of([] { ExponentialDecay(0.1, 0, 0.5); }).find("decay_steps must be > 0") != std::string::npos);
}

TEST_CASE("PiecewiseConstantDecay: a value up to and including each boundary") {
  const PiecewiseConstantDecay pw({100, 200}, {1.0, 0.5, 0.1});
  CHECK(pw(0) == 1.0);
  CHECK(pw(100) == 1.0);
  CHECK(pw(101) == 0.5);
  CHECK(pw(200) == 0.5);
  CHECK(pw(201) == 0.1);
  CHECK(pw(1e9) == 0.1);
  CHECK(error_of([] { PiecewiseConstantDecay({100}, {1.0}); }).find("one more value than boundaries") !=
        std::string::npos);
  CHECK(error_of([] { PiecewiseConstantDecay({200, 100}, {1.0, 0.5, 0.1}); }).find("increasing") != std::string::npos);
}

TEST_CASE("CosineDecay: half a cosine to alpha, after an optional linear warmup") {
  const CosineDecay plain(1.0, 100);
  CHECK(plain(0) == doctest::Approx(1.0));
  CHECK(plain(50) == doctest::Approx(0.5));  // 0.5 (1 + cos(pi/2))
  CHECK(plain(100) == doctest::Approx(0.0));
  CHECK(plain(150) == doctest::Approx(0.0));  // held at the end
  const CosineDecay floor(1.0, 100, 0.1);
  CHECK(floor(50) == doctest::Approx(0.55));  // 0.9 * 0.5 + 0.1
  CHECK(floor(100) == doctest::Approx(0.1));
  // Warmup from 0 to 1e-3 over 10 steps, then 100 steps of decay from 1e-3.
  const CosineDecay warm(0.0, 100, 0.0, 1e-3, 10);
  CHECK(warm(0) == doctest::Approx(0.0));
  CHECK(warm(5) == doctest::Approx(5e-4));
  CHECK(warm(10) == doctest::Approx(1e-3));
  CHECK(warm(60) == doctest::Approx(5e-4));
  CHECK(warm(110) == doctest::Approx(0.0));
  CHECK(warm(500) == doctest::Approx(0.0));
  CHECK(error_of([] { CosineDecay(1.0, 100, 0.0, 1e-3, 0); }).find("warmup_steps > 0") != std::string::npos);
}

TEST_CASE("a schedule is made again from its class name and config, and refuses a bad one") {
  const CosineDecay warm(0.0, 100, 0.1, 1e-3, 10);
  const auto again = make_schedule(warm.type(), warm.config());
  CHECK(again->config() == warm.config());
  for (double s : {0.0, 3.0, 57.0, 200.0}) CHECK((*again)(s) == warm(s));
  const PiecewiseConstantDecay pw({100, 200}, {1.0, 0.5, 0.1});
  CHECK(make_schedule(pw.type(), pw.config())->config() == pw.config());
  CHECK_THROWS_AS(make_schedule("OneCycle", Config()), ConfigError);
  CHECK_THROWS_AS(make_schedule("ExponentialDecay", Config().set("initial_learning_rate", 0.1)), ConfigError);
}

// ---------------------------------------------------------------- optimizers

TEST_CASE("an optimizer asks its schedule with the step count before each update") {
  // lr(step) = 0.1 * 0.5^step: the first update takes 0.1, the second 0.05.
  SGD<double> sgd(SGDOptions().learning_rate(std::make_shared<ExponentialDecay>(0.1, 1, 0.5)));
  CHECK(sgd.learning_rate() == doctest::Approx(0.1));
  Tensor<double> w(Shape{1}, {1.0}), g(Shape{1}, {1.0});
  sgd.step({{"w", &w, &g}});
  CHECK(w[0] == doctest::Approx(0.9));
  sgd.step({{"w", &w, &g}});
  CHECK(w[0] == doctest::Approx(0.85));
  CHECK(sgd.learning_rate() == doctest::Approx(0.025));  // Keras's optimizer.learning_rate: the next step's
  CHECK(error_of([&] { sgd.set_learning_rate(0.1); }).find("follows a ExponentialDecay schedule") != std::string::npos);
  // The config holds the schedule; the optimizer made from it continues the same rates.
  const Config c = sgd.config();
  CHECK(c.text("learning_rate_schedule") == "ExponentialDecay");
  CHECK_FALSE(c.has("learning_rate"));
  const auto again = make_optimizer<double>("SGD", c);
  CHECK(again->config() == c);
  CHECK(again->learning_rate() == doctest::Approx(0.1));
}

TEST_CASE("weight decay is decoupled: w <- w - lr * wd * w before the update") {
  // SGD lr 0.1, wd 0.01, w 2, g 0.5: 2 - 0.1 * 0.01 * 2 = 1.998, then - 0.1 * 0.5 = 1.948.
  CHECK(stepped(SGD<double>(SGDOptions().learning_rate(0.1).weight_decay(0.01)), 2, 0.5, 1) == doctest::Approx(1.948));
  SUBCASE("AdamW: Adam's step after the decay, Keras's default decay 0.004") {
    // lr 0.01, w 1, g 0.1 then -0.2: decay 1 -> 0.99996; m1 = 0.01, v1 = 1e-5,
    // lr_t = 0.01 sqrt(1 - 0.999) / (1 - 0.9); w1 = 0.99996 - lr_t m1 / (sqrt(v1) + 1e-7) = 0.989960316217766.
    AdamW<double> adamw(AdamW<double>::defaults().learning_rate(0.01));
    CHECK(adamw.settings().weight_decay == 0.004);
    Tensor<double> w(Shape{1}, {1.0}), g(Shape{1}, {0.1});
    adamw.step({{"w", &w, &g}});
    CHECK(w[0] == doctest::Approx(0.989960316217766).epsilon(1e-12));
    g[0] = -0.2;
    adamw.step({{"w", &w, &g}});
    CHECK(w[0] == doctest::Approx(0.993581701296173).epsilon(1e-12));
    CHECK(make_optimizer<double>("adamw")->config().real("weight_decay") == 0.004);
    CHECK(error_of([] { AdamW<double>{AdamOptions()}; }).find("weight_decay must be > 0") != std::string::npos);
  }
  SUBCASE("names listed in exclude_from_weight_decay keep their value") {
    SGD<double> sgd(SGDOptions().learning_rate(0.1).weight_decay(0.5).exclude_from_weight_decay({"bias"}));
    Tensor<double> k(Shape{1}, {1.0}), b(Shape{1}, {1.0}), gk(Shape{1}, {0.0}), gb(Shape{1}, {0.0});
    sgd.step({{"dense/kernel", &k, &gk}, {"dense/bias", &b, &gb}});
    CHECK(k[0] == doctest::Approx(0.95));
    CHECK(b[0] == 1.0);
    CHECK(make_optimizer<double>("sgd", sgd.config())->config() == sgd.config());
  }
}

TEST_CASE("gradient clipping: by each norm, by the global norm, by value") {
  // SGD with lr 1 moves w by minus the clipped gradient.
  const auto tensor = [](const std::vector<double>& v) {
    Tensor<double> t(Shape{static_cast<Index>(v.size())});
    std::copy(v.begin(), v.end(), t.begin());
    return t;
  };
  const auto clipped = [&](SGDOptions o, std::vector<double> g0, std::vector<double> g1) {
    Tensor<double> w0(Shape{static_cast<Index>(g0.size())}), w1(Shape{static_cast<Index>(g1.size())});
    Tensor<double> a = tensor(g0), b = tensor(g1);
    SGD<double>(o.learning_rate(1)).step({{"a", &w0, &a}, {"b", &w1, &b}});
    std::vector<double> out;
    for (double v : w0) out.push_back(-v);
    for (double v : w1) out.push_back(-v);
    return out;
  };
  // (3, 4) has norm 5: scaled to norm 1; (0.3) is under it and stays.
  auto each = clipped(SGDOptions().clipnorm(1), {3, 4}, {0.3});
  CHECK(each[0] == doctest::Approx(0.6));
  CHECK(each[1] == doctest::Approx(0.8));
  CHECK(each[2] == doctest::Approx(0.3));
  // Together (3), (4) have norm 5: both scaled by 1/5.
  auto global = clipped(SGDOptions().global_clipnorm(1), {3}, {4});
  CHECK(global[0] == doctest::Approx(0.6));
  CHECK(global[1] == doctest::Approx(0.8));
  auto value = clipped(SGDOptions().clipvalue(0.5), {-2, 0.1}, {7});
  CHECK(value == std::vector<double>{-0.5, 0.1, 0.5});
  CHECK(error_of([] { SGD<double>(SGDOptions().clipnorm(1).clipvalue(1)); }).find("only one of clipnorm") !=
        std::string::npos);
  CHECK(error_of([] { SGD<double>(SGDOptions().weight_decay(-1)); }).find("weight_decay must be >= 0") !=
        std::string::npos);
}

// ---------------------------------------------------------------- label smoothing

TEST_CASE("label smoothing: targets y (1 - s) + s / K, for both cross-entropies") {
  // p = (0.7, 0.2, 0.1), label 0, s = 0.3: targets (0.8, 0.1, 0.1);
  // loss = -(0.8 ln 0.7 + 0.1 ln 0.2 + 0.1 ln 0.1) = 0.676542255693801; fused gradient p - targets = (-0.1, 0.1, 0).
  const Tensor<double> p(Shape{1, 3}, {0.7, 0.2, 0.1});
  const Tensor<double> onehot(Shape{1, 3}, {1, 0, 0}), label(Shape{1}, {0});
  CategoricalCrossentropy<double> cce;
  SparseCategoricalCrossentropy<double> scce;
  cce.set_label_smoothing(0.3);
  scce.set_label_smoothing(0.3);
  for (Loss<double>* loss : {static_cast<Loss<double>*>(&cce), static_cast<Loss<double>*>(&scce)}) {
    const Tensor<double>& y = loss->targets() == Targets::Sparse ? label : onehot;
    CAPTURE(loss->type());
    CHECK(loss->value(p, y) == doctest::Approx(0.676542255693801).epsilon(1e-12));
    Tensor<double> g;
    loss->gradient(p, y, g, true);
    CHECK(g[0] == doctest::Approx(-0.1));
    CHECK(g[1] == doctest::Approx(0.1));
    CHECK(g[2] == doctest::Approx(0.0));
    CHECK(make_loss<double>(loss->type(), loss->config())->label_smoothing() == 0.3);
  }
  CHECK_THROWS_AS(cce.set_label_smoothing(1.5), ConfigError);
}

TEST_CASE("label smoothing: the gradient matches finite differences, from probabilities and from logits") {
  Rng rng(7);
  const Index n = 3, k = 4;
  Tensor<double> z(Shape{n, k}), y(Shape{n});
  for (double& v : z) v = rng.uniform(-2, 2);
  for (Index i = 0; i < n; ++i) y[i] = static_cast<double>(i % k);
  for (bool logits : {false, true}) {
    CAPTURE(logits);
    SparseCategoricalCrossentropy<double> loss;
    loss.set_label_smoothing(0.2);
    loss.set_from_logits(logits);
    // From probabilities, check dL/dp at a softmax p (no clipping active).
    Tensor<double> x = z;
    if (!logits) detail::softmax_rows(x.data(), n, k);
    Tensor<double> g;
    loss.gradient(x, y, g, false);
    for (Index i = 0; i < x.size(); ++i) {
      const double h = 1e-6, keep = x[i];
      x[i] = keep + h;
      const double up = loss.value(x, y);
      x[i] = keep - h;
      const double down = loss.value(x, y);
      x[i] = keep;
      CHECK(g[i] == doctest::Approx((up - down) / (2 * h)).epsilon(1e-6));
    }
  }
}

// ---------------------------------------------------------------- callbacks

TEST_CASE("LearningRateScheduler sets each epoch's rate (epochs from 0, as Keras passes them) and logs it") {
  Tensor<float> x, y;
  blobs(64, x, y, 3);
  auto m = dense_model(1, std::make_unique<SGD<float>>());
  auto sched = std::make_shared<LearningRateScheduler<float>>([](int epoch, double) { return 0.01 * (epoch + 1); });
  std::ostringstream out;
  m.fit(x, y, FitOptions<float>().epochs(3).batch_size(16).verbose(2).output(&out).callback(sched));
  const auto& lr = m.history()["learning_rate"];
  REQUIRE(lr.size() == 3);
  CHECK(lr[0] == doctest::Approx(0.01));
  CHECK(lr[2] == doctest::Approx(0.03));
  CHECK(m.trainer().optimizer().learning_rate() == doctest::Approx(0.03));
  CHECK(out.str().find("- learning_rate: 0.0300") != std::string::npos);
  auto bad = std::make_shared<LearningRateScheduler<float>>([](int, double) { return -1.0; });
  CHECK(error_of([&] { m.fit(x, y, FitOptions<float>().epochs(1).verbose(0).callback(bad)); })
            .find("gave learning rate -1") != std::string::npos);
}

TEST_CASE("ReduceLROnPlateau: Keras's patience, min_delta, cooldown and min_lr, by hand") {
  auto m = dense_model(1, std::make_unique<SGD<float>>(SGDOptions().learning_rate(1.0)));
  ReduceLROnPlateau<float> plateau(
      ReduceLROnPlateauOptions().monitor("val_loss").factor(0.5).patience(2).cooldown(1).min_lr(0.3).min_delta(0.01));
  plateau.on_train_begin(m);
  // val_loss by epoch, and the rate logged for that epoch (the rate it trained with):
  //  1: 1.00 best                      lr 1
  //  2: 0.995 not better by 0.01, wait 1
  //  3: 0.99  wait 2 = patience: lr -> 0.5, cooldown 1
  //  4: 0.98  cooldown 1 -> 0; 0.98 > 1.0 - 0.01? no: 0.98 < 0.99, better: best 0.98
  //  5: 0.98  wait 1
  //  6: 0.98  wait 2: lr -> 0.3 (0.25 raised to min_lr), cooldown 1
  //  7: 0.98  cooldown 1 -> 0 (wait 0), then out of cooldown: wait 1
  //  8: 0.98  wait 2: 0.3 is not above min_lr (compared as float32, as Keras does): stays
  //  9: 0.98  wait 3: stays
  const double losses[] = {1.0, 0.995, 0.99, 0.98, 0.98, 0.98, 0.98, 0.98, 0.98};
  const double logged[] = {1, 1, 1, 0.5, 0.5, 0.5, 0.3, 0.3, 0.3};
  const double after[] = {1, 1, 0.5, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3};
  for (int e = 0; e < 9; ++e) {
    CAPTURE(e + 1);
    Logs logs;
    logs.set("val_loss", losses[e]);
    plateau.on_epoch_logs(m, e + 1, logs);
    CHECK(logs["learning_rate"] == doctest::Approx(logged[e]));
    CHECK(m.trainer().optimizer().learning_rate() == doctest::Approx(after[e]));
  }
  CHECK(plateau.best() == doctest::Approx(0.98));
  CHECK(error_of([] { ReduceLROnPlateau<float>(ReduceLROnPlateauOptions().factor(1.0)); }).find("factor") !=
        std::string::npos);
  auto scheduled = dense_model(1, std::make_unique<SGD<float>>(SGDOptions().learning_rate(
                                       std::make_shared<ExponentialDecay>(0.1, 10, 0.5))));
  CHECK(error_of([&] { plateau.on_train_begin(scheduled); }).find("cannot be reduced") != std::string::npos);
}

TEST_CASE("ReduceLROnPlateau and a scheduled AdamW, stopped mid-fit and resumed, end as a fit that never stopped") {
  Tensor<float> x, y, xv, yv;
  blobs(96, x, y, 4);
  blobs(48, xv, yv, 9);
  const auto optimizer = [] {
    return std::make_unique<AdamW<float>>(AdamW<float>::defaults().weight_decay(0.01).clipnorm(1.0).learning_rate(
        std::make_shared<CosineDecay>(0.0, 30, 0.0, 0.02, 6)));
  };
  const auto options = [&](std::shared_ptr<Callback<float>> cb) {
    return FitOptions<float>().epochs(6).batch_size(16).verbose(0).validation_data(xv, yv).callback(std::move(cb));
  };
  const auto plateau = [] {
    return std::make_shared<ReduceLROnPlateau<float>>(
        ReduceLROnPlateauOptions().monitor("val_accuracy").patience(1).factor(0.5).min_delta(0.5));
  };
  for (bool scheduled : {false, true}) {
    CAPTURE(scheduled);
    const auto make = [&] {
      return scheduled ? dense_model(5, optimizer())
                       : dense_model(5, std::make_unique<RMSprop<float>>(RMSpropOptions().learning_rate(0.05)));
    };
    const auto callback = [&]() -> std::shared_ptr<Callback<float>> {
      if (scheduled) return std::make_shared<LambdaCallback<float>>();
      return plateau();
    };
    auto straight = make();
    straight.fit(x, y, options(callback()));
    if (!scheduled) {
      const auto& lr = straight.history()["learning_rate"];
      CHECK(lr.back() < lr.front());  // min_delta 0.5: no improvement after the first epoch, halved every epoch
    }
    TempDir dir;
    std::atomic<bool> stop{false};
    auto press = std::make_shared<LambdaCallback<float>>();
    press->on_batch_end_fn = [&](Sequential<float>& m, long batch, const Logs&) {
      stop = m.position().epoch == 3 && batch == 2;
    };
    auto first = make();
    first.fit(x, y, options(callback()).callback(press).stop_flag(&stop));
    REQUIRE(first.interrupted());
    first.save(dir.file("mid.loom"));
    auto resumed = Sequential<float>::load(dir.file("mid.loom"));
    resumed.fit(x, y, options(callback()).resume(true));
    CHECK(resumed.history().history == straight.history().history);
    std::vector<float> a, b;
    for (const auto& p : straight.parameters()) a.insert(a.end(), p.value->begin(), p.value->end());
    for (const auto& p : resumed.parameters()) b.insert(b.end(), p.value->begin(), p.value->end());
    CHECK(a == b);
    CHECK(resumed.trainer().optimizer().config() == straight.trainer().optimizer().config());
  }
}
