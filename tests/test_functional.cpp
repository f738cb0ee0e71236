// Graphs (model/functional.hpp) and the merge layers (layers/merge.hpp):
// hand-computed merges; finite differences in double through graphs with
// fan-out, merges and a shared layer; a chain built as a graph trains bit
// for bit as the Sequential; save, load and exact resume; the Predictor
// and predict's threads; summary; the errors at the call.
#include <doctest/doctest.h>

#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <loom/loom.hpp>

#include "gradient_check.hpp"
#include "test_support.hpp"

using namespace loom;
using loom::testing::error_of;
using loom::testing::TempDir;
using loom::testing::weights_of;

namespace {

Tensor<double> tensor_of(const Shape& shape, std::vector<double> values) {
  Tensor<double> t(shape);
  REQUIRE(static_cast<Index>(values.size()) == t.size());
  std::copy(values.begin(), values.end(), t.begin());
  return t;
}

std::vector<double> values_of(const Tensor<double>& t) { return {t.begin(), t.end()}; }

/// A merge layer built for `inputs` (batch 1, per-sample shape `shape`), run forward in training and backward on dy.
template <class M>
std::vector<std::vector<double>> merge_case(M& merge, const std::vector<Tensor<double>>& inputs,
                                            const Tensor<double>& dy, std::vector<double>& y) {
  std::vector<Shape> shapes;
  std::vector<const Tensor<double>*> xs;
  for (const auto& x : inputs) {
    shapes.push_back(x.shape().without_batch());
    xs.push_back(&x);
  }
  Rng rng;
  merge.build(shapes, rng);
  y = values_of(merge.forward(xs, Mode::Train));
  merge.backward(dy);
  std::vector<std::vector<double>> grads;
  for (std::size_t i = 0; i < inputs.size(); ++i) grads.push_back(values_of(merge.input_grad(i)));
  return grads;
}

template <class T>
Conv2D<T> conv(Index filters, Activation a = Activation::ReLU) {
  return Conv2D<T>(Conv2DOptions(filters, {3, 3}).padding(Padding::Same).activation(a));
}
template <class T>
MaxPool2D<T> pool() {
  return MaxPool2D<T>(MaxPool2DOptions({2, 2}).strides(Size2{2, 2}).padding(Padding::Same));
}

/// The notebook's layers (smaller), as a Sequential and as a graph.
Sequential<float> small_chain(std::uint64_t seed) {
  Sequential<float> m(seed);
  m.add(conv<float>(8), Shape{28, 28, 1});
  m.add(BatchNormalization<float>());
  m.add(pool<float>());
  m.add(conv<float>(6));
  m.add(Dropout<float>(0.2));
  m.add(BatchNormalization<float>());
  m.add(pool<float>());
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(32).activation(Activation::ReLU)));
  m.add(Dropout<float>(0.3));
  m.add(Dense<float>(DenseOptions(10).activation(Activation::Softmax)));
  return m;
}
Functional<float> small_chain_graph(std::uint64_t seed) {
  Symbol<float> in = Input<float>({28, 28, 1});
  Symbol<float> x = call(conv<float>(8), in);
  x = call(BatchNormalization<float>(), x);
  x = call(pool<float>(), x);
  x = call(conv<float>(6), x);
  x = call(Dropout<float>(0.2), x);
  x = call(BatchNormalization<float>(), x);
  x = call(pool<float>(), x);
  x = call(Flatten<float>(), x);
  x = call(Dense<float>(DenseOptions(32).activation(Activation::ReLU)), x);
  x = call(Dropout<float>(0.3), x);
  x = call(Dense<float>(DenseOptions(10).activation(Activation::Softmax)), x);
  return Functional<float>(in, x, seed);
}

