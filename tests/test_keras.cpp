// Keras model files in and out (loom/keras.hpp): the real models users saved
// with Keras 2.1.6 to 3.14 (read from ../shared/keras-models, skipped when
// absent), round trips of loom models in both formats, hand-written configs
// of the shapes Keras writes, and every refusal.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>

#include <loom/data/fashion_mnist.hpp>
#include <loom/keras.hpp>

#include "test_support.hpp"

using namespace loom;
using loom::testing::error_of;
using loom::testing::TempDir;
using json = nlohmann::json;

// A layer loom does not have, defined here with nothing else than its loom
// registration and its Keras mapping beside it: a Keras project's own
// ScaleShift (y = x * scale + shift), to show that adding a layer to loom's
// Keras import and export is one place.
namespace keras_test_layers {

template <class T>
class ScaleShift : public Layer<T> {
 public:
  static constexpr const char* class_name = "ScaleShift";
  ScaleShift(double scale, double shift) : scale_(scale), shift_(shift) {}
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<ScaleShift>(c.real("scale"), c.real("shift"));
  }
  Config config() const override { return Config().set("scale", scale_).set("shift", shift_); }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "scale_shift"; }

 protected:
  Shape build_impl(const Shape& in, Rng&) override { return in; }
  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode) override {
    y_.resize_for_overwrite(x.shape());
    for (Index i = 0; i < x.size(); ++i) y_[i] = static_cast<T>(x[i] * scale_ + shift_);
    return y_;
  }
  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    if (!this->needs_input_grad()) return this->empty_;
    dx_.resize_for_overwrite(dy.shape());
    for (Index i = 0; i < dy.size(); ++i) dx_[i] = static_cast<T>(dy[i] * scale_);
    return dx_;
  }

 private:
  double scale_, shift_;
  Tensor<T> y_, dx_;
};

LOOM_REGISTER(ScaleShift)
LOOM_KERAS_MAPPING(keras::LayerMapping("ScaleShift").real("scale").real("shift", 0.0))

}  // namespace keras_test_layers

namespace {

const std::string kModels = LOOM_KERAS_MODELS;

/// file -> test accuracy, from the table in EXPECTED.md (empty when absent).
std::map<std::string, double> expected_accuracies() {
  std::map<std::string, double> out;
  std::ifstream in(kModels + "/EXPECTED.md");
  const std::regex row(R"(^\|\s*(\S+\.(?:h5|keras))\s*\|\s*([0-9.]+)\s*\|)");
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, row)) out[m[1]] = std::stod(m[2]);
  }
  return out;
}

const datasets::fashion_mnist::Data<float>& fashion() {
  static const auto data = datasets::fashion_mnist::load<float>();
  return data;
}

/// The test images scaled to [0, 1], in the model's own input shape.
Tensor<float> test_images(const Shape& input, Index count = 10000) {
  const auto& d = fashion();
  Tensor<float> x(Shape{count, 28, 28});
  for (Index i = 0; i < x.size(); ++i) x[i] = d.x_test[i] / 255.0f;
  x.reshape(input.with_batch(count));
  return x;
}

double accuracy(Sequential<float>& model, Index count = 10000) {
  const Tensor<float> p = model.predict(test_images(model.input_shape(), count), 500);
  const Index k = p.dim(1);
  Index right = 0;
  for (Index n = 0; n < count; ++n) {
    const float* r = p.data() + n * k;
    right += (std::max_element(r, r + k) - r) == static_cast<Index>(fashion().y_test[n]);
  }
  return static_cast<double>(right) / static_cast<double>(count);
}

bool have_models() {
  if (std::filesystem::exists(kModels + "/EXPECTED.md")) return true;
  MESSAGE("skipped: no Keras models at " << kModels);
  return false;
}

/// A small model with every layer class loom writes for Keras.
Sequential<float> every_layer_model() {
  Sequential<float> m(7, "every_layer");
  m.add(Conv2D<float>(Conv2DOptions(6, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)), Shape{9, 9, 2});
  m.add(BatchNormalization<float>());
  m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2}).padding(Padding::Same)));  // 9 -> 5: odd, same padding
  m.add(Dropout<float>(0.25));
  m.add(Conv2D<float>(Conv2DOptions(4, {2, 2}).strides({2, 2}).use_bias(false)));
  m.add(ActivationLayer<float>(Activation::ReLU));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(12)));
  m.add(BatchNormalization<float>(BatchNormalizationOptions().center(false).momentum(0.9).synchronized(true)));
  m.add(ReLU<float>());
  m.add(Dense<float>(DenseOptions(5).activation(Activation::Softmax)));
  return m;
}

/// Trains `m` a few steps on random data so that every weight and moving
/// statistic differs from its initial value.
void train_a_little(Sequential<float>& m) {
  Rng rng(3);
  const Shape in = m.input_shape();
  Tensor<float> x(in.with_batch(16)), y(Shape{16});
  for (Index i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.uniform(-1, 1));
  for (Index i = 0; i < 16; ++i) y[i] = static_cast<float>(i % 5);
  m.compile(make_loss<float>("sparse_categorical_crossentropy"),
            make_optimizer<float>("adam", Config().set("learning_rate", 0.01)), {"accuracy"});
  for (int s = 0; s < 3; ++s) m.train_step(x, y);
}

std::vector<unsigned char> bytes_of(const std::string& text) { return {text.begin(), text.end()}; }

/// `m` saved as .keras and .h5 and loaded back: the same layers, configs
/// and predictions, bit for bit, on inputs uniform in [lo, hi).
void check_keras_round_trip(Sequential<float>& m, double lo = 0, double hi = 1) {
  TempDir dir;
  Tensor<float> x(m.input_shape().with_batch(3));
  Rng rng(5);
  for (float& v : x) v = static_cast<float>(rng.uniform(lo, hi));
  const Tensor<float> expected = m.predict(x);
  for (const char* name : {"m.keras", "m.h5"}) {
    CAPTURE(name);
    keras::save_model(m, dir.file(name));
    auto back = keras::load_model<float>(dir.file(name));
    REQUIRE(back.layers().size() == m.layers().size());
    for (std::size_t i = 0; i < m.layers().size(); ++i) {
      CHECK(back.layers()[i]->type() == m.layers()[i]->type());
      CHECK(back.layers()[i]->config() == m.layers()[i]->config());
    }
    const Tensor<float> got = back.predict(x);
    REQUIRE(got.shape() == expected.shape());
    CHECK(std::memcmp(got.data(), expected.data(), sizeof(float) * static_cast<std::size_t>(got.size())) == 0);
  }
}

/// A model from a hand-written config, through the public loader's checks.
Sequential<float> from_json(const std::string& text) { return keras::model_from_config<float>(json::parse(text)); }

}  // namespace

TEST_CASE("every real Keras model loads and scores on the test set what an independent reader of it scores") {
  if (!have_models()) return;
  const auto expected = expected_accuracies();
  REQUIRE(expected.size() == 8);
  for (const auto& [file, acc] : expected) {
    CAPTURE(file);
    auto model = keras::load_model<float>(kModels + "/" + file);
    CHECK(model.compiled());  // every one carries its training config
    // EXPECTED.md: an implementation that reads the file correctly agrees to a few images.
    CHECK(std::abs(accuracy(model) - acc) <= 0.0005);
  }
}

TEST_CASE("every real Keras model quantized to int8 scores within 0.3 points of its float accuracy") {
  if (!have_models()) return;
  if (!detail::int8_supported()) {
    MESSAGE("skipped: " << detail::int8_unsupported_reason());
    return;
  }
  const auto& d = fashion();
  for (const auto& [file, acc] : expected_accuracies()) {
    CAPTURE(file);
    auto model = keras::load_model<float>(kModels + "/" + file);
    Tensor<float> calibration(Shape{512, 28, 28});  // the first 512 training images
    for (Index i = 0; i < calibration.size(); ++i) calibration[i] = d.x_train[i] / 255.0f;
    calibration.reshape(model.input_shape().with_batch(512));
    auto int8 = quantize(model, calibration);
    bool quantized = false;
    for (const auto& l : int8.layers()) quantized = quantized || l->type().rfind("Quantized", 0) == 0;
    CHECK(quantized);
    const double a = accuracy(int8);
    CAPTURE(a);
    CHECK(std::abs(a - acc) <= 0.003);
  }
}

TEST_CASE("what the real files hold arrives: names, shapes, padding, BatchNormalization after Dense, compile config") {
  if (!have_models()) return;
  // Keras 2.1.6: a bare layer list, Activation layers, MaxPooling2D same padding on an odd map (11 -> 6).
  auto old = keras::load_model<float>(kModels + "/fmnist_k2.1.6_bn_evanchien.h5");
  CHECK(old.layers().size() == 18);
  CHECK(old.layer("max_pooling2d_2").output_shape() == Shape{6, 6, 64});
  CHECK(old.layer("activation_5").type() == "Activation");
  CHECK(old.count_params() == 250478);  // PROVENANCE.md's count of values
  CHECK(old.trainer().loss().type() == "CategoricalCrossentropy");
  CHECK(old.trainer().optimizer().type() == "Adam");
  CHECK(old.trainer().optimizer().config().real("learning_rate") == doctest::Approx(0.001));
  CHECK(old.trainer().metrics() == std::vector<std::string>{"accuracy"});
  // Keras 3.9 .keras: weights under auto names, BatchNormalization over Dense features.
  auto bn = keras::load_model<float>(kModels + "/fmnist_k3.9.2_bn_shiti.keras");
  CHECK(bn.count_params() == 242954);
  CHECK(bn.layer("batch_normalization_3").input_shape() == Shape{128});
  CHECK(bn.trainer().optimizer().type() == "RMSprop");  // its compile_config names no optimizer: Keras's default
  // Keras 3.8 .keras: the config's names (conv2d_6) are not the weights' (layers/conv2d).
  auto renamed = keras::load_model<float>(kModels + "/fmnist_k3.8.0_bn_tsquareed.keras");
  CHECK(renamed.layers().front()->name() == "conv2d_6");
  CHECK(renamed.count_params() == 225418);
  // The optimizer's state comes along where it is complete for the optimizer (Keras 3 .keras here).
  const Optimizer<float>& adam = renamed.trainer().optimizer();
  CHECK(adam.iterations() == 15750);
  REQUIRE(adam.slots().size() == 12);  // trainable: 2 conv, 2 BatchNormalization, 2 dense; 2 each
  CHECK(adam.slots()[0].shape == Shape{3, 3, 1, 32});
  CHECK(*std::min_element(adam.slots()[0].state[0].begin(), adam.slots()[0].state[0].end()) ==
        doctest::Approx(-0.08216537));  // its momentum, as h5py reads optimizer/vars/2
  CHECK(*std::min_element(adam.slots()[0].state[1].begin(), adam.slots()[0].state[1].end()) >= 0);  // velocity
  CHECK(bn.trainer().optimizer().iterations() == 0);  // AdamW's state is not RMSprop's
  CHECK(old.trainer().optimizer().iterations() == 0);  // Keras 2.1's anonymous Variable_N: not read
  for (const char* legacy : {"fmnist_k2.4.0_dropout_muhtashim.h5", "fmnist_k2.15.0_gokulnpc.h5",
                             "fmnist_k3.0.5_sadiemir.h5", "fmnist_k3.10.0_bn_ronn369.h5"}) {
    CAPTURE(legacy);  // tf.keras 2.0-2.10, tf.keras 2.11+ and Keras 3 names
    auto m = keras::load_model<float>(kModels + "/" + legacy);
    CHECK(m.trainer().optimizer().iterations() > 0);
    const auto params = m.parameters();
    CHECK(m.trainer().optimizer().slots().size() ==
          static_cast<std::size_t>(std::count_if(params.begin(), params.end(), [](const auto& p) { return p.trainable(); })));
  }
  // compile(false) leaves the model uncompiled.
  CHECK_FALSE(keras::load_model<float>(kModels + "/fmnist_k3.0.5_sadiemir.h5", keras::LoadOptions().compile(false))
                  .compiled());
}

