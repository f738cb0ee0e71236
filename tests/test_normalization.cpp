// LayerNormalization, SpatialDropout2D, GaussianNoise and Keras's weight
// regularizers (L1, L2, L1L2 on Dense, Conv2D, BatchNormalization and
// LayerNormalization): values by hand, gradients by finite differences in
// double (through whole models for the regularizers: the step's gradient is
// that of loss + penalty), the random layers' streams, and files.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include <loom/loom.hpp>

#include "gradient_check.hpp"
#include "test_support.hpp"

using namespace loom;
using loom::testing::error_of;
using loom::testing::TempDir;

namespace {

Tensor<double> norm_random(const Shape& shape, std::uint64_t seed, double lo = -1, double hi = 1) {
  Tensor<double> t(shape);
  Rng rng(seed);
  loom::testing::random_fill(t, rng, lo, hi);
  return t;
}

/// Every parameter and buffer of `m` at random (kernels small, gamma and the
/// moving variance around 1), so that no bias or beta sits at L1's kink.
void norm_vary_weights(Sequential<double>& m, std::uint64_t seed) {
  Rng rng(seed);
  for (const auto& p : m.parameters()) {
    const std::string stem = p.name.substr(p.name.rfind('/') + 1);
    const bool around_one = stem == "gamma" || stem == "moving_variance";
    for (double& v : *p.value) v = around_one ? rng.uniform(0.6, 1.4) : rng.uniform(-0.5, 0.5);
  }
}

/// The random streams of every layer of `m` (to give every evaluation the
/// same dropout masks and noise).
std::vector<std::vector<Rng::State>> norm_streams(const Sequential<double>& m) {
  std::vector<std::vector<Rng::State>> s;
  for (const auto& l : m.layers()) s.push_back(l->rng_states());
  return s;
}
void norm_set_streams(Sequential<double>& m, const std::vector<std::vector<Rng::State>>& s) {
  for (std::size_t i = 0; i < s.size(); ++i) m.layers()[i]->set_rng_states(s[i]);
}

/// The regularizers a test model was given, written out again by hand:
/// (index in parameters(), l1, l2).
using NormPenalties = std::vector<std::tuple<std::size_t, double, double>>;

/// Keras's penalty of `m`'s weights by `spec`, computed here on its own.
double norm_penalty(Sequential<double>& m, const NormPenalties& spec) {
  double s = 0;
  for (const auto& [index, l1, l2] : spec) {
    for (double v : *m.parameters()[index].value) s += l1 * std::fabs(v) + l2 * v * v;
  }
  return s;
}

/// Checks by central differences that the gradient one training step of
/// the regularized model `m` takes (read from what SGD with learning rate 1
/// does to its weights) is that of the loss of `plain`, the same model
/// without regularizers, given m's weights, plus the penalty `spec` gives:
/// every trainable parameter, up to `probes` elements of each. Also checks
/// that the loss m's step reports is that sum. Every evaluation runs in
/// training mode with the same masks and noise.
void norm_check_step_gradient(Sequential<double>& m, Sequential<double>& plain, const NormPenalties& spec,
                              const Tensor<double>& x, const Tensor<double>& y, Index probes = 40) {
  REQUIRE(m.parameters().size() == plain.parameters().size());
  const auto streams = norm_streams(m);
  std::vector<Tensor<double>> before;
  for (const auto& p : m.parameters()) before.push_back(*p.value);
  m.compile(SparseCategoricalCrossentropy<double>(), SGD<double>(SGDOptions().learning_rate(1)));
  m.train_step(x, y);
  std::vector<Tensor<double>> gradients;
  std::size_t i = 0;
  for (const auto& p : m.parameters()) {
    Tensor<double> g = before[i];
    for (Index k = 0; k < g.size(); ++k) g[k] -= (*p.value)[k];  // w - (w - 1 * g)
    *p.value = before[i++];  // the buffers too (BatchNormalization's moving statistics)
    gradients.push_back(std::move(g));
  }
  m.compile(SparseCategoricalCrossentropy<double>(), SGD<double>(SGDOptions().learning_rate(0)));
  plain.compile(SparseCategoricalCrossentropy<double>(), SGD<double>(SGDOptions().learning_rate(0)));
  const auto loss = [&] {  // learning rate 0: the weights stay
    for (std::size_t k = 0; k < m.parameters().size(); ++k) *plain.parameters()[k].value = *m.parameters()[k].value;
    norm_set_streams(plain, streams);
    return plain.train_step(x, y) + norm_penalty(m, spec);
  };
  norm_set_streams(m, streams);
  const double reported = m.train_step(x, y);
  CHECK(reported == doctest::Approx(loss()).epsilon(1e-13));
  CHECK(norm_penalty(m, spec) > 0.01);
  Rng rng(77);
  i = 0;
  for (const auto& p : m.parameters()) {
    const Tensor<double>& g = gradients[i++];
    if (p.trainable()) loom::testing::compare(p.name, *p.value, g, loss, probes, rng, 1e-6, 2e-6);
  }
}

Tensor<double> norm_labels(Index n, Index classes) {
  Tensor<double> y(Shape{n});
  for (Index i = 0; i < n; ++i) y[i] = static_cast<double>((i * 7 + 3) % classes);
  return y;
}

}  // namespace

