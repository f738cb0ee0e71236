// Every layer: finite-difference gradient checks in double (training mode,
// inputs and every parameter), hand-computed small cases, Keras's shapes.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>

#include "gradient_check.hpp"

using namespace loom;
using loom::testing::check_layer_gradients;
using loom::testing::random_fill;

namespace {

/// A batch of random inputs for `layer` built on per-sample shape `in`.
Tensor<double> random_input(Layer<double>& layer, const Shape& in, Index batch, std::uint64_t seed = 5) {
  Rng rng(seed);
  layer.build(in, rng);
  Tensor<double> x(in.with_batch(batch));
  random_fill(x, rng);
  return x;
}

template <class T>
void set_param(Layer<T>& layer, std::size_t i, std::initializer_list<T> values) {
  Tensor<T>& v = *layer.parameters()[i].value;
  REQUIRE(static_cast<Index>(values.size()) == v.size());
  std::copy(values.begin(), values.end(), v.begin());
}

Conv2DOptions conv(Index filters, Size2 kernel, Padding padding, Size2 strides = {1, 1},
                   Activation a = Activation::None) {
  return Conv2DOptions(filters, kernel).padding(padding).strides(strides).activation(a);
}

}  // namespace

// ---------------------------------------------------------------- gradients

TEST_CASE("gradient check: Conv2D, by im2col and by the direct kernel") {
  for (const ConvAlgorithm algorithm : {ConvAlgorithm::Im2col, ConvAlgorithm::Direct}) {
    CAPTURE(static_cast<int>(algorithm));
    SUBCASE("same padding, ReLU, several channels") {
      Conv2D<double> layer(conv(4, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU));
      layer.set_algorithm(algorithm);
      check_layer_gradients(layer, random_input(layer, {6, 5, 3}, 2));
    }
    SUBCASE("valid padding, stride 2, no activation") {
      Conv2D<double> layer(conv(3, {3, 2}, Padding::Valid, {2, 2}));
      layer.set_algorithm(algorithm);
      check_layer_gradients(layer, random_input(layer, {7, 6, 2}, 2));
    }
    SUBCASE("same padding, stride 2 on an even size, softmax over channels") {
      Conv2D<double> layer(conv(3, {3, 3}, Padding::Same, {2, 2}, Activation::Softmax));
      layer.set_algorithm(algorithm);
      check_layer_gradients(layer, random_input(layer, {4, 4, 2}, 2));
    }
    SUBCASE("same padding, one channel, a 2x4 kernel, stride (2, 1): uneven padding on each side") {
      Conv2D<double> layer(conv(3, {2, 4}, Padding::Same, {2, 1}, Activation::ReLU));
      layer.set_algorithm(algorithm);
      check_layer_gradients(layer, random_input(layer, {5, 7, 1}, 2));
    }
    SUBCASE("two threads, one image: the direct kernel splits its rows") {
      const int saved = num_threads();
      set_num_threads(2);
      Conv2D<double> layer(conv(2, {3, 3}, Padding::Same));
      layer.set_algorithm(algorithm);
      check_layer_gradients(layer, random_input(layer, {5, 4, 1}, 1));
      set_num_threads(saved);
    }
  }
}

TEST_CASE("gradient check: Conv2D by Winograd's F(4x4, 3x3)") {
  SUBCASE("same padding, ReLU, tiles cut by the border (7x6)") {
    Conv2D<double> layer(conv(5, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU));
    layer.set_algorithm(ConvAlgorithm::Winograd);
    check_layer_gradients(layer, random_input(layer, {7, 6, 3}, 2));
  }
  SUBCASE("valid padding (the backward pads by 2), 19 channels: a full vector and a rest") {
    Conv2D<double> layer(conv(4, {3, 3}, Padding::Valid));
    layer.set_algorithm(ConvAlgorithm::Winograd);
    check_layer_gradients(layer, random_input(layer, {6, 5, 19}, 2));
  }
  SUBCASE("two threads, 5 samples") {
    const int saved = num_threads();
    set_num_threads(2);
    Conv2D<double> layer(conv(3, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU));
    layer.set_algorithm(ConvAlgorithm::Winograd);
    check_layer_gradients(layer, random_input(layer, {5, 4, 2}, 5));
    set_num_threads(saved);
  }
}

TEST_CASE("Conv2D: Winograd and im2col agree in float on the notebook's layers, forward and backward") {
  struct Case {
    Shape in;
    Index filters;
    Padding padding;
  };
  // The weights' sums are kept transposed where the GEMM pads less so: on
  // AVX2 for 75 -> 50 and 20 -> 17, on AVX-512 for 40 -> 16.
  for (const Case& c : {Case{{14, 14, 75}, 50, Padding::Same}, Case{{7, 7, 50}, 25, Padding::Same},
                        Case{{9, 11, 20}, 17, Padding::Valid}, Case{{9, 9, 40}, 16, Padding::Same}}) {
    CAPTURE(c.in);
    CAPTURE(detail::Winograd3x3<float>::sums_transposed(c.in[2], c.filters));
    Conv2D<float> a(conv(c.filters, {3, 3}, c.padding, {1, 1}, Activation::ReLU));
    Conv2D<float> b(conv(c.filters, {3, 3}, c.padding, {1, 1}, Activation::ReLU));
    Rng rng(3), same_rng(3);
    a.build(c.in, rng);
    b.build(c.in, same_rng);
    a.set_algorithm(ConvAlgorithm::Im2col);
    b.set_algorithm(ConvAlgorithm::Winograd);
    const auto fill = [&rng](Tensor<float>& t) {
      for (float& v : t) v = static_cast<float>(rng.uniform(-1, 1));
    };
    Tensor<float> x(c.in.with_batch(3));
    fill(x);
    const Tensor<float> ya = a.forward(x, Mode::Train);
    const Tensor<float>& yb = b.forward(x, Mode::Train);
    Tensor<float> dy(ya.shape());
    fill(dy);
    const Tensor<float> dxa = a.backward(dy);
    const Tensor<float>& dxb = b.backward(dy);
    // Errors relative to the largest magnitude: sums of up to 675 products.
    const auto close = [](const Tensor<float>& u, const Tensor<float>& v) {
      float worst = 0, scale = 0;
      for (Index i = 0; i < u.size(); ++i) {
        worst = std::max(worst, std::abs(u[i] - v[i]));
        scale = std::max(scale, std::abs(u[i]));
      }
      return worst / scale;
    };
    CHECK(close(ya, yb) < 2e-5f);
    CHECK(close(dxa, dxb) < 2e-5f);
    CHECK(close(*a.parameters()[0].grad, *b.parameters()[0].grad) < 1e-5f);
    CHECK(close(*a.parameters()[1].grad, *b.parameters()[1].grad) < 1e-5f);
  }
}

TEST_CASE("Conv2D: the Winograd transforms inference keeps follow every change of the kernel, in both layouts") {
  // Inference keeps U between calls, with compact rows for a call that
  // reads it once (batch 1) and aligned rows otherwise, and compares the
  // kernel with the one transformed before using either. Each output must be
  // that of a fresh layer with the kernel of the moment, bit for bit (the
  // GEMM adds the same products in the same order whatever U's rows).
  const Shape in{14, 14, 75};
  Conv2D<float> layer(conv(50, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU));
  Rng rng(8);
  layer.build(in, rng);
  layer.set_algorithm(ConvAlgorithm::Winograd);
  Tensor<float> one(in.with_batch(1)), three(in.with_batch(3));
  for (auto* t : {&one, &three}) {
    for (float& v : *t) v = static_cast<float>(rng.uniform(-1, 1));
  }
  REQUIRE(detail::Winograd3x3<float>::reads_u_once(16, 75, 50));    // one image: compact rows
  REQUIRE(!detail::Winograd3x3<float>::reads_u_once(48, 75, 50));   // three: aligned rows
  const auto fresh = [&](const Tensor<float>& x) {  // a new layer with the kernel and bias of the moment
    Conv2D<float> twin(conv(50, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU));
    Rng other(99);
    twin.build(in, other);
    twin.set_algorithm(ConvAlgorithm::Winograd);
    *twin.parameters()[0].value = *layer.parameters()[0].value;
    *twin.parameters()[1].value = *layer.parameters()[1].value;
    return Tensor<float>(twin.forward(x, Mode::Inference));
  };
  const auto same = [](const Tensor<float>& a, const Tensor<float>& b) {
    return a.shape() == b.shape() && std::equal(a.begin(), a.end(), b.begin());
  };
  Tensor<float>& kernel = *layer.parameters()[0].value;
  for (int change = 0; change < 4; ++change) {
    CAPTURE(change);
    // Both layouts made (in an order that alternates), then used again.
    const bool one_first = change % 2 == 0;
    const Tensor<float> a = layer.forward(one_first ? one : three, Mode::Inference);
    const Tensor<float> b = layer.forward(one_first ? three : one, Mode::Inference);
    CHECK(same(a, fresh(one_first ? one : three)));
    CHECK(same(b, fresh(one_first ? three : one)));
    CHECK(same(layer.forward(one, Mode::Inference), one_first ? a : b));
    CHECK(same(layer.forward(three, Mode::Inference), one_first ? b : a));
    kernel[static_cast<Index>(change) * 977] += 0.5f;  // one value, through the parameter's view
  }
  // A training forward in between, then inference again.
  Tensor<float> train_out = layer.forward(three, Mode::Train);
  kernel[3] -= 0.25f;
  CHECK(same(layer.forward(one, Mode::Inference), fresh(one)));
  CHECK(same(layer.forward(three, Mode::Inference), fresh(three)));
  CHECK(!same(train_out, layer.forward(three, Mode::Inference)));
}

