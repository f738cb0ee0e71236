// Training beyond the notebook (issue 12): learning-rate schedules at chosen
// steps, an optimizer following one, decoupled weight decay and AdamW,
// gradient clipping, label smoothing, the learning-rate callbacks with their
// state across a resume, and the augmentation layers (outputs on small
// images with fixed draws, identity in inference, gradients by finite
// differences). Every expected value is worked out by hand in the comments
// (Keras's formulas, keras/src/optimizers/ and keras/src/layers/preprocessing/).
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <sstream>

#include <loom/loom.hpp>

#include "gradient_check.hpp"
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

/// Fits `first` with `options` until the middle of epoch 4, saves it, loads
/// and resumes it with `again`: it must end as `straight` (fitted with the
/// same options, uninterrupted) did, weights, history and optimizer.
void check_resume_matches(Sequential<float>& straight, Sequential<float> first, const Tensor<float>& x,
                          const Tensor<float>& y, FitOptions<float> options, FitOptions<float> again) {
  TempDir dir;
  std::atomic<bool> stop{false};
  auto press = std::make_shared<LambdaCallback<float>>();
  press->on_batch_end_fn = [&](Model<float>& m, long batch, const Logs&) {
    stop = m.position().epoch == 3 && batch == 2;
  };
  first.fit(x, y, options.callback(press).stop_flag(&stop));
  REQUIRE(first.interrupted());
  first.save(dir.file("mid.loom"));
  auto resumed = Sequential<float>::load(dir.file("mid.loom"));
  resumed.fit(x, y, again.resume(true));
  CHECK(resumed.history().history == straight.history().history);
  std::vector<float> a, b;
  for (const auto& p : straight.parameters()) a.insert(a.end(), p.value->begin(), p.value->end());
  for (const auto& p : resumed.parameters()) b.insert(b.end(), p.value->begin(), p.value->end());
  CHECK(a == b);
  CHECK(resumed.trainer().optimizer().config() == straight.trainer().optimizer().config());
}

/// A batch of n images h x w x 1 whose pixel (b, i, j) is 100 b + 10 i + j.
Tensor<double> numbered(Index n, Index h, Index w) {
  Tensor<double> t(Shape{n, h, w, 1});
  for (Index b = 0; b < n; ++b) {
    for (Index i = 0; i < h; ++i) {
      for (Index j = 0; j < w; ++j) t[(b * h + i) * w + j] = 100.0 * b + 10.0 * i + j;
    }
  }
  return t;
}

/// The rows of image 0 of a (N, H, W, 1) tensor.
std::vector<std::vector<double>> rows(const Tensor<double>& t) {
  std::vector<std::vector<double>> out(static_cast<std::size_t>(t.dim(1)));
  for (Index i = 0; i < t.dim(1); ++i) {
    for (Index j = 0; j < t.dim(2); ++j) out[static_cast<std::size_t>(i)].push_back(t[i * t.dim(2) + j]);
  }
  return out;
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
    check_resume_matches(straight, make(), x, y, options(callback()), options(callback()));
  }
}

// ---------------------------------------------------------------- augmentation

TEST_CASE("RandomFlip: each image mirrored or not, about half of them; the identity in inference") {
  RandomFlip<double> flip("horizontal", 3);
  Rng rng(1);
  flip.build(Shape{2, 3, 1}, rng);
  const Tensor<double> x = numbered(64, 2, 3);
  const Tensor<double>& y = flip.forward(x, Mode::Train);
  int flipped = 0;
  for (Index b = 0; b < 64; ++b) {
    const double* in = x.data() + b * 6;
    const double* out = y.data() + b * 6;
    const bool same = std::equal(in, in + 6, out);
    // mirrored left-right: row (a, b, c) becomes (c, b, a)
    const bool mirrored = out[0] == in[2] && out[1] == in[1] && out[2] == in[0] && out[3] == in[5] && out[5] == in[3];
    CHECK((same || mirrored));
    flipped += same ? 0 : 1;
  }
  CHECK(flipped > 16);  // binomial(64, 1/2): 32 +- 4
  CHECK(flipped < 48);
  CHECK(&flip.forward(x, Mode::Inference) == &x);
  CHECK_THROWS_AS(RandomFlip<double>("diagonal"), ConfigError);
}

