// The layers of today's CNNs beyond the notebook's (issue 36's list):
// hand-computed cases, finite differences in double, and a save / load
// round trip of each inside a model.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <loom/loom.hpp>

#include "gradient_check.hpp"
#include "test_support.hpp"

using namespace loom;
using loom::testing::TempDir;

namespace {

/// 1..n in a tensor of `shape`.
Tensor<double> counting(const Shape& shape) {
  Tensor<double> t(shape);
  for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<double>(i + 1);
  return t;
}

std::vector<double> pool_values(const Tensor<double>& t) { return {t.begin(), t.end()}; }

Tensor<double> pool_input(const Shape& shape, std::uint64_t seed) {
  Tensor<double> x(shape);
  Rng rng(seed);
  loom::testing::random_fill(x, rng);
  return x;
}

/// `layer` after a Conv2D in a model, saved and loaded: the same predictions, bit for bit.
template <class L>
void check_saved_in_model(L layer, const Shape& input) {
  Sequential<float> m(3);
  m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).padding(Padding::Same)), input);
  m.add(std::move(layer));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(3)));
  Tensor<float> x(input.with_batch(5));
  Rng rng(2);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  TempDir dir;
  m.save(dir.file("m.loom"));
  Sequential<float> again = Sequential<float>::load(dir.file("m.loom"));
  CHECK(again.layer(1).type() == m.layer(1).type());
  CHECK(again.layer(1).config() == m.layer(1).config());
  const Tensor<float> a = m.predict(x), b = again.predict(x);
  CHECK(std::equal(a.begin(), a.end(), b.begin()));
}

}  // namespace

TEST_CASE("AveragePooling2D by hand: valid, and same where the mean counts only the cells inside") {
  Rng rng;
  const Tensor<double> x = counting(Shape{1, 3, 3, 1});  // 1 2 3 / 4 5 6 / 7 8 9
  AveragePool2D<double> valid(AveragePool2DOptions({2, 2}).strides(Size2{1, 1}));
  valid.build(Shape{3, 3, 1}, rng);
  CHECK(pool_values(valid.forward(x, Mode::Train)) == std::vector<double>{3, 4, 6, 7});
  AveragePool2D<double> same(AveragePool2DOptions({2, 2}).padding(Padding::Same));  // strides 2: 2x2 outputs
  same.build(Shape{3, 3, 1}, rng);
  CHECK(pool_values(same.forward(x, Mode::Train)) == std::vector<double>{3, 4.5, 7.5, 9});
  // Each output's gradient spreads evenly over the cells it averaged.
  const Tensor<double>& dx = same.backward(Tensor<double>(Shape{1, 2, 2, 1}, {4, 2, 6, 1}));
  CHECK(pool_values(dx) == std::vector<double>{1, 1, 1, 1, 1, 1, 3, 3, 1});
  CHECK(same.output_shape() == Shape{2, 2, 1});
}

TEST_CASE("GlobalAveragePooling2D and GlobalMaxPooling2D by hand, keepdims or not") {
  Rng rng;
  Tensor<double> x(Shape{1, 2, 2, 2}, {1, 8, 4, 6, 3, 7, 2, 8});  // channel 0: 1 4 3 2, channel 1: 8 6 7 8
  GlobalAveragePooling2D<double> avg;
  avg.build(Shape{2, 2, 2}, rng);
  CHECK(avg.output_shape() == Shape{2});
  CHECK(pool_values(avg.forward(x, Mode::Train)) == std::vector<double>{2.5, 7.25});
  CHECK(pool_values(avg.backward(Tensor<double>(Shape{1, 2}, {4, 8}))) == std::vector<double>{1, 2, 1, 2, 1, 2, 1, 2});
  GlobalMaxPooling2D<double> max(true);
  max.build(Shape{2, 2, 2}, rng);
  CHECK(max.output_shape() == Shape{1, 1, 2});
  CHECK(pool_values(max.forward(x, Mode::Train)) == std::vector<double>{4, 8});
  // Channel 1's 8 is at cells 0 and 3: the first takes the gradient.
  CHECK(pool_values(max.backward(Tensor<double>(Shape{1, 1, 1, 2}, {5, 9}))) ==
        std::vector<double>{0, 9, 5, 0, 0, 0, 0, 0});
}

TEST_CASE("gradient check: AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D") {
  Rng rng;
  SUBCASE("AveragePooling2D 3x3 / 2, same, on 7x6") {
    AveragePool2D<double> l(AveragePool2DOptions({3, 3}).strides(Size2{2, 2}).padding(Padding::Same));
    l.build(Shape{7, 6, 3}, rng);
    loom::testing::check_layer_gradients(l, pool_input(Shape{2, 7, 6, 3}, 1));
  }
  SUBCASE("AveragePooling2D 2x2, valid, overlapping (strides 1)") {
    AveragePool2D<double> l(AveragePool2DOptions({2, 2}).strides(Size2{1, 1}));
    l.build(Shape{5, 4, 2}, rng);
    loom::testing::check_layer_gradients(l, pool_input(Shape{2, 5, 4, 2}, 2));
  }
  SUBCASE("GlobalAveragePooling2D") {
    GlobalAveragePooling2D<double> l;
    l.build(Shape{5, 4, 3}, rng);
    loom::testing::check_layer_gradients(l, pool_input(Shape{3, 5, 4, 3}, 3));
  }
  SUBCASE("GlobalMaxPooling2D, keepdims") {
    GlobalMaxPooling2D<double> l(true);
    l.build(Shape{5, 4, 3}, rng);
    loom::testing::check_layer_gradients(l, pool_input(Shape{3, 5, 4, 3}, 4));
  }
}

TEST_CASE("the pooling layers save and load inside a model") {
  check_saved_in_model(AveragePool2D<float>(AveragePool2DOptions({3, 3}).strides(Size2{2, 2}).padding(Padding::Same)),
                   Shape{9, 9, 2});
  check_saved_in_model(GlobalAveragePooling2D<float>(true), Shape{6, 6, 2});
  check_saved_in_model(GlobalMaxPooling2D<float>(true), Shape{6, 6, 2});
  CHECK(Registry<Layer<float>>::global().canonical("GlobalAvgPool2D") == "GlobalAveragePooling2D");
  CHECK(Registry<Layer<float>>::global().canonical("AvgPool2D") == "AveragePooling2D");
}