TEST_CASE("Conv2D: the direct kernel and im2col agree in float, forward and weights' gradient") {
  struct Case {
    Shape in;
    Index filters;
    Size2 kernel, strides;
    Padding padding;
    Index batch;
  };
  // The notebook's conv1; an output row shorter than a tile with 33 filters
  // (a full vector and a rest); a strided 5x5 on 3 channels (a tap tile and
  // a rest); a batch of one split by rows; an output one pixel wide, which
  // takes the GEMM's one-row tile.
  for (const Case& c : {Case{{28, 28, 1}, 75, {3, 3}, {1, 1}, Padding::Same, 3},
                        Case{{5, 3, 2}, 40, {3, 3}, {1, 1}, Padding::Valid, 2},
                        Case{{9, 5, 2}, 33, {3, 3}, {1, 1}, Padding::Valid, 2},
                        Case{{17, 19, 3}, 16, {5, 5}, {2, 2}, Padding::Same, 2},
                        Case{{28, 28, 1}, 32, {3, 3}, {1, 1}, Padding::Same, 1}}) {
    CAPTURE(c.in);
    Conv2D<float> a(conv(c.filters, c.kernel, c.padding, c.strides, Activation::ReLU));
    Conv2D<float> b(conv(c.filters, c.kernel, c.padding, c.strides, Activation::ReLU));
    Rng rng(3), same_rng(3);
    a.build(c.in, rng);
    b.build(c.in, same_rng);
    a.set_algorithm(ConvAlgorithm::Im2col);
    b.set_algorithm(ConvAlgorithm::Direct);
    for (float& v : *a.parameters()[1].value) v = static_cast<float>(rng.uniform(-0.5, 0.5));
    std::copy(a.parameters()[1].value->begin(), a.parameters()[1].value->end(), b.parameters()[1].value->begin());
    Tensor<float> x(c.in.with_batch(c.batch));
    for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
    for (const Mode mode : {Mode::Inference, Mode::Train}) {
      const Tensor<float> ya = a.forward(x, mode);
      const Tensor<float>& yb = b.forward(x, mode);
      REQUIRE(ya.shape() == yb.shape());
      for (Index i = 0; i < ya.size(); ++i) REQUIRE(yb[i] == doctest::Approx(ya[i]).epsilon(1e-5));
    }
    Tensor<float> dy(a.output_shape().with_batch(c.batch));
    for (float& v : dy) v = static_cast<float>(rng.uniform(-1, 1));
    a.backward(dy);
    b.backward(dy);
    for (std::size_t p = 0; p < 2; ++p) {
      const Tensor<float>&ga = *a.parameters()[p].grad, &gb = *b.parameters()[p].grad;
      float scale = 0;
      for (Index i = 0; i < ga.size(); ++i) scale = std::max(scale, std::abs(ga[i]));
      for (Index i = 0; i < ga.size(); ++i) REQUIRE(std::abs(ga[i] - gb[i]) <= 1e-5f * scale);
    }
  }
}

TEST_CASE("Conv2D: Auto takes Winograd for 3x3 stride-1 layers with 8+ channels in and out, Direct for fewer in") {
  Rng rng(1);
  Conv2D<float> first(conv(75, {3, 3}, Padding::Same)), second(conv(50, {3, 3}, Padding::Same));
  Conv2D<float> eight(conv(4, {3, 3}, Padding::Same, {2, 2}));
  first.build({28, 28, 1}, rng);
  second.build({14, 14, 75}, rng);
  eight.build({9, 9, 8}, rng);
  CHECK(first.algorithm() == ConvAlgorithm::Direct);
  CHECK(second.algorithm() == ConvAlgorithm::Winograd);
  CHECK(eight.algorithm() == ConvAlgorithm::Im2col);
  Conv2D<float> strided(conv(8, {3, 3}, Padding::Same, {2, 2})), wide(conv(8, {5, 5}, Padding::Same));
  CHECK_THROWS_WITH_AS(strided.set_algorithm(ConvAlgorithm::Winograd),
                       "Conv2D: Winograd convolution needs a 3x3 kernel with strides (1, 1), undilated", ConfigError);
  CHECK_THROWS_AS(wide.set_algorithm(ConvAlgorithm::Winograd), ConfigError);
}

TEST_CASE("Conv2D in inference takes a Dropout, a BatchNormalization and a MaxPool2D after it, to rounding") {
  // Sequential offers a Conv2D the layers after it (InferenceFusion, by
  // fusion::absorb_next_in_inference); run one by one, they must give what
  // the Conv2D gives alone, with the pooling done on the direct kernel's rows
  // or Winograd's 4x4 tiles.
  struct Case {
    const char* what;
    ConvAlgorithm algorithm;
    Shape in;
    Size2 strides;
    MaxPool2DOptions pool;
    bool pools;  // whether the Conv2D takes the pooling
  };
  const MaxPool2DOptions same2 = MaxPool2DOptions({2, 2}).padding(Padding::Same);
  for (const Case& c : {
           Case{"direct, the notebook's conv1", ConvAlgorithm::Direct, {28, 28, 1}, {1, 1}, same2, true},
           Case{"direct, 3x3/3 same: windows padded on both sides", ConvAlgorithm::Direct, {7, 8, 2}, {1, 1},
                MaxPool2DOptions({3, 3}).padding(Padding::Same), true},
           Case{"direct, strided, 2x2 valid: the last row in no window", ConvAlgorithm::Direct, {17, 19, 3},
                {2, 2}, MaxPool2DOptions({2, 2}), true},
           Case{"Winograd, 2x2 same on 14x14", ConvAlgorithm::Winograd, {14, 14, 8}, {1, 1}, same2, true},
           Case{"Winograd, 2x2 same on 7x7: a tile past the output", ConvAlgorithm::Winograd, {7, 7, 9}, {1, 1},
                same2, true},
           Case{"Winograd, 4x4 valid on 9x10", ConvAlgorithm::Winograd, {9, 10, 8}, {1, 1}, MaxPool2DOptions({4, 4}),
                true},
           Case{"Winograd, 3x3 windows cross its tiles", ConvAlgorithm::Winograd, {9, 9, 8}, {1, 1},
                MaxPool2DOptions({3, 3}), false},
           Case{"Winograd, overlapping windows", ConvAlgorithm::Winograd, {9, 9, 8}, {1, 1},
                MaxPool2DOptions({3, 3}).strides(Size2{2, 2}), false},
           Case{"im2col does not pool", ConvAlgorithm::Im2col, {9, 9, 3}, {1, 1}, same2, false},
       }) {
    INFO(std::string(c.what));
    Conv2D<float> layer(conv(19, {3, 3}, Padding::Same, c.strides, Activation::ReLU));
    Dropout<float> dropout(0.4);
    BatchNormalization<float> bn;
    MaxPool2D<float> pool(c.pool);
    Rng rng(4);
    pool.build(bn.build(dropout.build(layer.build(c.in, rng), rng), rng), rng);
    layer.set_algorithm(c.algorithm);
    for (float& v : *layer.parameters()[1].value) v = static_cast<float>(rng.uniform(-0.5, 0.5));
    auto p = bn.parameters();  // gamma of both signs, and moving statistics away from 0 and 1
    for (Index k = 0; k < 19; ++k) {
      (*p[0].value)[k] = static_cast<float>(k % 2 ? -0.7 - 0.1 * k : 1.3 + 0.2 * k);
      (*p[1].value)[k] = static_cast<float>(0.1 * k - 0.2);
      (*p[2].value)[k] = static_cast<float>(0.05 * k);
      (*p[3].value)[k] = static_cast<float>(0.5 + 0.1 * k);
    }
    Tensor<float> x(c.in.with_batch(3));
    for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
    const Tensor<float> apart =
        pool.forward(bn.forward(dropout.forward(layer.forward(x, Mode::Inference), Mode::Inference), Mode::Inference),
                     Mode::Inference);
    // The normalization alone, pooled apart: the same bits as pooled inside.
    fusion::absorb_next_in_inference(layer, &bn);
    const Tensor<float> pooled_apart = pool.forward(layer.forward(x, Mode::Inference), Mode::Inference);
    fusion::absorb_next_in_inference(layer, nullptr);

    CHECK(fusion::absorb_next_in_inference(layer, &dropout));
    CHECK(fusion::absorb_next_in_inference(layer, &bn));
    CHECK(fusion::absorb_next_in_inference(layer, &pool) == c.pools);
    CHECK_FALSE(fusion::absorb_next_in_inference(layer, &bn));  // nothing after the pooling, nor a second one
    Tensor<float> fused = layer.forward(x, Mode::Inference);
    fusion::absorb_next_in_inference(layer, nullptr);
    if (!c.pools) fused = pool.forward(fused, Mode::Inference);
    REQUIRE(fused.shape() == apart.shape());
    for (Index i = 0; i < fused.size(); ++i) {
      REQUIRE_MESSAGE(std::fabs(fused[i] - apart[i]) <= 1e-5f * (1 + std::fabs(apart[i])), "y[" << i << "]");
    }
    CHECK(std::equal(fused.begin(), fused.end(), pooled_apart.begin()));
    // The offer ended: the next inference forward is the layer's own again.
    CHECK(layer.forward(x, Mode::Inference).shape() == layer.output_shape().with_batch(3));
  }
  Conv2D<float> softmax(conv(4, {3, 3}, Padding::Same, {1, 1}, Activation::Softmax));
  BatchNormalization<float> bn;
  Rng rng(1);
  bn.build(softmax.build({5, 5, 2}, rng), rng);
  CHECK_FALSE(fusion::absorb_next_in_inference(softmax, &bn));
}