TEST_CASE("RandomTranslation: whole-pixel and half-pixel moves under each fill mode, by hand") {
  Rng rng(1);
  const Tensor<double> x = numbered(1, 3, 3);  // rows (0 1 2), (10 11 12), (20 21 22)
  const auto moved = [&](Factor h, Factor w, const char* fill, const char* interpolation = "bilinear") {
    RandomTranslation<double> t(h, w, RandomTranslationOptions().fill_mode(fill).interpolation(interpolation).fill_value(-1));
    t.build(Shape{3, 3, 1}, rng);
    return rows(t.forward(x, Mode::Train));
  };
  using Rows = std::vector<std::vector<double>>;
  // Down by one row (1/3 of 3): output row i reads input row i - 1; row -1 is row 0 (reflect, nearest) or fill.
  CHECK(moved({1.0 / 3, 1.0 / 3}, 0, "reflect") == Rows{{0, 1, 2}, {0, 1, 2}, {10, 11, 12}});
  CHECK(moved({1.0 / 3, 1.0 / 3}, 0, "nearest") == Rows{{0, 1, 2}, {0, 1, 2}, {10, 11, 12}});
  CHECK(moved({1.0 / 3, 1.0 / 3}, 0, "constant") == Rows{{-1, -1, -1}, {0, 1, 2}, {10, 11, 12}});
  // Down by two: rows -2, -1 are rows 1, 0 when reflected (d c b a | a b c d), row 0 twice when nearest.
  CHECK(moved({2.0 / 3, 2.0 / 3}, 0, "reflect") == Rows{{10, 11, 12}, {0, 1, 2}, {0, 1, 2}});
  CHECK(moved({2.0 / 3, 2.0 / 3}, 0, "nearest") == Rows{{0, 1, 2}, {0, 1, 2}, {0, 1, 2}});
  // Left by one column (width factor -1/3): column j reads j + 1; column 3 reflects to column 2.
  CHECK(moved(0, {-1.0 / 3, -1.0 / 3}, "reflect") == Rows{{1, 2, 2}, {11, 12, 12}, {21, 22, 22}});
  // Right by half a pixel: column j reads j - 0.5, half of each neighbour; column -0.5 maps to 0 when
  // reflected, and is half fill (-1) and half column 0 when constant.
  CHECK(moved(0, {0.5 / 3, 0.5 / 3}, "reflect") == Rows{{0, 0.5, 1.5}, {10, 10.5, 11.5}, {20, 20.5, 21.5}});
  CHECK(moved(0, {0.5 / 3, 0.5 / 3}, "constant") == Rows{{-0.5, 0.5, 1.5}, {4.5, 10.5, 11.5}, {9.5, 20.5, 21.5}});
  // Nearest interpolation rounds the mapped coordinate: right by 0.6, column j reads j - 0.6: -0.6 reflects
  // to -0.4, held at 0; 0.4 rounds to 0 and 1.4 to 1.
  CHECK(moved(0, {0.2, 0.2}, "reflect", "nearest") == Rows{{0, 0, 1}, {10, 10, 11}, {20, 20, 21}});
  RandomTranslation<double> t(0.2, 0.2);
  t.build(Shape{3, 3, 1}, rng);
  CHECK(&t.forward(x, Mode::Inference) == &x);
  CHECK_THROWS_AS(RandomTranslation<double>(1.5, 0), ConfigError);
  CHECK_THROWS_AS(RandomTranslation<double>(0.1, 0.1, RandomTranslationOptions().fill_mode("mirror")), ConfigError);
}

TEST_CASE("RandomCrop after ZeroPadding2D: a random window in training, the identity in inference") {
  Sequential<double> m(1);
  m.add(ZeroPadding2D<double>(2), Shape{4, 4, 1});
  m.add(RandomCrop<double>(4, 4));
  CHECK(m.layers()[0]->output_shape() == Shape{8, 8, 1});
  const Tensor<double> x = numbered(40, 4, 4);
  const Tensor<double> p = m.predict(x);
  CHECK(std::equal(p.begin(), p.end(), x.begin()));
  // In training each image is a 4 x 4 window of the padded 8 x 8: find where its known values landed.
  const Tensor<double>& padded = m.layers()[0]->forward(x, Mode::Train);
  const Tensor<double>& y = m.layers()[1]->forward(padded, Mode::Train);
  std::vector<int> seen(25, 0);
  for (Index b = 0; b < 40; ++b) {
    int found = 0;
    for (Index oy = 0; oy <= 4; ++oy) {
      for (Index ox = 0; ox <= 4; ++ox) {
        bool match = true;
        for (Index i = 0; i < 4 && match; ++i) {
          for (Index j = 0; j < 4 && match; ++j) match = y[((b * 4 + i) * 4 + j)] == padded[((b * 8 + oy + i) * 8 + ox + j)];
        }
        if (match && found++ == 0) ++seen[static_cast<std::size_t>(oy * 5 + ox)];
      }
    }
    CHECK(found >= 1);
  }
  CHECK(std::count_if(seen.begin(), seen.end(), [](int n) { return n > 0; }) > 10);  // many of the 25 places
  CHECK_THROWS_AS(m.add(RandomCrop<double>(9, 9)), ShapeError);
}