TEST_CASE("an imported model fine-tunes with fit, as compiled in Keras and from its optimizer state, and keeps its accuracy") {
  if (!have_models()) return;
  auto model = keras::load_model<float>(kModels + "/fmnist_k2.15.0_gokulnpc.h5");
  REQUIRE(model.trainer().optimizer().iterations() > 0);  // Adam goes on with its moments from Keras
  const double before = accuracy(model);
  const auto& d = fashion();
  Tensor<float> x(Shape{60000, 28, 28, 1});
  for (Index i = 0; i < x.size(); ++i) x[i] = d.x_train[i] / 255.0f;
  const History history = model.fit(x, d.y_train, FitOptions<float>().epochs(1).batch_size(64).verbose(0).seed(1));
  REQUIRE(history.epochs() == 1);
  const double after = accuracy(model);
  MESSAGE("fine-tuning one epoch: test accuracy " << before << " -> " << after);
  CHECK(after >= before - 0.002);  // holds (within 20 of 10,000 images) or improves
}

TEST_CASE("a loom model saved for Keras in either format loads back predicting bit for bit the same") {
  TempDir dir;
  auto model = every_layer_model();
  train_a_little(model);
  Tensor<float> x(model.input_shape().with_batch(7));
  Rng rng(11);
  for (Index i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.uniform(-1, 1));
  const Tensor<float> expected = model.predict(x);
  for (const char* name : {"m.keras", "m.h5"}) {
    CAPTURE(name);
    keras::save_model(model, dir.file(name));
    auto back = keras::load_model<float>(dir.file(name));
    const Tensor<float> got = back.predict(x);
    REQUIRE(got.shape() == expected.shape());
    CHECK(std::memcmp(got.data(), expected.data(), sizeof(float) * static_cast<std::size_t>(got.size())) == 0);
    CHECK(back.name() == "every_layer");
    CHECK(back.count_params() == model.count_params());
    CHECK(back.count_trainable_params() == model.count_trainable_params());
    for (std::size_t i = 0; i < model.layers().size(); ++i) {
      CHECK(back.layers()[i]->name() == model.layers()[i]->name());
      CHECK(back.layers()[i]->type() == model.layers()[i]->type());
      CHECK(back.layers()[i]->config() == model.layers()[i]->config());
    }
    REQUIRE(back.compiled());
    CHECK(back.trainer().loss().type() == "SparseCategoricalCrossentropy");
    CHECK(back.trainer().optimizer().type() == "Adam");
    const Config saved = model.trainer().optimizer().config(), loaded = back.trainer().optimizer().config();
    REQUIRE(loaded.entries().size() == saved.entries().size());
    for (const auto& entry : saved.entries()) CHECK(loaded.real(entry.first) == saved.real(entry.first));
    CHECK(back.trainer().metrics() == std::vector<std::string>{"accuracy"});
  }
  // Training goes on exactly: the optimizer's state (step count, Adam's moments) comes back too.
  for (const char* name : {"m.keras", "m.h5"}) {
    CAPTURE(name);
    auto back = keras::load_model<float>(dir.file(name));
    CHECK(back.trainer().optimizer().iterations() == 3);
    Tensor<float> y(Shape{7}, {0, 1, 2, 3, 4, 0, 1});
    auto copy = keras::load_model<float>(dir.file(name));  // the original goes on from the same state as its copy
    const double a = back.train_step(x, y), b = copy.train_step(x, y);
    CHECK(a == b);
    Tensor<float> pa = back.predict(x), pb = copy.predict(x);
    CHECK(std::memcmp(pa.data(), pb.data(), sizeof(float) * static_cast<std::size_t>(pa.size())) == 0);
  }
  {
    // ...and the step after loading is the step the original takes (without
    // Dropout, whose random stream a Keras file does not carry).
    Sequential<float> plain(3, "plain");
    plain.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).activation(Activation::ReLU)), Shape{6, 6, 1});
    plain.add(BatchNormalization<float>());
    plain.add(Flatten<float>());
    plain.add(Dense<float>(DenseOptions(4).activation(Activation::Softmax)));
    train_a_little(plain);
    Tensor<float> px(Shape{5, 6, 6, 1}), py(Shape{5}, {0, 1, 2, 3, 0});
    for (Index i = 0; i < px.size(); ++i) px[i] = static_cast<float>(rng.uniform(-1, 1));
    for (const char* name : {"plain.keras", "plain.h5"}) {
      CAPTURE(name);
      keras::save_model(plain, dir.file(name));
    }
    plain.train_step(px, py);
    for (const char* name : {"plain.keras", "plain.h5"}) {
      CAPTURE(name);
      auto back = keras::load_model<float>(dir.file(name));
      back.train_step(px, py);
      const auto a = plain.parameters(), b = back.parameters();
      REQUIRE(a.size() == b.size());
      for (std::size_t i = 0; i < a.size(); ++i) {
        CAPTURE(a[i].name);
        CHECK(std::memcmp(a[i].value->data(), b[i].value->data(), sizeof(float) * static_cast<std::size_t>(a[i].value->size())) == 0);
      }
    }
  }
  // The format follows the content, not the name.
  std::filesystem::copy_file(dir.file("m.keras"), dir.file("zip.h5"));
  CHECK(keras::load_model<float>(dir.file("zip.h5")).count_params() == model.count_params());
  CHECK(error_of([&] { keras::save_model(model, dir.file("m.bin")); }).find("neither .keras nor .h5") !=
        std::string::npos);
  keras::save_model(model, dir.file("m.bin"), keras::Format::H5);
  CHECK(keras::detect_format(loom::detail::read_whole_file<std::vector<unsigned char>>(dir.file("m.bin")), "m") ==
        keras::Format::H5);
}

TEST_CASE("a layer defined outside loom, with its LOOM_REGISTER and one Keras mapping beside it, goes to Keras and back") {
  using keras_test_layers::ScaleShift;
  TempDir dir;
  Sequential<float> m(5, "shifted");
  m.add(ScaleShift<float>(1.0 / 255, -0.5), Shape{6, 6, 1});
  m.add(Conv2D<float>(Conv2DOptions(2, {3, 3}).activation(Activation::ReLU)));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(5).activation(Activation::Softmax)));
  train_a_little(m);
  Tensor<float> x(m.input_shape().with_batch(4));
  Rng rng(13);
  for (float& v : x) v = static_cast<float>(rng.uniform(0, 255));
  const Tensor<float> expected = m.predict(x);
  for (const char* name : {"r.keras", "r.h5"}) {
    CAPTURE(name);
    keras::save_model(m, dir.file(name));
    auto back = keras::load_model<float>(dir.file(name));
    REQUIRE(back.layers().size() == m.layers().size());
    CHECK(back.layers()[0]->type() == "ScaleShift");
    CHECK(back.layers()[0]->config() == m.layers()[0]->config());
    const Tensor<float> got = back.predict(x);
    REQUIRE(got.shape() == expected.shape());
    CHECK(std::memcmp(got.data(), expected.data(), sizeof(float) * static_cast<std::size_t>(got.size())) == 0);
  }
  // Its class name and config keys, in both formats.
  const auto zip_bytes = keras::save_model_to_bytes(m, keras::Format::Keras);
  const keras::zipfile::Reader archive(zip_bytes, "r.keras");
  const auto text = archive.read("config.json", 1 << 20);
  const json v3 = json::parse(text.begin(), text.end()).at("config").at("layers")[1];
  CHECK(v3.at("class_name") == "ScaleShift");
  CHECK(v3.at("module") == "keras.layers");
  CHECK(v3.at("config") == json({{"name", "scale_shift"}, {"trainable", true}, {"dtype", "float32"},
                                  {"scale", 1.0 / 255}, {"shift", -0.5}}));
  const auto h5 = keras::save_model_to_bytes(m, keras::Format::H5);
  auto legacy = keras::hdf5::File::open_image(h5, "r.h5");
  const json v2 = json::parse(legacy.root().string("model_config")).at("config").at("layers")[1];
  CHECK(v2.at("class_name") == "ScaleShift");
  CHECK(v2.at("config").at("scale") == 1.0 / 255);
  CHECK(v2.at("config").at("shift") == -0.5);
  // A Keras config of one (shift left out: its default, 0) reads too.
  auto from_keras = from_json(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
      {"class_name": "InputLayer", "config": {"batch_shape": [null, 3], "name": "in"}},
      {"class_name": "ScaleShift", "config": {"name": "r", "scale": 2.0, "dtype": "float32"}}]}})");
  CHECK(from_keras.layer("r").config() == Config().set("scale", 2.0).set("shift", 0.0));
  // The supported list, and the message naming it, are derived from the mappings: it is there, after loom's own.
  const auto supported = keras::supported_layers();
  REQUIRE(supported.size() >= 2);
  CHECK(supported.back() == "ScaleShift");
  CHECK(error_of([] {
          from_json(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
              {"class_name": "InputLayer", "config": {"batch_shape": [null, 3], "name": "in"}},
              {"class_name": "LSTM", "config": {"name": "n", "units": 4}}]}})");
        }).find(", " + supported[supported.size() - 2] + ", ScaleShift") != std::string::npos);
}

TEST_CASE("augmentation layers go out to Keras and come back; RandomCrop is refused both ways, with the reason") {
  TempDir dir;
  Sequential<float> m(7, "augmented");
  m.add(RandomFlip<float>("horizontal"), Shape{9, 9, 2});
  m.add(RandomTranslation<float>(0.1, Factor(-0.2, 0.1),
                                 RandomTranslationOptions().fill_mode("constant").fill_value(0.5).seed(3)));
  m.add(ZeroPadding2D<float>(1, 0, 2, 1));  // 9 x 9 -> 10 x 12
  m.add(RandomErasing<float>(RandomErasingOptions().factor(0.5).value_range(-1, 1)));
  m.add(Conv2D<float>(Conv2DOptions(3, {3, 3}).activation(Activation::ReLU)));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(4).activation(Activation::Softmax)));
  train_a_little(m);
  Tensor<float> x(m.input_shape().with_batch(5));
  Rng rng(12);
  for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
  const Tensor<float> expected = m.predict(x);
  for (const char* name : {"a.keras", "a.h5"}) {
    CAPTURE(name);
    keras::save_model(m, dir.file(name));
    auto back = keras::load_model<float>(dir.file(name));
    REQUIRE(back.layers().size() == m.layers().size());
    for (std::size_t i = 0; i < m.layers().size(); ++i) CHECK(back.layers()[i]->config() == m.layers()[i]->config());
    const Tensor<float> got = back.predict(x);
    CHECK(std::memcmp(got.data(), expected.data(), sizeof(float) * static_cast<std::size_t>(got.size())) == 0);
  }
  const json zp = keras::model_to_config(m, true).at("config").at("layers")[3].at("config").at("padding");
  CHECK(zp == json::parse("[[1, 0], [2, 1]]"));
  Sequential<float> cropped(1, "cropped");
  cropped.add(ZeroPadding2D<float>(2), Shape{4, 4, 1});
  cropped.add(RandomCrop<float>(4, 4));
  cropped.add(Flatten<float>());
  cropped.add(Dense<float>(DenseOptions(2)));
  CHECK(error_of([&] { keras::save_model(cropped, dir.file("c.keras")); }).find("resizes in inference") != std::string::npos);
  CHECK(error_of([] {
          from_json(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
              {"class_name": "InputLayer", "config": {"batch_shape": [null, 8, 8, 1], "name": "input"}},
              {"class_name": "RandomCrop", "config": {"name": "crop", "height": 6, "width": 6}}]}})");
        }).find("'crop' (RandomCrop): RandomCrop (Keras resizes in inference") != std::string::npos);
}

