// The model layer: the registries (a layer defined here round-trips through
// save and load; an unregistered one is refused at save), the one factory
// for losses and optimizers, files written by loom before the redesign
// (format 1, tests/fixtures/), and callbacks whose state survives a resume.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>

#include <loom/loom.hpp>

#include "test_support.hpp"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::error_of;
using loom::testing::random_data;
using loom::testing::TempDir;
using loom::testing::weights_of;

namespace user {

/// A layer loom does not have, defined as a user would: y = factor * x, with
/// one trainable factor per model, starting at `initial`.
template <class T>
class Scale : public Layer<T> {
 public:
  static constexpr const char* class_name = "Scale";
  explicit Scale(double initial = 1) : initial_(initial) {}
  static std::unique_ptr<Layer<T>> from_config(const Config& c) { return std::make_unique<Scale>(c.real("initial")); }

  std::string type() const override { return class_name; }
  std::string base_name() const override { return "scale"; }
  Config config() const override { return Config().set("initial", initial_); }
  std::vector<Parameter<T>> parameters() override { return {{this->name() + "/factor", &factor_, &dfactor_}}; }

 protected:
  Shape build_impl(const Shape& in, Rng&) override {
    factor_ = this->new_parameter(Shape{1});
    factor_[0] = static_cast<T>(initial_);
    dfactor_ = Tensor<T>(Shape{1});
    return in;
  }
  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    x_ = x;
    y_ = x;
    y_.flat() *= factor_[0];
    return y_;
  }
  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    dfactor_[0] = dy.flat().dot(x_.flat());
    dx_ = dy;
    dx_.flat() *= factor_[0];
    return dx_;
  }

 private:
  double initial_;
  Tensor<T> factor_, dfactor_, x_, y_, dx_;
};

/// The same layer under another name, never registered.
template <class T>
class Unregistered : public Scale<T> {
 public:
  std::string type() const override { return "Unregistered"; }
};

/// Registered, but its config cannot make it again (a user's bug).
template <class T>
class Unmakeable : public Scale<T> {
 public:
  static constexpr const char* class_name = "Unmakeable";
  static std::unique_ptr<Layer<T>> from_config(const Config& /*c*/) {
    throw std::invalid_argument("Unmakeable: no config makes this layer");
  }
  std::string type() const override { return class_name; }
};

}  // namespace user

LOOM_REGISTER(user::Scale)
LOOM_REGISTER(user::Unmakeable)

namespace {

Sequential<float> resumable_model(std::uint64_t seed) {
  Sequential<float> m(seed);
  m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)), Shape{8, 8, 1});
  m.add(BatchNormalization<float>());
  m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2})));
  m.add(Dropout<float>(0.25));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(16).activation(Activation::ReLU)));
  m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  m.compile(SparseCategoricalCrossentropy<float>(), Adam<float>(AdamOptions().learning_rate(0.01)), {"accuracy"});
  return m;
}

/// Runs `f` with loom on one thread (results that sum across threads depend on their number).
template <class F>
void on_one_thread(F f) {
  const int before = num_threads();
  set_num_threads(1);
  try {
    f();
  } catch (...) {
    set_num_threads(before);
    throw;
  }
  set_num_threads(before);
}

}  // namespace