TEST_CASE("LayerNormalization: each sample over its last axis, by hand, with gamma and beta, in training and inference") {
  Rng rng;
  LayerNormalization<double> ln;  // Keras's defaults: axis -1, epsilon 1e-3, center, scale
  ln.build(Shape{2, 3}, rng);
  auto params = ln.parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].name == "/gamma");
  CHECK(params[1].name == "/beta");
  CHECK(params[0].value->shape() == Shape{3});
  CHECK(std::vector<double>(params[0].value->begin(), params[0].value->end()) == std::vector<double>{1, 1, 1});
  CHECK(std::vector<double>(params[1].value->begin(), params[1].value->end()) == std::vector<double>{0, 0, 0});
  *params[0].value = Tensor<double>(Shape{3}, {1, 2, 0.5});
  *params[1].value = Tensor<double>(Shape{3}, {0, -1, 0.25});
  const Tensor<double> x(Shape{1, 2, 3}, {1, 2, 6, -3, 0, 3});
  for (Mode mode : {Mode::Train, Mode::Inference}) {
    const Tensor<double>& y = ln.forward(x, mode);
    for (Index r = 0; r < 2; ++r) {
      const double* xr = x.data() + r * 3;
      const double mean = (xr[0] + xr[1] + xr[2]) / 3;
      double var = 0;
      for (int k = 0; k < 3; ++k) var += (xr[k] - mean) * (xr[k] - mean) / 3;  // biased
      const double gamma[3] = {1, 2, 0.5}, beta[3] = {0, -1, 0.25};
      for (int k = 0; k < 3; ++k) {
        CHECK(y[r * 3 + k] == doctest::Approx((xr[k] - mean) / std::sqrt(var + 1e-3) * gamma[k] + beta[k]).epsilon(1e-14));
      }
    }
  }
  // Row 1 of x is row 0 shifted and scaled: the same normalized values.
  LayerNormalization<double> plain(LayerNormalizationOptions().center(false).scale(false).epsilon(1e-12));
  plain.build(Shape{3}, rng);
  CHECK(plain.parameters().empty());
  CHECK(plain.count_params() == 0);
  const Tensor<double>& z = plain.forward(Tensor<double>(Shape{2, 3}, {1, 2, 3, 10, 20, 30}), Mode::Inference);
  for (int k = 0; k < 3; ++k) CHECK(z[k] == doctest::Approx(z[3 + k]).epsilon(1e-9));
  CHECK(z[0] == doctest::Approx(-std::sqrt(1.5)).epsilon(1e-9));

  CHECK(error_of([] { LayerNormalization<float>(LayerNormalizationOptions().epsilon(0)); }).find("epsilon") !=
        std::string::npos);
  CHECK(error_of([] { LayerNormalization<float>(LayerNormalizationOptions().axis({0})); }).find("batch") !=
        std::string::npos);
}