TEST_CASE("Reshape, Permute, Rescaling, Identity and Cropping2D come in as Keras writes them and go out the same") {
  const std::string input = R"({"class_name": "InputLayer", "config": {"batch_shape": [null, 9, 8, 2], "name": "in"}})";
  const auto model = [&](const std::string& layers) {
    return from_json(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [)" + input + ", " + layers + "]}}");
  };
  Sequential<float> m = model(R"(
      {"class_name": "Rescaling", "config": {"name": "scale", "scale": 0.5, "offset": -1.0, "dtype": "float32"}},
      {"class_name": "Cropping2D", "config": {"name": "crop", "cropping": [[1, 2], [0, 1]], "data_format": "channels_last"}},
      {"class_name": "Cropping2D", "config": {"name": "crop_int", "cropping": 1}},
      {"class_name": "Cropping2D", "config": {"name": "crop_pair", "cropping": [1, 0]}},
      {"class_name": "Rescaling", "config": {"name": "per_channel", "scale": [2.0, -1.0],
          "offset": {"class_name": "__numpy__", "config": {"value": [0.0, 0.5], "dtype": "float32"}}}},
      {"class_name": "Permute", "config": {"name": "swap", "dims": [2, 1, 3]}},
      {"class_name": "Reshape", "config": {"name": "rows", "target_shape": [5, -1]}},
      {"class_name": "Permute", "config": {"name": "back", "dims": [2, 1]}},
      {"class_name": "Identity", "config": {"name": "same", "trainable": true, "dtype": "float32"}},
      {"class_name": "Flatten", "config": {"name": "flat"}},
      {"class_name": "Dense", "config": {"name": "out", "units": 3, "activation": "softmax"}})");
  CHECK(m.layer("scale").config() == Config().set("scale", 0.5).set("offset", -1.0));
  CHECK(m.layer("crop").config() == Config().set("cropping", "1,2,0,1"));
  CHECK(m.layer("crop_int").config() == Config().set("cropping", "1,1,1,1"));
  CHECK(m.layer("crop_pair").config() == Config().set("cropping", "1,1,0,0"));
  CHECK(m.layer("per_channel").config() == Config().set("scale", "2,-1").set("offset", "0,0.5"));
  CHECK(m.layer("swap").config() == Config().set("dims", "2,1,3"));
  CHECK(m.layer("rows").config() == Config().set("target_shape", "5,-1"));
  CHECK(m.layer("same").type() == "Identity");
  CHECK(m.layer("crop_pair").output_shape() == Shape{2, 5, 2});
  CHECK(m.layer("swap").output_shape() == Shape{5, 2, 2});
  CHECK(m.layer("rows").output_shape() == Shape{5, 4});
  CHECK(m.layer("back").output_shape() == Shape{4, 5});
  // Out again: Keras's keys and forms.
  const json out = keras::model_to_config(m, true).at("config").at("layers");
  const auto keras_config = [&](std::size_t i) {
    json c = out[i].at("config");
    for (const char* k : {"name", "trainable", "dtype"}) c.erase(k);
    return c;
  };
  CHECK(out[1].at("class_name") == "Rescaling");
  CHECK(keras_config(1) == json::parse(R"({"scale": 0.5, "offset": -1.0})"));
  CHECK(keras_config(2) == json::parse(R"({"cropping": [[1, 2], [0, 1]], "data_format": "channels_last"})"));
  CHECK(keras_config(3) == json::parse(R"({"cropping": [[1, 1], [1, 1]], "data_format": "channels_last"})"));
  CHECK(keras_config(5) == json::parse(R"({"scale": [2.0, -1.0], "offset": [0.0, 0.5]})"));
  CHECK(keras_config(6) == json::parse(R"({"dims": [2, 1, 3]})"));
  CHECK(keras_config(7) == json::parse(R"({"target_shape": [5, -1]})"));
  CHECK(out[9].at("class_name") == "Identity");
  CHECK(keras_config(9) == json::object());
  // Both formats, and back: the same configs and predictions.
  check_keras_round_trip(m);
  // What each refuses, naming the layer.
  const auto refused = [&](const std::string& layer) { return error_of([&] { model(layer); }); };
  CHECK(refused(R"({"class_name": "Reshape", "config": {"name": "r", "target_shape": [7, -1]}})")
            .find("'r' (Reshape): Reshape 'r': expected input whose sample size is a multiple of 7 (target_shape (7, -1)), "
                  "got (None, 9, 8, 2)") != std::string::npos);
  CHECK(refused(R"({"class_name": "Reshape", "config": {"name": "r", "target_shape": [-1, -1]}})")
            .find("'r' (Reshape): 'target_shape' should be 1 to 5 sizes, each positive or one of them -1, got [-1,-1]") !=
        std::string::npos);
  CHECK(refused(R"({"class_name": "Reshape", "config": {"name": "r", "target_shape": 12}})")
            .find("'target_shape' should be a list of integers") != std::string::npos);
  CHECK(refused(R"({"class_name": "Permute", "config": {"name": "p", "dims": [1, 3]}})")
            .find("'p' (Permute): 'dims' should be a permutation of 1..n") != std::string::npos);
  CHECK(refused(R"({"class_name": "Permute", "config": {"name": "p", "dims": [2, 1]}})")
            .find("Permute 'p': expected input of rank 2 (dims (2, 1)), got (None, 9, 8, 2)") != std::string::npos);
  CHECK(refused(R"({"class_name": "Rescaling", "config": {"name": "s", "scale": [1, 2, 3]}})")
            .find("Rescaling 's': expected input with 3 channels on its last axis") != std::string::npos);
  CHECK(refused(R"({"class_name": "Rescaling", "config": {"name": "s", "scale": [[1, 2]]}})")
            .find("'s' (Rescaling): Rescaling with a 'scale' that is neither a number nor a list of numbers") !=
        std::string::npos);
  CHECK(refused(R"({"class_name": "Rescaling", "config": {"name": "s", "scale": [1, 2], "offset": [0, 1, 2]}})")
            .find("Rescaling with 2 scales and 3 offsets") != std::string::npos);
  CHECK(refused(R"({"class_name": "Rescaling", "config": {"name": "s"}})").find("no 'scale'") != std::string::npos);
  CHECK(refused(R"({"class_name": "Cropping2D", "config": {"name": "c", "cropping": [[5, 4], [0, 0]]}})")
            .find("Cropping2D 'c': expected input images of more than 9 rows") != std::string::npos);
  CHECK(refused(R"({"class_name": "Cropping2D", "config": {"name": "c", "cropping": -1}})")
            .find("'c' (Cropping2D): 'cropping' should be non-negative integers") != std::string::npos);
  CHECK(refused(R"({"class_name": "Cropping2D", "config": {"name": "c", "cropping": 1, "data_format": "channels_first"}})")
            .find("'c' (Cropping2D): data_format 'channels_first'") != std::string::npos);
}

TEST_CASE("the files loom writes have Keras's layout: auto-named .keras variables, weight_names in .h5") {
  auto model = every_layer_model();
  train_a_little(model);
  const auto zip_bytes = keras::save_model_to_bytes(model, keras::Format::Keras);
  const keras::zipfile::Reader archive(zip_bytes, "m.keras");
  CHECK(archive.has("metadata.json"));
  const auto config_text = archive.read("config.json", 1 << 20);
  const json config = json::parse(config_text.begin(), config_text.end());
  CHECK(config["module"] == "keras");
  CHECK(config["class_name"] == "Sequential");
  CHECK(config["config"]["layers"][0]["class_name"] == "InputLayer");
  CHECK(config["config"]["layers"][0]["config"]["batch_shape"] == json::array({nullptr, 9, 9, 2}));
  CHECK(config["config"]["layers"][3]["config"]["padding"] == "same");
  CHECK(config["compile_config"]["optimizer"]["class_name"] == "Adam");
  const auto weights = archive.read("model.weights.h5", 1 << 24);
  auto file = keras::hdf5::File::open_image(weights, "weights");
  const auto root = file.root();
  CHECK(root.has_group("vars"));
  CHECK(root.dataset_shape("layers/conv2d/vars/0") == std::vector<Index>{3, 3, 2, 6});
  CHECK(root.dataset_shape("layers/conv2d_1/vars/0") == std::vector<Index>{2, 2, 6, 4});
  CHECK_FALSE(root.has("layers/conv2d_1/vars/1"));  // use_bias=False
  CHECK(root.dataset_shape("layers/batch_normalization_1/vars/0") == std::vector<Index>{12});  // gamma; no beta
  CHECK(root.group("layers/batch_normalization_1/vars").members().size() == 3);
  CHECK(root.has_group("layers/re_lu/vars"));  // Keras's snake_case of ReLU

  const auto h5 = keras::save_model_to_bytes(model, keras::Format::H5);
  auto legacy = keras::hdf5::File::open_image(h5, "m.h5");
  const auto top = legacy.root();
  CHECK(json::parse(top.string("model_config"))["class_name"] == "Sequential");
  CHECK(json::parse(top.string("training_config"))["optimizer_config"]["class_name"] == "Adam");
  const auto mw = top.group("model_weights");
  CHECK(mw.strings("layer_names").size() == model.layers().size());
  CHECK(mw.group("dense").strings("weight_names") ==
        std::vector<std::string>{"every_layer/dense/kernel", "every_layer/dense/bias"});
  CHECK(mw.group("flatten").strings("weight_names").empty());
  CHECK(mw.dataset_shape("dense/every_layer/dense/kernel") == std::vector<Index>{2 * 2 * 4, 12});
}

TEST_CASE("a mixed_bfloat16 model goes to Keras as Keras's dtype policy on every layer and comes back with it") {
  auto model = every_layer_model();
  train_a_little(model);
  const json f32 = json::parse(keras::model_to_config(model, true).dump());
  CHECK(f32["config"]["layers"][1]["config"]["dtype"] == "float32");
  // A Keras file whose layers say mixed_bfloat16, as Keras 3 and tf.keras write them.
  const json keras3 = {{"module", "keras"}, {"class_name", "DTypePolicy"},
                       {"config", {{"name", "mixed_bfloat16"}}}, {"registered_name", nullptr}};
  CHECK(keras::impl::uses_mixed_bfloat16(json{{"layers", json::array({json{{"dtype", keras3}}})}}));
  CHECK(keras::impl::uses_mixed_bfloat16(json{{"dtype", {{"class_name", "Policy"}, {"config", {{"name", "mixed_bfloat16"}}}}}}));
  CHECK_FALSE(keras::impl::uses_mixed_bfloat16(f32));
  if (!detail::bf16_supported()) {
    MESSAGE("the rest skipped: " << detail::bf16_unsupported_reason());
    return;
  }
  model.set_policy(Precision::MixedBFloat16);
  const json v3 = keras::model_to_config(model, true), h5 = keras::model_to_config(model, false);
  CHECK(v3["config"]["dtype"] == keras3);
  CHECK(h5["config"]["dtype"] == "mixed_bfloat16");
  for (std::size_t i = 1; i < v3["config"]["layers"].size(); ++i) {  // [0] is the InputLayer, float32 in Keras too
    CHECK(v3["config"]["layers"][i]["config"]["dtype"] == keras3);
    CHECK(h5["config"]["layers"][i]["config"]["dtype"] == "mixed_bfloat16");
  }
  TempDir dir;
  Tensor<float> x(model.input_shape().with_batch(5));
  Rng rng(3);
  for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
  const Tensor<float> expected = model.predict(x);
  for (const char* name : {"m.keras", "m.h5"}) {
    CAPTURE(name);
    keras::save_model(model, dir.file(name));
    auto back = keras::load_model<float>(dir.file(name));
    CHECK(back.policy() == Precision::MixedBFloat16);
    const Tensor<float> got = back.predict(x);
    CHECK(std::memcmp(got.data(), expected.data(), sizeof(float) * static_cast<std::size_t>(got.size())) == 0);
  }
}

TEST_CASE("an optimizer on a learning-rate schedule saves its state as Keras 3 does, with no learning_rate variable") {
  // Keras 3 has a learning_rate variable only for a constant rate: loom threw saving a trained
  // scheduled optimizer, and read a Keras file's state off by one.
  TempDir dir;
  Sequential<float> m(3, "scheduled");
  m.add(Dense<float>(DenseOptions(4).activation(Activation::Softmax)), Shape{3});
  m.compile(make_loss<float>("sparse_categorical_crossentropy"),
            std::make_unique<SGD<float>>(SGDOptions().momentum(0.9).learning_rate(std::make_shared<ExponentialDecay>(0.1, 2, 0.5))));
  Tensor<float> x(Shape{4, 3}), y(Shape{4}, {0, 1, 2, 3});
  Rng rng(5);
  for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
  m.train_step(x, y);
  m.train_step(x, y);

  const auto zip = keras::save_model_to_bytes(m, keras::Format::Keras);
  const auto weights = keras::zipfile::Reader(zip, "s.keras").read("model.weights.h5", 1 << 20);
  auto file = keras::hdf5::File::open_image(weights, "weights");
  CHECK(file.root().group("optimizer/vars").members().size() == 3);  // iteration, then a momentum per variable
  const auto h5 = keras::save_model_to_bytes(m, keras::Format::H5);
  auto legacy = keras::hdf5::File::open_image(h5, "s.h5");
  CHECK(legacy.root().group("optimizer_weights").strings("weight_names") ==
        std::vector<std::string>{"sgd/iteration", "sgd/scheduled_dense_kernel_momentum", "sgd/scheduled_dense_bias_momentum"});

  for (const char* name : {"s.keras", "s.h5"}) keras::save_model(m, dir.file(name));
  m.train_step(x, y);
  for (const char* name : {"s.keras", "s.h5"}) {
    CAPTURE(name);
    auto back = keras::load_model<float>(dir.file(name));
    CHECK(back.trainer().optimizer().iterations() == 2);
    back.train_step(x, y);  // the third step, at the schedule's rate for step 2 and with the momentum saved
    const auto a = m.parameters(), b = back.parameters();
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(std::memcmp(a[i].value->data(), b[i].value->data(), sizeof(float) * static_cast<std::size_t>(a[i].value->size())) == 0);
    }
  }
}

