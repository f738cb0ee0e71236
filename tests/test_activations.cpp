// Activations (issue 36's list): every Activation against Keras's own
// values, finite differences in double through the layers and through
// Dense's and Conv2D's `activation`, the fused kernels against the layer
// after them, and ReLU's, LeakyReLU's, ELU's and PReLU's parameters.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <loom/loom.hpp>

#include "gradient_check.hpp"
#include "test_support.hpp"

using namespace loom;
using loom::testing::TempDir;

namespace {

const std::vector<double> kActivationInputs = {-4, -2.6, -1, -0.3, 0, 0.4, 1, 2.7, 7};

std::vector<double> activation_values(Layer<double>& layer, const std::vector<double>& x) {
  Rng rng;
  layer.build(Shape{static_cast<Index>(x.size())}, rng);
  Tensor<double> in(Shape{1, static_cast<Index>(x.size())});
  std::copy(x.begin(), x.end(), in.begin());
  const Tensor<double>& y = layer.forward(in, Mode::Inference);
  return {y.begin(), y.end()};
}

void check_values(const std::string& what, const std::vector<double>& got, const std::vector<double>& want,
                  double tol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CHECK_MESSAGE(std::fabs(got[i] - want[i]) <= tol, what << "(" << kActivationInputs[i] << ") = " << got[i]
                                                           << ", expected " << want[i]);
  }
}

/// Inputs in [-4, 8]: across every kink (0, +-2.5, +-3, 6) but, almost
/// surely, not within a finite difference's step of one.
Tensor<double> activation_input(const Shape& shape, std::uint64_t seed) {
  Tensor<double> x(shape);
  Rng rng(seed);
  loom::testing::random_fill(x, rng, -4, 8);
  return x;
}

const std::vector<Activation> kElementwise = {
    Activation::ReLU,    Activation::ReLU6,       Activation::LeakyReLU,         Activation::ELU,
    Activation::SELU,    Activation::GELU,        Activation::GELUTanh,          Activation::SiLU,
    Activation::Sigmoid, Activation::HardSigmoid, Activation::HardSigmoidKeras2, Activation::Tanh,
    Activation::Softplus, Activation::Softsign,   Activation::None};

}  // namespace

TEST_CASE("every activation computes what Keras computes") {
  // Keras 3.15's keras.activations.get(name) on these inputs (TensorFlow
  // backend, float32, rounded to 4 places); for the two Keras has no name
  // for, tf.keras 2.21's hard_sigmoid and Keras's gelu(x, approximate=True).
  const std::vector<std::pair<const char*, std::vector<double>>> keras = {
      {"relu6", {0, 0, 0, 0, 0, 0.4, 1, 2.7, 6}},
      {"leaky_relu", {-0.8, -0.52, -0.2, -0.06, 0, 0.4, 1, 2.7, 7}},
      {"elu", {-0.9817, -0.9257, -0.6321, -0.2592, 0, 0.4, 1, 2.7, 7}},
      {"selu", {-1.7259, -1.6275, -1.1113, -0.4557, 0, 0.4203, 1.0507, 2.8369, 7.3549}},
      {"gelu", {-0.0001, -0.0121, -0.1587, -0.1146, 0, 0.2622, 0.8413, 2.6906, 7}},
      {"gelu_tanh", {-0.0001, -0.0117, -0.1588, -0.1146, 0, 0.2622, 0.8412, 2.6911, 7}},
      {"silu", {-0.0719, -0.1798, -0.2689, -0.1277, 0, 0.2395, 0.7311, 2.53, 6.9936}},
      {"swish", {-0.0719, -0.1798, -0.2689, -0.1277, 0, 0.2395, 0.7311, 2.53, 6.9936}},
      {"sigmoid", {0.018, 0.0691, 0.2689, 0.4256, 0.5, 0.5987, 0.7311, 0.937, 0.9991}},
      {"hard_sigmoid", {0, 0.0667, 0.3333, 0.45, 0.5, 0.5667, 0.6667, 0.95, 1}},
      {"hard_sigmoid_keras2", {0, 0, 0.3, 0.44, 0.5, 0.58, 0.7, 1, 1}},
      {"tanh", {-0.9993, -0.989, -0.7616, -0.2913, 0, 0.3799, 0.7616, 0.991, 1}},
      {"softplus", {0.0181, 0.0716, 0.3133, 0.5544, 0.6931, 0.913, 1.3133, 2.765, 7.0009}},
      {"softsign", {-0.8, -0.7222, -0.5, -0.2308, 0, 0.2857, 0.5, 0.7297, 0.875}},
      {"relu", {0, 0, 0, 0, 0, 0.4, 1, 2.7, 7}},
      {"linear", kActivationInputs},
  };
  for (const auto& [name, want] : keras) {
    ActivationLayer<double> layer(activation_from(name));
    check_values(name, activation_values(layer, kActivationInputs), want, 6e-5);
  }
  // Far out, where a naive formula overflows or loses everything.
  ActivationLayer<double> softplus(Activation::Softplus), sigmoid(Activation::Sigmoid), silu(Activation::SiLU);
  CHECK(activation_values(softplus, {-800, 800}) == std::vector<double>{std::log1p(std::exp(-800.0)), 800});
  CHECK(activation_values(sigmoid, {-800, 800}) == std::vector<double>{std::exp(-800.0), 1});
  CHECK(activation_values(silu, {-800, 800}) == std::vector<double>{-800 * std::exp(-800.0), 800});
}