TEST_CASE("a layer defined by the user, once registered, saves, loads and trains on") {
  TempDir dir;
  Sequential<float> model(3);
  model.add(Flatten<float>(), Shape{4, 4, 1});
  model.add(user::Scale<float>(0.5));
  model.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  model.compile("sparse_categorical_crossentropy", {"accuracy"}, "adam");
  Tensor<float> x(Shape{12, 4, 4, 1}), y(Shape{12});
  Rng rng(2);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (float& v : y) v = static_cast<float>(rng.below(3));
  model.fit(x, y, FitOptions<float>().epochs(2).batch_size(4).verbose(0));
  CHECK(model.layer("scale").parameters()[0].value->operator[](0) != 0.5f);  // it trained

  model.save(dir.file("user.loom"));
  auto loaded = Sequential<float>::load(dir.file("user.loom"));
  CHECK(loaded.layer(1).type() == "Scale");
  CHECK(loaded.layer(1).config().real("initial") == 0.5);
  CHECK(loaded.to_bytes() == model.to_bytes());
  const Tensor<float> p = model.predict(x), q = loaded.predict(x);
  CHECK(std::equal(p.begin(), p.end(), q.begin()));
  // Training goes on identically from the file.
  model.fit(x, y, FitOptions<float>().epochs(3).batch_size(4).verbose(0).resume(true));
  loaded.fit(x, y, FitOptions<float>().epochs(3).batch_size(4).verbose(0).resume(true));
  CHECK(weights_of(loaded) == weights_of(model));
  CHECK(Registry<Layer<double>>::global().has("Scale"));  // both scalar types
}

TEST_CASE("predict on two threads copies a registered layer of the user's, and runs the model's own layers otherwise") {
  // With two chunks or more per thread, predict runs each thread's chunks on
  // a copy of the layers made by the registry (Inference::chunks, model/inference.hpp);
  // a layer that cannot be copied keeps the model on its own layers. Either
  // way the outputs are those of one thread. The factor is set after build,
  // so a copy that kept its initial factor would be caught.
  const int saved = num_threads();
  Tensor<float> x(Shape{100, 6});
  Rng rng(2);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (int kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    Sequential<float> model(1);
    model.add(Dense<float>(DenseOptions(4)), Shape{6});
    if (kind == 0) model.add(user::Scale<float>(0.5));
    if (kind == 1) model.add(user::Unregistered<float>());
    if (kind == 2) model.add(user::Unmakeable<float>());
    (*model.layer(1).parameters()[0].value)[0] = 3;
    set_num_threads(1);
    const Tensor<float> one = model.predict(x, 4);
    set_num_threads(2);
    const Tensor<float> two = model.predict(x, 4);
#ifdef LOOM_OWN_SGEMM
    CHECK(std::equal(one.begin(), one.end(), two.begin()));
#else  // Eigen's kernel blocks by the sizes: to rounding
    for (Index i = 0; i < one.size(); ++i) CHECK(two[i] == doctest::Approx(one[i]).epsilon(1e-6));
#endif
    CHECK(one[0] != 0);
  }
  set_num_threads(saved);
}

TEST_CASE("saving a layer nobody registered fails at once, saying how to register it") {
  TempDir dir;
  Sequential<float> model;
  model.add(Flatten<float>(), Shape{4});
  model.add(user::Unregistered<float>());
  const std::string msg = error_of([&] { model.save(dir.file("m.loom")); });
  CHECK(msg.find("layer 'scale' is a Unregistered, which is not registered") != std::string::npos);
  CHECK(msg.find("LOOM_REGISTER(Unregistered)") != std::string::npos);
  CHECK(dir.count() == 0);  // nothing written
  model.save_weights(dir.file("w.weights"));  // weights need no registry: they load into a model built in code
  CHECK(dir.count() == 1);
}