TEST_CASE("the legacy .h5 loom writes is one tf.keras 2 loads too") {
  Sequential<float> m(4, "for_tf_keras");
  m.add(RandomFlip<float>("horizontal"), Shape{6, 6, 1});
  m.add(RandomTranslation<float>(0.1, 0.1));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(3)));
  m.compile(make_loss<float>("sparse_categorical_crossentropy"),
            std::make_unique<Adam<float>>(AdamOptions().learning_rate(std::make_shared<CosineDecay>(0.01, 100))));
  const auto h5 = keras::save_model_to_bytes(m, keras::Format::H5);
  auto legacy = keras::hdf5::File::open_image(h5, "m.h5");
  const json layers = json::parse(legacy.root().string("model_config")).at("config").at("layers");
  // tf.keras 2's InputLayer takes batch_input_shape only (Keras 3 reads it too).
  CHECK(layers[0].at("config").at("batch_input_shape") == json::array({nullptr, 6, 6, 1}));
  CHECK_FALSE(layers[0].at("config").contains("batch_shape"));
  // tf.keras 2's RandomFlip and RandomTranslation refuse a data_format; Conv2D, Flatten, ... take one.
  CHECK_FALSE(layers[1].at("config").contains("data_format"));
  CHECK_FALSE(layers[2].at("config").contains("data_format"));
  CHECK(layers[3].at("config").at("data_format") == "channels_last");
  // A schedule in Keras 3's form, with its module, which Keras 3's .h5 loader needs (tf.keras 2 reads it too).
  const json lr = json::parse(legacy.root().string("training_config")).at("optimizer_config").at("config").at("learning_rate");
  CHECK(lr.at("module") == "keras.optimizers.schedules");
  CHECK(lr.at("class_name") == "CosineDecay");
  // The .keras file stays as Keras 3 writes it.
  const json v3 = keras::model_to_config(m, true).at("config").at("layers");
  CHECK(v3[0].at("config").contains("batch_shape"));
  CHECK(v3[1].at("config").at("data_format") == "channels_last");
  // And both read back.
  for (auto format : {keras::Format::Keras, keras::Format::H5}) {
    auto back = keras::load_model_from_bytes<float>(keras::save_model_to_bytes(m, format), "m");
    CHECK(back.input_shape() == Shape{6, 6, 1});
    CHECK(back.layers()[1]->config() == m.layers()[1]->config());
    CHECK(back.trainer().optimizer().learning_rate_schedule()->type() == "CosineDecay");
  }
}

TEST_CASE("optimizer names: loom writes Keras 3's rmsprop and adamw, and reads the names Keras 3.15 gives") {
  // Keras 3.0-3.14 name an RMSprop "rmsprop" (loom wrote "rm_sprop"); 3.15 names it "rm_sprop", "rm_sprop_1", ...
  const auto name_of = [](std::unique_ptr<Optimizer<float>> o) {
    return keras::optimizer_to_keras(*o, true).at("config").at("name").get<std::string>();
  };
  CHECK(name_of(make_optimizer<float>("rmsprop")) == "rmsprop");
  CHECK(name_of(make_optimizer<float>("adamw")) == "adamw");
  CHECK(name_of(make_optimizer<float>("adam")) == "adam");
  CHECK(name_of(make_optimizer<float>("sgd")) == "sgd");
  for (const char* name : {"rmsprop", "rm_sprop", "rm_sprop_1", "rm_sprop_12"}) {
    CAPTURE(name);
    CHECK(keras::impl::default_optimizer_name(name, "RMSprop"));
  }
  for (const char* name : {"adamw", "adam_w", "adam_w_3"}) CHECK(keras::impl::default_optimizer_name(name, "AdamW"));
  CHECK_FALSE(keras::impl::default_optimizer_name("adamw", "RMSprop"));  // another optimizer's state
  CHECK_FALSE(keras::impl::default_optimizer_name("adam_w", "Adam"));
  CHECK_FALSE(keras::impl::default_optimizer_name("rmsprop_", "RMSprop"));
  CHECK_FALSE(keras::impl::default_optimizer_name("my_optimizer", "SGD"));
  // The state an RMSprop writes is named after it.
  Sequential<float> m(2, "named");
  m.add(Dense<float>(DenseOptions(2)), Shape{2});
  m.compile("sparse_categorical_crossentropy", {}, "rmsprop");
  m.train_step(Tensor<float>(Shape{2, 2}, {1, 2, 3, 4}), Tensor<float>(Shape{2}, {0, 1}));
  auto legacy = keras::hdf5::File::open_image(keras::save_model_to_bytes(m, keras::Format::H5), "m.h5");
  CHECK(legacy.root().group("optimizer_weights").strings("weight_names")[0] == "rmsprop/iteration");

  // A .keras file whose optimizer group is named as Keras 3.15 names the second RMSprop of a session:
  // the state comes in (it was dropped when only "rm_sprop" was taken for an RMSprop's).
  const auto zip = keras::save_model_to_bytes(m, keras::Format::Keras);
  const keras::zipfile::Reader archive(zip, "m.keras");
  auto original = keras::hdf5::File::open_image(archive.read("model.weights.h5", 1 << 20), "weights");
  auto renamed = keras::hdf5::File::create_in_memory();
  renamed.root().create_group("vars");
  Tensor<float> kernel(Shape{2, 2}), bias(Shape{2});
  keras::hdf5::Group dense = renamed.root().create_group("layers/dense/vars");
  original.root().read("layers/dense/vars/0", kernel);
  original.root().read("layers/dense/vars/1", bias);
  dense.write("0", kernel);
  dense.write("1", bias);
  keras::hdf5::Group state = renamed.root().create_group("optimizer/vars");
  state.set_string("name", "rm_sprop_1");
  state.write_scalar("0", original.root().scalar("optimizer/vars/0"), true);
  state.write_scalar("1", original.root().scalar("optimizer/vars/1"), false);
  original.root().read("optimizer/vars/2", kernel);
  original.root().read("optimizer/vars/3", bias);
  state.write("2", kernel);
  state.write("3", bias);
  keras::zipfile::Writer w;
  const auto config = archive.read("config.json", 1 << 20);
  json renamed_config = json::parse(std::string(config.begin(), config.end()));
  renamed_config["compile_config"]["optimizer"]["config"]["name"] = "rm_sprop_1";  // as that Keras writes both
  w.add("config.json", renamed_config.dump());
  w.add("model.weights.h5", renamed.image());
  auto back = keras::load_model_from_bytes<float>(w.finish(), "renamed.keras");
  CHECK(back.trainer().optimizer().iterations() == 1);
  const auto& slots = back.trainer().optimizer().slots();
  REQUIRE(slots.size() == 2);
  CHECK(std::memcmp(slots[0].state[0].data(), kernel.data(), sizeof(float) * 4) == 0);  // the kernel's velocity
  CHECK(std::memcmp(slots[1].state[0].data(), bias.data(), sizeof(float) * 2) == 0);
}

TEST_CASE("a Functional config with a residual join and a layer called twice, in Keras 2's and Keras 3's forms") {
  // x = Dense(4)(in); y = shared(x); z = shared(y); out = Add()([x, z]): by hand, with weights set after.
  const char* keras2 = R"({"class_name": "Functional", "config": {"name": "g", "layers": [
      {"class_name": "InputLayer", "name": "in", "config": {"batch_input_shape": [null, 3], "name": "in"}, "inbound_nodes": []},
      {"class_name": "Dense", "name": "x", "config": {"name": "x", "units": 2}, "inbound_nodes": [[["in", 0, 0, {}]]]},
      {"class_name": "Dense", "name": "s", "config": {"name": "s", "units": 2, "activation": "relu"},
       "inbound_nodes": [[["x", 0, 0, {}]], [["s", 0, 0, {}]]]},
      {"class_name": "Add", "name": "sum", "config": {"name": "sum"}, "inbound_nodes": [[["x", 0, 0, {}], ["s", 1, 0, {}]]]}],
      "input_layers": [["in", 0, 0]], "output_layers": [["sum", 0, 0]]}})";
  const auto tensor = [](const char* layer, int call) {
    return std::string(R"({"class_name": "__keras_tensor__", "config": {"shape": [null, 2], "dtype": "float32",
        "keras_history": [")") + layer + "\", " + std::to_string(call) + ", 0]}}";
  };
  const std::string keras3 = std::string(R"({"class_name": "Functional", "config": {"name": "g", "layers": [
      {"class_name": "InputLayer", "name": "in", "config": {"batch_shape": [null, 3], "name": "in"}, "inbound_nodes": []},
      {"class_name": "Dense", "name": "x", "config": {"name": "x", "units": 2},
       "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {"shape": [null, 3],
         "keras_history": ["in", 0, 0]}}], "kwargs": {}}]},
      {"class_name": "Dense", "name": "s", "config": {"name": "s", "units": 2, "activation": "relu"},
       "inbound_nodes": [{"args": [)") + tensor("x", 0) + R"(], "kwargs": {}}, {"args": [)" + tensor("s", 0) +
                             R"(], "kwargs": {}}]},
      {"class_name": "Add", "name": "sum", "config": {"name": "sum"},
       "inbound_nodes": [{"args": [[)" + tensor("x", 0) + ", " + tensor("s", 1) + R"(]], "kwargs": {}}]}],
      "input_layers": [["in", 0, 0]], "output_layers": [["sum", 0, 0]]}})";
  for (const std::string& text : {std::string(keras2), keras3}) {
    Functional<float> g(from_json(text));
    CHECK(g.graph().layers().size() == 3);
    CHECK(g.graph().nodes().size() == 4);
    Tensor<float>& wx = *g.layer("x").parameters()[0].value;  // [[1, 0], [0, 1], [1, 1]], bias 0
    wx = Tensor<float>(Shape{3, 2}, {1, 0, 0, 1, 1, 1});
    Tensor<float>& ws = *g.layer("s").parameters()[0].value;  // [[1, -1], [2, 0]], bias (0, 1)
    ws = Tensor<float>(Shape{2, 2}, {1, -1, 2, 0});
    *g.layer("s").parameters()[1].value = Tensor<float>(Shape{2}, {0, 1});
    const Tensor<float> y = g.predict(Tensor<float>(Shape{1, 3}, {1, 2, 3}));
    // x = (4, 5); s(x) = relu(4 + 10, -4 + 1) = (14, 0); s(s(x)) = relu(14, -14 + 1) = (14, 0); x + that = (18, 5)
    CHECK(y[0] == 18);
    CHECK(y[1] == 5);
  }
}