TEST_CASE("the fusion planner fuses a user's own layer only as far as it declares") {
  // A layer the planner does not know: declaring nothing, nothing fuses with
  // it or across it; declaring FusionTraits, the planner steps over it.
  struct Custom : Layer<float> {
    FusionTraits traits;
    std::string type() const override { return "Custom"; }
    std::string base_name() const override { return "custom"; }
    FusionTraits fusion_traits() const override { return traits; }

   protected:
    Shape build_impl(const Shape& in, Rng&) override { return in; }
    const Tensor<float>& forward_impl(const Tensor<float>& x, Mode) override { return x; }
    const Tensor<float>& backward_impl(const Tensor<float>& dy) override { return dy; }
  };
  Conv2D<float> layer(conv(4, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU));
  Custom custom;
  BatchNormalization<float> bn;
  CHECK_FALSE(fusion::absorb_next_in_inference(layer, &custom));
  CHECK_FALSE(fusion::absorb_next_in_inference(custom, &bn));
  CHECK_FALSE(fusion::fuse_next_in_training(custom, &bn));
  CHECK_FALSE(fusion::fuse_next_in_training(bn, &custom));
  CHECK_FALSE(fusion::leave_relu_grad(custom, true));
  CHECK_FALSE(fusion::take_input_relu_grad(custom, true));
  custom.traits.identity_in_inference = true;
  CHECK(fusion::absorb_next_in_inference(layer, &custom));
  CHECK(fusion::absorb_next_in_inference(layer, &bn));
  CHECK(layer.absorbed() == &bn);
  fusion::absorb_next_in_inference(layer, nullptr);
  CHECK(layer.absorbed() == nullptr);

  // In training a Conv2D's ReLU derivative passes it only when it scales elementwise.
  std::vector<std::unique_ptr<Layer<float>>> layers;
  layers.push_back(std::make_unique<Conv2D<float>>(conv(4, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU)));
  auto owned = std::make_unique<Custom>();
  Custom& user = *owned;
  layers.push_back(std::move(owned));
  layers.push_back(std::make_unique<BatchNormalization<float>>());
  for (const bool scales : {false, true}) {
    CAPTURE(scales);
    user.traits.scales_elementwise = scales;
    {
      TrainingFusion<float> plan(layers);
      CHECK(fusion::relu_grad_left(*layers[0]) == scales);
      CHECK(fusion::takes_input_relu_grad(*layers[2]) == scales);
      for (std::size_t i = 0; i < layers.size(); ++i) {
        CHECK_FALSE(plan.fused(i));
        CHECK_FALSE(plan.skips(i));
      }
    }
    CHECK_FALSE(fusion::relu_grad_left(*layers[0]));  // for the plan's life only
    CHECK_FALSE(fusion::takes_input_relu_grad(*layers[2]));
  }
}

TEST_CASE("gradient check: Dense") {
  SUBCASE("linear") {
    Dense<double> layer(DenseOptions(5));
    check_layer_gradients(layer, random_input(layer, {7}, 3));
  }
  SUBCASE("relu") {
    Dense<double> layer(DenseOptions(6).activation(Activation::ReLU));
    check_layer_gradients(layer, random_input(layer, {4}, 3));
  }
  SUBCASE("softmax") {
    Dense<double> layer(DenseOptions(4).activation(Activation::Softmax));
    check_layer_gradients(layer, random_input(layer, {5}, 3));
  }
}

// Layers split their work across threads only above a size; these checks
// are large enough that two threads each take a part (units and features
// for Dense, rows for BatchNormalization, samples for Conv2D).
TEST_CASE("gradient check: layers split across two threads") {
  const int saved = num_threads();
  set_num_threads(2);
  SUBCASE("Dense, 130 units from 140 features") {
    Dense<double> layer(DenseOptions(130).activation(Activation::ReLU));
    check_layer_gradients(layer, random_input(layer, {140}, 3));
  }
  SUBCASE("BatchNormalization, 512 rows of 70 channels") {
    BatchNormalization<double> layer;
    check_layer_gradients(layer, random_input(layer, {16, 16, 70}, 2));
  }
  SUBCASE("Conv2D, 5 samples") {
    Conv2D<double> layer(conv(3, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU));
    check_layer_gradients(layer, random_input(layer, {5, 4, 2}, 5));
  }
  set_num_threads(saved);
}

TEST_CASE("gradient check: BatchNormalization in training mode") {
  SUBCASE("images") {
    BatchNormalization<double> layer;
    auto x = random_input(layer, {3, 4, 3}, 2);
    set_param(layer, 0, {0.5, 1.5, -2.0});  // gamma
    set_param(layer, 1, {0.1, -0.2, 0.3});  // beta
    check_layer_gradients(layer, x);
  }
  SUBCASE("features") {
    BatchNormalization<double> layer;
    check_layer_gradients(layer, random_input(layer, {5}, 6));
  }
  SUBCASE("without center or scale (Keras's center=False, scale=False)") {
    BatchNormalization<double> layer(BatchNormalizationOptions().center(false).scale(false));
    auto x = random_input(layer, {4, 3}, 3);
    CHECK(layer.parameters().size() == 2);  // moving_mean, moving_variance only
    CHECK(layer.count_trainable_params() == 0);
    check_layer_gradients(layer, x);
    BatchNormalization<double> no_beta(BatchNormalizationOptions().center(false));
    random_input(no_beta, {4, 3}, 3);
    CHECK(no_beta.parameters().front().name.find("gamma") != std::string::npos);
    CHECK(no_beta.count_trainable_params() == 3);
  }
}

TEST_CASE("BatchNormalization's moving variance: Keras 3's biased batch variance, or tf.keras 2's unbiased") {
  // One channel, rows 1, 2, 3, 6: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5,
  // unbiased 14 / 3. Momentum 0.75: moving_mean = 0.75 * 0 + 0.25 * 3,
  // moving_variance = 0.75 * 1 + 0.25 * variance.
  const Tensor<double> x(Shape{4, 1}, {1, 2, 3, 6});
  for (const bool unbiased : {false, true}) {
    CAPTURE(unbiased);
    BatchNormalization<double> bn(BatchNormalizationOptions().momentum(0.75).unbiased_moving_variance(unbiased));
    Rng rng(1);
    bn.build(Shape{1}, rng);
    bn.forward(x, Mode::Train);
    const auto p = bn.parameters();  // gamma, beta, moving_mean, moving_variance
    CHECK((*p[2].value)[0] == doctest::Approx(0.75).epsilon(1e-15));
    CHECK((*p[3].value)[0] == doctest::Approx(0.75 + 0.25 * (unbiased ? 14.0 / 3 : 3.5)).epsilon(1e-15));
    CHECK(bn.config().flag("unbiased_moving_variance", !unbiased) == unbiased);
  }
  CHECK_FALSE(BatchNormalizationOptions().unbiased_moving_variance());  // Keras 3's rule by default
  // A config without the key was saved before loom had the option, when it used the unbiased rule.
  const auto old = BatchNormalization<double>::from_config(Config().set("momentum", 0.99).set("epsilon", 1e-3));
  CHECK(old->config().flag("unbiased_moving_variance", false));
}