TEST_CASE("one factory each for losses and optimizers, by Keras's class names and aliases") {
  CHECK(make_loss<float>("categorical_crossentropy")->type() == "CategoricalCrossentropy");
  CHECK(make_loss<float>("CategoricalCrossentropy")->type() == "CategoricalCrossentropy");
  CHECK(make_loss<double>("sparse_categorical_crossentropy")->type() == "SparseCategoricalCrossentropy");
  CHECK(make_optimizer<float>("rmsprop")->type() == "RMSprop");
  CHECK(make_optimizer<float>("RMSprop")->type() == "RMSprop");
  CHECK(make_optimizer<float>("sgd")->type() == "SGD");
  CHECK(make_optimizer<float>("Adam")->type() == "Adam");
  // Keras's defaults fill what the config leaves out.
  const auto opt = make_optimizer<float>("adam", Config().set("learning_rate", 0.01));
  CHECK(opt->config().real("learning_rate") == 0.01);
  CHECK(opt->config().real("beta_2") == 0.999);
  CHECK(make_optimizer<float>("sgd")->config() == SGD<float>().config());
  const std::string msg = error_of([] { make_optimizer<float>("adagrad"); });
  CHECK(msg.rfind("unknown optimizer 'adagrad' (known: Adam, AdamW, RMSprop, SGD, adam, adamw, rmsprop, sgd", 0) == 0);
  CHECK_THROWS_AS(make_loss<float>("mse"), ConfigError);
  // Every built-in layer registered itself beside its class (and this file's Scale and Unmakeable).
  const std::vector<std::string> layers{
      "Activation", "Add", "Average", "AveragePooling2D",
      "BatchNormalization", "Concatenate", "Conv2D", "Conv2DTranspose",
      "Cropping2D", "Dense", "DepthwiseConv2D", "Dropout",
      "ELU", "Flatten", "Functional", "GaussianNoise",
      "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Identity", "LayerNormalization",
      "LeakyReLU", "MaxPooling2D", "Maximum", "Multiply",
      "PReLU", "Permute", "QuantizedConv2D", "QuantizedDense", "RandomCrop", "RandomErasing",
      "RandomFlip", "RandomTranslation", "ReLU", "Rescaling",
      "Reshape", "Scale", "SeparableConv2D", "Softmax",
      "SpatialDropout2D", "Subtract", "Unmakeable", "ZeroPadding2D"};
  CHECK(Registry<Layer<float>>::global().names() == layers);
  CHECK(Registry<Layer<double>>::global().names() == layers);
  CHECK(Registry<Layer<float>>::global().canonical("MaxPool2D") == "MaxPooling2D");  // Keras's alias
  CHECK_THROWS_WITH_AS(make_optimizer<float>("sgd", Config().set("momentum", "fast")),
                       "bad value 'fast' for config 'momentum'", ConfigError);
}

TEST_CASE("Activation layers are what they say, in summary() and through save and load") {
  Sequential<float> model;
  model.add(Flatten<float>(), Shape{2, 3});
  model.add(ActivationLayer<float>(Activation::None));
  model.add(ActivationLayer<float>(Activation::ReLU));
  model.add(ReLU<float>());
  model.add(Softmax<float>());
  CHECK(model.layer(1).type() == "Activation");
  CHECK(model.layer(1).name() == "activation");
  CHECK(model.layer(1).config().text("activation") == "linear");
  CHECK(model.layer(2).config().text("activation") == "relu");
  CHECK(model.layer(3).type() == "ReLU");
  CHECK(model.layer(4).type() == "Softmax");
  std::ostringstream s;
  model.summary(s);
  CHECK(s.str().find("activation (Activation)") != std::string::npos);
  CHECK(s.str().find("activation_1 (Activation)") != std::string::npos);
  auto loaded = Sequential<float>::load_bytes(model.to_bytes(), "m");
  CHECK(loaded.layer(1).activation() == Activation::None);
  CHECK(loaded.layer(2).activation() == Activation::ReLU);
  Tensor<float> x(Shape{1, 2, 3});
  for (Index i = 0; i < 6; ++i) x[i] = static_cast<float>(i) - 2.5f;
  Sequential<float> identity;
  identity.add(ActivationLayer<float>(Activation::None), Shape{2, 3});
  auto back = Sequential<float>::load_bytes(identity.to_bytes(), "identity");
  const Tensor<float> out = back.predict(x);
  CHECK(std::equal(out.begin(), out.end(), x.begin()));  // an identity stays an identity (negatives kept)
}

namespace {

struct Expected {
  std::map<std::string, std::vector<double>> rows;
};

/// tests/fixtures/v1_expected.txt: lines "<key> <count> <hex floats>".
Expected read_expected(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  Expected e;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string key, value;
    std::size_t n = 0;
    s >> key >> n;
    auto& row = e.rows[key];
    while (s >> value) row.push_back(std::strtod(value.c_str(), nullptr));
    REQUIRE(row.size() == n);
  }
  return e;
}