TEST_CASE("a functional model goes out to .keras and .h5 and comes back predicting bit for bit the same") {
  Symbol<float> in = Input<float>({8, 8, 2});
  Symbol<float> x = call(Conv2D<float>(Conv2DOptions(3, {3, 3}).padding(Padding::Same)), in);
  Symbol<float> y = call(BatchNormalization<float>(), call(Conv2D<float>(Conv2DOptions(3, {3, 3}).padding(Padding::Same)), x));
  x = call(Concatenate<float>(), {call(Add<float>(), {x, y}), call(AveragePool2D<float>(AveragePool2DOptions({3, 3}).strides(Size2{1, 1}).padding(Padding::Same)), y)});
  auto d = shared(Dense<float>(DenseOptions(6).activation(Activation::ReLU)));
  Symbol<float> g = call(GlobalAveragePooling2D<float>(), x);
  Functional<float> m(in, call(Dense<float>(DenseOptions(5)), call(Maximum<float>(), {call(d, g), call(d, call(Dense<float>(DenseOptions(6)), g))})), 3, "graph");
  train_a_little(m);
  Tensor<float> xs(m.input_shape().with_batch(5));
  Rng rng(1);
  for (float& v : xs) v = static_cast<float>(rng.uniform());
  const Tensor<float> want = m.predict(xs);
  TempDir dir;
  for (const char* ext : {".keras", ".h5"}) {
    CAPTURE(ext);
    keras::save_model(m, dir.file(std::string("g") + ext));
    Functional<float> back(keras::load_model<float>(dir.file(std::string("g") + ext)));
    CHECK(back.graph().nodes().size() == m.graph().nodes().size());
    const Tensor<float> got = back.predict(xs);
    CHECK(std::equal(want.begin(), want.end(), got.begin()));
    CHECK(back.graph().layers().size() == m.graph().layers().size());
  }
}

TEST_CASE("configs of the shapes Keras writes: straight-chain Functional, serialized activations, flat inputs") {
  // Keras 3 Functional, logits out, an activation saved as a function.
  auto functional = from_json(R"({"class_name": "Functional", "config": {"name": "f", "layers": [
      {"class_name": "InputLayer", "name": "in", "config": {"batch_shape": [null, 28, 28], "name": "in"}, "inbound_nodes": []},
      {"class_name": "Flatten", "name": "flat", "config": {"name": "flat"}, "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {"shape": [null, 28, 28], "keras_history": ["in", 0, 0]}}], "kwargs": {}}]},
      {"class_name": "Dense", "name": "hidden", "config": {"name": "hidden", "units": 16, "activation": {"class_name": "function", "config": "relu"}}, "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {"keras_history": ["flat", 0, 0]}}], "kwargs": {}}]},
      {"class_name": "Dense", "name": "out", "config": {"name": "out", "units": 10, "activation": "linear"}, "inbound_nodes": [[["hidden", 0, 0, {}]]]}],
      "input_layers": [["in", 0, 0]], "output_layers": [["out", 0, 0]]}})");
  CHECK(functional.input_shape() == Shape{28, 28});
  CHECK(functional.layers().size() == 3);
  CHECK(functional.layer("hidden").activation() == Activation::ReLU);
  CHECK(functional.layer("out").activation() == Activation::None);
  // A flat (784,) input straight into Dense, softmax saved as tf.nn.softmax.
  auto flat = from_json(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
      {"class_name": "Dense", "config": {"name": "d", "units": 10, "batch_input_shape": [null, 784],
       "activation": {"class_name": "function", "config": "softmax_v2"}}}]}})");
  CHECK(flat.input_shape() == Shape{784});
  CHECK(flat.layer("d").activation() == Activation::Softmax);
  // A loss with from_logits, from a Keras 3 compile config.
  keras::compile_from_keras(functional,
                            json::parse(R"({"module": "keras.losses", "class_name": "SparseCategoricalCrossentropy",
                                            "config": {"from_logits": true}})"),
                            nullptr, nullptr, "test");
  CHECK(functional.trainer().loss().from_logits());
  CHECK(functional.trainer().optimizer().type() == "RMSprop");
}

TEST_CASE("RMSprop from Keras: the saving version decides where epsilon goes; export leaves the rule out") {
  Sequential<float> m = from_json(R"({"class_name": "Sequential", "config": [
      {"class_name": "Dense", "config": {"name": "d", "units": 3, "batch_input_shape": [null, 2]}}]})");
  const auto inside = [&](const json* optimizer, const std::string& version) {
    keras::compile_from_keras(m, json("categorical_crossentropy"), optimizer, nullptr, "f", version);
    REQUIRE(m.trainer().optimizer().type() == "RMSprop");
    return m.trainer().optimizer().config().flag("epsilon_inside_sqrt");
  };
  const json rms = json::parse(R"({"class_name": "RMSprop", "config": {"learning_rate": 0.01, "rho": 0.8}})");
  const json name = json("rmsprop");
  const json legacy = json::parse(R"({"class_name": "RMSprop", "config": {"is_legacy_optimizer": true}})");
  const json current = json::parse(R"({"class_name": "Custom>RMSprop", "config": {"is_legacy_optimizer": false}})");
  CHECK(inside(&rms, "3.10.0"));
  CHECK(inside(&current, "2.11.0"));
  CHECK(inside(&rms, ""));        // .keras files and files that do not say
  CHECK(inside(nullptr, "2.15.0"));
  CHECK_FALSE(inside(&rms, "2.4.0"));  // tf.keras 2.0-2.10's optimizer_v2
  CHECK_FALSE(inside(&rms, "2.1.6"));  // standalone Keras 2
  CHECK_FALSE(inside(&name, "2.10.1"));
  CHECK_FALSE(inside(nullptr, "2.2.4"));
  CHECK_FALSE(inside(&legacy, "2.13.1"));  // tf.keras.optimizers.legacy.RMSprop
  // ... which tf-keras 2.21 saves without the mark, as tf-keras's own deserialize reads it.
  CHECK_FALSE(inside(&rms, "2.21.0"));
  const json bare = json::parse(R"({"class_name": "RMSprop", "config": {"decay": 0.0, "rho": 0.9}})");
  const json modern = json::parse(R"({"class_name": "RMSprop", "config": {"is_legacy_optimizer": false}})");
  CHECK_FALSE(inside(&bare, "2.21.0"));
  CHECK(inside(&modern, "2.21.0"));
  inside(&rms, "3.0.0");
  CHECK(m.trainer().optimizer().config().real("rho") == doctest::Approx(0.8));
  const json out = keras::optimizer_to_keras(m.trainer().optimizer(), true);
  CHECK(out.at("config").at("rho") == 0.8);
  CHECK_FALSE(out.at("config").contains("epsilon_inside_sqrt"));
}

TEST_CASE("BatchNormalization from Keras: the saving version decides the moving variance's rule") {
  // tf.keras 2.x's fused kernel (NHWC, not float64, fused not False) updates with the unbiased batch
  // variance; its non-fused path and Keras 3 with the biased one (checked against both by running
  // them: tests/reference/step_check.py).
  const auto unbiased = [](const std::string& version, const std::string& extra) {
    const json config = json::parse(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [null, 4, 4, 2], "name": "input"}},
        {"class_name": "BatchNormalization", "config": {"name": "bn")" + extra + "}}]}}");
    Sequential<float> m = keras::model_from_config<float>(config, "f", 1 << 20, version);
    return m.layers()[0]->config().flag("unbiased_moving_variance", false);
  };
  CHECK(unbiased("2.15.0", ""));
  CHECK(unbiased("2.1.6", R"(, "dtype": "float32", "fused": null)"));
  CHECK_FALSE(unbiased("2.15.0", R"(, "dtype": "float64")"));
  CHECK_FALSE(unbiased("2.4.0", R"(, "fused": false)"));
  CHECK_FALSE(unbiased("3.10.0", ""));
  CHECK_FALSE(unbiased("", ""));  // a config that does not say: today's Keras
}

TEST_CASE("what loom cannot represent is refused, naming the layer, its class and what loom reads") {
  auto refused = [](const std::string& layer_json) {
    return error_of([&] {
      from_json(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
          {"class_name": "InputLayer", "config": {"batch_shape": [null, 8, 8, 3], "name": "input"}}, )" +
                layer_json + "]}}");
    });
  };
  const std::string lstm = refused(R"({"class_name": "LSTM", "config": {"name": "lstm_1", "units": 4}})");
  CHECK(lstm.find("'lstm_1' (LSTM)") != std::string::npos);
  CHECK(lstm.find("loom reads InputLayer, Conv2D") != std::string::npos);
  CHECK(refused(R"({"class_name": "Conv2D", "config": {"name": "c", "filters": 2, "kernel_size": 3, "data_format": "channels_first"}})")
            .find("'c' (Conv2D): data_format 'channels_first'") != std::string::npos);
  CHECK(refused(R"({"class_name": "Conv2D", "config": {"name": "c", "filters": 2, "kernel_size": 3, "strides": 2, "dilation_rate": [2, 2]}})")
            .find("strides > 1 with dilation_rate > 1") != std::string::npos);
  CHECK(refused(R"({"class_name": "Conv2D", "config": {"name": "c", "filters": 2, "kernel_size": 3, "groups": 3}})")
            .find("groups must be >= 1 and divide filters") != std::string::npos);
  CHECK(refused(R"({"class_name": "Conv2D", "config": {"name": "c", "filters": 4, "kernel_size": 3, "groups": 2}})")
            .find("channels divisible by its groups=2") != std::string::npos);
  CHECK(refused(R"({"class_name": "Dense", "config": {"name": "d", "units": 2, "activation": "mish"}})")
            .find("'d' (Dense): activation 'mish'") != std::string::npos);
  CHECK(refused(R"({"class_name": "Dense", "config": {"name": "d", "units": "two"}})").find("'units' should be") !=
        std::string::npos);
  CHECK(refused(R"({"class_name": "MyLayer", "config": {"name": "mine"}})").find("'mine' (MyLayer)") != std::string::npos);
  // Dense on a rank-3 input (Keras applies it per position; loom does not).
  CHECK(refused(R"({"class_name": "Dense", "config": {"name": "d", "units": 2}})").find("'d' (Dense)") !=
        std::string::npos);
  // A graph with two outputs; a call of a layer that comes later.
  CHECK(error_of([] {
          from_json(R"({"class_name": "Functional", "config": {"name": "g", "layers": [
            {"class_name": "InputLayer", "name": "in", "config": {"batch_shape": [null, 4], "name": "in"}, "inbound_nodes": []},
            {"class_name": "Dense", "name": "a", "config": {"name": "a", "units": 4}, "inbound_nodes": [[["in", 0, 0, {}]]]},
            {"class_name": "Dense", "name": "b", "config": {"name": "b", "units": 4}, "inbound_nodes": [[["in", 0, 0, {}]]]}],
            "input_layers": [["in", 0, 0]], "output_layers": [["a", 0, 0], ["b", 0, 0]]}})");
        }).find("one output, this one has 2") != std::string::npos);
  CHECK(error_of([] {
          from_json(R"({"class_name": "Functional", "config": {"name": "g", "layers": [
            {"class_name": "InputLayer", "name": "in", "config": {"batch_shape": [null, 4], "name": "in"}, "inbound_nodes": []},
            {"class_name": "Add", "name": "sum", "config": {"name": "sum"}, "inbound_nodes": [[["in", 0, 0, {}], ["b", 0, 0, {}]]]},
            {"class_name": "Dense", "name": "b", "config": {"name": "b", "units": 4}, "inbound_nodes": [[["in", 0, 0, {}]]]}],
            "input_layers": [["in", 0, 0]], "output_layers": [["sum", 0, 0]]}})");
        }).find("'sum' (Add): takes call 0 of 'b', which no layer before it makes") != std::string::npos);
  CHECK(error_of([] { from_json(R"({"class_name": "Sequential", "config": {"name": "s", "layers": []}})"); })
            .find("no layers") != std::string::npos);
  CHECK(error_of([] { from_json(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": "Dense", "config": {"name": "d", "units": 3}}]}})"); })
            .find("no input shape") != std::string::npos);
  // Compile settings loom does not have.
  Sequential<float> m = from_json(R"({"class_name": "Sequential", "config": [
      {"class_name": "Dense", "config": {"name": "d", "units": 3, "batch_input_shape": [null, 2]}}]})");
  CHECK(error_of([&] { keras::compile_from_keras(m, json("hinge"), nullptr, nullptr, "f"); }).find("loss 'hinge'") !=
        std::string::npos);
  const json lion = json::parse(R"({"class_name": "Lion", "config": {}})");
  CHECK(error_of([&] { keras::compile_from_keras(m, json("categorical_crossentropy"), &lion, nullptr, "f"); })
            .find("optimizer 'Lion'") != std::string::npos);
  const json one_cycle = json::parse(R"({"class_name": "SGD", "config": {"learning_rate":
      {"class_name": "OneCycle", "config": {}}}})");
  CHECK(error_of([&] { keras::compile_from_keras(m, json("categorical_crossentropy"), &one_cycle, nullptr, "f"); })
            .find("learning-rate schedule 'OneCycle' is not supported") != std::string::npos);
  const json bad_decay = json::parse(R"({"class_name": "SGD", "config": {"learning_rate":
      {"class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.1, "decay_steps": 0, "decay_rate": 0.5}}}})");
  CHECK(error_of([&] { keras::compile_from_keras(m, json("categorical_crossentropy"), &bad_decay, nullptr, "f"); })
            .find("decay_steps must be > 0") != std::string::npos);
  const json two_clips = json::parse(R"({"class_name": "SGD", "config": {"clipnorm": 1.0, "clipvalue": 1.0}})");
  CHECK(error_of([&] { keras::compile_from_keras(m, json("categorical_crossentropy"), &two_clips, nullptr, "f"); })
            .find("only one of clipnorm") != std::string::npos);
}

