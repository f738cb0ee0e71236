// Convolutions beyond the notebook's: Conv2D's dilation_rate,
// DepthwiseConv2D and SeparableConv2D. Hand-computed cases, each against a
// plain Conv2D with the kernel it equals, finite differences in double, and
// a save / load round trip.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <loom/loom.hpp>

#include "gradient_check.hpp"
#include "test_support.hpp"

using namespace loom;
using loom::testing::TempDir;

namespace {

Tensor<double> conv_family_input(const Shape& shape, std::uint64_t seed) {
  Tensor<double> x(shape);
  Rng rng(seed);
  loom::testing::random_fill(x, rng);
  return x;
}

Tensor<double>& conv_family_weight(Layer<double>& layer, std::size_t i) { return *layer.parameters()[i].value; }

void check_same_values(const Tensor<double>& a, const Tensor<double>& b, double tol = 1e-12) {
  REQUIRE(a.shape() == b.shape());
  for (Index i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(tol));
}

}  // namespace

TEST_CASE("Conv2D's dilation_rate: by hand, as the kernel with zeros between its cells, and by finite differences") {
  Rng rng;
  // 1..25 in a 5x5 image, a 2x2 kernel of ones two cells apart: each output
  // sums x(r, c), x(r, c + 2), x(r + 2, c), x(r + 2, c + 2).
  Conv2D<double> hand(Conv2DOptions(1, {2, 2}).dilation_rate(Size2{2, 2}).use_bias(false));
  CHECK(hand.build(Shape{5, 5, 1}, rng) == Shape{3, 3, 1});
  std::fill(conv_family_weight(hand, 0).begin(), conv_family_weight(hand, 0).end(), 1.0);
  Tensor<double> x(Shape{1, 5, 5, 1});
  for (Index i = 0; i < 25; ++i) x[i] = static_cast<double>(i + 1);
  const Tensor<double>& y = hand.forward(x, Mode::Inference);
  CHECK(std::vector<double>(y.begin(), y.end()) == std::vector<double>{28, 32, 36, 48, 52, 56, 68, 72, 76});

  // A 3x3 kernel dilated by (2, 1) is the 5x3 kernel with zero rows between
  // its own, on every path: valid and same, one and several channels.
  for (Padding padding : {Padding::Valid, Padding::Same}) {
    for (Index cin : {1, 9}) {
      CAPTURE(cin);
      Conv2D<double> dilated(Conv2DOptions(4, {3, 3}).dilation_rate(Size2{2, 1}).padding(padding));
      Conv2D<double> spread(Conv2DOptions(4, {5, 3}).padding(padding));
      dilated.build(Shape{9, 8, cin}, rng);
      spread.build(Shape{9, 8, cin}, rng);
      CHECK(dilated.algorithm() == ConvAlgorithm::Im2col);
      Tensor<double>& k = conv_family_weight(dilated, 0);
      Tensor<double>& wide = conv_family_weight(spread, 0);
      std::fill(wide.begin(), wide.end(), 0.0);
      for (Index i = 0; i < 3; ++i) {
        for (Index rest = 0; rest < 3 * cin * 4; ++rest) wide[(2 * i) * 3 * cin * 4 + rest] = k[i * 3 * cin * 4 + rest];
      }
      conv_family_weight(spread, 1) = conv_family_weight(dilated, 1);
      const Tensor<double> in = conv_family_input(Shape{2, 9, 8, cin}, 3);
      check_same_values(dilated.forward(in, Mode::Inference), spread.forward(in, Mode::Inference));
      loom::testing::check_layer_gradients(dilated, in);
    }
  }
  CHECK(loom::testing::error_of([] { Conv2D<float>(Conv2DOptions(2, {3, 3}).strides(Size2{2, 2}).dilation_rate(Size2{2, 2})); })
            .find("strides > 1 with dilation_rate > 1") != std::string::npos);
  CHECK(loom::testing::error_of([&] {
          Conv2D<float> big(Conv2DOptions(2, {3, 3}).dilation_rate(Size2{3, 3}));
          big.build(Shape{6, 6, 1}, rng);
        }).find("at least 7x7 pixels for a 3x3 dilated kernel") != std::string::npos);
  Conv2D<float> forced(Conv2DOptions(2, {3, 3}).dilation_rate(Size2{2, 2}));
  CHECK_THROWS_AS(forced.set_algorithm(ConvAlgorithm::Winograd), ConfigError);
  CHECK_THROWS_AS(forced.set_algorithm(ConvAlgorithm::Direct), ConfigError);
}

