// Keras's shape layers: Reshape, Permute, Rescaling, Identity, Cropping2D.
// Hand-computed cases, finite differences in double, a save / load round
// trip of each inside a model, and the configurations and inputs each
// refuses, with its message.
#include <doctest/doctest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <loom/loom.hpp>

#include "gradient_check.hpp"
#include "test_support.hpp"

using namespace loom;
using loom::testing::error_of;
using loom::testing::TempDir;

namespace {

/// 1..n in a tensor of `shape`.
Tensor<double> shape_counting(const Shape& shape) {
  Tensor<double> t(shape);
  for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<double>(i + 1);
  return t;
}

std::vector<double> shape_values(const Tensor<double>& t) { return {t.begin(), t.end()}; }

Tensor<double> shape_random(const Shape& shape, std::uint64_t seed) {
  Tensor<double> x(shape);
  Rng rng(seed);
  loom::testing::random_fill(x, rng);
  return x;
}

/// `layer` after a Conv2D on `input` in a model, saved and loaded: the same
/// type and config, the same predictions bit for bit, and (trained one
/// step) the same weights.
template <class L>
void shape_saved_in_model(L layer, const Shape& input) {
  Sequential<float> m(3);
  m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).padding(Padding::Same)), input);
  m.add(std::move(layer));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  Tensor<float> x(input.with_batch(5)), y(Shape{5});
  Rng rng(2);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (Index i = 0; i < 5; ++i) y[i] = static_cast<float>(i % 3);
  m.compile(make_loss<float>("sparse_categorical_crossentropy"), make_optimizer<float>("adam"));
  m.train_step(x, y);  // the gradient goes through the layer to the Conv2D
  TempDir dir;
  m.save(dir.file("m.loom"));
  Sequential<float> again = Sequential<float>::load(dir.file("m.loom"));
  CHECK(again.layer(1).type() == m.layer(1).type());
  CHECK(again.layer(1).config() == m.layer(1).config());
  CHECK(again.layer(1).output_shape() == m.layer(1).output_shape());
  const Tensor<float> a = m.predict(x), b = again.predict(x);
  CHECK(std::equal(a.begin(), a.end(), b.begin()));
  CHECK(loom::testing::weights_of(again) == loom::testing::weights_of(m));
}

}  // namespace

TEST_CASE("Reshape by hand: row-major order kept, one -1 inferred, the gradient copied back") {
  Rng rng;
  const Tensor<double> x = shape_counting(Shape{2, 2, 3, 2});
  Reshape<double> rows({3, -1});
  CHECK(rows.build(Shape{2, 3, 2}, rng) == Shape{3, 4});
  const Tensor<double>& y = rows.forward(x, Mode::Train);
  CHECK(y.shape() == Shape{2, 3, 4});
  CHECK(shape_values(y) == shape_values(x));
  const Tensor<double> dy = shape_counting(Shape{2, 3, 4});
  const Tensor<double>& dx = rows.backward(dy);
  CHECK(dx.shape() == x.shape());
  CHECK(shape_values(dx) == shape_values(dy));
  Reshape<double> flat({12});
  CHECK(flat.build(Shape{2, 3, 2}, rng) == Shape{12});
  Reshape<double> deeper({2, -1, 1, 2});
  CHECK(deeper.build(Shape{2, 3, 2}, rng) == Shape{2, 3, 1, 2});
  CHECK(rows.config() == Config().set("target_shape", "3,-1"));
}

TEST_CASE("Permute by hand: Keras's 1-based axes, and the gradient permuted back") {
  Rng rng;
  Permute<double> swap({2, 1});
  CHECK(swap.build(Shape{2, 3}, rng) == Shape{3, 2});
  CHECK(shape_values(swap.forward(Tensor<double>(Shape{1, 2, 3}, {1, 2, 3, 4, 5, 6}), Mode::Train)) ==
        std::vector<double>{1, 4, 2, 5, 3, 6});
  CHECK(shape_values(swap.backward(Tensor<double>(Shape{1, 3, 2}, {1, 4, 2, 5, 3, 6}))) ==
        std::vector<double>{1, 2, 3, 4, 5, 6});
  // Channels first: out[c][i][j] = x[i][j][c], x[i][j][c] = 1 + (3i + j) 2 + c.
  Permute<double> channels_first({3, 1, 2});
  CHECK(channels_first.build(Shape{2, 3, 2}, rng) == Shape{2, 2, 3});
  CHECK(shape_values(channels_first.forward(shape_counting(Shape{1, 2, 3, 2}), Mode::Train)) ==
        std::vector<double>{1, 3, 5, 7, 9, 11, 2, 4, 6, 8, 10, 12});
  // dx[i][j][c] = dy[c][i][j] = 1 + 6c + 3i + j.
  CHECK(shape_values(channels_first.backward(shape_counting(Shape{1, 2, 2, 3}))) ==
        std::vector<double>{1, 7, 2, 8, 3, 9, 4, 10, 5, 11, 6, 12});
  Permute<double> same({1, 2, 3});
  same.build(Shape{2, 3, 2}, rng);
  const Tensor<double> x = shape_counting(Shape{3, 2, 3, 2});
  CHECK(shape_values(same.forward(x, Mode::Inference)) == shape_values(x));
}