TEST_CASE("Keras's AdamW, schedules, clipping and label smoothing come in and go out as Keras writes them") {
  Sequential<float> m = from_json(R"({"class_name": "Sequential", "config": [
      {"class_name": "Dense", "config": {"name": "d", "units": 3, "batch_input_shape": [null, 2]}}]})");
  // Keras 3's get_config of AdamW(learning_rate=CosineDecay(0, 1000, warmup_target=1e-3, warmup_steps=100), global_clipnorm=1).
  const json k3 = json::parse(R"({"module": "keras.optimizers", "class_name": "AdamW", "config": {
      "name": "adamw", "learning_rate": {"module": "keras.optimizers.schedules", "class_name": "CosineDecay",
        "config": {"initial_learning_rate": 0.0, "decay_steps": 1000, "alpha": 0.0, "name": "CosineDecay",
                   "warmup_target": 0.001, "warmup_steps": 100}, "registered_name": null},
      "weight_decay": 0.004, "clipnorm": null, "global_clipnorm": 1.0, "clipvalue": null, "use_ema": false,
      "ema_momentum": 0.99, "ema_overwrite_frequency": null, "loss_scale_factor": null,
      "gradient_accumulation_steps": null, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": false},
      "registered_name": null})");
  const json smoothed = json::parse(R"({"module": "keras.losses", "class_name": "CategoricalCrossentropy",
      "config": {"name": "categorical_crossentropy", "reduction": "sum_over_batch_size", "from_logits": false,
                 "label_smoothing": 0.1, "axis": -1}, "registered_name": null})");
  keras::compile_from_keras(m, smoothed, &k3, nullptr, "f");
  const Optimizer<float>& o = m.trainer().optimizer();
  CHECK(o.type() == "AdamW");
  REQUIRE(o.learning_rate_schedule() != nullptr);
  CHECK((*o.learning_rate_schedule())(50) == doctest::Approx(5e-4));
  CHECK(o.settings().weight_decay == doctest::Approx(0.004));
  CHECK(o.settings().global_clipnorm == 1.0);
  CHECK(m.trainer().loss().label_smoothing() == doctest::Approx(0.1));

  // Out again, in Keras 3's form and in tf.keras 2's, and back: the same optimizer and loss.
  for (bool v3 : {true, false}) {
    CAPTURE(v3);
    const json out = keras::optimizer_to_keras(o, v3);
    const json& lr = out.at("config").at("learning_rate");
    CHECK(lr.at("class_name") == "CosineDecay");
    CHECK(lr.at("config").at("warmup_steps") == 100.0);
    CHECK(out.at("config").at("name") == "adamw");
    CHECK(out.at("config").at("weight_decay") == 0.004);
    Sequential<float> again = from_json(R"({"class_name": "Sequential", "config": [
        {"class_name": "Dense", "config": {"name": "d", "units": 3, "batch_input_shape": [null, 2]}}]})");
    keras::compile_from_keras(again, keras::loss_to_keras(m.trainer().loss()), &out, nullptr, "f");
    CHECK(again.trainer().optimizer().config() == o.config());
    CHECK(again.trainer().loss().config() == m.trainer().loss().config());
  }
  // tf.keras 2.x writes a schedule without "module".
  const json k2 = json::parse(R"({"class_name": "SGD", "config": {"learning_rate": {"class_name": "PiecewiseConstantDecay",
      "config": {"boundaries": [100, 200], "values": [0.1, 0.01, 0.001], "name": null}}, "momentum": 0.9}})");
  keras::compile_from_keras(m, json("sparse_categorical_crossentropy"), &k2, nullptr, "f");
  CHECK((*m.trainer().optimizer().learning_rate_schedule())(150) == doctest::Approx(0.01));
  // Keras's sparse loss has no label smoothing: loom's cannot be exported.
  m.trainer().loss().set_label_smoothing(0.1);
  CHECK(error_of([&] { keras::loss_to_keras(m.trainer().loss()); }).find("no Keras counterpart") != std::string::npos);
}

TEST_CASE("damaged and foreign files get a FormatError naming the file, never a crash") {
  auto model = every_layer_model();
  model.build(model.input_shape());
  const auto good = keras::save_model_to_bytes(model, keras::Format::Keras);
  auto load = [](const std::vector<unsigned char>& b) {
    return error_of([&] { keras::load_model_from_bytes<float>(b, "f.keras"); });
  };
  CHECK(load(bytes_of("hello, world")).find("f.keras: neither a .keras (zip) nor an .h5") != std::string::npos);
  CHECK(load({good.begin(), good.begin() + static_cast<long>(good.size() / 2)}).find("f.keras") != std::string::npos);
  std::vector<unsigned char> flipped = good;
  flipped[flipped.size() / 3] ^= 0x55;  // inside the stored weights: the entry's CRC catches it
  CHECK(load(flipped).find("f.keras") != std::string::npos);

  auto archive = [](const std::string& config, const std::vector<unsigned char>* weights) {
    keras::zipfile::Writer w;
    w.add("config.json", config);
    if (weights) w.add("model.weights.h5", *weights);
    return w.finish();
  };
  CHECK(load(archive("{not json", nullptr)).find("config.json: malformed JSON") != std::string::npos);
  const keras::zipfile::Reader reader(good, "good");
  const auto config = reader.read("config.json", 1 << 20);
  const auto weights = reader.read("model.weights.h5", 1 << 24);
  CHECK(load(archive(std::string(config.begin(), config.end()), nullptr)).find("no model.weights.h5") !=
        std::string::npos);
  // Weights of another shape than the config says.
  json other = json::parse(config.begin(), config.end());
  other["config"]["layers"][1]["config"]["filters"] = 5;
  const std::string mismatch = load(archive(other.dump(), &weights));
  CHECK(mismatch.find("layer 'conv2d' (Conv2D)") != std::string::npos);
  CHECK(mismatch.find("(3, 3, 2, 6), expected (3, 3, 2, 5)") != std::string::npos);
  // A config asking for far more than the file could hold.
  other["config"]["layers"][1]["config"]["filters"] = 1 << 20;
  CHECK(load(archive(other.dump(), &weights)).find("allowed") != std::string::npos);
  // Garbage where the weights should be.
  const std::vector<unsigned char> junk(4096, 0x42);
  CHECK(load(archive(std::string(config.begin(), config.end()), &junk)).find("not an HDF5 file") != std::string::npos);
  // A legacy file with no model config (save_weights).
  auto f = keras::hdf5::File::create_in_memory();
  f.root().create_group("model_weights");
  CHECK(error_of([&] { keras::load_model_from_bytes<float>(f.image(), "w.h5"); }).find("w.h5: no 'model_config'") !=
        std::string::npos);
  CHECK(error_of([] { keras::load_model<float>("/nonexistent/model.keras"); }).find("cannot open") !=
        std::string::npos);
}

// Found by tests/reference/check_imports.py, which loads files real Keras 3.15
// and tf-keras 2.21 wrote: each is reproduced here with a file written by hand
// as those Keras versions write it.
namespace {

const char* kOneDense = R"({"class_name": "Sequential", "config": {"name": "sequential", "layers": [
    {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 2], "name": "in"}},
    {"class_name": "Dense", "config": {"name": "d", "units": 3}}]}})";

/// A legacy .h5 as tf-keras 2.21 writes it: one Dense (2 -> 3) named d,
/// compiled with `optimizer` (its optimizer_config), and optimizer_weights
/// named `state`: a name ending in iteration or iter is the step count (7),
/// the others are slots of d's kernel or bias (all 0.5).
std::vector<unsigned char> tf_keras_h5(const json& optimizer, const std::vector<std::string>& state) {
  auto file = keras::hdf5::File::create_in_memory();
  auto root = file.root();
  root.set_string("keras_version", "2.21.0");
  root.set_string("model_config", kOneDense);
  root.set_string("training_config", json{{"loss", "categorical_crossentropy"}, {"optimizer_config", optimizer}}.dump());
  auto weights = root.create_group("model_weights");
  weights.set_strings("layer_names", {"d"});
  auto d = weights.create_group("d");
  d.set_strings("weight_names", {"d/kernel:0", "d/bias:0"});
  d.write("d/kernel:0", Tensor<float>(Shape{2, 3}));
  d.write("d/bias:0", Tensor<float>(Shape{3}));
  auto slots = root.create_group("optimizer_weights");
  slots.set_strings("weight_names", state);
  for (const auto& name : state) {
    if (keras::impl::slot_kind(name) == keras::impl::SlotKind::Iteration) {
      slots.write_scalar(name, 7, true);
      continue;
    }
    Tensor<float> t(name.find("kernel") != std::string::npos ? Shape{2, 3} : Shape{3});
    t.fill(0.5f);
    slots.write(name, t);
  }
  return file.image();
}

/// A .keras as Keras 3.15 writes it for one Dense (2 -> 3) compiled with
/// Adam, `optimizer` (a name or a config), with the optimizer variables under
/// the name `state_name`: the iteration count 7, the learning rate when it is
/// a variable (not a schedule), then the kernel's and the bias's momentum and
/// velocity, interleaved (all 0.5).
std::vector<unsigned char> keras3_file(const json& optimizer, bool learning_rate_variable, const std::string& state_name) {
  Sequential<float> m = from_json(kOneDense);
  json config = keras::model_to_config(m, true);
  config["compile_config"] = {{"loss", "categorical_crossentropy"}, {"optimizer", optimizer}};
  auto file = keras::hdf5::File::create_in_memory();
  auto root = file.root();
  root.create_group("vars");
  root.write("layers/dense/vars/0", Tensor<float>(Shape{2, 3}));
  root.write("layers/dense/vars/1", Tensor<float>(Shape{3}));
  auto state = root.create_group("optimizer/vars");
  state.set_string("name", state_name);
  std::size_t i = 0;
  state.write_scalar(std::to_string(i++), 7, true);
  if (learning_rate_variable) state.write_scalar(std::to_string(i++), 0.001, false);
  for (const Shape& shape : {Shape{2, 3}, Shape{2, 3}, Shape{3}, Shape{3}}) {
    Tensor<float> t(shape);
    t.fill(0.5f);
    state.write(std::to_string(i++), t);
  }
  keras::zipfile::Writer archive;
  archive.add("metadata.json", R"({"keras_version": "3.15.1"})");
  archive.add("config.json", config.dump());
  archive.add("model.weights.h5", file.image());
  return archive.finish();
}

}  // namespace

