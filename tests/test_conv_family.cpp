// Convolutions beyond the notebook's: Conv2D's dilation_rate and groups,
// DepthwiseConv2D and SeparableConv2D. Hand-computed cases, each against a
// plain Conv2D with the kernel it equals, finite differences in double, and
// a save / load round trip.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
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

namespace {

/// The [kh, kw, cin, cout] kernel of a plain Conv2D that equals a grouped
/// one of kernel `k` [kh, kw, cin / groups, cout]: k's blocks on the
/// diagonal, zeros elsewhere.
template <class T>
void block_diagonal(const Tensor<T>& k, Index groups, Tensor<T>& full) {
  const Index cells = k.dim(0) * k.dim(1), cg = k.dim(2), cout = k.dim(3), fg = cout / groups, cin = cg * groups;
  REQUIRE(full.shape() == Shape{k.dim(0), k.dim(1), cin, cout});
  std::fill(full.begin(), full.end(), T(0));
  for (Index cell = 0; cell < cells; ++cell) {
    for (Index c = 0; c < cg; ++c) {
      for (Index f = 0; f < cout; ++f) full[(cell * cin + (f / fg) * cg + c) * cout + f] = k[(cell * cg + c) * cout + f];
    }
  }
}

/// The inverse: the grouped kernel (of shape `grouped`) on `full`'s diagonal blocks.
template <class T>
Tensor<T> diagonal_blocks(const Tensor<T>& full, Index groups, const Shape& grouped) {
  Tensor<T> k(grouped);
  const Index cells = k.dim(0) * k.dim(1), cg = k.dim(2), cout = k.dim(3), fg = cout / groups, cin = cg * groups;
  for (Index cell = 0; cell < cells; ++cell) {
    for (Index c = 0; c < cg; ++c) {
      for (Index f = 0; f < cout; ++f) k[(cell * cg + c) * cout + f] = full[(cell * cin + (f / fg) * cg + c) * cout + f];
    }
  }
  return k;
}

}  // namespace