TEST_CASE("DepthwiseConv2D by hand: each channel with its own depth_multiplier kernels, channel c's m-th at c*M + m") {
  Rng rng;
  DepthwiseConv2D<double> dw(DepthwiseConv2DOptions({2, 2}).depth_multiplier(2));
  CHECK(dw.build(Shape{2, 2, 2}, rng) == Shape{1, 1, 4});
  Tensor<double>& k = conv_family_weight(dw, 0);  // [2, 2, 2 channels, 2]
  CHECK(k.shape() == Shape{2, 2, 2, 2});
  std::fill(k.begin(), k.end(), 0.0);
  for (Index cell = 0; cell < 4; ++cell) {
    k[cell * 4 + 0] = 1;  // channel 0, m 0: the sum of channel 0
    k[cell * 4 + 2] = 2;  // channel 1, m 0: twice the sum of channel 1
  }
  k[0 * 4 + 1] = 1;  // channel 0, m 1: its top-left cell
  k[3 * 4 + 3] = 1;  // channel 1, m 1: its bottom-right cell
  conv_family_weight(dw, 1) = Tensor<double>(Shape{4}, {0.5, 0, 0, -1});
  const Tensor<double> x(Shape{1, 2, 2, 2}, {1, 5, 2, 6, 3, 7, 4, 8});  // channel 0: 1 2 3 4, channel 1: 5 6 7 8
  const Tensor<double>& y = dw.forward(x, Mode::Train);
  CHECK(std::vector<double>(y.begin(), y.end()) == std::vector<double>{10.5, 1, 52, 7});
  // Backward: dx of channel 0 is dy0 * 1 + dy1 * [1 0 0 0], of channel 1 dy2 * 2 + dy3 * [0 0 0 1].
  dw.set_needs_input_grad(true);
  const Tensor<double>& dx = dw.backward(Tensor<double>(Shape{1, 1, 1, 4}, {1, 10, 100, 1000}));
  CHECK(std::vector<double>(dx.begin(), dx.end()) == std::vector<double>{11, 200, 1, 200, 1, 200, 1, 1200});
  CHECK(std::vector<double>(dw.parameters()[1].grad->begin(), dw.parameters()[1].grad->end()) ==
        std::vector<double>{1, 10, 100, 1000});
}

TEST_CASE("DepthwiseConv2D is the Conv2D of its kernel on the diagonal; its gradients by finite differences") {
  Rng rng;
  struct Setup {
    DepthwiseConv2DOptions depthwise;
    Conv2DOptions conv;
  };
  const std::vector<Setup> setups = {
      {DepthwiseConv2DOptions({3, 3}).padding(Padding::Same).strides(Size2{2, 2}),
       Conv2DOptions(5, {3, 3}).padding(Padding::Same).strides(Size2{2, 2})},
      {DepthwiseConv2DOptions({3, 2}).dilation_rate(Size2{2, 2}), Conv2DOptions(5, {3, 2}).dilation_rate(Size2{2, 2})},
  };
  for (const Setup& s : setups) {
    DepthwiseConv2D<double> dw(s.depthwise);
    Conv2D<double> conv(s.conv);
    dw.build(Shape{7, 8, 5}, rng);
    conv.build(Shape{7, 8, 5}, rng);
    const Tensor<double>& k = conv_family_weight(dw, 0);
    Tensor<double>& full = conv_family_weight(conv, 0);
    std::fill(full.begin(), full.end(), 0.0);
    const Index cells = k.size() / 5;
    for (Index cell = 0; cell < cells; ++cell) {
      for (Index c = 0; c < 5; ++c) full[(cell * 5 + c) * 5 + c] = k[cell * 5 + c];
    }
    conv_family_weight(conv, 1) = conv_family_weight(dw, 1);
    const Tensor<double> x = conv_family_input(Shape{3, 7, 8, 5}, 4);
    check_same_values(dw.forward(x, Mode::Inference), conv.forward(x, Mode::Inference));
    loom::testing::check_layer_gradients(dw, x);
  }
  for (Activation a : {Activation::ReLU, Activation::GELU, Activation::Softmax}) {
    CAPTURE(to_string(a));
    DepthwiseConv2D<double> dw(DepthwiseConv2DOptions({3, 3}).depth_multiplier(3).padding(Padding::Same).activation(a));
    dw.build(Shape{5, 6, 2}, rng);
    loom::testing::check_layer_gradients(dw, conv_family_input(Shape{2, 5, 6, 2}, 5));
  }
  CHECK(loom::testing::error_of([] { DepthwiseConv2D<float>(DepthwiseConv2DOptions({3, 3}).depth_multiplier(0)); })
            .find("depth_multiplier must be >= 1") != std::string::npos);
  CHECK(loom::testing::error_of([&] {
          DepthwiseConv2D<float> small(DepthwiseConv2DOptions({3, 3}));
          small.build(Shape{2, 8, 3}, rng);
        }).find("at least as large as the (dilated) kernel") != std::string::npos);
}