TEST_CASE("LayerNormalization over several trailing axes (gamma of their shape); other axes are refused, naming them") {
  Rng rng;
  for (const std::vector<Index>& axes : {std::vector<Index>{2, 3}, std::vector<Index>{-1, -2}, std::vector<Index>{3, -2}}) {
    LayerNormalization<double> ln(LayerNormalizationOptions().axis(axes));
    ln.build(Shape{4, 5, 3}, rng);
    CHECK(ln.parameters()[0].value->shape() == Shape{5, 3});
    // The same as one axis over the (5 * 3) values of each row.
    LayerNormalization<double> flat;
    flat.build(Shape{4, 15}, rng);
    const Tensor<double> x = norm_random(Shape{2, 4, 5, 3}, 3);
    Tensor<double> xf = x;
    xf.reshape(Shape{2, 4, 15});
    const Tensor<double>& a = ln.forward(x, Mode::Inference);
    const Tensor<double>& b = flat.forward(xf, Mode::Inference);
    for (Index i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-13));
  }
  LayerNormalization<double> all(LayerNormalizationOptions().axis({1, 2, 3}));
  all.build(Shape{4, 5, 3}, rng);
  CHECK(all.parameters()[0].value->shape() == Shape{4, 5, 3});
  for (const std::vector<Index>& axes : {std::vector<Index>{1}, std::vector<Index>{1, 3}, std::vector<Index>{3, 3},
                                         std::vector<Index>{4}}) {
    LayerNormalization<double> bad(LayerNormalizationOptions().axis(axes));
    const std::string e = error_of([&] { bad.build(Shape{4, 5, 3}, rng); });
    CHECK(e.find("LayerNormalization") != std::string::npos);
    CHECK(e.find("axis [") != std::string::npos);
    CHECK(e.find("(None, 4, 5, 3)") != std::string::npos);
  }
}

TEST_CASE("LayerNormalization's gradients by finite differences in double: the input, gamma and beta") {
  Rng rng;
  struct Variant {
    LayerNormalizationOptions options;
    Shape input;
  };
  const std::vector<Variant> variants = {
      {LayerNormalizationOptions(), Shape{7}},
      {LayerNormalizationOptions(), Shape{4, 5, 3}},
      {LayerNormalizationOptions().axis({2, 3}).epsilon(0.1), Shape{4, 5, 3}},
      {LayerNormalizationOptions().center(false), Shape{3, 6}},
      {LayerNormalizationOptions().scale(false), Shape{3, 6}},
  };
  for (std::size_t v = 0; v < variants.size(); ++v) {
    CAPTURE(v);
    LayerNormalization<double> ln(variants[v].options);
    ln.build(variants[v].input, rng);
    Rng values(v + 10);
    for (auto& p : ln.parameters()) loom::testing::random_fill(*p.value, values, 0.5, 1.5);
    loom::testing::check_layer_gradients(ln, norm_random(variants[v].input.with_batch(3), 20 + v, -2, 2));
  }
}

TEST_CASE("SpatialDropout2D drops whole channels of each sample in training, scales the rest, is the identity in inference") {
  Rng rng;
  SpatialDropout2D<double> sd(0.4, 5);
  sd.build(Shape{3, 4, 16}, rng);
  const Tensor<double> x = norm_random(Shape{8, 3, 4, 16}, 1, 0.5, 1.5);  // no zeros in x
  CHECK(&sd.forward(x, Mode::Inference) == &x);
  const Tensor<double>& y = sd.forward(x, Mode::Train);
  Index dropped = 0;
  for (Index n = 0; n < 8; ++n) {
    for (Index c = 0; c < 16; ++c) {
      const double first = y[(n * 12) * 16 + c] / x[(n * 12) * 16 + c];
      CHECK((first == 0 || first == doctest::Approx(1 / 0.6).epsilon(1e-15)));
      dropped += first == 0;
      for (Index p = 1; p < 12; ++p) {  // the same factor at every pixel of the channel
        CHECK(y[(n * 12 + p) * 16 + c] / x[(n * 12 + p) * 16 + c] == doctest::Approx(first).epsilon(1e-15));
      }
    }
  }
  CHECK(dropped > 128 * 0.25);
  CHECK(dropped < 128 * 0.55);
  // backward: dy times the same factors.
  const Tensor<double> dy = norm_random(x.shape(), 2);
  sd.set_needs_input_grad(true);
  const Tensor<double>& dx = sd.backward(dy);
  for (Index i = 0; i < dx.size(); ++i) CHECK(dx[i] == doctest::Approx(dy[i] * y[i] / x[i]).epsilon(1e-12));
  // The layer's own stream: the same seed, the same masks; the next forward, others.
  SpatialDropout2D<double> again(0.4, 5);
  again.build(Shape{3, 4, 16}, rng);
  const Tensor<double> first_masks = y;
  CHECK(std::equal(first_masks.begin(), first_masks.end(), again.forward(x, Mode::Train).begin()));
  CHECK(!std::equal(first_masks.begin(), first_masks.end(), again.forward(x, Mode::Train).begin()));
  // Its masks do not depend on the thread count.
  const int threads = num_threads();
  set_num_threads(1);
  SpatialDropout2D<double> one(0.4, 5);
  one.build(Shape{3, 4, 16}, rng);
  CHECK(std::equal(first_masks.begin(), first_masks.end(), one.forward(x, Mode::Train).begin()));
  set_num_threads(threads);

  CHECK(sd.fusion_traits().identity_in_inference);
  CHECK(sd.fusion_traits().scales_elementwise);
  CHECK(error_of([] { SpatialDropout2D<float>(1.0); }).find("rate") != std::string::npos);
  CHECK(error_of([&] {
          SpatialDropout2D<float> flat(0.1);
          flat.build(Shape{10}, rng);
        }).find("(None, height, width, channels)") != std::string::npos);
}