TEST_CASE("Rescaling by hand: one scale and offset, or one per channel, and the gradient scaled") {
  Rng rng;
  const Tensor<double> x(Shape{1, 2, 2}, {1, 2, 3, 4});
  Rescaling<double> plain(0.5, 1);
  CHECK(plain.build(Shape{2, 2}, rng) == Shape{2, 2});
  CHECK(shape_values(plain.forward(x, Mode::Train)) == std::vector<double>{1.5, 2, 2.5, 3});
  CHECK(shape_values(plain.backward(Tensor<double>(Shape{1, 2, 2}, {1, 2, 3, 4}))) ==
        std::vector<double>{0.5, 1, 1.5, 2});
  Rescaling<double> per_channel({2, -1}, {0, 10});
  per_channel.build(Shape{2, 2}, rng);
  CHECK(shape_values(per_channel.forward(x, Mode::Train)) == std::vector<double>{2, 8, 6, 6});
  CHECK(shape_values(per_channel.backward(Tensor<double>(Shape{1, 2, 2}, {1, 2, 3, 4}))) ==
        std::vector<double>{2, -2, 6, -4});
  Rescaling<double> offsets({2}, {1, -1});
  offsets.build(Shape{2, 2}, rng);
  CHECK(shape_values(offsets.forward(x, Mode::Inference)) == std::vector<double>{3, 3, 7, 7});
  CHECK(plain.count_params() == 0);
  CHECK(per_channel.config() == Config().set("scale", "2,-1").set("offset", "0,10"));
  CHECK(Rescaling<float>(1.0 / 255).config() == Config().set("scale", 1.0 / 255).set("offset", 0.0));
}

TEST_CASE("Identity hands back its input and the gradient themselves") {
  Rng rng;
  Identity<double> id;
  CHECK(id.build(Shape{3, 2}, rng) == Shape{3, 2});
  const Tensor<double> x = shape_counting(Shape{2, 3, 2});
  CHECK(&id.forward(x, Mode::Train) == &x);
  const Tensor<double> dy = shape_counting(Shape{2, 3, 2});
  CHECK(&id.backward(dy) == &dy);
  CHECK(&id.forward(x, Mode::Inference) == &x);
  CHECK(id.fusion_traits().identity_in_inference);
  CHECK(id.config().empty());
}

TEST_CASE("Identity changes nothing: models with Identity layers train and predict bit for bit as those without") {
  Tensor<float> x, y;
  loom::testing::random_data(24, x, y);
  // Not shuffled: fit reseeds each layer from the stream that shuffles, so one layer more shuffles otherwise.
  const auto fit = FitOptions<float>().epochs(2).batch_size(8).verbose(0).shuffle(false);
  const auto chain = [](bool identities) {
    Sequential<float> m(4);
    if (identities) m.add(Identity<float>(), Shape{8, 8, 1});
    m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).activation(Activation::ReLU)),
          identities ? std::nullopt : std::optional<Shape>(Shape{8, 8, 1}));
    if (identities) m.add(Identity<float>());  // the Conv2D leaves its ReLU's derivative to the BatchNormalization
    m.add(BatchNormalization<float>());
    m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2})));
    m.add(Flatten<float>());
    if (identities) m.add(Identity<float>());
    m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
    m.compile(make_loss<float>("sparse_categorical_crossentropy"), make_optimizer<float>("sgd"));
    return m;
  };
  Sequential<float> plain = chain(false), with = chain(true);
  plain.fit(x, y, fit);
  with.fit(x, y, fit);
  CHECK(loom::testing::weights_of(with) == loom::testing::weights_of(plain));
  const Tensor<float> a = plain.predict(x, 5), b = with.predict(x, 5);
  CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
  // In a graph: after a layer whose output feeds two calls, and before the last layer.
  const auto graph = [](bool identities) {
    Symbol<float> in = Input<float>(Shape{8, 8, 1});
    Symbol<float> f = call(Flatten<float>(), in);
    if (identities) f = call(Identity<float>(), f);
    Symbol<float> out =
        call(Add<float>(), {call(Dense<float>(DenseOptions(3)), f), call(Dense<float>(DenseOptions(3)), f)});
    if (identities) out = call(Identity<float>(), out);
    Functional<float> m(in, call(Softmax<float>(), out), 6);
    m.compile(make_loss<float>("sparse_categorical_crossentropy"), make_optimizer<float>("sgd"));
    return m;
  };
  Functional<float> g_plain = graph(false), g_with = graph(true);
  g_plain.fit(x, y, fit);
  g_with.fit(x, y, fit);
  CHECK(loom::testing::weights_of(g_with) == loom::testing::weights_of(g_plain));
}