TEST_CASE("activations by name: Keras's names, swish read as silu, and a clear error for another") {
  CHECK(activation_from("swish") == Activation::SiLU);
  CHECK(std::string(to_string(Activation::SiLU)) == "silu");
  for (Activation a : kElementwise) CHECK(activation_from(to_string(a)) == a);
  CHECK(loom::testing::error_of([] { activation_from("gelu2"); }).find("gelu2") != std::string::npos);
}

TEST_CASE("every activation's gradient, as a layer and as Dense's and Conv2D's activation, by finite differences") {
  Rng rng;
  for (Activation a : kElementwise) {
    CAPTURE(to_string(a));
    ActivationLayer<double> layer(a);
    layer.build(Shape{4, 5}, rng);
    loom::testing::check_layer_gradients(layer, activation_input(Shape{3, 4, 5}, 7));

    Dense<double> dense(DenseOptions(6).activation(a));
    dense.build(Shape{5}, rng);
    loom::testing::check_layer_gradients(dense, activation_input(Shape{4, 5}, 8));

    Conv2D<double> conv(Conv2DOptions(3, {3, 3}).padding(Padding::Same).activation(a));
    conv.build(Shape{5, 5, 2}, rng);
    loom::testing::check_layer_gradients(conv, activation_input(Shape{2, 5, 5, 2}, 9));
  }
}

TEST_CASE("Conv2D's activation outside its epilogue: every kernel gives what an Activation layer after it gives") {
  // The geometries that take the direct kernel (under 8 input channels),
  // Winograd (3x3, stride 1, 16 channels) and im2col + GEMM (8 channels,
  // stride 2), in float.
  struct Geometry {
    Shape input;
    Conv2DOptions options;
  };
  const std::vector<Geometry> geometries = {
      {Shape{12, 12, 1}, Conv2DOptions(16, {3, 3}).padding(Padding::Same)},
      {Shape{12, 12, 16}, Conv2DOptions(16, {3, 3}).padding(Padding::Same)},
      {Shape{12, 12, 8}, Conv2DOptions(8, {3, 3}).strides(Size2{2, 2})},
  };
  for (Activation a : {Activation::GELU, Activation::SiLU, Activation::Sigmoid, Activation::Softmax}) {
    for (const Geometry& g : geometries) {
      CAPTURE(to_string(a));
      CAPTURE(g.input.str());
      Sequential<float> fused(5), apart(5);
      fused.add(Conv2D<float>(Conv2DOptions(g.options).activation(a)), g.input);
      apart.add(Conv2D<float>(g.options), g.input);
      apart.add(ActivationLayer<float>(a));
      for (Sequential<float>* m : {&fused, &apart}) {
        m->add(Flatten<float>());
        m->add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
        m->compile(CategoricalCrossentropy<float>(), SGD<float>(SGDOptions().learning_rate(0.1)));
      }
      Tensor<float> x(g.input.with_batch(4)), y(Shape{4, 3});
      Rng rng(3);
      for (float& v : x) v = static_cast<float>(rng.uniform() * 2 - 1);
      for (Index i = 0; i < 4; ++i) y(i, i % 3) = 1;
      const Tensor<float> p1 = fused.predict(x), p2 = apart.predict(x);
      for (Index i = 0; i < p1.size(); ++i) CHECK(p1[i] == doctest::Approx(p2[i]).epsilon(1e-5));
      // One training step each: the same weights after it.
      const auto step = FitOptions<float>().epochs(1).batch_size(4).verbose(0).shuffle(false);
      fused.fit(x, y, step);
      apart.fit(x, y, step);
      const std::vector<float> w1 = loom::testing::weights_of(fused), w2 = loom::testing::weights_of(apart);
      REQUIRE(w1.size() == w2.size());
      for (std::size_t i = 0; i < w1.size(); ++i) CHECK(w1[i] == doctest::Approx(w2[i]).epsilon(1e-4));
    }
  }
}