TEST_CASE("optimizer state comes in under every name Keras gives it, numbered or not, with or without a schedule") {
  using keras::impl::slot_kind;
  using Kind = keras::impl::SlotKind;
  CHECK(slot_kind("RMSprop/velocity/dense/kernel:0") == Kind::Velocity);  // tf-keras 2.11+
  CHECK(slot_kind("Adam/m/dense/kernel:0") == Kind::Momentum);
  CHECK(slot_kind("Adam/v/m/kernel:0") == Kind::Velocity);                // a layer named m
  CHECK(slot_kind("Adam/m/kernel/v:0") == Kind::Velocity);                // tf.keras 2.0-2.10, layer m
  CHECK(slot_kind("RMSprop/dense/kernel/rms:0") == Kind::Velocity);
  CHECK(slot_kind("adam_3/sequential_dense_kernel_momentum") == Kind::Momentum);  // Keras 3
  CHECK(slot_kind("RMSprop/iter:0") == Kind::Iteration);

  const auto load = [](const std::vector<unsigned char>& bytes, const char* name) {
    return keras::load_model_from_bytes<float>(bytes, name);
  };
  // tf-keras 2.21's RMSprop names its slots ".../velocity/...".
  const json rmsprop = json::parse(R"({"class_name": "Custom>RMSprop", "config": {"name": "RMSprop",
      "is_legacy_optimizer": false, "learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-07}})");
  auto m = load(tf_keras_h5(rmsprop, {"iteration:0", "RMSprop/velocity/d/kernel:0", "RMSprop/velocity/d/bias:0"}),
                "rms.h5");
  CHECK(m.trainer().optimizer().iterations() == 7);
  REQUIRE(m.trainer().optimizer().slots().size() == 2);
  CHECK(m.trainer().optimizer().slots()[0].state[0][0] == 0.5f);
  // tf-keras 2.21's SGD keeps a momentum even at momentum 0: the step count still comes in.
  const json sgd = json::parse(R"({"class_name": "Custom>SGD", "config": {"name": "SGD", "is_legacy_optimizer": false,
      "learning_rate": 0.01, "momentum": 0.0, "nesterov": false}})");
  CHECK(load(tf_keras_h5(sgd, {"iteration:0", "SGD/m/d/kernel:0", "SGD/m/d/bias:0"}), "sgd.h5")
            .trainer().optimizer().iterations() == 7);

  // Keras 3 numbers its optimizers' names within a session (adam, adam_1, ...) and names the state with it.
  const auto steps = [&](const json& optimizer, bool learning_rate_variable, const std::string& state_name) {
    return load(keras3_file(optimizer, learning_rate_variable, state_name), "a.keras").trainer().optimizer().iterations();
  };
  const json adam = json::parse(R"({"module": "keras.optimizers", "class_name": "Adam",
      "config": {"name": "adam_3", "learning_rate": 0.001}})");
  CHECK(steps(adam, true, "adam_3") == 7);
  CHECK(steps(adam, true, "adam") == 0);  // another optimizer's state
  CHECK(steps(json("adam"), true, "adam_12") == 7);  // compile(optimizer="adam"): Keras's name for the class
  CHECK(steps(json("adam"), true, "rm_sprop") == 0);
  // A schedule in place of the learning rate: no learning_rate variable (iteration, then the slots).
  const json scheduled = json::parse(R"({"module": "keras.optimizers", "class_name": "Adam", "config": {
      "name": "adam_4", "learning_rate": {"module": "keras.optimizers.schedules", "class_name": "ExponentialDecay",
      "config": {"initial_learning_rate": 0.001, "decay_steps": 100, "decay_rate": 0.9}}}})");
  auto s = load(keras3_file(scheduled, false, "adam_4"), "s.keras");
  CHECK(s.trainer().optimizer().iterations() == 7);
  REQUIRE(s.trainer().optimizer().slots().size() == 2);
  CHECK(s.trainer().optimizer().slots()[1].state[1][0] == 0.5f);
}

TEST_CASE("an optimizer with a schedule and state goes out as Keras 3 keeps it, and comes back") {
  Sequential<float> m = from_json(kOneDense);
  const json scheduled = json::parse(R"({"class_name": "Adam", "config": {"learning_rate": {"class_name":
      "ExponentialDecay", "config": {"initial_learning_rate": 0.01, "decay_steps": 10, "decay_rate": 0.5}}}})");
  keras::compile_from_keras(m, json("categorical_crossentropy"), &scheduled, nullptr, "f");
  Tensor<float> x(Shape{4, 2}), y(Shape{4, 3});
  for (Index i = 0; i < 4; ++i) {
    x[2 * i] = static_cast<float>(i);
    y[3 * i + i % 3] = 1;
  }
  m.train_step(x, y);
  for (const auto format : {keras::Format::Keras, keras::Format::H5}) {
    const auto bytes = keras::save_model_to_bytes(m, format);  // threw: the schedule has no constant learning_rate
    auto back = keras::load_model_from_bytes<float>(bytes, "s");
    CHECK(back.trainer().optimizer().iterations() == 1);
    CHECK(back.trainer().optimizer().learning_rate_schedule() != nullptr);
  }
  // Keras 3 has no learning_rate variable beside a schedule: iteration, then 2 x 2 slots.
  const auto zip = keras::save_model_to_bytes(m, keras::Format::Keras);
  const keras::zipfile::Reader archive(zip, "s.keras");
  auto weights = keras::hdf5::File::open_image(archive.read("model.weights.h5", 1 << 20), "weights");
  CHECK(weights.root().group("optimizer/vars").members().size() == 5);
  // In .h5 too the schedule is Keras 3's object, with its module (Keras 3 cannot find the class without it).
  auto h5 = keras::hdf5::File::open_image(keras::save_model_to_bytes(m, keras::Format::H5), "s.h5");
  const json training = json::parse(h5.root().string("training_config"));
  CHECK(training.at("optimizer_config").at("config").at("learning_rate").at("module") == "keras.optimizers.schedules");
}

TEST_CASE("what Keras 3.15 and tf-keras 2.21 have and loom does not is refused by name") {
  const auto layer = [](const std::string& input, const std::string& layers) {
    return error_of([&] {
      from_json(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
          {"class_name": "InputLayer", "config": {"batch_shape": )" + input + R"(, "name": "in"}}, )" + layers + "]}}");
    });
  };
  // BatchNormalization's axis counts the batch: 3 is the channels of an image, 1 its rows.
  CHECK(layer("[null, 8, 8, 3]", R"({"class_name": "BatchNormalization", "config": {"name": "bn", "axis": 1}})")
            .find("'bn' (BatchNormalization): BatchNormalization over axis 1 of its input (None, 8, 8, 3)") !=
        std::string::npos);
  CHECK(layer("[null, 8, 8, 3]", R"({"class_name": "BatchNormalization", "config": {"name": "bn", "axis": [3]}})") == "(no error)");
  CHECK(layer("[null, 4]", R"({"class_name": "BatchNormalization", "config": {"name": "bn", "axis": [1]}})") == "(no error)");
  // Keras 3's LoRA and quantized layers.
  CHECK(layer("[null, 4]", R"({"class_name": "Dense", "config": {"name": "d", "units": 2, "lora_rank": 4}})")
            .find("'d' (Dense): LoRA ('lora_rank')") != std::string::npos);
  CHECK(layer("[null, 8, 8, 3]", R"({"class_name": "Conv2D", "config": {"name": "c", "filters": 2, "kernel_size": 3,
      "lora_rank": 2}})").find("lora_rank") != std::string::npos);
  CHECK(layer("[null, 4]", R"({"class_name": "Dense", "config": {"name": "d", "units": 2, "dtype": {"module":
      "keras.dtype_policies", "class_name": "QuantizedDTypePolicy", "config": {"mode": "int8", "source_name": "float32"}}}})")
            .find("a quantized layer") != std::string::npos);
  CHECK(layer("[null, 4]", R"({"class_name": "Dense", "config": {"name": "d", "units": 2, "dtype": {"module": "keras",
      "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}}})") == "(no error)");  // runs in float32 in loom
  // Loss settings that change the gradient: ignore_class, a reduction other than the batch mean, loss_weights.
  Sequential<float> m = from_json(kOneDense);
  const auto compile = [&](const char* loss) {
    return error_of([&] { keras::compile_from_keras(m, json::parse(loss), nullptr, nullptr, "f"); });
  };
  CHECK(compile(R"({"class_name": "SparseCategoricalCrossentropy", "config": {"ignore_class": 0}})")
            .find("'ignore_class'") != std::string::npos);
  CHECK(compile(R"({"class_name": "CategoricalCrossentropy", "config": {"reduction": "sum"}})")
            .find("the loss reduction 'sum'") != std::string::npos);
  CHECK(compile(R"({"class_name": "CategoricalCrossentropy", "config": {"reduction": "auto", "ignore_class": null}})")
            == "(no error)");
  const auto weights = [](const char* config) {
    const json c = json::parse(config);
    return error_of([&] { keras::impl::check_loss_weights(keras::Fields(c, "compile_config")); });
  };
  CHECK(weights(R"({"loss_weights": [2.0]})").find("'loss_weights' [2.0]") != std::string::npos);
  CHECK(weights(R"({"loss_weights": [1.0]})") == "(no error)");
  CHECK(weights(R"({"loss_weights": {"dense": 1}})") == "(no error)");
  CHECK(weights(R"({"loss_weights": null})") == "(no error)");
}

TEST_CASE("a grouped Conv2D and a Conv2DTranspose's output_padding go to Keras and back") {
  Sequential<float> m(5, "grouped");
  m.add(Conv2D<float>(Conv2DOptions(4, {3, 3})), Shape{8, 8, 2});
  m.add(Conv2D<float>(Conv2DOptions(6, {3, 3}).groups(2).padding(Padding::Same).activation(Activation::ReLU)));
  m.add(Conv2D<float>(Conv2DOptions(6, {1, 1}).groups(3).strides(Size2{2, 2})));
  m.add(Conv2DTranspose<float>(Conv2DOptions(2, {3, 3}).strides(Size2{2, 2}).padding(Padding::Same), Size2{0, 1}));
  m.add(Conv2DTranspose<float>(Conv2DOptions(2, {2, 2})));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(3)));
  train_a_little(m);
  CHECK(m.layer(1).parameters()[0].value->shape() == Shape{3, 3, 2, 6});
  const json out = keras::model_to_config(m, true).at("config").at("layers");
  CHECK(out[1].at("config").at("groups") == 1);
  CHECK(out[2].at("config").at("groups") == 2);
  CHECK(out[3].at("config").at("groups") == 3);
  CHECK(out[4].at("config").at("output_padding") == json::parse("[0, 1]"));
  CHECK(out[5].at("config").at("output_padding").is_null());
  check_keras_round_trip(m);
}

TEST_CASE("activations and the activation layers go to Keras and back, each Keras's way") {
  Sequential<float> m(5, "activations");
  m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).activation(Activation::GELU)), Shape{8, 8, 2});
  m.add(PReLU<float>({1, 2}, 0.25));
  m.add(LeakyReLU<float>(0.2));
  m.add(ELU<float>(0.5));
  m.add(ReLU<float>(4.0, 0.1, 0.2));
  m.add(ActivationLayer<float>(Activation::Softsign));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(6).activation(Activation::SiLU)));
  m.add(Dense<float>(DenseOptions(3).activation(Activation::SELU)));
  train_a_little(m);
  check_keras_round_trip(m, -1, 1);
  TempDir dir;
  // Keras 3 names LeakyReLU's slope negative_slope; tf.keras 2, which reads the .h5, alpha.
  const json v3 = keras::model_to_config(m, true);
  const json v2 = keras::model_to_config(m, false);
  CHECK(v3.at("config").at("layers")[3].at("config").at("negative_slope") == 0.2);
  CHECK(!v3.at("config").at("layers")[3].at("config").contains("alpha"));
  CHECK(v2.at("config").at("layers")[3].at("config").at("alpha") == 0.2);
  CHECK(v2.at("config").at("layers")[2].at("config").at("alpha_initializer").at("class_name") == "Constant");
  CHECK(v2.at("config").at("layers")[2].at("config").at("shared_axes") == json::array({1, 2}));
  CHECK(v2.at("config").at("layers")[5].at("config").at("max_value") == 4.0);

  // hard_sigmoid means what the Keras that saved the file means by it.
  const std::string hard = R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
      {"class_name": "InputLayer", "config": {"batch_shape": [null, 3], "name": "in"}},
      {"class_name": "Activation", "config": {"name": "h", "activation": "hard_sigmoid"}}]}})";
  CHECK(keras::model_from_config<float>(json::parse(hard), "k3", 1 << 20, "3.15.0").layer("h").activation() ==
        Activation::HardSigmoid);
  CHECK(keras::model_from_config<float>(json::parse(hard), "tfk2", 1 << 20, "2.21.0").layer("h").activation() ==
        Activation::HardSigmoidKeras2);
  // What Keras has no name for is not written, and Keras 3's hard_sigmoid
  // not into the .h5 tf.keras 2 would read otherwise.
  Sequential<float> tanh_gelu(1, "g");
  tanh_gelu.add(Dense<float>(DenseOptions(2).activation(Activation::GELUTanh)), Shape{3});
  CHECK(error_of([&] { keras::save_model(tanh_gelu, dir.file("g.keras")); })
            .find("layer 'dense' (Dense): activation 'gelu_tanh' has no Keras name") != std::string::npos);
  Sequential<float> hard_model(1, "h");
  hard_model.add(ActivationLayer<float>(Activation::HardSigmoid), Shape{3});
  keras::save_model(hard_model, dir.file("h.keras"));
  CHECK(error_of([&] { keras::save_model(hard_model, dir.file("h.h5")); }).find("not written to a legacy .h5") !=
        std::string::npos);
  // Keras's own configs: tf.keras 2's LeakyReLU alpha, a null max_value, PReLU's shared_axes as one integer.
  auto layers = from_json(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
      {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4, 3], "name": "in"}},
      {"class_name": "LeakyReLU", "config": {"name": "l", "alpha": 0.1}},
      {"class_name": "ReLU", "config": {"name": "r", "max_value": null, "negative_slope": 0.0, "threshold": 0.0}},
      {"class_name": "PReLU", "config": {"name": "p", "shared_axes": 1, "alpha_initializer": {"class_name": "Zeros", "config": {}}}},
      {"class_name": "ELU", "config": {"name": "e"}}]}})");
  CHECK(layers.layer("l").config().real("negative_slope") == doctest::Approx(0.1));
  CHECK(layers.layer("r").activation() == Activation::ReLU);
  CHECK(layers.layer("p").config().integers("shared_axes") == std::vector<Index>{1});
  CHECK(layers.layer("e").config().real("alpha") == 1.0);
}