TEST_CASE("Cropping2D by hand: ((top, bottom), (left, right)), and zeros where the crops were in the gradient") {
  Rng rng;
  const Tensor<double> x = shape_counting(Shape{1, 4, 4, 1});  // rows 1-4, 5-8, 9-12, 13-16
  Cropping2D<double> crop(1, 0, 0, 2);
  CHECK(crop.build(Shape{4, 4, 1}, rng) == Shape{3, 2, 1});
  CHECK(shape_values(crop.forward(x, Mode::Train)) == std::vector<double>{5, 6, 9, 10, 13, 14});
  CHECK(shape_values(crop.backward(Tensor<double>(Shape{1, 3, 2, 1}, {1, 2, 3, 4, 5, 6}))) ==
        std::vector<double>{0, 0, 0, 0, 1, 2, 0, 0, 3, 4, 0, 0, 5, 6, 0, 0});
  Cropping2D<double> all(1);
  CHECK(all.build(Shape{4, 4, 1}, rng) == Shape{2, 2, 1});
  CHECK(shape_values(all.forward(x, Mode::Inference)) == std::vector<double>{6, 7, 10, 11});
  Cropping2D<double> pair(1, 0);  // (symmetric height, symmetric width)
  CHECK(pair.build(Shape{4, 4, 1}, rng) == Shape{2, 4, 1});
  CHECK(crop.config() == Config().set("cropping", "1,0,0,2"));
  // Channels move with their pixel.
  Cropping2D<double> corner(0, 1, 1, 0);
  corner.build(Shape{2, 2, 2}, rng);
  CHECK(shape_values(corner.forward(shape_counting(Shape{1, 2, 2, 2}), Mode::Train)) == std::vector<double>{3, 4});
}

TEST_CASE("gradient check: Reshape, Permute, Rescaling, Identity, Cropping2D") {
  Rng rng;
  SUBCASE("Reshape (7, 6, 2) to (-1, 4)") {
    Reshape<double> l({-1, 4});
    l.build(Shape{7, 6, 2}, rng);
    loom::testing::check_layer_gradients(l, shape_random(Shape{2, 7, 6, 2}, 1));
  }
  SUBCASE("Permute (3, 1, 2) on (4, 3, 2)") {
    Permute<double> l({3, 1, 2});
    l.build(Shape{4, 3, 2}, rng);
    loom::testing::check_layer_gradients(l, shape_random(Shape{2, 4, 3, 2}, 2));
  }
  SUBCASE("Permute (2, 1) on (5, 3)") {
    Permute<double> l({2, 1});
    l.build(Shape{5, 3}, rng);
    loom::testing::check_layer_gradients(l, shape_random(Shape{3, 5, 3}, 3));
  }
  SUBCASE("Rescaling per channel") {
    Rescaling<double> l({0.5, -2, 3}, {1, 0, -0.25});
    l.build(Shape{4, 3, 3}, rng);
    loom::testing::check_layer_gradients(l, shape_random(Shape{2, 4, 3, 3}, 4));
  }
  SUBCASE("Rescaling by one number") {
    Rescaling<double> l(1.0 / 255, -0.5);
    l.build(Shape{6}, rng);
    loom::testing::check_layer_gradients(l, shape_random(Shape{3, 6}, 5));
  }
  SUBCASE("Identity") {
    Identity<double> l;
    l.build(Shape{4, 3}, rng);
    loom::testing::check_layer_gradients(l, shape_random(Shape{2, 4, 3}, 6));
  }
  SUBCASE("Cropping2D ((1, 2), (0, 1)) on 6x5x3") {
    Cropping2D<double> l(1, 2, 0, 1);
    l.build(Shape{6, 5, 3}, rng);
    loom::testing::check_layer_gradients(l, shape_random(Shape{2, 6, 5, 3}, 7));
  }
}

TEST_CASE("the shape layers save and load inside a model, and train through") {
  shape_saved_in_model(Reshape<float>({-1, 8}), Shape{6, 6, 2});  // (6, 6, 4) -> (18, 8)
  shape_saved_in_model(Permute<float>({2, 3, 1}), Shape{5, 6, 2});
  shape_saved_in_model(Rescaling<float>({0.5, 2, -1, 1}, {0, 0.1, 0.2, 0.3}), Shape{5, 5, 1});
  shape_saved_in_model(Rescaling<float>(1.0 / 255), Shape{5, 5, 1});
  shape_saved_in_model(Identity<float>(), Shape{5, 5, 1});
  shape_saved_in_model(Cropping2D<float>(2, 0, 1, 1), Shape{7, 6, 1});
}