/// The fixture's data, as tests/fixtures/README.md gives it.
void fixture_data(Tensor<float>& x, Tensor<float>& y) {
  x = Tensor<float>(Shape{40, 6, 6, 1});
  y = Tensor<float>(Shape{40});
  for (Index i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 101) / 101.0f;
  for (Index i = 0; i < y.size(); ++i) y[i] = static_cast<float>((i * 3) % 5);
}

std::vector<double> as_doubles(const Tensor<float>& t) { return {t.begin(), t.end()}; }

/// Every parameter and buffer of `m`, in order, as doubles.
std::vector<double> weights(Sequential<float>& m) {
  const std::vector<float> w = weights_of(m);
  return {w.begin(), w.end()};
}

}  // namespace

TEST_CASE("files saved by loom before the redesign (format 1) load, predict and resume as they did") {
  // Parameters are stored exactly, so they must load bit for bit. Arithmetic
  // depends on the machine (FMA, vector width), so what is computed from
  // them is compared within float tolerance: predictions after loading, and
  // the history and weights of the resumed fit.
  const std::string dir = LOOM_TEST_FIXTURES;
  const Expected e = read_expected(dir + "/v1_expected.txt");
  Tensor<float> x, y;
  fixture_data(x, y);
  const auto close = [](const std::vector<double>& a, const std::vector<double>& b, double tol) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!(std::fabs(a[i] - b[i]) <= tol * (1 + std::fabs(b[i])))) return false;
    }
    return true;
  };
  on_one_thread([&] {
    auto model = Sequential<float>::load(dir + "/v1_model.loom");
    CHECK(model.name() == "fixture");
    CHECK(model.size() == 9);
    CHECK(model.layer(6).type() == "ReLU");
    CHECK(model.optimizer().type() == "Adam");
    CHECK(model.optimizer().iterations() == 6);
    CHECK(model.position().epoch == 1);
    CHECK(model.position().step == 1);
    CHECK(weights(model) == e.rows.at("weights_saved"));
    CHECK(close(as_doubles(model.predict(x)), e.rows.at("predict_saved"), 1e-5));

    // Continue the interrupted fit as the old loom did.
    const History h =
        model.fit(x, y, FitOptions<float>().epochs(3).batch_size(8).verbose(0).validation_data(x, y).resume(true));
    CHECK(close(weights(model), e.rows.at("weights_resumed"), 1e-4));
    CHECK(close(as_doubles(model.predict(x)), e.rows.at("predict_resumed"), 1e-4));
    for (const auto& kv : h.history) CHECK(close(kv.second, e.rows.at("history_" + kv.first), 1e-4));

    // A weights file of format 1 loads into the same architecture.
    auto into = Sequential<float>::load(dir + "/v1_model.loom");
    into.fit(x, y, FitOptions<float>().epochs(3).batch_size(8).verbose(0).resume(true));  // move off the saved weights
    into.load_weights(dir + "/v1_model.weights");
    CHECK(weights(into) == e.rows.at("weights_saved"));
    // Saved again, the file is format 2 and round-trips bit for bit.
    const std::string bytes = Sequential<float>::load(dir + "/v1_model.loom").to_bytes();
    CHECK(bytes[8] == 2);
    CHECK(Sequential<float>::load_bytes(bytes, "v2").to_bytes() == bytes);
  });
}