TEST_CASE("SeparableConv2D is a DepthwiseConv2D then a 1x1 Conv2D, with Keras's weights; its gradients by finite differences") {
  Rng rng;
  SeparableConv2D<double> sep(SeparableConv2DOptions(6, {3, 3}).depth_multiplier(2).padding(Padding::Same).activation(Activation::ReLU));
  sep.set_name("sep");
  CHECK(sep.build(Shape{6, 5, 3}, rng) == Shape{6, 5, 6});
  const auto params = sep.parameters();
  REQUIRE(params.size() == 3);
  CHECK(params[0].name == "sep/depthwise_kernel");
  CHECK(params[0].value->shape() == Shape{3, 3, 3, 2});
  CHECK(params[1].name == "sep/pointwise_kernel");
  CHECK(params[1].value->shape() == Shape{1, 1, 6, 6});
  CHECK(params[2].name == "sep/bias");
  DepthwiseConv2D<double> dw(DepthwiseConv2DOptions({3, 3}).depth_multiplier(2).padding(Padding::Same).use_bias(false));
  Conv2D<double> pw(Conv2DOptions(6, {1, 1}).activation(Activation::ReLU));
  dw.build(Shape{6, 5, 3}, rng);
  pw.build(Shape{6, 5, 6}, rng);
  conv_family_weight(dw, 0) = *params[0].value;
  conv_family_weight(pw, 0) = *params[1].value;
  for (Index i = 0; i < params[2].value->size(); ++i) (*params[2].value)[i] = 0.1 * static_cast<double>(i) - 0.2;
  conv_family_weight(pw, 1) = *params[2].value;
  const Tensor<double> x = conv_family_input(Shape{2, 6, 5, 3}, 6);
  const Tensor<double> apart = pw.forward(dw.forward(x, Mode::Inference), Mode::Inference);
  check_same_values(sep.forward(x, Mode::Inference), apart);
  loom::testing::check_layer_gradients(sep, x);
  SeparableConv2D<double> strided(SeparableConv2DOptions(4, {2, 3}).strides(Size2{2, 1}).use_bias(false));
  strided.build(Shape{7, 6, 2}, rng);
  CHECK(strided.parameters().size() == 2);
  loom::testing::check_layer_gradients(strided, conv_family_input(Shape{2, 7, 6, 2}, 7));
}

TEST_CASE("dilated Conv2D, DepthwiseConv2D, SeparableConv2D and Conv2DTranspose train and come back from a file bit for bit") {
  Sequential<float> m(3);
  m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).dilation_rate(Size2{2, 2}).padding(Padding::Same)), Shape{10, 10, 2});
  m.add(DepthwiseConv2D<float>(DepthwiseConv2DOptions({3, 3}).depth_multiplier(2).strides(Size2{2, 2}).activation(Activation::ReLU6)));
  m.add(SeparableConv2D<float>(SeparableConv2DOptions(5, {3, 3}).dilation_rate(Size2{2, 1}).padding(Padding::Same).activation(Activation::SiLU)));
  m.add(Conv2DTranspose<float>(Conv2DOptions(3, {3, 3}).strides(Size2{2, 2}).activation(Activation::ReLU)));
  m.add(GlobalAveragePooling2D<float>());
  m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  m.compile(CategoricalCrossentropy<float>(), Adam<float>());
  Tensor<float> x(Shape{16, 10, 10, 2}), y(Shape{16, 3});
  Rng rng(2);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (Index i = 0; i < 16; ++i) y(i, i % 3) = 1;
  const History h = m.fit(x, y, FitOptions<float>().epochs(3).batch_size(8).verbose(0));
  CHECK(h["loss"].back() < h["loss"].front());
  TempDir dir;
  m.save(dir.file("m.loom"));
  Sequential<float> again = Sequential<float>::load(dir.file("m.loom"));
  for (Index i = 0; i < static_cast<Index>(m.size()); ++i) CHECK(again.layer(i).config() == m.layer(i).config());
  CHECK(again.layer(0).config().size2("dilation_rate") == Size2{2, 2});
  const Tensor<float> a = m.predict(x), b = again.predict(x);
  CHECK(std::equal(a.begin(), a.end(), b.begin()));
}