/// A small residual network: two blocks joined by Add (one with a 1x1
/// projection), a Concatenate of two branches, a shared Dense called twice.
template <class T>
Functional<T> residual_model(std::uint64_t seed, Index size = 8) {
  Symbol<T> in = Input<T>({size, size, 2});
  Symbol<T> x = call(conv<T>(4), in);
  Symbol<T> y = call(conv<T>(4, Activation::None), x);
  y = call(BatchNormalization<T>(), y);
  x = call(ReLU<T>(), call(Add<T>(), {x, y}));
  Symbol<T> a = call(conv<T>(3), x), b = call(Conv2D<T>(Conv2DOptions(5, {1, 1})), x);
  x = call(Concatenate<T>(), {a, b});
  x = call(pool<T>(), x);
  x = call(Dropout<T>(0.25), x);
  x = call(Flatten<T>(), x);
  auto hidden = shared(Dense<T>(DenseOptions(6).activation(Activation::ReLU)));
  Symbol<T> h1 = call(hidden, x);
  Symbol<T> h2 = call(hidden, call(Dense<T>(DenseOptions(x.shape()[0])), x));
  x = call(Dropout<T>(0.1), call(Add<T>(), {h1, h2}));
  return Functional<T>(in, call(Dense<T>(DenseOptions(3).activation(Activation::Softmax)), x), seed, "resnet");
}

}  // namespace