TEST_CASE("ReLU's max_value, negative_slope and threshold, as Keras computes them, and their gradient") {
  // Keras: x above the threshold (else 0), clipped to [0, max_value], minus
  // negative_slope * max(threshold - x, 0).
  ReLU<double> relu(6.0, 0.1, 0.5);
  CHECK(!relu.plain());
  CHECK(relu.activation() == Activation::None);  // not the fusions' max(x, 0)
  check_values("ReLU(6, 0.1, 0.5)", activation_values(relu, kActivationInputs),
               {-0.45, -0.31, -0.15, -0.08, -0.05, -0.01, 1, 2.7, 6}, 1e-12);
  ReLU<double> clipped(6.0);
  check_values("ReLU(6)", activation_values(clipped, kActivationInputs), {0, 0, 0, 0, 0, 0.4, 1, 2.7, 6}, 1e-12);
  ReLU<double> below(std::nullopt, 0.0, 0.5);  // 0 up to the threshold, x above it
  check_values("ReLU(threshold=0.5)", activation_values(below, kActivationInputs), {0, 0, 0, 0, 0, 0, 1, 2.7, 7},
               1e-12);
  Rng rng;
  for (auto* l : {&relu, &clipped, &below}) {
    l->build(Shape{6}, rng);
    loom::testing::check_layer_gradients(*l, activation_input(Shape{5, 6}, 11));
  }
  CHECK(ReLU<double>().plain());
  CHECK(ReLU<double>().activation() == Activation::ReLU);
  CHECK(loom::testing::error_of([] { ReLU<float>(-1.0); }).find("max_value must be >= 0") != std::string::npos);
  CHECK(loom::testing::error_of([] { ReLU<float>(std::nullopt, -0.5); }).find("negative_slope") != std::string::npos);
  CHECK(loom::testing::error_of([] { ReLU<float>(std::nullopt, 0, -1); }).find("threshold must be finite and >= 0") !=
        std::string::npos);
}

TEST_CASE("LeakyReLU and ELU with a slope and alpha of their own: by hand and by finite differences") {
  LeakyReLU<double> leaky(0.3);
  check_values("LeakyReLU(0.3)", activation_values(leaky, kActivationInputs),
               {-1.2, -0.78, -0.3, -0.09, 0, 0.4, 1, 2.7, 7}, 1e-12);
  ELU<double> elu(0.5);
  std::vector<double> want;
  for (double x : kActivationInputs) want.push_back(x > 0 ? x : 0.5 * (std::exp(x) - 1));
  check_values("ELU(0.5)", activation_values(elu, kActivationInputs), want, 1e-12);
  Rng rng;
  leaky.build(Shape{3, 4}, rng);
  elu.build(Shape{3, 4}, rng);
  loom::testing::check_layer_gradients(leaky, activation_input(Shape{2, 3, 4}, 12));
  loom::testing::check_layer_gradients(elu, activation_input(Shape{2, 3, 4}, 13));
  CHECK(loom::testing::error_of([] { LeakyReLU<float>(-0.1); }).find("negative_slope must be >= 0") !=
        std::string::npos);
}