TEST_CASE("Conv2DTranspose by hand, with Keras's output sizes") {
  Rng rng;
  const Tensor<double> x(Shape{1, 2, 2, 1}, {1, 2, 3, 4});
  Conv2DTranspose<double> spread(Conv2DOptions(1, {2, 2}).strides(Size2{2, 2}).use_bias(false));
  CHECK(spread.build(Shape{2, 2, 1}, rng) == Shape{4, 4, 1});
  std::fill(conv_family_weight(spread, 0).begin(), conv_family_weight(spread, 0).end(), 1.0);
  const Tensor<double>& blocks = spread.forward(x, Mode::Inference);  // each pixel spread over a 2x2 block
  CHECK(std::vector<double>(blocks.begin(), blocks.end()) ==
        std::vector<double>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4});
  Conv2DTranspose<double> overlap(Conv2DOptions(1, {2, 2}));
  CHECK(overlap.build(Shape{2, 2, 1}, rng) == Shape{3, 3, 1});
  std::fill(conv_family_weight(overlap, 0).begin(), conv_family_weight(overlap, 0).end(), 1.0);
  conv_family_weight(overlap, 1)[0] = 0.5;
  const Tensor<double>& sums = overlap.forward(x, Mode::Inference);  // windows overlap and add, then the bias
  CHECK(std::vector<double>(sums.begin(), sums.end()) == std::vector<double>{1.5, 3.5, 2.5, 4.5, 10.5, 6.5, 3.5, 7.5, 4.5});
  // Keras's deconv_output_length: valid x*s + max(k - s, 0), same x*s; k dilated.
  Conv2DTranspose<double> a(Conv2DOptions(3, {3, 3}).strides(Size2{2, 2}));
  Conv2DTranspose<double> b(Conv2DOptions(3, {3, 3}).strides(Size2{2, 2}).padding(Padding::Same));
  Conv2DTranspose<double> c(Conv2DOptions(3, {2, 2}).strides(Size2{3, 3}));
  Conv2DTranspose<double> d(Conv2DOptions(3, {3, 3}).dilation_rate(Size2{2, 2}));
  CHECK(a.build(Shape{7, 5, 2}, rng) == Shape{15, 11, 3});
  CHECK(b.build(Shape{7, 5, 2}, rng) == Shape{14, 10, 3});
  CHECK(c.build(Shape{7, 5, 2}, rng) == Shape{21, 15, 3});
  CHECK(d.build(Shape{7, 5, 2}, rng) == Shape{11, 9, 3});
  CHECK(a.parameters()[0].value->shape() == Shape{3, 3, 3, 2});  // Keras's [kh, kw, filters, input channels]
}

TEST_CASE("Conv2DTranspose is the adjoint of the Conv2D of its kernel; its gradients by finite differences") {
  Rng rng;
  struct Setup {
    Conv2DOptions options;
    Shape input;
  };
  const std::vector<Setup> setups = {
      {Conv2DOptions(3, {3, 3}).strides(Size2{2, 2}), Shape{4, 5, 2}},
      {Conv2DOptions(3, {3, 3}).strides(Size2{2, 2}).padding(Padding::Same), Shape{4, 5, 2}},
      {Conv2DOptions(2, {2, 3}).strides(Size2{3, 1}).padding(Padding::Same), Shape{3, 4, 3}},
      {Conv2DOptions(3, {3, 2}).dilation_rate(Size2{2, 2}), Shape{4, 3, 2}},
  };
  for (const Setup& s : setups) {
    Conv2DTranspose<double> t(Conv2DOptions(s.options).use_bias(false));
    const Shape out = t.build(s.input, rng);
    // The Conv2D from t's output shape back to its input: the same kernel.
    Conv2D<double> conv(Conv2DOptions(s.options).filters(s.input[2]).use_bias(false));
    CHECK(conv.build(out, rng) == s.input);
    conv_family_weight(conv, 0) = conv_family_weight(t, 0);
    const Tensor<double> u = conv_family_input(out.with_batch(2), 8), v = conv_family_input(s.input.with_batch(2), 9);
    const Tensor<double> cu = conv.forward(u, Mode::Inference), tv = t.forward(v, Mode::Inference);
    double lhs = 0, rhs = 0;  // <conv(u), v> = <u, t(v)>
    for (Index i = 0; i < cu.size(); ++i) lhs += cu[i] * v[i];
    for (Index i = 0; i < tv.size(); ++i) rhs += u[i] * tv[i];
    CHECK(lhs == doctest::Approx(rhs).epsilon(1e-12));
    Conv2DTranspose<double> biased(Conv2DOptions(s.options).activation(Activation::Tanh));
    biased.build(s.input, rng);
    loom::testing::check_layer_gradients(biased, v);
  }
  CHECK(loom::testing::error_of([] { Conv2DTranspose<float>(Conv2DOptions(0, {3, 3})); }).find("filters must be >= 1") !=
        std::string::npos);
}