TEST_CASE("LayerNormalization, SpatialDropout2D, GaussianNoise and weight regularizers come in as Keras writes them and go out the same") {
  const std::string input = R"({"class_name": "InputLayer", "config": {"batch_shape": [null, 6, 6, 3], "name": "in"}})";
  const auto model = [&](const std::string& layers) {
    return from_json(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [)" + input + ", " + layers + "]}}");
  };
  // Keras 3's objects (module, registered_name) and tf.keras 2's ({"class_name", "config"}), a factor left
  // out (Keras's default), snake-case class names.
  Sequential<float> m = model(R"(
      {"class_name": "Conv2D", "config": {"name": "conv", "filters": 4, "kernel_size": 3, "padding": "same",
          "kernel_regularizer": {"module": "keras.regularizers", "class_name": "L2", "config": {"l2": 0.001},
                                 "registered_name": null},
          "bias_regularizer": {"class_name": "L1", "config": {"l1": 0.0010000000474974513}},
          "activity_regularizer": null, "kernel_constraint": null}},
      {"class_name": "BatchNormalization", "config": {"name": "bn", "axis": -1,
          "gamma_regularizer": {"class_name": "L2", "config": {}}, "beta_regularizer": null}},
      {"class_name": "SpatialDropout2D", "config": {"name": "drop", "rate": 0.25, "seed": null, "dtype": "float32",
          "data_format": "channels_last"}},
      {"class_name": "GaussianNoise", "config": {"name": "noise", "stddev": 0.2, "seed": 7}},
      {"class_name": "LayerNormalization", "config": {"name": "ln", "axis": [-1], "epsilon": 0.01, "center": true,
          "scale": true, "rms_scaling": false, "beta_initializer": {"module": "keras.initializers", "class_name": "Zeros",
          "config": {}, "registered_name": null}, "gamma_regularizer": {"class_name": "l1_l2", "config": {"l1": 0.5}},
          "beta_regularizer": null, "gamma_constraint": null}},
      {"class_name": "LayerNormalization", "config": {"name": "ln_images", "axis": [2, 3], "epsilon": 0.001,
          "center": false, "scale": true, "trainable": true}},
      {"class_name": "Flatten", "config": {"name": "flat"}},
      {"class_name": "Dense", "config": {"name": "out", "units": 3, "activation": "softmax",
          "kernel_regularizer": {"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.01}},
          "bias_regularizer": {"module": "keras.regularizers", "class_name": "L1", "config": {},
                               "registered_name": null}}})");
  CHECK(m.layer("conv").config().text("kernel_regularizer") == "0,0.001");
  CHECK(m.layer("conv").config().text("bias_regularizer") == "0.0010000000474974513,0");
  CHECK(m.layer("bn").config().text("gamma_regularizer") == "0,0.01");
  CHECK(!m.layer("bn").config().has("beta_regularizer"));
  CHECK(m.layer("drop").config() == Config().set("rate", 0.25));
  CHECK(m.layer("noise").config() == Config().set("stddev", 0.2).set("seed", 7));
  CHECK(m.layer("ln").config() ==
        Config().set("axis", "-1").set("epsilon", 0.01).set("center", true).set("scale", true).set("gamma_regularizer", "0.5,0"));
  CHECK(m.layer("ln_images").config().integers("axis") == std::vector<Index>{2, 3});
  CHECK(m.layer("ln_images").parameters()[0].value->shape() == Shape{6, 4});
  CHECK(m.layer("ln_images").parameters().size() == 1);  // center false: no beta
  CHECK(m.layer("out").config().text("kernel_regularizer") == "0,0.01");
  CHECK(m.layer("out").config().text("bias_regularizer") == "0.01,0");
  // The regularizers reach the parameters, and so the training step.
  CHECK(m.layer("conv").parameters()[0].regularizer == L2(0.001));
  CHECK(m.layer("out").parameters()[1].regularizer == L1(0.01));

  // Out again: Keras 3's objects, for .keras and .h5 alike; no rms_scaling for tf.keras 2, no trainable for
  // Keras 3's SpatialDropout2D (its constructor takes none).
  const json out = keras::model_to_config(m, true).at("config").at("layers");
  const json conv = out[1].at("config"), drop = out[3].at("config"), ln = out[5].at("config"), dense = out[8].at("config");
  CHECK(conv.at("kernel_regularizer") == json::parse(R"({"module": "keras.regularizers", "class_name": "L2",
      "config": {"l2": 0.001}, "registered_name": null})"));
  CHECK(conv.at("bias_regularizer").at("class_name") == "L1");
  CHECK(conv.at("activity_regularizer").is_null());
  CHECK(out[2].at("config").at("gamma_regularizer").at("config") == json({{"l2", 0.01}}));
  CHECK(out[2].at("config").at("beta_regularizer").is_null());
  CHECK(dense.at("kernel_regularizer").at("class_name") == "L2");  // L1L2 with l1 0 is Keras's L2
  CHECK(dense.at("bias_regularizer") == json::parse(R"({"module": "keras.regularizers", "class_name": "L1",
      "config": {"l1": 0.01}, "registered_name": null})"));
  CHECK(out[3].at("class_name") == "SpatialDropout2D");
  CHECK(!drop.contains("trainable"));
  CHECK(drop.at("data_format") == "channels_last");
  CHECK(drop.at("rate") == 0.25);
  CHECK(drop.at("seed").is_null());
  CHECK(out[4].at("config").at("stddev") == 0.2);
  CHECK(out[4].at("config").at("seed") == 7);
  CHECK(ln.at("axis") == json::array({-1}));
  CHECK(ln.at("rms_scaling") == false);
  CHECK(ln.at("gamma_regularizer").at("class_name") == "L1");
  CHECK(ln.at("gamma_initializer").at("class_name") == "Ones");
  const json h5 = keras::model_to_config(m, false).at("config").at("layers");
  CHECK(!h5[5].at("config").contains("rms_scaling"));
  CHECK(h5[1].at("config").at("kernel_regularizer") == conv.at("kernel_regularizer"));
  // Both formats, and back: the same configs and predictions.
  check_keras_round_trip(m);

  // What each refuses, naming the layer and the option.
  const auto refused = [&](const std::string& layer) { return error_of([&] { model(layer); }); };
  CHECK(refused(R"({"class_name": "Conv2D", "config": {"name": "c", "filters": 2, "kernel_size": 3,
      "activity_regularizer": {"class_name": "L2", "config": {"l2": 0.1}}}})")
            .find("'c' (Conv2D): an activity_regularizer (loom regularizes weights only) is not supported") != std::string::npos);
  CHECK(refused(R"({"class_name": "Dense", "config": {"name": "d", "units": 2,
      "kernel_regularizer": {"class_name": "OrthogonalRegularizer", "config": {"factor": 0.01}}}})")
            .find("kernel_regularizer 'OrthogonalRegularizer' (loom has L1, L2 and L1L2)") != std::string::npos);
  CHECK(refused(R"({"class_name": "Dense", "config": {"name": "d", "units": 2, "kernel_regularizer": "l2"}})")
            .find("'kernel_regularizer' should be a regularizer object") != std::string::npos);
  CHECK(refused(R"({"class_name": "Dense", "config": {"name": "d", "units": 2,
      "bias_regularizer": {"class_name": "L2", "config": {"l2": -1}}}})").find("'bias_regularizer'") != std::string::npos);
  CHECK(refused(R"({"class_name": "LayerNormalization", "config": {"name": "l", "rms_scaling": true}})")
            .find("'l' (LayerNormalization): LayerNormalization with rms_scaling") != std::string::npos);
  CHECK(refused(R"({"class_name": "LayerNormalization", "config": {"name": "l", "axis": 1}})")
            .find("LayerNormalization 'l': axis [1] of its input (None, 6, 6, 3) is not its last axis") != std::string::npos);
  CHECK(refused(R"({"class_name": "LayerNormalization", "config": {"name": "l", "axis": 0}})")
            .find("'axis' should be an axis after the batch") != std::string::npos);
  CHECK(refused(R"({"class_name": "SpatialDropout2D", "config": {"name": "s", "rate": 0.1, "data_format": "channels_first"}})")
            .find("'s' (SpatialDropout2D): data_format 'channels_first'") != std::string::npos);
  CHECK(refused(R"({"class_name": "SpatialDropout2D", "config": {"name": "s", "rate": 1.0}})").find("'rate'") !=
        std::string::npos);
  CHECK(refused(R"({"class_name": "GaussianNoise", "config": {"name": "g", "stddev": -1}})").find("'stddev'") !=
        std::string::npos);
  TempDir dir;
  Sequential<float> loud(3, "loud");
  loud.add(GaussianNoise<float>(1.5), Shape{4});
  loud.add(Dense<float>(DenseOptions(2)));
  CHECK(error_of([&] { keras::save_model(loud, dir.file("loud.keras")); }).find("Keras 3 takes 0 to 1") !=
        std::string::npos);
}

TEST_CASE("a model nested in a model (Keras's augmentation block) comes in as a graph layer of its chain") {
  auto model = from_json(R"({"class_name": "Sequential", "config": {"name": "outer", "layers": [
      {"class_name": "InputLayer", "config": {"batch_shape": [null, 6, 6, 1], "name": "in"}},
      {"class_name": "Sequential", "config": {"name": "augmentation", "layers": [
          {"class_name": "InputLayer", "config": {"batch_shape": [null, 6, 6, 1], "name": "aug_in"}},
          {"class_name": "RandomFlip", "config": {"name": "flip", "mode": "horizontal"}},
          {"class_name": "Conv2D", "config": {"name": "inner_conv", "filters": 2, "kernel_size": 3, "activation": "relu"}}]}},
      {"class_name": "Flatten", "config": {"name": "flat"}},
      {"class_name": "Dense", "config": {"name": "out", "units": 3}}]}})");
  REQUIRE(model.size() == 3);
  const auto* nested = dynamic_cast<const Graph<float>*>(&model.layer(0));
  REQUIRE(nested != nullptr);
  CHECK(nested->name() == "augmentation");
  CHECK(nested->layers().size() == 2);
  CHECK(nested->layer("inner_conv").output_shape() == Shape{4, 4, 2});
  CHECK(model.output_shape() == Shape{3});
  // Its weights are the model's: one Conv2D's and the Dense's.
  CHECK(model.parameters().size() == 4);
  // A nested model with branches, or with no input shape, is refused by name.
  CHECK(error_of([] {
          from_json(R"({"class_name": "Sequential", "config": {"name": "outer", "layers": [
              {"class_name": "InputLayer", "config": {"batch_shape": [null, 4], "name": "in"}},
              {"class_name": "Sequential", "config": {"name": "bare", "layers": [
                  {"class_name": "Dense", "config": {"name": "d", "units": 2}}]}}]}})");
        }).find("'bare' (Sequential): a nested model whose config gives no input shape") != std::string::npos);
}