TEST_CASE("gradient check: MaxPool2D") {
  struct Case {
    const char* what;
    MaxPool2DOptions options;
    Shape input;
    Index batch;
  };
  const Case cases[] = {
      {"2x2/2 same on an odd size", MaxPool2DOptions({2, 2}).padding(Padding::Same), {5, 7, 2}, 2},
      {"3x3/2 valid, overlapping windows", MaxPool2DOptions({3, 3}).strides(Size2{2, 2}), {7, 7, 2}, 2},
      {"2x2/2 valid on an odd size: the last row and column are in no window", MaxPool2DOptions({2, 2}), {5, 5, 3}, 2},
      {"2x2/3 valid: gaps between the windows", MaxPool2DOptions({2, 2}).strides(Size2{3, 3}), {8, 8, 2}, 2},
      {"3x3/3 same: windows tile an image padded on both sides", MaxPool2DOptions({3, 3}).padding(Padding::Same),
       {7, 8, 2}, 2},
      {"17x17/3 valid: a large window", MaxPool2DOptions({17, 17}).strides(Size2{3, 3}), {20, 20, 1}, 1},
  };
  for (const Case& c : cases) {
    INFO(std::string(c.what));  // CAPTURE of a const char* logs the pointer
    MaxPool2D<double> layer(c.options);
    check_layer_gradients(layer, random_input(layer, c.input, c.batch));
  }
}

namespace {

/// A BatchNormalization and the MaxPool2D after it, built for `input`, the
/// pooling fused in as the trainer fuses it, gamma and beta of mixed signs
/// (a negative gamma turns the window's largest x into its smallest output).
template <class T>
bool fuse_batch_norm_and_pool(BatchNormalization<T>& bn, MaxPool2D<T>& pool, const Shape& input) {
  Rng rng(2);
  pool.build(bn.build(input, rng), rng);
  auto p = bn.parameters();
  for (Index k = 0; k < p[0].value->size(); ++k) {
    (*p[0].value)[k] = static_cast<T>(k % 2 ? -0.7 - 0.1 * k : 1.3 + 0.2 * k);  // gamma
    (*p[1].value)[k] = static_cast<T>(0.1 * k - 0.2);                          // beta
  }
  return fusion::fuse_next_in_training(bn, &pool);
}

struct PoolCase {
  const char* what;
  MaxPool2DOptions options;
  Shape input;
};
const PoolCase tiling_pools[] = {
    {"2x2/2 same on an odd size", MaxPool2DOptions({2, 2}).padding(Padding::Same), {5, 7, 3}},
    {"2x2/2 valid on an odd size: the last row and column are in no window", MaxPool2DOptions({2, 2}), {5, 5, 3}},
    {"3x3/3 same: windows padded on both sides", MaxPool2DOptions({3, 3}).padding(Padding::Same), {7, 8, 2}},
    {"2x3/(2,3) valid, 19 channels: a full vector and a rest", MaxPool2DOptions({2, 3}), {7, 8, 19}},
};

}  // namespace

TEST_CASE("gradient check: BatchNormalization with the MaxPool2D after it fused in") {
  for (const PoolCase& c : tiling_pools) {
    INFO(std::string(c.what));  // CAPTURE of a const char* logs the pointer
    BatchNormalization<double> bn;
    MaxPool2D<double> pool(c.options);
    REQUIRE(fuse_batch_norm_and_pool(bn, pool, c.input));
    Rng rng(7);
    Tensor<double> x(c.input.with_batch(3));
    random_fill(x, rng, -2, 2);
    check_layer_gradients(bn, x);
  }
}

TEST_CASE("BatchNormalization with MaxPool2D fused in: the pooled output bit for bit, gradients to rounding") {
  for (const PoolCase& c : tiling_pools) {
    INFO(std::string(c.what));  // CAPTURE of a const char* logs the pointer
    BatchNormalization<float> bn, bn_apart;
    MaxPool2D<float> pool(c.options), pool_apart(c.options);
    REQUIRE(fuse_batch_norm_and_pool(bn, pool, c.input));
    fuse_batch_norm_and_pool(bn_apart, pool_apart, c.input);
    fusion::fuse_next_in_training(bn_apart, nullptr);
    Rng rng(11);
    Tensor<float> x(c.input.with_batch(4));
    for (float& v : x) v = static_cast<float>(rng.uniform(-3, 3));
    const Tensor<float> fused = bn.forward(x, Mode::Train);
    const Tensor<float> apart = pool_apart.forward(bn_apart.forward(x, Mode::Train), Mode::Train);
    REQUIRE(fused.shape() == apart.shape());
    CHECK(std::equal(fused.begin(), fused.end(), apart.begin()));
    Tensor<float> dy(fused.shape());
    for (float& v : dy) v = static_cast<float>(rng.uniform(-1, 1));
    const Tensor<float> dx = bn.backward(dy);
    const Tensor<float> dx_apart = bn_apart.backward(pool_apart.backward(dy));
    REQUIRE(dx.shape() == x.shape());
    for (Index i = 0; i < dx.size(); ++i) {
      REQUIRE_MESSAGE(std::fabs(dx[i] - dx_apart[i]) <= 1e-5f * (1 + std::fabs(dx_apart[i])), "dx[" << i << "]");
    }
    for (std::size_t p = 0; p < 2; ++p) {  // dgamma, dbeta
      const Tensor<float>& g = *bn.parameters()[p].grad;
      const Tensor<float>& g_apart = *bn_apart.parameters()[p].grad;
      for (Index k = 0; k < g.size(); ++k) CHECK(g[k] == doctest::Approx(g_apart[k]).epsilon(1e-5));
    }
    CHECK(bn.parameters()[2].value->size() == c.input.back());
    for (std::size_t p = 2; p < 4; ++p) {  // the moving statistics move alike
      CHECK(std::equal(bn.parameters()[p].value->begin(), bn.parameters()[p].value->end(),
                       bn_apart.parameters()[p].value->begin()));
    }
  }
}

TEST_CASE("BatchNormalization fuses only a MaxPool2D whose windows tile its input, and only both ways") {
  BatchNormalization<float> bn;
  MaxPool2D<float> overlapping(MaxPool2DOptions({3, 3}).strides(Size2{2, 2}));
  CHECK_FALSE(fuse_batch_norm_and_pool(bn, overlapping, {7, 7, 2}));
  CHECK(bn.fused_next() == nullptr);
  MaxPool2D<float> gaps(MaxPool2DOptions({2, 2}).strides(Size2{3, 3}));
  CHECK_FALSE(fuse_batch_norm_and_pool(bn, gaps, {8, 8, 2}));
  Dropout<float> dropout(0.5);
  CHECK_FALSE(fusion::fuse_next_in_training(bn, &dropout));

  MaxPool2D<float> pool(MaxPool2DOptions({2, 2}));
  REQUIRE(fuse_batch_norm_and_pool(bn, pool, {4, 4, 2}));
  CHECK(bn.fused_next() == &pool);
  Tensor<float> x(Shape{2, 4, 4, 2}, 0.5f);
  x[3] = 2;
  CHECK(bn.forward(x, Mode::Train).shape() == Shape{2, 2, 2, 2});
  CHECK(bn.forward(x, Mode::Inference).shape() == Shape{2, 4, 4, 2});  // inference never pools
  CHECK(bn.forward(x, Mode::Train).shape() == Shape{2, 2, 2, 2});
  CHECK_THROWS_AS(bn.backward(Tensor<float>(Shape{2, 4, 4, 2})), ShapeError);  // it takes the pooled gradient
  fusion::fuse_next_in_training(bn, nullptr);
  CHECK_THROWS_WITH_AS(bn.backward(Tensor<float>(Shape{2, 4, 4, 2})),
                       doctest::Contains("backward() must be fused with the MaxPool2D as its forward() was"),
                       ConfigError);
}