TEST_CASE("merge layers, computed by hand: values and gradients") {
  const Shape s{1, 2, 2};
  const Tensor<double> a = tensor_of(s, {1, -2, 3, 0.5}), b = tensor_of(s, {4, -2, -1, 2});
  const Tensor<double> c = tensor_of(s, {0, 1, 3, -3});
  const Tensor<double> dy = tensor_of(s, {1, 2, 3, 4});
  std::vector<double> y;
  SUBCASE("Add") {
    Add<double> m;
    const auto g = merge_case(m, {a, b, c}, dy, y);
    CHECK(y == std::vector<double>{5, -3, 5, -0.5});
    for (const auto& gi : g) CHECK(gi == std::vector<double>{1, 2, 3, 4});
  }
  SUBCASE("Subtract") {
    Subtract<double> m;
    const auto g = merge_case(m, {a, b}, dy, y);
    CHECK(y == std::vector<double>{-3, 0, 4, -1.5});
    CHECK(g[0] == std::vector<double>{1, 2, 3, 4});
    CHECK(g[1] == std::vector<double>{-1, -2, -3, -4});
  }
  SUBCASE("Multiply") {
    Multiply<double> m;
    const auto g = merge_case(m, {a, b, c}, dy, y);
    CHECK(y == std::vector<double>{0, 4, -9, -3});
    CHECK(g[0] == std::vector<double>{0, -4, -9, -24});  // dy * b * c
    CHECK(g[1] == std::vector<double>{0, -4, 27, -6});   // dy * a * c
    CHECK(g[2] == std::vector<double>{4, 8, -9, 4});     // dy * a * b
  }
  SUBCASE("Average") {
    Average<double> m;
    const auto g = merge_case(m, {a, b}, dy, y);
    CHECK(y == std::vector<double>{2.5, -2, 1, 1.25});
    for (const auto& gi : g) CHECK(gi == std::vector<double>{0.5, 1, 1.5, 2});
  }
  SUBCASE("Maximum: a tie sends the gradient to the first input") {
    Maximum<double> m;
    const auto g = merge_case(m, {a, b, c}, dy, y);
    CHECK(y == std::vector<double>{4, 1, 3, 2});
    CHECK(g[0] == std::vector<double>{0, 0, 3, 0});  // a ties c at 3: a takes it
    CHECK(g[1] == std::vector<double>{1, 0, 0, 4});
    CHECK(g[2] == std::vector<double>{0, 2, 0, 0});
  }
  SUBCASE("Concatenate on the last axis and on the first") {
    Concatenate<double> last;  // (1, 2, 2) and (1, 2, 2) -> (1, 2, 4)
    const Tensor<double> dy4 = tensor_of(Shape{1, 2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
    auto g = merge_case(last, {a, b}, dy4, y);
    CHECK(last.output_shape() == Shape{2, 4});
    CHECK(y == std::vector<double>{1, -2, 4, -2, 3, 0.5, -1, 2});
    CHECK(g[0] == std::vector<double>{1, 2, 5, 6});
    CHECK(g[1] == std::vector<double>{3, 4, 7, 8});
    Concatenate<double> first(1);  // -> (1, 4, 2)
    g = merge_case(first, {a, b}, tensor_of(Shape{1, 4, 2}, {1, 2, 3, 4, 5, 6, 7, 8}), y);
    CHECK(first.output_shape() == Shape{4, 2});
    CHECK(y == std::vector<double>{1, -2, 3, 0.5, 4, -2, -1, 2});
    CHECK(g[0] == std::vector<double>{1, 2, 3, 4});
    CHECK(g[1] == std::vector<double>{5, 6, 7, 8});
  }
}

TEST_CASE("merge layers refuse inputs they cannot merge, naming the shapes") {
  Rng rng;
  Add<float> add;
  CHECK(error_of([&] { add.build({Shape{4, 4, 8}, Shape{4, 4, 6}}, rng); }).find("(None, 4, 4, 8) and (None, 4, 4, 6)") !=
        std::string::npos);
  Subtract<float> sub;
  CHECK(error_of([&] { sub.build({Shape{3}, Shape{3}, Shape{3}}, rng); }).find("exactly 2") != std::string::npos);
  Concatenate<float> cat;
  CHECK(error_of([&] { cat.build({Shape{4, 4, 8}, Shape{5, 4, 6}}, rng); }).find("must agree but on axis -1") !=
        std::string::npos);
  CHECK(error_of([] { Concatenate<float>(0); }).find("batch") != std::string::npos);
  Symbol<float> in = Input<float>({4, 4, 1});
  CHECK(error_of([&] { call(Dense<float>(DenseOptions(3)), std::vector<Symbol<float>>{in, in}); }).find("takes one input") !=
        std::string::npos);
  CHECK(error_of([&] { call(Add<float>(), {in, call(Flatten<float>(), in)}); }).find("one shape") != std::string::npos);
  auto dense = shared(Dense<float>(DenseOptions(3)));
  call(dense, call(Flatten<float>(), in));
  CHECK(error_of([&] { call(dense, in); }).find("was built for inputs (None, 16)") != std::string::npos);
  Symbol<float> other = Input<float>({4, 4, 1}, "other");
  CHECK(error_of([&] { Functional<float>(in, call(Add<float>(), {in, other})); }).find("Input ('other')") !=
        std::string::npos);
  CHECK(error_of([&] { Functional<float>(in, in); }).find("the output is the input") != std::string::npos);
}

TEST_CASE("gradients through a graph (fan-out, Add, Concatenate, a shared layer) match finite differences") {
  Functional<double> model = residual_model<double>(7);
  Graph<double>& g = model.graph();
  Tensor<double> x(Shape{3, 8, 8, 2});
  Rng rng(3);
  loom::testing::random_fill(x, rng);
  loom::testing::check_layer_gradients(g, x, 5, 60);
}

TEST_CASE("each merge's gradients through a graph match finite differences") {
  const auto check = [](auto make_merge) {
    Symbol<double> in = Input<double>({5});
    Symbol<double> a = call(Dense<double>(DenseOptions(4).activation(Activation::ReLU)), in);
    Symbol<double> b = call(Dense<double>(DenseOptions(4)), in);
    Symbol<double> m = call(make_merge(), {a, b, call(Dense<double>(DenseOptions(4)), a)});
    Functional<double> model(in, call(Dense<double>(DenseOptions(2)), m), 11);
    Tensor<double> x(Shape{4, 5});
    Rng rng(2);
    loom::testing::random_fill(x, rng);
    loom::testing::check_layer_gradients(model.graph(), x, 9);
  };
  SUBCASE("Add") { check([] { return Add<double>(); }); }
  SUBCASE("Multiply") { check([] { return Multiply<double>(); }); }
  SUBCASE("Average") { check([] { return Average<double>(); }); }
  SUBCASE("Maximum") { check([] { return Maximum<double>(); }); }
  SUBCASE("Concatenate") { check([] { return Concatenate<double>(); }); }
  SUBCASE("Subtract") {
    Symbol<double> in = Input<double>({5});
    Symbol<double> a = call(Dense<double>(DenseOptions(4)), in);
    Functional<double> model(in, call(Subtract<double>(), {a, call(Dense<double>(DenseOptions(4)), a)}), 11);
    Tensor<double> x(Shape{4, 5});
    Rng rng(2);
    loom::testing::random_fill(x, rng);
    loom::testing::check_layer_gradients(model.graph(), x, 9);
  }
}

TEST_CASE("a shared layer's weight gradient is the sum over its calls (finite differences)") {
  // y = D(D(x)): one Dense called twice, its kernel's gradient from both calls.
  Symbol<double> in = Input<double>({3});
  auto d = shared(Dense<double>(DenseOptions(3).activation(Activation::ReLU)));
  Functional<double> model(in, call(d, call(d, in)), 5);
  CHECK(model.graph().layers().size() == 1);
  CHECK(model.count_params() == 12);
  Tensor<double> x(Shape{4, 3});
  Rng rng(8);
  loom::testing::random_fill(x, rng, 0.1, 1);
  loom::testing::check_layer_gradients(model.graph(), x, 3);
}

TEST_CASE("a graph that is a chain trains bit for bit as the Sequential of its layers") {
  Tensor<float> x, y;
  loom::testing::random_images(160, 21, x, y);
  Sequential<float> seq = small_chain(5);
  Functional<float> fun = small_chain_graph(5);
  CHECK(weights_of(seq) == weights_of(fun));
  for (Sequential<float>* m : {&seq, static_cast<Sequential<float>*>(&fun)}) {
    m->compile(SparseCategoricalCrossentropy<float>(), Adam<float>(), {"accuracy"});
  }
  const auto opts = FitOptions<float>().epochs(2).batch_size(32).verbose(0).seed(9);
  const History hs = seq.fit(x, y, opts), hf = fun.fit(x, y, opts);
  CHECK(hs.history == hf.history);
  CHECK(weights_of(seq) == weights_of(fun));
  const Tensor<float> ps = seq.predict(x), pf = fun.predict(x);
  CHECK(std::equal(ps.begin(), ps.end(), pf.begin()));
}

TEST_CASE("a functional model trains, saves, loads and resumes exactly") {
  Tensor<float> x(Shape{96, 8, 8, 2}), y(Shape{96});
  Rng rng(4);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (Index i = 0; i < 96; ++i) y[i] = static_cast<float>(i % 3);
  TempDir dir;
  const std::string path = dir.file("resnet.loom");

  const auto make = [] {
    Functional<float> m = residual_model<float>(3);
    m.compile(SparseCategoricalCrossentropy<float>(), Adam<float>(), {"accuracy"});
    return m;
  };
  Functional<float> straight = make();
  straight.fit(x, y, FitOptions<float>().epochs(3).batch_size(16).verbose(0).seed(1));

  Functional<float> first = make();
  first.fit(x, y, FitOptions<float>().epochs(1).batch_size(16).verbose(0).seed(1));
  first.save(path);
  Functional<float> resumed = Functional<float>::load(path);
  CHECK(resumed.graph().nodes().size() == first.graph().nodes().size());
  const Tensor<float> p1 = first.predict(x), p2 = resumed.predict(x);
  CHECK(std::equal(p1.begin(), p1.end(), p2.begin()));
  resumed.fit(x, y, FitOptions<float>().epochs(3).batch_size(16).verbose(0).resume(true));
  CHECK(weights_of(resumed) == weights_of(straight));
  CHECK(resumed.history().history == straight.history().history);
}

TEST_CASE("a functional model predicts the same on threads' copies and through a Predictor") {
  Functional<float> m = residual_model<float>(6, 12);
  Tensor<float> x(Shape{200, 12, 12, 2});
  Rng rng(1);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  set_num_threads(1);
  const Tensor<float> one = m.predict(x);
  set_num_threads(2);
  const Tensor<float> two = m.predict(x);
  CHECK(std::equal(one.begin(), one.end(), two.begin()));
  const Predictor<float> predictor(m);
  const Tensor<float> served = predictor.predict(x);
  CHECK(std::equal(one.begin(), one.end(), served.begin()));
  set_num_threads(default_num_threads());
}

TEST_CASE("a functional model's summary shows what each call is connected to") {
  Functional<float> m = residual_model<float>(1);
  std::ostringstream out;
  m.summary(out);
  const std::string s = out.str();
  INFO(s);
  if (std::getenv("LOOM_SHOW_SUMMARY")) std::cout << s;
  CHECK(s.find("Connected to") != std::string::npos);
  CHECK(s.find("input_layer (InputLayer)") != std::string::npos);
  CHECK(s.find("add (Add)") != std::string::npos);
  CHECK(s.find("['conv2d[0][0]',") != std::string::npos);
  CHECK(s.find("'batch_normalization[0][0]']") != std::string::npos);
  CHECK(s.find("['dense[1][0]']") == std::string::npos);  // dense is called as dense[0] and dense[1]...
  CHECK(s.find("'dense[1][0]'") != std::string::npos);    // ...and the second call is joined by add_1
  std::ostringstream params;
  params << "Total params: " << detail::thousands(m.count_params());
  CHECK(s.find(params.str()) != std::string::npos);
}