TEST_CASE("RandomErasing: Keras's patch, probability and fill, on numbered images") {
  Rng rng(1);
  const Tensor<double> x = numbered(200, 10, 10);
  // factor (1, 1): every image is erased; scale (0.25, 0.25): each side is sqrt(0.25) = half the image's,
  // 5.0, so wherever its real corners fall the patch covers 5 whole rows and 5 whole columns.
  RandomErasing<double> always(RandomErasingOptions().factor(1, 1).scale(0.25, 0.25).fill_value(-7.0).value_range(-10, 300));
  always.build(Shape{10, 10, 1}, rng);
  const Tensor<double>& y = always.forward(x, Mode::Train);
  for (Index b = 0; b < 200; ++b) {
    Index erased = 0, rows_hit = 0;
    for (Index i = 0; i < 10; ++i) {
      Index in_row = 0;
      for (Index j = 0; j < 10; ++j) {
        const Index at = (b * 10 + i) * 10 + j;
        if (y[at] == -7.0) ++in_row;
        else CHECK(y[at] == x[at]);
      }
      erased += in_row;
      rows_hit += in_row > 0 ? 1 : 0;
      CHECK((in_row == 0 || in_row == 5));
    }
    CHECK(rows_hit == 5);
    CHECK(erased == 25);
  }
  // factor 1.0 as Keras takes it: p ~ U(0, 1), erased when U(0, 1) < p, so half the images on average;
  // the noise fill is clipped to value_range.
  RandomErasing<double> half(RandomErasingOptions().factor(1.0).scale(0.25, 0.25).value_range(0, 255));
  half.build(Shape{10, 10, 1}, rng);
  const Tensor<double>& z = half.forward(x, Mode::Train);
  int changed = 0;
  for (Index b = 0; b < 200; ++b) {
    bool any = false;
    for (Index k = 0; k < 100; ++k) {
      const double v = z[b * 100 + k];
      any = any || v != x[b * 100 + k];
      CHECK((v == x[b * 100 + k] || (v >= 0 && v <= 255)));
    }
    changed += any ? 1 : 0;
  }
  CHECK(changed > 70);  // binomial(200, 1/2): 100 +- 7
  CHECK(changed < 130);
  CHECK(&half.forward(x, Mode::Inference) == &x);
  CHECK_THROWS_AS(RandomErasing<double>(RandomErasingOptions().scale(0.5, 1.5)), ConfigError);
}

TEST_CASE("augmentation layers: gradients by finite differences, configs made again") {
  Rng rng(2);
  Tensor<double> x(Shape{3, 5, 4, 2});
  loom::testing::random_fill(x, rng);
  std::vector<std::unique_ptr<Layer<double>>> layers;
  layers.push_back(std::make_unique<RandomFlip<double>>("horizontal_and_vertical", 4));
  layers.push_back(std::make_unique<RandomTranslation<double>>(0.3, 0.4, RandomTranslationOptions().seed(5)));
  layers.push_back(std::make_unique<RandomTranslation<double>>(
      Factor(-0.3, 0.1), 0.25, RandomTranslationOptions().fill_mode("constant").fill_value(0.5)));
  layers.push_back(std::make_unique<RandomTranslation<double>>(0.3, 0.3, RandomTranslationOptions().fill_mode("nearest")));
  layers.push_back(std::make_unique<RandomCrop<double>>(3, 2, 6));
  layers.push_back(std::make_unique<RandomErasing<double>>(RandomErasingOptions().factor(1, 1).scale(0.2, 0.5).seed(8)));
  layers.push_back(std::make_unique<RandomErasing<double>>(RandomErasingOptions().fill_value(0.25).value_range(0, 1)));
  layers.push_back(std::make_unique<ZeroPadding2D<double>>(1, 2, 0, 3));
  for (auto& layer : layers) {
    CAPTURE(layer->type());
    layer->build(Shape{5, 4, 2}, rng);
    loom::testing::check_layer_gradients(*layer, x);
    const auto again = Registry<Layer<double>>::global().create(layer->type(), layer->config());
    CHECK(again->config() == layer->config());
  }
}

TEST_CASE("a model that augments its input, stopped mid-fit and resumed, ends as one that never stopped") {
  Rng rng(3);
  Tensor<float> x(Shape{48, 6, 6, 1}), y(Shape{48});
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (Index i = 0; i < 48; ++i) y[i] = static_cast<float>(i % 3);
  const auto make = [] {
    Sequential<float> m(9);
    m.add(RandomFlip<float>("horizontal"), Shape{6, 6, 1});
    m.add(RandomTranslation<float>(0.2, 0.2));
    m.add(ZeroPadding2D<float>(1));
    m.add(RandomCrop<float>(6, 6));
    m.add(RandomErasing<float>(RandomErasingOptions().value_range(0, 1)));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
    m.compile("sparse_categorical_crossentropy", {"accuracy"});
    return m;
  };
  const auto options = [] { return FitOptions<float>().epochs(5).batch_size(8).verbose(0); };
  auto straight = make();
  straight.fit(x, y, options());
  check_resume_matches(straight, make(), x, y, options(), options());
}