TEST_CASE("a Conv2D's ReLU derivative left to the BatchNormalization after it: the same gradients, bit for bit") {
  // As the trainer arranges it (TrainingFusion, fusion::leave_relu_grad): the
  // BatchNormalization zeroes its input gradient where its input is not
  // positive, past a Dropout if one stands between, and the Conv2D takes
  // what it is given as dL/dz.
  struct Chain {
    Conv2D<float> conv2d;
    Dropout<float> dropout{0.4, 3};
    BatchNormalization<float> bn;
    MaxPool2D<float> pool{MaxPool2DOptions({2, 2})};
    bool with_dropout;
    Chain(bool dropout, bool pooled, Index filters)
        : conv2d(conv(filters, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU)), with_dropout(dropout) {
      Rng rng(4);
      Shape s = conv2d.build({6, 5, 3}, rng);
      if (with_dropout) s = this->dropout.build(s, rng);
      pool.build(bn.build(s, rng), rng);
      if (pooled) REQUIRE(fusion::fuse_next_in_training(bn, &pool));
      auto p = bn.parameters();
      for (Index k = 0; k < filters; ++k) (*p[0].value)[k] = k % 2 ? -0.8f : 1.1f;  // gamma of both signs
    }
    const Tensor<float>* relu = nullptr;  // the Conv2D's output
    const Tensor<float>& forward(const Tensor<float>& x) {
      const Tensor<float>* h = relu = &conv2d.forward(x, Mode::Train);
      if (with_dropout) h = &dropout.forward(*h, Mode::Train);
      return bn.forward(*h, Mode::Train);
    }
    const Tensor<float>& backward(const Tensor<float>& dy) {
      const Tensor<float>* g = &bn.backward(dy);
      if (with_dropout) g = &dropout.backward(*g);
      return conv2d.backward(*g);
    }
  };
  // 4 filters, and 19: whole 2x2 windows of 16 channels or more go through BatchNormalization's window kernels.
  for (const Index filters : {4, 19}) {
  for (const bool pooled : {false, true}) {
    for (const bool dropout : {false, true}) {
      CAPTURE(filters);
      CAPTURE(pooled);
      CAPTURE(dropout);
      Chain left(dropout, pooled, filters), apart(dropout, pooled, filters);
      REQUIRE(fusion::leave_relu_grad(left.conv2d, true));
      REQUIRE(fusion::take_input_relu_grad(left.bn, true));
      Rng rng(8);
      Tensor<float> x(Shape{3, 6, 5, 3});
      for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
      const Tensor<float>& y = left.forward(x);
      REQUIRE(std::equal(y.begin(), y.end(), apart.forward(x).begin()));
      Index zeros = 0;  // the ReLU must zero a fair share, or nothing is tested
      for (float v : *left.relu) zeros += v == 0;
      CHECK(zeros > left.relu->size() / 5);
      Tensor<float> dy(y.shape());
      for (float& v : dy) v = static_cast<float>(rng.uniform(-1, 1));
      const Tensor<float> dx = left.backward(dy);
      const Tensor<float>& dx_apart = apart.backward(dy);
      CHECK(std::equal(dx.begin(), dx.end(), dx_apart.begin()));
      auto p = left.conv2d.parameters(), q = apart.conv2d.parameters();
      for (std::size_t i = 0; i < p.size(); ++i) {
        CAPTURE(p[i].name);
        CHECK(std::equal(p[i].grad->begin(), p[i].grad->end(), q[i].grad->begin()));
      }
    }
  }
  }
  // Who agrees: a ReLU Conv2D (not Dense, not without ReLU), a BatchNormalization
  // that computes its input gradient; Dropout scales elementwise, Flatten does not.
  Conv2D<float> linear(conv(2, {3, 3}, Padding::Same));
  CHECK_FALSE(fusion::leave_relu_grad(linear, true));
  Dense<float> dense(DenseOptions(3).activation(Activation::ReLU));
  CHECK_FALSE(fusion::leave_relu_grad(dense, true));
  BatchNormalization<float> first;
  first.set_needs_input_grad(false);
  CHECK_FALSE(fusion::take_input_relu_grad(first, true));
  CHECK(Dropout<float>(0.5).fusion_traits().scales_elementwise);
  CHECK_FALSE(Flatten<float>().fusion_traits().scales_elementwise);
}

TEST_CASE("a first Conv2D's gradients left to the BatchNormalization and MaxPool2D after it: the same bits") {
  // As the trainer arranges it (fusion::leave_weights_grad): the direct
  // kernel's weights' and bias' gradients summed from the rows of dL/dz the
  // BatchNormalization makes, which are never stored, and the Conv2D's own
  // backward skipped. Whole 2x2 windows, windows clipped by 'same' pooling,
  // cells in no window under 'valid' pooling; 4 channels, and 19 (a vector
  // of 16 and a rest).
  struct Case {
    const char* what;
    MaxPool2DOptions pool;
    Shape image;
    Index filters;
  };
  const Case cases[] = {
      {"2x2 valid on 8x6, 19 filters", MaxPool2DOptions({2, 2}), {8, 6, 1}, 19},
      {"2x2 same on 7x5, 4 filters", MaxPool2DOptions({2, 2}).padding(Padding::Same), {7, 5, 1}, 4},
      {"2x2 valid on 7x5, 19 filters: the last row and column in no window", MaxPool2DOptions({2, 2}), {7, 5, 2}, 19},
      {"3x3 same on 7x8, 4 filters", MaxPool2DOptions({3, 3}).padding(Padding::Same), {7, 8, 1}, 4},
  };
  struct Chain {
    Conv2D<float> conv2d;
    BatchNormalization<float> bn;
    MaxPool2D<float> pool;
    Chain(const Case& c) : conv2d(conv(c.filters, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU)), pool(c.pool) {
      conv2d.set_algorithm(ConvAlgorithm::Direct);
      conv2d.set_needs_input_grad(false);
      Rng rng(4);
      REQUIRE(fuse_batch_norm_and_pool(bn, pool, conv2d.build(c.image, rng)));
      REQUIRE(fusion::leave_relu_grad(conv2d, true));
      REQUIRE(fusion::take_input_relu_grad(bn, true));
    }
  };
  for (const Case& c : cases) {
    INFO(std::string(c.what));
    Chain left(c), apart(c);
    REQUIRE(fusion::leave_weights_grad<float>(left.conv2d, &left.bn, true));
    CHECK(left.bn.weights_grad_taken() == &left.conv2d);
    Rng rng(8);
    Tensor<float> x(c.image.with_batch(5));
    for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
    const Tensor<float>& y = left.bn.forward(left.conv2d.forward(x, Mode::Train), Mode::Train);
    REQUIRE(std::equal(y.begin(), y.end(), apart.bn.forward(apart.conv2d.forward(x, Mode::Train), Mode::Train).begin()));
    Tensor<float> dy(y.shape());
    for (float& v : dy) v = static_cast<float>(rng.uniform(-1, 1));
    CHECK(left.bn.backward(dy).size() == 0);  // nothing stored: handed to the Conv2D a row at a time
    CHECK_THROWS_AS(left.conv2d.backward(Tensor<float>(left.conv2d.output_shape().with_batch(5))), ConfigError);
    apart.conv2d.backward(apart.bn.backward(dy));
    using Pair = std::pair<Layer<float>*, Layer<float>*>;
    for (const Pair& layers : {Pair{&left.conv2d, &apart.conv2d}, Pair{&left.bn, &apart.bn}}) {
      auto p = layers.first->parameters(), q = layers.second->parameters();
      for (std::size_t i = 0; i < p.size(); ++i) {
        if (!p[i].grad) continue;
        CAPTURE(p[i].name);
        CHECK(std::equal(p[i].grad->begin(), p[i].grad->end(), q[i].grad->begin()));
        Index nonzero = 0;
        for (float v : *p[i].grad) nonzero += v != 0;
        CHECK(nonzero > p[i].grad->size() / 2);
      }
    }
    REQUIRE_FALSE(fusion::leave_weights_grad<float>(left.conv2d, &left.bn, false));
    CHECK(left.bn.weights_grad_taken() == nullptr);
  }
  // Who agrees: the direct kernel without an input gradient, its ReLU's
  // derivative left to a BatchNormalization fused with its pooling.
  Chain chain(cases[0]);
  chain.conv2d.set_needs_input_grad(true);
  CHECK_FALSE(fusion::leave_weights_grad<float>(chain.conv2d, &chain.bn, true));
  chain.conv2d.set_needs_input_grad(false);
  chain.conv2d.set_algorithm(ConvAlgorithm::Im2col);
  CHECK_FALSE(fusion::leave_weights_grad<float>(chain.conv2d, &chain.bn, true));
  chain.conv2d.set_algorithm(ConvAlgorithm::Direct);
  fusion::fuse_next_in_training<float>(chain.bn, nullptr);
  CHECK_FALSE(fusion::leave_weights_grad<float>(chain.conv2d, &chain.bn, true));
  CHECK(chain.bn.weights_grad_taken() == nullptr);
}