TEST_CASE("an RMSprop saved before loom recorded its rule resumes with the rule it was trained with") {
  // tests/fixtures/README.md: written by loom 8136089, whose RMSprop put
  // epsilon outside the square root.
  const std::string dir = LOOM_TEST_FIXTURES;
  const Expected e = read_expected(dir + "/v2_rmsprop_expected.txt");
  Tensor<float> x, y;
  fixture_data(x, y);
  const auto max_diff = [](const std::vector<double>& a, const std::vector<double>& b) {
    REQUIRE(a.size() == b.size());
    double d = 0;
    for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]) / (1 + std::fabs(b[i])));
    return d;
  };
  const auto resume = [&](Sequential<float>& m) {
    m.fit(x, y, FitOptions<float>().epochs(4).batch_size(8).verbose(0).resume(true));
  };
  on_one_thread([&] {
    std::ostringstream said;
    std::streambuf* clog = std::clog.rdbuf(said.rdbuf());
    auto model = Sequential<float>::load(dir + "/v2_rmsprop.loom");
    std::clog.rdbuf(clog);
    CHECK(said.str().find("v2_rmsprop.loom: saved before loom recorded RMSprop's rule") != std::string::npos);
    REQUIRE(model.optimizer().type() == "RMSprop");
    CHECK_FALSE(model.optimizer().config().flag("epsilon_inside_sqrt"));
    CHECK(weights(model) == e.rows.at("weights_saved"));
    resume(model);
    // Measured 2.6e-8 (the old file was written with Eigen's kernel, read with
    // loom's AVX-512 one); today's rule on the same state: 2.2e-5.
    CHECK(max_diff(weights(model), e.rows.at("weights_resumed")) < 2e-6);
    CHECK(max_diff(as_doubles(model.predict(x)), e.rows.at("predict_resumed")) < 2e-6);

    // The same state resumed under today's rule ends elsewhere: the checks
    // above can fail.
    auto today = Sequential<float>::load(dir + "/v2_rmsprop.loom");
    RMSprop<float> rule_now;
    rule_now.restore(today.optimizer().slots(), today.optimizer().iterations());
    today.compile(SparseCategoricalCrossentropy<float>(), std::move(rule_now), {"accuracy"});
    resume(today);
    CHECK(max_diff(weights(today), e.rows.at("weights_resumed")) > 1e-5);

    // Saved again, the file records the rule, and loads without a word.
    said.str("");
    clog = std::clog.rdbuf(said.rdbuf());
    auto again = Sequential<float>::load_bytes(model.to_bytes(), "again");
    std::clog.rdbuf(clog);
    CHECK(said.str().empty());
    CHECK_FALSE(again.optimizer().config().flag("epsilon_inside_sqrt"));
  });
}

namespace {

/// The callbacks of one run, writing into `dir`.
struct Callbacks {
  std::shared_ptr<ModelCheckpoint<float>> every, best;
  std::shared_ptr<EarlyStopping<float>> stop;
  explicit Callbacks(const TempDir& dir)
      : every(std::make_shared<ModelCheckpoint<float>>(dir.file("ckpt{epoch}.loom"))),
        best(std::make_shared<ModelCheckpoint<float>>(
            dir.file("best.weights"),
            ModelCheckpointOptions().monitor("val_accuracy").save_best_only(true).save_weights_only(true))),
        stop(std::make_shared<EarlyStopping<float>>(
            EarlyStoppingOptions().monitor("val_loss").patience(2).restore_best_weights(true))) {}
  /// Savers first on purpose: fit runs EarlyStopping before them anyway.
  FitOptions<float> options(const Tensor<float>& xv, const Tensor<float>& yv) const {
    return FitOptions<float>().epochs(30).batch_size(16).verbose(0).validation_data(xv, yv).callback(every).callback(best).callback(stop);
  }
};

struct Outcome {
  std::vector<float> weights;
  History history;
  int stopped_epoch, stop_best_epoch, best_epoch;
  double best;
  std::string best_file;
};

Outcome outcome(Sequential<float>& m, const Callbacks& c, const TempDir& dir) {
  return {weights_of(m),          m.history(),        c.stop->stopped_epoch(),
          c.stop->best_epoch(),   c.best->best_epoch(), c.best->best(),
          detail::read_whole_file(dir.file("best.weights"))};
}

void check_same(const Outcome& a, const Outcome& b) {
  CHECK(a.weights == b.weights);
  CHECK(a.history.history == b.history.history);
  CHECK(a.stopped_epoch == b.stopped_epoch);
  CHECK(a.stop_best_epoch == b.stop_best_epoch);
  CHECK(a.best_epoch == b.best_epoch);
  CHECK(a.best == b.best);
  CHECK(a.best_file == b.best_file);
}

}  // namespace