TEST_CASE("PReLU: one learned slope per element, shared along shared_axes; by hand and by finite differences") {
  Rng rng;
  PReLU<double> p({1});  // input (2, 3): alpha (1, 3), shared along the first axis
  p.build(Shape{2, 3}, rng);
  auto params = p.parameters();
  REQUIRE(params.size() == 1);
  CHECK(params[0].value->shape() == Shape{1, 3});
  CHECK(std::vector<double>(params[0].value->begin(), params[0].value->end()) == std::vector<double>(3, 0.0));
  *params[0].value = Tensor<double>(Shape{1, 3}, {0.1, 0.2, 0.3});
  const Tensor<double> x(Shape{1, 2, 3}, {-1, 2, -3, 4, -5, 0});
  const Tensor<double>& y = p.forward(x, Mode::Train);
  const std::vector<double> want_y = {-0.1, 2, -0.9, 4, -1, 0};
  for (Index i = 0; i < 6; ++i) CHECK(y[i] == doctest::Approx(want_y[static_cast<std::size_t>(i)]).epsilon(1e-15));
  const Tensor<double> dy(Shape{1, 2, 3}, {1, 1, 1, 2, 2, 2});
  p.set_needs_input_grad(true);
  const Tensor<double>& dx = p.backward(dy);
  CHECK(std::vector<double>(dx.begin(), dx.end()) == std::vector<double>{0.1, 1, 0.3, 2, 0.4, 0});
  // dL/dalpha: the negative inputs times their gradient, summed along the shared axis.
  CHECK(std::vector<double>(params[0].grad->begin(), params[0].grad->end()) == std::vector<double>{-1, -10, -3});

  PReLU<double> images({1, 2}, 0.25);  // one slope per channel of (H, W, C) images
  images.build(Shape{4, 5, 3}, rng);
  CHECK(images.parameters()[0].value->shape() == Shape{1, 1, 3});
  CHECK((*images.parameters()[0].value)[2] == 0.25);
  PReLU<double> full;
  full.build(Shape{4, 5, 3}, rng);
  CHECK(full.parameters()[0].value->shape() == Shape{4, 5, 3});
  for (auto* l : {&images, &full}) {
    for (Index i = 0; i < l->parameters()[0].value->size(); ++i) (*l->parameters()[0].value)[i] = 0.1 * (i % 7) - 0.2;
    loom::testing::check_layer_gradients(*l, activation_input(Shape{2, 4, 5, 3}, 14));
  }
  CHECK(loom::testing::error_of([] { PReLU<float>({0}); }).find("shared_axes") != std::string::npos);
  CHECK(loom::testing::error_of([&] {
          PReLU<float> bad({3});
          bad.build(Shape{4, 5}, rng);
        }).find("axis 3") != std::string::npos);
}

TEST_CASE("the activation layers and activations saved and loaded in a model: the same predictions, bit for bit") {
  Sequential<float> m(3);
  m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).activation(Activation::GELU)), Shape{6, 6, 2});
  m.add(PReLU<float>({1, 2}, 0.1));
  m.add(LeakyReLU<float>(0.2));
  m.add(ELU<float>(0.7));
  m.add(ReLU<float>(5.0, 0.05, 0.1));
  m.add(ActivationLayer<float>(Activation::HardSigmoidKeras2));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(3).activation(Activation::SiLU)));
  m.add(ReLU<float>());
  Tensor<float> x(Shape{5, 6, 6, 2});
  Rng rng(2);
  for (float& v : x) v = static_cast<float>(rng.uniform() * 4 - 2);
  TempDir dir;
  m.save(dir.file("m.loom"));
  Sequential<float> again = Sequential<float>::load(dir.file("m.loom"));
  for (Index i = 0; i < static_cast<Index>(m.size()); ++i) {
    CHECK(again.layer(i).type() == m.layer(i).type());
    CHECK(again.layer(i).config() == m.layer(i).config());
  }
  CHECK(again.layer(4).config().real("threshold") == doctest::Approx(0.1));
  const Tensor<float> a = m.predict(x), b = again.predict(x);
  CHECK(std::equal(a.begin(), a.end(), b.begin()));
}