TEST_CASE("a first Conv2D summing the batch statistics of the BatchNormalization after it: the same bits") {
  // As the trainer arranges it (fusion::sum_statistics): the direct kernel
  // hands its output to the BatchNormalization a band of rows at a time,
  // which sums them for its statistics instead of reading the output again.
  // It must give the same output and moving statistics, bit for bit, as the
  // layers apart; the sums are taken only when the threads split the rows
  // as the BatchNormalization would (else it sums them itself).
  struct Case {
    const char* what;
    int threads;
    Shape image;
    Index filters, batch;
    bool pooled, summed;
  };
  const Case cases[] = {
      {"2 threads, 4 images of 28x28, 19 filters", 2, {28, 28, 1}, 19, 4, false, true},
      {"the same, the pooling fused in", 2, {28, 28, 1}, 19, 4, true, true},
      {"2 threads, 5 images: rows split unlike the images", 2, {28, 28, 1}, 19, 5, true, false},
      {"2 threads for the conv, 1 for a small BatchNormalization", 2, {7, 5, 1}, 4, 4, false, false},
      {"1 thread, 3 images of 7x5, 4 filters", 1, {7, 5, 1}, 4, 3, true, true},
  };
  const int saved = num_threads();
  for (const Case& c : cases) {
    INFO(std::string(c.what));
    set_num_threads(c.threads);
    struct Chain {
      Conv2D<float> conv2d;
      BatchNormalization<float> bn;
      MaxPool2D<float> pool;
      Chain(const Case& c)
          : conv2d(conv(c.filters, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU)), pool(MaxPool2DOptions({2, 2})) {
        conv2d.set_algorithm(ConvAlgorithm::Direct);
        Rng rng(4);
        const Shape out = conv2d.build(c.image, rng);
        if (c.pooled) {
          REQUIRE(fuse_batch_norm_and_pool(bn, pool, out));
        } else {
          bn.build(out, rng);
        }
      }
    } summed(c), apart(c);
    REQUIRE(fusion::sum_statistics<float>(summed.conv2d, &summed.bn, true));
    Rng rng(8);
    Tensor<float> x(c.image.with_batch(c.batch));
    for (int step = 0; step < 2; ++step) {  // the second forward on the buffers of the first
      for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
      const Tensor<float>& y = summed.bn.forward(summed.conv2d.forward(x, Mode::Train), Mode::Train);
      CHECK(summed.bn.statistics_summed() == c.summed);
      const Tensor<float>& z = apart.bn.forward(apart.conv2d.forward(x, Mode::Train), Mode::Train);
      CHECK_FALSE(apart.bn.statistics_summed());
      REQUIRE(y.shape() == z.shape());
      CHECK(std::equal(y.begin(), y.end(), z.begin()));
      auto p = summed.bn.parameters(), q = apart.bn.parameters();
      for (std::size_t i = 0; i < p.size(); ++i) {
        CAPTURE(p[i].name);
        CHECK(std::equal(p[i].value->begin(), p[i].value->end(), q[i].value->begin()));
      }
    }
    // Sums handed over and never used when the fusion ends (a step that threw) are dropped.
    summed.conv2d.forward(x, Mode::Train);
    REQUIRE_FALSE(fusion::sum_statistics<float>(summed.conv2d, &summed.bn, false));
    for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
    const Tensor<float>& y = summed.bn.forward(summed.conv2d.forward(x, Mode::Train), Mode::Train);
    CHECK_FALSE(summed.bn.statistics_summed());
    const Tensor<float>& z = apart.bn.forward(apart.conv2d.forward(x, Mode::Train), Mode::Train);
    CHECK(std::equal(y.begin(), y.end(), z.begin()));
  }
  set_num_threads(saved);
  // Who sums: a Conv2D running its direct kernel, for a BatchNormalization.
  Conv2D<float> conv2d(conv(4, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU));
  BatchNormalization<float> bn;
  Rng rng(4);
  bn.build(conv2d.build({7, 5, 1}, rng), rng);
  conv2d.set_algorithm(ConvAlgorithm::Im2col);
  CHECK_FALSE(fusion::sum_statistics<float>(conv2d, &bn, true));
  conv2d.set_algorithm(ConvAlgorithm::Direct);
  CHECK_FALSE(fusion::sum_statistics<float>(conv2d, nullptr, true));
  CHECK(fusion::sum_statistics<float>(conv2d, &bn, true));
  CHECK_FALSE(fusion::sum_statistics<float>(bn, &bn, true));
}

TEST_CASE("gradient check: Dropout, Flatten, ReLU, Softmax") {
  SUBCASE("Dropout") {
    Dropout<double> layer(0.4);
    check_layer_gradients(layer, random_input(layer, {4, 3, 2}, 2));
  }
  SUBCASE("Flatten") {
    Flatten<double> layer;
    check_layer_gradients(layer, random_input(layer, {3, 2, 2}, 2));
  }
  SUBCASE("ReLU") {
    ReLU<double> layer;
    check_layer_gradients(layer, random_input(layer, {9}, 3));
  }
  SUBCASE("Softmax") {
    Softmax<double> layer;
    check_layer_gradients(layer, random_input(layer, {2, 5}, 3));
  }
}

TEST_CASE("gradient check: the notebook's model end to end, through the loss") {
  // d(loss)/d(every parameter) of a whole (small) model in training mode,
  // with the fused softmax + cross-entropy gradient.
  Sequential<double> model(3);
  model.add(Conv2D<double>(conv(3, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU)), Shape{6, 6, 1});
  model.add(BatchNormalization<double>());
  model.add(MaxPool2D<double>(MaxPool2DOptions({2, 2}).padding(Padding::Same)));
  model.add(Conv2D<double>(conv(2, {3, 3}, Padding::Same, {1, 1}, Activation::ReLU)));
  model.add(Dropout<double>(0.2));
  model.add(BatchNormalization<double>());
  model.add(Flatten<double>());
  model.add(Dense<double>(DenseOptions(5).activation(Activation::ReLU)));
  model.add(Dense<double>(DenseOptions(3).activation(Activation::Softmax)));
  model.compile(SparseCategoricalCrossentropy<double>(), SGD<double>(SGDOptions().learning_rate(0)));
  Rng rng(9);
  Tensor<double> x(Shape{4, 6, 6, 1}), y(Shape{4}, {0, 2, 1, 2});
  random_fill(x, rng);

  auto loss = [&] {
    for (auto& l : model.layers()) l->seed(77);
    return model.loss().value(model.forward(x, Mode::Train), y);
  };
  for (auto& l : model.layers()) l->seed(77);
  model.train_step(x, y);  // lr 0: computes gradients, leaves weights as they are
  std::vector<Tensor<double>> grads;
  for (const auto& p : model.parameters()) {
    if (p.trainable()) grads.push_back(*p.grad);
  }
  std::size_t g = 0;
  for (const auto& p : model.parameters()) {
    if (p.trainable()) loom::testing::compare(p.name, *p.value, grads[g++], loss, 40, rng);
  }
}

// ---------------------------------------------------------------- hand-computed cases