TEST_CASE("killed and resumed with ModelCheckpoint(save_best_only) and EarlyStopping, fit ends as if never stopped") {
  Tensor<float> x, y, xv, yv;
  random_data(96, x, y, 4);
  random_data(48, xv, yv, 9);  // labels unrelated to the inputs: validation loss soon rises and EarlyStopping stops
  TempDir a_dir;
  Callbacks a(a_dir);
  auto straight = resumable_model(5);
  straight.fit(x, y, a.options(xv, yv));
  const Outcome expected = outcome(straight, a, a_dir);
  REQUIRE(expected.stopped_epoch > 4);  // the run this test needs: stopped early, after epoch 4
  REQUIRE(expected.best_epoch > 1);

  SUBCASE("killed after epoch 3: resume from the checkpoint it wrote, with new callback objects") {
    TempDir dir;
    {
      Callbacks b(dir);
      std::atomic<bool> kill{false};
      auto killer = std::make_shared<LambdaCallback<float>>();
      killer->on_batch_end_fn = [&](Model<float>& m, long, const Logs&) { kill = m.position().epoch == 3; };
      auto doomed = resumable_model(5);
      doomed.fit(x, y, b.options(xv, yv).callback(killer).stop_flag(&kill));
      REQUIRE(doomed.interrupted());  // dropped without saving, as a killed process would
    }
    Callbacks c(dir);
    auto resumed = Sequential<float>::load(dir.file("ckpt3.loom"));
    CHECK(resumed.position().epoch == 3);
    resumed.fit(x, y, c.options(xv, yv).resume(true));
    check_same(outcome(resumed, c, dir), expected);
    CHECK(fs::exists(dir.file("ckpt" + std::to_string(expected.stopped_epoch) + ".loom")));
    CHECK_FALSE(fs::exists(dir.file("ckpt" + std::to_string(expected.stopped_epoch + 1) + ".loom")));
  }
  SUBCASE("stopped mid-epoch by the stop flag (Ctrl-C), saved, loaded and resumed") {
    TempDir dir;
    {
      Callbacks b(dir);
      std::atomic<bool> ctrl_c{false};
      auto press = std::make_shared<LambdaCallback<float>>();
      press->on_batch_end_fn = [&](Model<float>& m, long batch, const Logs&) {
        ctrl_c = m.position().epoch == 2 && batch == 2;
      };
      auto first = resumable_model(5);
      first.fit(x, y, b.options(xv, yv).callback(press).stop_flag(&ctrl_c));
      REQUIRE(first.interrupted());
      first.save(dir.file("mid.loom"));
    }
    Callbacks c(dir);
    auto resumed = Sequential<float>::load(dir.file("mid.loom"));
    resumed.fit(x, y, c.options(xv, yv).resume(true));
    check_same(outcome(resumed, c, dir), expected);
  }
  SUBCASE("resumed from the checkpoint of the epoch that stopped: nothing more to do") {
    TempDir dir;
    Callbacks c(dir);
    auto resumed = Sequential<float>::load(a_dir.file("ckpt" + std::to_string(expected.stopped_epoch) + ".loom"));
    resumed.fit(x, y, c.options(xv, yv).resume(true));
    CHECK(resumed.history().history == expected.history.history);
    CHECK(c.stop->stopped_epoch() == expected.stopped_epoch);
  }
  SUBCASE("without resume, the callbacks' saved state is not used") {
    TempDir dir;
    Callbacks c(dir);
    auto again = Sequential<float>::load(a_dir.file("ckpt3.loom"));
    again.fit(x, y, c.options(xv, yv).epochs(1));  // a new fit: epoch 1 of 1, fresh EarlyStopping
    CHECK(c.stop->best_epoch() == 1);
    CHECK(c.best->best_epoch() == 1);
  }
}