TEST_CASE("GaussianNoise adds N(0, stddev^2) in training only, from its own seeded stream; its gradient is dy") {
  Rng rng;
  GaussianNoise<double> gn(0.5, 11);
  gn.build(Shape{100, 100}, rng);
  const Tensor<double> x = norm_random(Shape{4, 100, 100}, 3);
  CHECK(&gn.forward(x, Mode::Inference) == &x);
  const Tensor<double>& y = gn.forward(x, Mode::Train);
  double sum = 0, squares = 0;
  for (Index i = 0; i < x.size(); ++i) {
    const double e = y[i] - x[i];
    sum += e;
    squares += e * e;
  }
  const double n = static_cast<double>(x.size()), mean = sum / n;
  CHECK(std::fabs(mean) < 0.01);                                        // 4 standard errors: 0.5 / 200
  CHECK(std::sqrt(squares / n - mean * mean) == doctest::Approx(0.5).epsilon(0.01));
  gn.set_needs_input_grad(true);
  const Tensor<double> dy = norm_random(x.shape(), 4);
  CHECK(&gn.backward(dy) == &dy);
  const Tensor<double> noisy = y;
  GaussianNoise<double> same(0.5, 11);
  same.build(Shape{100, 100}, rng);
  CHECK(std::equal(noisy.begin(), noisy.end(), same.forward(x, Mode::Train).begin()));
  CHECK(!std::equal(noisy.begin(), noisy.end(), same.forward(x, Mode::Train).begin()));
  CHECK(gn.fusion_traits().identity_in_inference);
  CHECK(!gn.fusion_traits().scales_elementwise);
  CHECK(error_of([] { GaussianNoise<float>(-0.1); }).find("stddev") != std::string::npos);
  // stddev 0 is the identity in training too.
  GaussianNoise<double> none(0.0);
  none.build(Shape{3}, rng);
  const Tensor<double> small = norm_random(Shape{2, 3}, 5);
  CHECK(&none.forward(small, Mode::Train) == &small);
}

TEST_CASE("SpatialDropout2D's and GaussianNoise's gradients by finite differences in double") {
  Rng rng;
  SpatialDropout2D<double> sd(0.5);
  sd.build(Shape{3, 3, 4}, rng);
  loom::testing::check_layer_gradients(sd, norm_random(Shape{3, 3, 3, 4}, 6));
  GaussianNoise<double> gn(0.3);
  gn.build(Shape{3, 3, 4}, rng);
  loom::testing::check_layer_gradients(gn, norm_random(Shape{3, 3, 3, 4}, 7));
}