TEST_CASE_TEMPLATE("Conv2D, same padding: 3x3 ones kernel on 1..9 sums each neighbourhood", T, float, double) {
  Conv2D<T> layer(conv(1, {3, 3}, Padding::Same));
  Rng rng(0);
  CHECK(layer.build({3, 3, 1}, rng) == Shape{3, 3, 1});
  set_param<T>(layer, 0, {1, 1, 1, 1, 1, 1, 1, 1, 1});
  set_param<T>(layer, 1, {1});
  Tensor<T> x(Shape{1, 3, 3, 1}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  const auto& y = layer.forward(x, Mode::Inference);
  const T expected[] = {13, 22, 17, 28, 46, 34, 25, 40, 29};  // neighbourhood sums + bias 1
  for (Index i = 0; i < 9; ++i) CHECK(y[i] == doctest::Approx(expected[i]));
}

TEST_CASE("Conv2D, valid padding, stride 2") {
  // x[i][j] = 5i + j on 5x5; kernel 2 at (0,0) and 1 at the centre:
  // out = 2 x[r][c] + x[r+1][c+1] for r, c in {0, 2}.
  Conv2D<double> layer(conv(1, {3, 3}, Padding::Valid, {2, 2}));
  Rng rng(0);
  CHECK(layer.build({5, 5, 1}, rng) == Shape{2, 2, 1});
  set_param<double>(layer, 0, {2, 0, 0, 0, 1, 0, 0, 0, 0});
  Tensor<double> x(Shape{1, 5, 5, 1});
  for (Index i = 0; i < 25; ++i) x[i] = static_cast<double>(i);
  const auto& y = layer.forward(x, Mode::Inference);
  CHECK(y[0] == 6.0);
  CHECK(y[1] == 12.0);
  CHECK(y[2] == 36.0);
  CHECK(y[3] == 42.0);
}

TEST_CASE("Conv2D, same padding, stride 2: the extra padding goes bottom and right") {
  Rng rng(0);
  // 5x5: out 3x3, pad 1 on each side; centre-only kernel picks x[2i][2j].
  Conv2D<double> odd(conv(1, {3, 3}, Padding::Same, {2, 2}));
  CHECK(odd.build({5, 5, 1}, rng) == Shape{3, 3, 1});
  set_param<double>(odd, 0, {0, 0, 0, 0, 1, 0, 0, 0, 0});
  Tensor<double> x5(Shape{1, 5, 5, 1});
  for (Index i = 0; i < 25; ++i) x5[i] = static_cast<double>(i);
  const auto& y5 = odd.forward(x5, Mode::Inference);
  const double e5[] = {0, 2, 4, 10, 12, 14, 20, 22, 24};
  for (Index i = 0; i < 9; ++i) CHECK(y5[i] == e5[i]);
  // 4x4: out 2x2, pad_total 1, all of it after; the centre sees x[2i+1][2j+1].
  Conv2D<double> even(conv(1, {3, 3}, Padding::Same, {2, 2}));
  CHECK(even.build({4, 4, 1}, rng) == Shape{2, 2, 1});
  set_param<double>(even, 0, {0, 0, 0, 0, 1, 0, 0, 0, 0});
  Tensor<double> x4(Shape{1, 4, 4, 1});
  for (Index i = 0; i < 16; ++i) x4[i] = static_cast<double>(i);
  const auto& y4 = even.forward(x4, Mode::Inference);
  CHECK(y4[0] == 5.0);
  CHECK(y4[1] == 7.0);
  CHECK(y4[2] == 13.0);
  CHECK(y4[3] == 15.0);
}

TEST_CASE("Conv2D: kernel layout is Keras's [kh, kw, cin, cout]") {
  Conv2D<double> layer(conv(2, {1, 1}, Padding::Valid));
  Rng rng(0);
  layer.build({1, 1, 2}, rng);
  CHECK(layer.parameters()[0].value->shape() == Shape{1, 1, 2, 2});
  set_param<double>(layer, 0, {1, 2, 3, 4});  // K[0][0][cin][cout]
  Tensor<double> x(Shape{1, 1, 1, 2}, {1, 2});
  const auto& y = layer.forward(x, Mode::Inference);
  CHECK(y[0] == 1 * 1 + 2 * 3);
  CHECK(y[1] == 1 * 2 + 2 * 4);
}

TEST_CASE("Conv2D: ReLU is applied after the bias") {
  Conv2D<double> layer(conv(1, {1, 1}, Padding::Valid, {1, 1}, Activation::ReLU));
  Rng rng(0);
  layer.build({1, 3, 1}, rng);
  set_param<double>(layer, 0, {1});
  set_param<double>(layer, 1, {-1});
  Tensor<double> x(Shape{1, 1, 3, 1}, {0.5, 1, 3});
  const auto& y = layer.forward(x, Mode::Inference);
  CHECK(y[0] == 0.0);
  CHECK(y[1] == 0.0);
  CHECK(y[2] == 2.0);
}

TEST_CASE("MaxPool2D, same padding on an odd size ignores the padded cells") {
  MaxPool2D<double> layer(MaxPool2DOptions({2, 2}).strides(Size2{2, 2}).padding(Padding::Same));
  Rng rng(0);
  CHECK(layer.build({3, 3, 1}, rng) == Shape{2, 2, 1});
  // All negative: a zero-padded pool would wrongly return 0 at the edges.
  Tensor<double> x(Shape{1, 3, 3, 1}, {-1, -2, -3, -4, -5, -6, -7, -8, -9});
  const auto& y = layer.forward(x, Mode::Inference);
  CHECK(y[0] == -1.0);  // max of x00 x01 x10 x11
  CHECK(y[1] == -3.0);  // max of x02 x12
  CHECK(y[2] == -7.0);  // max of x20 x21
  CHECK(y[3] == -9.0);  // x22 alone
  MaxPool2D<double> nb(MaxPool2DOptions({2, 2}).strides(Size2{2, 2}).padding(Padding::Same));
  CHECK(nb.build({7, 7, 50}, rng) == Shape{4, 4, 50});
  MaxPool2D<double> valid(MaxPool2DOptions({2, 2}));
  CHECK(valid.build({7, 7, 50}, rng) == Shape{3, 3, 50});
}

TEST_CASE("MaxPool2D: a NaN in a window wins, infinities compare, in both modes and both window loops") {
  // 2x2 windows take a one-pass loop, 3x3 ones the general loop; inference
  // and training (which remembers the winners) have loops of their own.
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> image{1, 2, 3, 4, 5,  6, nan, 8, 9, 10,  -inf, -inf, 0, -1, nan,  -inf, -inf, -2, -3, 7};
  Tensor<float> x(Shape{1, 4, 5, 2});  // channel 1 is -channel 0
  for (std::size_t i = 0; i < image.size(); ++i) {
    x[Index(2 * i)] = image[i];
    x[Index(2 * i + 1)] = -image[i];
  }
  const auto same_value = [](float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; };
  for (const Mode mode : {Mode::Inference, Mode::Train}) {
    MaxPool2D<float> two(MaxPool2DOptions({2, 2}).padding(Padding::Same));
    Rng rng(0);
    REQUIRE(two.build({4, 5, 2}, rng) == Shape{2, 3, 2});
    const Tensor<float>& y = two.forward(x, mode);
    const float want[] = {nan, nan, 9, -3, 10, -5, -inf, inf, 0, 3, nan, nan};
    for (Index i = 0; i < 12; ++i) CHECK_MESSAGE(same_value(y[i], want[i]), "2x2 y[" << i << "] = " << y[i]);
    MaxPool2D<float> three(MaxPool2DOptions({3, 3}).padding(Padding::Same));
    REQUIRE(three.build({4, 5, 2}, rng) == Shape{2, 2, 2});
    const Tensor<float>& z = three.forward(x, mode);  // rows {0,1}, {2,3} (one padded row before); columns {0,1,2}, {3,4}
    const float want3[] = {nan, nan, 10, -4, 0, inf, nan, nan};
    for (Index i = 0; i < 8; ++i) CHECK_MESSAGE(same_value(z[i], want3[i]), "3x3 z[" << i << "] = " << z[i]);
  }
}

TEST_CASE("MaxPool2D 2x2: the bits of a window-by-window maximum by larger's rule, NaN or not") {
  // Inference pools 2x2 windows by plain maxima and redoes a pixel's
  // windows by larger's NaN rule when their sums are NaN; training's loop
  // remembers the winners. Both must give, bit for bit, the first NaN of a
  // window, else its maximum, the first of equal values (-0 before +0).
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const Index h = 6, w = 8, c = 75;  // 75 channels: whole vectors and a remainder
  Tensor<float> x(Shape{2, h, w, c});
  Rng rng(7);
  // Mostly a few values, so that windows tie and zeros of both signs win.
  // The first image's first row of windows has NaNs of both signs, its
  // second infinities of both signs (whose sums are NaN too): both go by
  // larger. Everywhere else no sum is NaN, and the plain maxima stand.
  const float values[] = {0.0f, -0.0f, -1.0f, 0.5f, -inf, inf, nan, -nan};
  for (Index i = 0; i < x.size(); ++i) {
    const Index pixel = i / c, row = pixel / w % h, image = pixel / (w * h);
    const int kinds = image == 0 && row < 2 ? 8 : image == 0 && row < 4 ? 6 : 5;
    const double u = rng.uniform(0, 1);
    x[i] = u < 0.8 ? values[static_cast<int>(u * 10) % kinds] : static_cast<float>(rng.uniform(-1, 1));
  }
  const auto bits = [](float v) {
    std::uint32_t b;
    std::memcpy(&b, &v, sizeof b);
    return b;
  };
  for (const Mode mode : {Mode::Inference, Mode::Train}) {
    MaxPool2D<float> pool(MaxPool2DOptions({2, 2}));
    Rng r(0);
    REQUIRE(pool.build({h, w, c}, r) == Shape{h / 2, w / 2, c});
    const Tensor<float>& y = pool.forward(x, mode);
    int mismatches = 0;
    for (Index n = 0; n < 2; ++n) {
      for (Index oh = 0; oh < h / 2; ++oh) {
        for (Index ow = 0; ow < w / 2; ++ow) {
          for (Index ch = 0; ch < c; ++ch) {
            const auto at = [&](Index i, Index j) { return x[((n * h + 2 * oh + i) * w + 2 * ow + j) * c + ch]; };
            float best = at(0, 0);
            for (const float v : {at(0, 1), at(1, 0), at(1, 1)}) {
              if (v > best || (std::isnan(v) && !std::isnan(best))) best = v;
            }
            mismatches += bits(y[((n * h / 2 + oh) * (w / 2) + ow) * c + ch]) != bits(best);
          }
        }
      }
    }
    CHECK_MESSAGE(mismatches == 0, (mode == Mode::Train ? "training" : "inference"));
  }
}

TEST_CASE("MaxPool2D routes the gradient to the winning cell, per channel") {
  MaxPool2D<double> layer(MaxPool2DOptions({2, 2}));
  Rng rng(0);
  layer.build({2, 2, 2}, rng);
  Tensor<double> x(Shape{1, 2, 2, 2}, {1, 8, 4, 5, 3, 6, 2, 7});  // channel 0: 1 4 3 2; channel 1: 8 5 6 7
  const auto& y = layer.forward(x, Mode::Train);
  CHECK(y[0] == 4.0);
  CHECK(y[1] == 8.0);
  Tensor<double> dy(Shape{1, 1, 1, 2}, {10, 20});
  const auto& dx = layer.backward(dy);
  const double expected[] = {0, 20, 10, 0, 0, 0, 0, 0};
  for (Index i = 0; i < 8; ++i) CHECK(dx[i] == expected[i]);
}

TEST_CASE_TEMPLATE("BatchNormalization, training then inference, by hand", T, float, double) {
  BatchNormalization<T> layer;
  Rng rng(0);
  layer.build({1}, rng);
  set_param<T>(layer, 0, {2});    // gamma
  set_param<T>(layer, 1, {0.5});  // beta
  Tensor<T> x(Shape{4, 1}, {1, 2, 3, 4});
  // Batch statistics: mean 2.5, biased variance 1.25.
  const auto& y = layer.forward(x, Mode::Train);
  const double s = std::sqrt(1.25 + 1e-3);
  for (Index i = 0; i < 4; ++i) CHECK(y[i] == doctest::Approx(2 * (i + 1 - 2.5) / s + 0.5).epsilon(1e-5));
  // Moving statistics (Keras 3's rule, the biased variance): 0.99 * (0, 1) + 0.01 * (2.5, 1.25).
  const auto params = layer.parameters();
  CHECK((*params[2].value)[0] == doctest::Approx(0.025));
  CHECK((*params[3].value)[0] == doctest::Approx(0.99 + 0.01 * 1.25));
  CHECK_FALSE(params[2].trainable());
  CHECK_FALSE(params[3].trainable());
  CHECK(layer.count_params() == 4);
  CHECK(layer.count_trainable_params() == 2);
  // Inference uses the moving statistics.
  const auto& yi = layer.forward(x, Mode::Inference);
  const double mv = 0.99 + 0.01 * 1.25;
  for (Index i = 0; i < 4; ++i) {
    CHECK(yi[i] == doctest::Approx(2 * (i + 1 - 0.025) / std::sqrt(mv + 1e-3) + 0.5).epsilon(1e-5));
  }
}

TEST_CASE("BatchNormalization normalizes each channel of NHWC data separately") {
  BatchNormalization<double> layer;
  Rng rng(0);
  layer.build({2, 2, 2}, rng);
  Tensor<double> x(Shape{2, 2, 2, 2});
  for (Index i = 0; i < x.size(); ++i) x[i] = (i % 2 == 0) ? static_cast<double>(i) : 100.0 + 3.0 * i;
  const auto& y = layer.forward(x, Mode::Train);
  for (Index c = 0; c < 2; ++c) {
    double mean = 0, sq = 0;
    for (Index i = c; i < y.size(); i += 2) mean += y[i];
    mean /= 8;
    for (Index i = c; i < y.size(); i += 2) sq += (y[i] - mean) * (y[i] - mean);
    CHECK(mean == doctest::Approx(0).epsilon(1e-9));
    CHECK(sq / 8 == doctest::Approx(1).epsilon(1e-2));  // var / (var + eps)
  }
}

TEST_CASE("Dropout: inverted in training, identity in inference, seeded") {
  Dropout<float> layer(0.3);
  Rng rng(0);
  layer.build({10000}, rng);
  Tensor<float> x(Shape{1, 10000}, 1.0f);
  CHECK(&layer.forward(x, Mode::Inference) == &x);
  layer.seed(5);
  const Tensor<float> y = layer.forward(x, Mode::Train);
  Index zeros = 0;
  for (float v : y) {
    if (v == 0) {
      ++zeros;
    } else {
      CHECK(v == doctest::Approx(1 / 0.7));
    }
  }
  CHECK(static_cast<double>(zeros) / 10000 == doctest::Approx(0.3).epsilon(0.05));
  layer.seed(5);
  const Tensor<float> again = layer.forward(x, Mode::Train);
  CHECK(std::equal(y.begin(), y.end(), again.begin()));
  const Tensor<float> next = layer.forward(x, Mode::Train);  // a new mask each step
  CHECK_FALSE(std::equal(y.begin(), y.end(), next.begin()));
  CHECK_THROWS_AS(Dropout<float>(1.0), ConfigError);
  CHECK_THROWS_AS(Dropout<float>(-0.1), ConfigError);
}

TEST_CASE("Dropout: the mask does not depend on the number of threads") {
  const int saved = num_threads();
  Tensor<float> x(Shape{4, 100000}, 1.0f);
  std::vector<Tensor<float>> masks;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Dropout<float> layer(0.5, 11);
    Rng rng(0);
    layer.build({100000}, rng);
    masks.push_back(layer.forward(x, Mode::Train));
  }
  set_num_threads(saved);
  CHECK(std::equal(masks[0].begin(), masks[0].end(), masks[1].begin()));
}