TEST_CASE("Conv2D's groups: by hand, as the Conv2D of its kernel's blocks on the diagonal, and by finite differences") {
  Rng rng;
  // Two groups of two channels, four filters: filters 0 and 1 see channels
  // 0 and 1, filters 2 and 3 channels 2 and 3. A 1x1 kernel on one pixel.
  Conv2D<double> hand(Conv2DOptions(4, {1, 1}).groups(2));
  CHECK(hand.build(Shape{1, 1, 4}, rng) == Shape{1, 1, 4});
  Tensor<double>& k = conv_family_weight(hand, 0);
  REQUIRE(k.shape() == Shape{1, 1, 2, 4});
  // [channel of the group][filter]: filter 0 = c0 + 2 c1, filter 1 = c1,
  // filter 2 = 10 c2, filter 3 = c2 - c3.
  k = Tensor<double>(Shape{1, 1, 2, 4}, {1, 0, 10, 1, 2, 1, 0, -1});
  conv_family_weight(hand, 1) = Tensor<double>(Shape{4}, {0, 0, 0.5, 0});
  const Tensor<double> x(Shape{1, 1, 1, 4}, {1, 2, 3, 4});
  const Tensor<double>& y = hand.forward(x, Mode::Train);
  CHECK(std::vector<double>(y.begin(), y.end()) == std::vector<double>{5, 2, 30.5, -1});
  hand.set_needs_input_grad(true);
  const Tensor<double>& dx = hand.backward(Tensor<double>(Shape{1, 1, 1, 4}, {1, 10, 100, 1000}));
  // dx of channel 0 = dy0, channel 1 = 2 dy0 + dy1, channel 2 = 10 dy2 + dy3, channel 3 = -dy3.
  CHECK(std::vector<double>(dx.begin(), dx.end()) == std::vector<double>{1, 12, 2000, -1000});
  // dK[c of group][f] = dy_f * x(channel g(f) * 2 + c).
  const Tensor<double>& dk = *hand.parameters()[0].grad;
  CHECK(std::vector<double>(dk.begin(), dk.end()) == std::vector<double>{1, 10, 300, 3000, 2, 20, 400, 4000});

  // Against the plain Conv2D of the block-diagonal kernel, forward and
  // backward, on strides, same padding, dilation and an activation.
  struct Setup {
    Conv2DOptions options;
    Index cin;
  };
  const std::vector<Setup> setups = {
      {Conv2DOptions(6, {3, 3}).groups(3).padding(Padding::Same), 6},
      {Conv2DOptions(4, {3, 2}).groups(2).strides(Size2{2, 1}).activation(Activation::ReLU), 6},
      {Conv2DOptions(9, {2, 2}).groups(3).dilation_rate(Size2{2, 2}).activation(Activation::Softmax), 3},
      {Conv2DOptions(4, {3, 3}).groups(4).use_bias(false), 4},
  };
  for (const Setup& s : setups) {
    CAPTURE(s.options.groups());
    Conv2D<double> grouped(s.options);
    Conv2D<double> full(Conv2DOptions(s.options).groups(1));
    grouped.build(Shape{7, 6, s.cin}, rng);
    full.build(Shape{7, 6, s.cin}, rng);
    CHECK(grouped.algorithm() == ConvAlgorithm::Im2col);
    block_diagonal(conv_family_weight(grouped, 0), s.options.groups(), conv_family_weight(full, 0));
    if (s.options.use_bias()) conv_family_weight(full, 1) = conv_family_weight(grouped, 1);
    const Tensor<double> in = conv_family_input(Shape{2, 7, 6, s.cin}, 8);
    check_same_values(grouped.forward(in, Mode::Inference), full.forward(in, Mode::Inference));
    loom::testing::check_layer_gradients(grouped, in);
  }
  // A layer Winograd would take ungrouped (3x3, stride 1, 8 channels and
  // more) runs by im2col, and refuses the other algorithms.
  Conv2D<float> wide(Conv2DOptions(16, {3, 3}).groups(2));
  wide.build(Shape{8, 8, 16}, rng);
  CHECK(wide.algorithm() == ConvAlgorithm::Im2col);
  CHECK_THROWS_AS(wide.set_algorithm(ConvAlgorithm::Winograd), ConfigError);
  CHECK_THROWS_AS(wide.set_algorithm(ConvAlgorithm::Direct), ConfigError);
  CHECK(loom::testing::error_of([] { Conv2D<float>(Conv2DOptions(6, {3, 3}).groups(4)); })
            .find("groups must be >= 1 and divide filters, got groups=4 filters=6") != std::string::npos);
  CHECK(loom::testing::error_of([&] {
          Conv2D<float> odd(Conv2DOptions(6, {3, 3}).groups(3));
          odd.build(Shape{8, 8, 4}, rng);
        }).find("channels divisible by its groups=3") != std::string::npos);
  CHECK_THROWS_AS(Conv2DTranspose<float>(Conv2DOptions(4, {3, 3}).groups(2)), ConfigError);
}

TEST_CASE("a grouped Conv2D in float (loom's GEMM on column blocks) computes what the block-diagonal Conv2D does") {
  Rng rng(4);
  for (Index groups : {2, 4}) {
    CAPTURE(groups);
    const Conv2DOptions options = Conv2DOptions(32, {3, 3}).groups(groups).padding(Padding::Same).activation(Activation::ReLU);
    Conv2D<float> grouped(options);
    Conv2D<float> full(Conv2DOptions(options).groups(1));
    full.set_algorithm(ConvAlgorithm::Im2col);
    grouped.build(Shape{12, 12, 24}, rng);
    full.build(Shape{12, 12, 24}, rng);
    block_diagonal(*grouped.parameters()[0].value, groups, *full.parameters()[0].value);
    for (float& b : *grouped.parameters()[1].value) b = static_cast<float>(rng.uniform(-0.1, 0.1));
    *full.parameters()[1].value = *grouped.parameters()[1].value;
    Tensor<float> x(Shape{5, 12, 12, 24}), dy(Shape{5, 12, 12, 32});
    for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
    for (float& v : dy) v = static_cast<float>(rng.uniform(-1, 1));
    const auto close = [](const Tensor<float>& a, const Tensor<float>& b) {
      REQUIRE(a.shape() == b.shape());
      float worst = 0;
      for (Index i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
      return worst;
    };
    CHECK(close(grouped.forward(x, Mode::Train), full.forward(x, Mode::Train)) < 1e-5f);
    grouped.set_needs_input_grad(true);
    full.set_needs_input_grad(true);
    CHECK(close(grouped.backward(dy), full.backward(dy)) < 1e-4f);
    // The grouped kernel's gradient is the full one's on the diagonal blocks.
    const Tensor<float>& dk = *grouped.parameters()[0].grad;
    CHECK(close(dk, diagonal_blocks(*full.parameters()[0].grad, groups, dk.shape())) < 1e-3f);
    CHECK(close(*grouped.parameters()[1].grad, *full.parameters()[1].grad) < 1e-3f);
  }
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

TEST_CASE("dilated and grouped Conv2D, DepthwiseConv2D, SeparableConv2D and Conv2DTranspose train and come back from a file bit for bit") {
  Sequential<float> m(3);
  m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).dilation_rate(Size2{2, 2}).padding(Padding::Same)), Shape{10, 10, 2});
  m.add(DepthwiseConv2D<float>(DepthwiseConv2DOptions({3, 3}).depth_multiplier(2).strides(Size2{2, 2}).activation(Activation::ReLU6)));
  m.add(SeparableConv2D<float>(SeparableConv2DOptions(5, {3, 3}).dilation_rate(Size2{2, 1}).padding(Padding::Same).activation(Activation::SiLU)));
  m.add(Conv2DTranspose<float>(Conv2DOptions(3, {3, 3}).strides(Size2{2, 2}).activation(Activation::ReLU), Size2{1, 0}));
  m.add(Conv2D<float>(Conv2DOptions(6, {3, 3}).groups(3).activation(Activation::ReLU)));
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
  CHECK(again.layer(4).config().integer("groups") == 3);
  CHECK(!again.layer(0).config().has("groups"));
  CHECK(again.layer(3).config().size2("output_padding") == Size2{1, 0});
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