TEST_CASE("the shape layers refuse bad configurations and inputs, saying what is wrong") {
  Rng rng;
  const auto built = [&](auto layer, const Shape& input) {
    return error_of([&] { layer.build(input, rng); });
  };
  // Reshape: sizes positive, one -1 at most, and as many values as the input's.
  CHECK(error_of([] { Reshape<float>({3, -1, -1}); }) ==
        "Reshape: target_shape must be 1 to 5 sizes, each positive or one of them -1; got (3, -1, -1)");
  CHECK(error_of([] { Reshape<float>({0, 2}); }).find("got (0, 2)") != std::string::npos);
  CHECK(error_of([] { Reshape<float>({}); }).find("got ()") != std::string::npos);
  CHECK(error_of([] { Reshape<float>({1, 1, 1, 1, 1, 1}); }).find("1 to 5 sizes") != std::string::npos);
  CHECK(built(Reshape<float>({5}), Shape{2, 3}) ==
        "Reshape 'reshape': expected input with a sample size of 5 (target_shape (5,)), got (None, 2, 3)");
  CHECK(built(Reshape<float>({4, -1}), Shape{2, 3}) ==
        "Reshape 'reshape': expected input whose sample size is a multiple of 4 (target_shape (4, -1)), got "
        "(None, 2, 3)");
  CHECK(built(Reshape<float>({1 << 30, 1 << 30, 1 << 30}), Shape{2, 3}).find("sample size of") != std::string::npos);
  // Permute: a permutation of 1..rank.
  CHECK(error_of([] { Permute<float>({1, 1}); }) ==
        "Permute: dims must be a permutation of 1..n, n from 1 to 5 (the axes after the batch, counted from 1); "
        "got (1, 1)");
  CHECK(error_of([] { Permute<float>({0, 1}); }).find("got (0, 1)") != std::string::npos);
  CHECK(error_of([] { Permute<float>({2, 3}); }).find("permutation") != std::string::npos);
  CHECK(built(Permute<float>({2, 1}), Shape{2, 3, 4}) ==
        "Permute 'permute': expected input of rank 2 (dims (2, 1)), got (None, 2, 3, 4)");
  // Rescaling: lists of one length, that of the input's last axis.
  CHECK(error_of([] { Rescaling<float>({1, 2}, {1, 2, 3}); }) ==
        "Rescaling: scale has 2 values and offset 3: each is one number, or one per channel");
  CHECK(error_of([] { Rescaling<float>(std::vector<double>{}, {0}); }).find("at least one value") != std::string::npos);
  CHECK(built(Rescaling<float>({1, 2, 3}, {0}), Shape{4, 4, 2}) ==
        "Rescaling 'rescaling': expected input with 3 channels on its last axis (one scale and offset each), got "
        "(None, 4, 4, 2)");
  CHECK(built(Rescaling<float>({1}, {0, 1}), Shape{4, 3}).find("with 2 channels") != std::string::npos);
  CHECK(built(Rescaling<float>({1, 2, 3}, {0}), Shape{4, 3}) == "(no error)");
  // Cropping2D: images, and crops that leave a row and a column.
  CHECK(error_of([] { Cropping2D<float>(0, -1, 0, 0); }) == "Cropping2D: cropping must be >= 0, got -1");
  CHECK(built(Cropping2D<float>(2, 2, 0, 0), Shape{4, 5, 1}) ==
        "Cropping2D 'cropping2d': expected input images of more than 4 rows and more than 0 columns, for cropping "
        "((2, 2), (0, 0)), got (None, 4, 5, 1)");
  CHECK(built(Cropping2D<float>(0, 0, 3, 2), Shape{4, 5, 1}).find("more than 5 columns") != std::string::npos);
  CHECK(built(Cropping2D<float>(1), Shape{4, 5}) ==
        "Cropping2D 'cropping2d': expected input images (None, H, W, C), got (None, 4, 5)");
  // Model files with bad values.
  const Registry<Layer<float>>& registry = Registry<Layer<float>>::global();
  CHECK(error_of([&] { registry.create("Cropping2D", Config().set("cropping", "1,2")); }) ==
        "bad value '1,2' for config 'cropping'");
  CHECK(error_of([&] { registry.create("Reshape", Config().set("target_shape", "3,x")); }) ==
        "bad value 'x' for config 'target_shape'");
  CHECK(error_of([&] { registry.create("Permute", Config().set("dims", "2,1,")); }) ==
        "bad value '2,1,' for config 'dims'");
  CHECK(error_of([&] { registry.create("Rescaling", Config().set("offset", 1.0)); }) == "missing config 'scale'");
  CHECK(registry.create("Reshape", Config().set("target_shape", "-1,2"))->config() ==
        Config().set("target_shape", "-1,2"));
}