TEST_CASE("regularizers: Keras's penalties (L1, L2 without a factor 1/2, L1L2), their gradients, checks and configs") {
  CHECK(L1().l1() == 0.01);  // Keras's defaults
  CHECK(L2().l2() == 0.01);
  CHECK(!L1L2().active());
  CHECK(!Regularizer().active());
  CHECK(L1L2(0.1, 0.2) == Regularizer(0.1, 0.2));
  CHECK(L2(1e-4).str() == "L2(0.0001)");
  CHECK(error_of([] { L2(-1); }).find("l2") != std::string::npos);
  CHECK(error_of([] { L1(std::nan("")); }).find("l1") != std::string::npos);

  const Tensor<double> w(Shape{2, 2}, {1, -2, 3, 0});
  CHECK(L1(0.1).penalty(w) == doctest::Approx(0.6));
  CHECK(L2(0.01).penalty(w) == doctest::Approx(0.14));  // 0.01 * (1 + 4 + 9), not half of it
  CHECK(L1L2(0.1, 0.01).penalty(w) == doctest::Approx(0.74));
  Tensor<double> g(Shape{2, 2}, {1, 1, 1, 1});
  CHECK(L1L2(0.1, 0.01).add_gradient(w, g) == doctest::Approx(0.74));
  const std::vector<double> want = {1 + 0.1 + 0.02, 1 - 0.1 - 0.04, 1 + 0.1 + 0.06, 1};  // sign(0) = 0
  for (Index i = 0; i < 4; ++i) CHECK(g[i] == doctest::Approx(want[static_cast<std::size_t>(i)]));

  // A Dense by hand: the penalty joins evaluate's and train_step's loss, once per parameter.
  const auto make = [&w](bool regularized) {
    Sequential<double> m(3);
    DenseOptions o(2);
    if (regularized) o.kernel_regularizer(L1L2(0.1, 0.01)).bias_regularizer(L2(0.2));
    m.add(Dense<double>(o.activation(Activation::Softmax)), Shape{2});
    *m.parameters()[0].value = w;
    *m.parameters()[1].value = Tensor<double>(Shape{2}, {0.5, -0.5});
    m.compile(SparseCategoricalCrossentropy<double>(), SGD<double>(SGDOptions().learning_rate(0)));
    return m;
  };
  Sequential<double> reg = make(true), plain = make(false);
  CHECK(reg.parameters()[0].regularizer == L1L2(0.1, 0.01));
  CHECK(reg.parameters()[1].regularizer == L2(0.2));
  const double penalty = 0.1 * 6 + 0.01 * 14 + 0.2 * 0.5;  // 0.84
  CHECK(regularization_penalty(reg.parameters()) == doctest::Approx(penalty).epsilon(1e-15));
  CHECK(regularization_penalty(plain.parameters()) == 0);
  const Tensor<double> x(Shape{3, 2}, {0.5, 1, -1, 2, 0, -0.5}), y(Shape{3}, {0, 1, 1});
  CHECK(reg.evaluate(x, y).loss - plain.evaluate(x, y).loss == doctest::Approx(penalty).epsilon(1e-12));
  CHECK(reg.train_step(x, y) - plain.train_step(x, y) == doctest::Approx(penalty).epsilon(1e-12));
  // fit's loss and val_loss hold it too, as Keras's do.
  const History h = reg.fit(x, y, FitOptions<double>().epochs(1).batch_size(3).verbose(0).validation_data(x, y));
  CHECK(h["loss"][0] == doctest::Approx(reg.evaluate(x, y).loss).epsilon(1e-12));
  CHECK(h["val_loss"][0] == doctest::Approx(reg.evaluate(x, y).loss).epsilon(1e-12));

  // Configs: written only when set; read back exactly.
  CHECK(!Dense<float>(DenseOptions(3)).config().has("kernel_regularizer"));
  const Config c = Dense<float>(DenseOptions(3).kernel_regularizer(L2(1e-4)).bias_regularizer(L1L2(0.3, 1e-5))).config();
  CHECK(regularizer_from(c, "kernel_regularizer") == L2(1e-4));
  CHECK(regularizer_from(c, "bias_regularizer") == L1L2(0.3, 1e-5));
  CHECK(error_of([] { regularizer_from(Config().set("kernel_regularizer", "0.1"), "kernel_regularizer"); })
            .find("kernel_regularizer") != std::string::npos);
  CHECK(error_of([] { regularizer_from(Config().set("kernel_regularizer", "-1,0"), "kernel_regularizer"); })
            .find("kernel_regularizer") != std::string::npos);
}