TEST_CASE("Dropout: element i is kept when hash i of the step's key clears the rate") {
  // The documented rule, checked element by element on an odd size (a
  // vector's rest) on one thread and on two: the vectorized loop draws the
  // masks the scalar rule gives.
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Dropout<float> layer(0.25, 19);
    Rng rng(0);
    layer.build({66001}, rng);
    Rng stream;
    stream.set_state(layer.rng_state());
    const std::uint64_t key = stream.next_u64();
    Tensor<float> x(Shape{2, 66001}, 3.0f);
    const Tensor<float>& y = layer.forward(x, Mode::Train);
    const auto threshold = static_cast<std::uint64_t>(0.25 * 0x1.0p53);
    Index wrong = 0;
    for (Index i = 0; i < y.size(); ++i) {
      const bool keep = (splitmix64(key, static_cast<std::uint64_t>(i)) >> 11) >= threshold;
      wrong += y[i] != (keep ? 3.0f * static_cast<float>(1 / 0.75) : 0.0f);
    }
    CHECK(wrong == 0);
    Tensor<float> dy(y.shape(), 2.0f);
    const Tensor<float>& dx = layer.backward(dy);
    for (Index i = 0; i < y.size(); i += 997) CHECK(dx[i] == (y[i] == 0 ? 0.0f : 2.0f * static_cast<float>(1 / 0.75)));
  }
  set_num_threads(saved);
}

TEST_CASE("Flatten keeps NHWC (h, w, c) order") {
  Flatten<double> layer;
  Rng rng(0);
  CHECK(layer.build({2, 2, 2}, rng) == Shape{8});
  Tensor<double> x(Shape{1, 2, 2, 2});
  x(0, 1, 0, 1) = 7;
  const auto& y = layer.forward(x, Mode::Inference);
  CHECK(y(0, (1 * 2 + 0) * 2 + 1) == 7.0);
}

TEST_CASE("Dense: y = x W + b with W [in, units]") {
  Dense<double> layer(DenseOptions(3));
  Rng rng(0);
  layer.build({2}, rng);
  CHECK(layer.parameters()[0].value->shape() == Shape{2, 3});
  set_param<double>(layer, 0, {1, 2, 3, 4, 5, 6});
  set_param<double>(layer, 1, {0.5, 0.5, 0.5});
  Tensor<double> x(Shape{1, 2}, {1, 2});
  const auto& y = layer.forward(x, Mode::Inference);
  CHECK(y[0] == 9.5);
  CHECK(y[1] == 12.5);
  CHECK(y[2] == 15.5);
}

TEST_CASE("Softmax and ReLU layers, by hand") {
  Softmax<double> sm;
  Rng rng(0);
  sm.build({3}, rng);
  Tensor<double> x(Shape{1, 3}, {1, 2, 3});
  const auto& p = sm.forward(x, Mode::Inference);
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  CHECK(p[0] == doctest::Approx(std::exp(1.0) / z));
  CHECK(p[2] == doctest::Approx(std::exp(3.0) / z));
  Tensor<double> big(Shape{1, 2}, {1000, 0});  // stable: no overflow
  Softmax<double> sm2;
  sm2.build({2}, rng);
  CHECK(sm2.forward(big, Mode::Inference)[0] == doctest::Approx(1.0));
  ReLU<double> relu;
  relu.build({3}, rng);
  Tensor<double> r(Shape{1, 3}, {-1, 0, 2});
  const auto& ry = relu.forward(r, Mode::Inference);
  CHECK(ry[0] == 0.0);
  CHECK(ry[2] == 2.0);
}

TEST_CASE("layers reject inputs they cannot take, naming themselves and both shapes") {
  Rng rng(0);
  Dense<float> dense(DenseOptions(4));
  dense.set_name("dense");
  CHECK_THROWS_WITH_AS(dense.build({28, 28, 1}, rng),
                       "Dense 'dense': expected input (None, features): add a Flatten layer before Dense, got "
                       "(None, 28, 28, 1)",
                       ShapeError);
  Conv2D<float> c(conv(8, {3, 3}, Padding::Valid));
  c.set_name("conv2d_1");
  CHECK_THROWS_WITH_AS(c.build({784}, rng),
                       "Conv2D 'conv2d_1': expected input (None, height, width, channels), got (None, 784)",
                       ShapeError);
  CHECK_THROWS_AS(c.build({2, 2, 1}, rng), ShapeError);  // smaller than the kernel
  c.build({28, 28, 1}, rng);
  Tensor<float> wrong(Shape{32, 784});
  CHECK_THROWS_WITH_AS(c.forward(wrong, Mode::Train),
                       "Conv2D 'conv2d_1': expected input (N, 28, 28, 1), got (32, 784)", ShapeError);
  Tensor<float> dy(Shape{1, 26, 26, 8});
  CHECK_THROWS_AS(c.backward(dy), ConfigError);  // no training forward yet
  CHECK_THROWS_AS(Conv2D<float>(Conv2DOptions(0, {3, 3})), ConfigError);
}