TEST_CASE("Conv2DTranspose's output_padding: Keras's output sizes, by hand, and by finite differences") {
  Rng rng;
  // A 1x1 kernel of 1 at stride 2 puts each pixel at an even place; the
  // output_padding adds a row and a column no window reaches: the bias alone.
  Conv2DTranspose<double> hand(Conv2DOptions(1, {1, 1}).strides(Size2{2, 2}), Size2{1, 1});
  CHECK(hand.build(Shape{2, 2, 1}, rng) == Shape{4, 4, 1});
  conv_family_weight(hand, 0)[0] = 1;
  conv_family_weight(hand, 1)[0] = 0.5;
  const Tensor<double>& y = hand.forward(Tensor<double>(Shape{1, 2, 2, 1}, {1, 2, 3, 4}), Mode::Inference);
  CHECK(std::vector<double>(y.begin(), y.end()) ==
        std::vector<double>{1.5, 0.5, 2.5, 0.5, 0.5, 0.5, 0.5, 0.5, 3.5, 0.5, 4.5, 0.5, 0.5, 0.5, 0.5, 0.5});
  // deconv_output_length with an output_padding op: valid (x - 1) s + k + op,
  // same (x - 1) s + k - 2 (k / 2) + op, k dilated; op 0 is not "none".
  struct Size {
    Conv2DOptions options;
    Size2 op;
    Shape out;
  };
  const std::vector<Size> sizes = {
      {Conv2DOptions(2, {3, 3}).strides(Size2{2, 2}), {1, 0}, Shape{16, 11, 2}},
      {Conv2DOptions(2, {3, 3}).strides(Size2{2, 2}).padding(Padding::Same), {0, 1}, Shape{13, 10, 2}},
      {Conv2DOptions(2, {3, 2}).strides(Size2{2, 3}).padding(Padding::Same), {1, 2}, Shape{14, 14, 2}},
      {Conv2DOptions(2, {3, 3}).strides(Size2{3, 2}), {2, 1}, Shape{23, 12, 2}},
  };
  for (const Size& s : sizes) {
    Conv2DTranspose<double> t(s.options, s.op);
    CHECK(t.build(Shape{7, 5, 3}, rng) == s.out);
    loom::testing::check_layer_gradients(t, conv_family_input(Shape{2, 7, 5, 3}, 9));
  }
  CHECK(loom::testing::error_of([] { Conv2DTranspose<float>(Conv2DOptions(2, {3, 3}).strides(Size2{2, 2}), Size2{2, 1}); })
            .find("output_padding must be >= 0 and less than strides, got output_padding=(2, 1) strides=(2, 2)") !=
        std::string::npos);
  CHECK_THROWS_AS(Conv2DTranspose<float>(Conv2DOptions(2, {3, 3}), Size2{1, 0}), ConfigError);  // strides 1 take only 0
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