TEST_CASE("a regularized step's gradient is that of loss + penalty (finite differences in double), in a Sequential") {
  // Conv2D (ReLU) -> SpatialDropout2D -> BatchNormalization -> MaxPool2D: the training step fuses the
  // BatchNormalization with its MaxPool2D and hands the ReLU's derivative past the SpatialDropout2D.
  const auto make = [](bool r) {
    const auto reg = [r](Regularizer g) { return r ? g : Regularizer(); };
    Sequential<double> m(8);
    m.add(Conv2D<double>(Conv2DOptions(3, {3, 3}).activation(Activation::ReLU).kernel_regularizer(reg(L2(0.05))).bias_regularizer(reg(L1(0.02)))),
          Shape{8, 8, 2});
    m.add(SpatialDropout2D<double>(0.3));
    m.add(BatchNormalization<double>(BatchNormalizationOptions().gamma_regularizer(reg(L2(0.1))).beta_regularizer(reg(L1(0.03)))));
    m.add(MaxPool2D<double>(MaxPool2DOptions({2, 2})));
    m.add(Flatten<double>());
    m.add(LayerNormalization<double>(LayerNormalizationOptions().gamma_regularizer(reg(L1L2(0.01, 0.02))).beta_regularizer(reg(L2(0.1)))));
    m.add(GaussianNoise<double>(0.2));
    m.add(Dense<double>(DenseOptions(3).activation(Activation::Softmax).kernel_regularizer(reg(L1L2(0.01, 0.1))).bias_regularizer(reg(L2(0.3)))));
    norm_vary_weights(m, 5);
    return m;
  };
  Sequential<double> m = make(true), plain = make(false);
  // conv2d/kernel, bias; batch_normalization/gamma, beta, (moving statistics); layer_normalization/gamma, beta; dense/kernel, bias
  const NormPenalties spec = {{0, 0, 0.05}, {1, 0.02, 0}, {2, 0, 0.1},   {3, 0.03, 0}, {6, 0.01, 0.02},
                              {7, 0, 0.1},  {8, 0.01, 0.1}, {9, 0, 0.3}};
  REQUIRE(m.parameters().size() == 10);
  CHECK(m.parameters()[6].name == "layer_normalization/gamma");
  norm_check_step_gradient(m, plain, spec, norm_random(Shape{6, 8, 8, 2}, 9, 0, 1), norm_labels(6, 3));
}

TEST_CASE("a regularized step's gradient is that of loss + penalty in a graph, a shared layer's penalty once") {
  const auto make = [](bool r) {
    const auto reg = [r](Regularizer g) { return r ? g : Regularizer(); };
    Symbol<double> in = Input<double>({6, 6, 1});
    Symbol<double> x = call(Conv2D<double>(Conv2DOptions(2, {3, 3}).activation(Activation::Tanh).kernel_regularizer(reg(L2(0.1)))), in);
    x = call(Flatten<double>(), x);
    Symbol<double> a = call(Dense<double>(DenseOptions(4).activation(Activation::Tanh).bias_regularizer(reg(L1(0.05)))), x);
    auto twice = shared(Dense<double>(DenseOptions(4).activation(Activation::Tanh).kernel_regularizer(reg(L1L2(0.02, 0.2)))));
    Symbol<double> b = call(twice, call(twice, a));
    Symbol<double> out = call(Dense<double>(DenseOptions(3).activation(Activation::Softmax).kernel_regularizer(reg(L1(0.01)))),
                              call(Add<double>(), {a, b}));
    Functional<double> m(in, out, 4);
    norm_vary_weights(m, 6);
    return m;
  };
  Functional<double> m = make(true), plain = make(false);
  // The shared Dense's kernel counts once: 4 regularized parameters, 4 penalties.
  int regularized = 0;
  for (const auto& p : m.parameters()) regularized += p.regularizer.active();
  CHECK(regularized == 4);
  std::vector<std::string> names;
  for (const auto& p : m.parameters()) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{"conv2d/kernel", "conv2d/bias", "dense/kernel", "dense/bias", "dense_1/kernel",
                                          "dense_1/bias", "dense_2/kernel", "dense_2/bias"});
  const NormPenalties spec = {{0, 0, 0.1}, {3, 0.05, 0}, {4, 0.02, 0.2}, {6, 0.01, 0}};
  norm_check_step_gradient(m, plain, spec, norm_random(Shape{5, 6, 6, 1}, 10, 0, 1), norm_labels(5, 3));
}

TEST_CASE("the new layers and regularizers saved and loaded: configs, predictions bit for bit, a resumed fit exact") {
  const auto make = [] {
    Sequential<float> m(21, "normalized");
    m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).activation(Activation::ReLU).kernel_regularizer(L2(1e-3)).bias_regularizer(L1(1e-4))),
          Shape{8, 8, 1});
    m.add(SpatialDropout2D<float>(0.25));
    m.add(BatchNormalization<float>(BatchNormalizationOptions().gamma_regularizer(L2(1e-3)).beta_regularizer(L1L2(1e-4, 1e-3))));
    m.add(LayerNormalization<float>(LayerNormalizationOptions().axis({2, 3}).epsilon(1e-2).gamma_regularizer(L1(1e-3))));
    m.add(GaussianNoise<float>(0.1, 17));
    m.add(SpatialDropout2D<float>(0.1, 23));
    m.add(Flatten<float>());
    m.add(LayerNormalization<float>(LayerNormalizationOptions().center(false)));
    m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax).kernel_regularizer(L1L2(1e-4, 1e-3))));
    m.compile("sparse_categorical_crossentropy", {"accuracy"}, "adam");
    return m;
  };
  Tensor<float> x, y;
  loom::testing::random_data(40, x, y);
  Sequential<float> m = make();
  m.fit(x, y, FitOptions<float>().epochs(1).batch_size(8).verbose(0));
  TempDir dir;
  m.save(dir.file("m.loom"));
  Sequential<float> back = Sequential<float>::load(dir.file("m.loom"));
  REQUIRE(back.size() == m.size());
  for (Index i = 0; i < static_cast<Index>(m.size()); ++i) {
    CHECK(back.layer(i).type() == m.layer(i).type());
    CHECK(back.layer(i).config() == m.layer(i).config());
  }
  CHECK(back.layer(0).config().text("kernel_regularizer") == "0,0.001");
  CHECK(back.layer(4).config().u64("seed") == 17);
  CHECK(back.layer(3).config().integers("axis") == std::vector<Index>{2, 3});
  const auto pb = back.parameters(), pm = m.parameters();
  REQUIRE(pb.size() == pm.size());
  for (std::size_t i = 0; i < pb.size(); ++i) CHECK(pb[i].regularizer == pm[i].regularizer);
  const Tensor<float> a = m.predict(x), b = back.predict(x);
  CHECK(std::equal(a.begin(), a.end(), b.begin()));
  // The random layers' streams are in the file: the next epoch is the same in both.
  m.fit(x, y, FitOptions<float>().epochs(2).batch_size(8).verbose(0).resume(true));
  back.fit(x, y, FitOptions<float>().epochs(2).batch_size(8).verbose(0).resume(true));
  CHECK(loom::testing::weights_of(back) == loom::testing::weights_of(m));
  CHECK(back.history()["loss"] == m.history()["loss"]);
}

TEST_CASE("in inference a Conv2D steps over SpatialDropout2D and GaussianNoise to the BatchNormalization and MaxPool2D it absorbs") {
  Sequential<double> m(12);
  m.add(Conv2D<double>(Conv2DOptions(4, {3, 3}).activation(Activation::ReLU)), Shape{10, 10, 2});
  m.add(SpatialDropout2D<double>(0.5));
  m.add(GaussianNoise<double>(1.0));
  m.add(BatchNormalization<double>());
  m.add(MaxPool2D<double>(MaxPool2DOptions({2, 2})));
  m.add(Flatten<double>());
  m.add(Dense<double>(DenseOptions(3)));
  norm_vary_weights(m, 13);
  const Tensor<double> x = norm_random(Shape{5, 10, 10, 2}, 14, 0, 1);
  const Tensor<double> fused = m.predict(x);
  Tensor<double> y = x;  // each layer on its own, in inference: the dropout and the noise do nothing
  for (const auto& l : m.layers()) y = l->forward(y, Mode::Inference);
  REQUIRE(y.shape() == fused.shape());
  for (Index i = 0; i < y.size(); ++i) CHECK(fused[i] == doctest::Approx(y[i]).epsilon(1e-12));
}
