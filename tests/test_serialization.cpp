// Saving and loading: round trips bit for bit, exact resume (after an epoch
// and mid-epoch), weights-only files, every corruption a FormatError naming
// the file, atomic writes; and the fit() callbacks and the NaN guard.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "gradient_check.hpp"
#include "notebook_model.hpp"
#include "test_support.hpp"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::error_of;
using loom::testing::random_data;
using loom::testing::TempDir;
using loom::testing::weights_of;

namespace {

/// A small model with every kind of state: BN buffers, dropout streams, optimizer slots.
Sequential<float> small_model(std::uint64_t seed) {
  Sequential<float> m(seed);
  m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)), Shape{8, 8, 1});
  m.add(BatchNormalization<float>());
  m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2}).padding(Padding::Same)));
  m.add(Dropout<float>(0.25));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(8).activation(Activation::ReLU)));
  m.add(Dropout<float>(0.1, 99));
  m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  m.compile(SparseCategoricalCrossentropy<float>(), Adam<float>(), {"accuracy"});
  return m;
}

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

std::string read(const std::string& path) { return detail::read_whole_file(path); }
void write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Frames a hand-made payload as a model file, with a correct checksum.
std::string framed(const std::string& payload, std::uint32_t version = 1, std::uint8_t scalar = 4) {
  ByteWriter w;
  w.bytes.append("LOOMMODL", 8);
  w.u32(version);
  w.u32(0);
  w.u8(scalar);
  w.u64(payload.size());
  w.bytes += payload;
  w.u32(crc32(reinterpret_cast<const unsigned char*>(payload.data()), payload.size()));
  return w.bytes;
}

}  // namespace

TEST_CASE("save and load: the notebook's model predicts bit for bit the same, summary and all") {
  TempDir dir;
  auto model = examples::notebook_model<float>(3);
  model.compile("categorical_crossentropy", {"accuracy"});
  Tensor<float> x(Shape{16, 28, 28, 1}), y(Shape{16, 10});
  Rng rng(1);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (Index i = 0; i < 16; ++i) y(i, i % 10) = 1;
  model.fit(x, y, FitOptions<float>().epochs(2).batch_size(8).verbose(0));  // BN moving statistics move
  const std::string path = dir.file("notebook.loom");
  model.save(path);
  CHECK(dir.count() == 1);  // no temporary file left behind

  auto loaded = Sequential<float>::load(path);
  CHECK(same_bits(loaded.predict(x), model.predict(x)));
  CHECK(loaded.count_params() == 256867);
  std::ostringstream a, b;
  model.summary(a);
  loaded.summary(b);
  CHECK(a.str() == b.str());
  CHECK(loaded.compiled());
  CHECK(loaded.optimizer().type() == "RMSprop");
  CHECK(loaded.optimizer().iterations() == 4);
  CHECK(loaded.history()["loss"] == model.history()["loss"]);
  CHECK(loaded.to_bytes() == model.to_bytes());  // every bit of state survives

  // Without the optimizer: a smaller file, a model that is not compiled.
  model.save(path, false);
  auto bare = Sequential<float>::load(path);
  CHECK_FALSE(bare.compiled());
  CHECK(same_bits(bare.predict(x), model.predict(x)));
}

TEST_CASE("resume after an epoch or mid-epoch ends with the same weights as an uninterrupted fit") {
  TempDir dir;
  Tensor<float> x, y;
  random_data(100, x, y);
  const auto opts = FitOptions<float>().epochs(3).batch_size(16).verbose(0);

  auto straight = small_model(5);
  straight.fit(x, y, opts);
  const auto expected = weights_of(straight);

  SUBCASE("checkpoint after epoch 1, load, resume") {
    auto first = small_model(5);
    first.fit(x, y, FitOptions<float>(opts).epochs(1));
    first.save(dir.file("e1.loom"));
    auto resumed = Sequential<float>::load(dir.file("e1.loom"));
    resumed.fit(x, y, FitOptions<float>(opts).resume(true));
    CHECK(weights_of(resumed) == expected);
    CHECK(resumed.history()["loss"] == straight.history()["loss"]);
    CHECK(resumed.to_bytes() == straight.to_bytes());
  }
  SUBCASE("stopped after one batch by the stop flag, saved, loaded, resumed") {
    auto first = small_model(5);
    std::atomic<bool> stop{true};
    first.fit(x, y, FitOptions<float>(opts).stop_flag(&stop));
    CHECK(first.interrupted());
    CHECK(first.position().epoch == 0);
    CHECK(first.position().step == 1);
    first.save(dir.file("mid.loom"));
    auto resumed = Sequential<float>::load(dir.file("mid.loom"));
    CHECK(resumed.position().step == 1);
    resumed.fit(x, y, FitOptions<float>(opts).resume(true));
    CHECK(weights_of(resumed) == expected);
  }
  SUBCASE("resuming on data of another size is refused") {
    auto first = small_model(5);
    first.fit(x, y, FitOptions<float>(opts).epochs(1));
    Tensor<float> x2, y2;
    random_data(50, x2, y2);
    CHECK_THROWS_AS(first.fit(x2, y2, FitOptions<float>(opts).resume(true)), ConfigError);
  }
}

TEST_CASE("save_weights / load_weights into a model of the same architecture") {
  TempDir dir;
  Tensor<float> x, y;
  random_data(40, x, y);
  auto trained = small_model(1);
  trained.fit(x, y, FitOptions<float>().epochs(1).verbose(0));
  trained.save_weights(dir.file("w.weights"));
  auto fresh = small_model(2);
  CHECK_FALSE(same_bits(fresh.predict(x), trained.predict(x)));
  fresh.load_weights(dir.file("w.weights"));
  CHECK(same_bits(fresh.predict(x), trained.predict(x)));

  Sequential<float> other;
  other.add(Flatten<float>(), Shape{8, 8, 1});
  other.add(Dense<float>(DenseOptions(3)));
  CHECK(error_of([&] { other.load_weights(dir.file("w.weights")); }) ==
        dir.file("w.weights") + ": the file holds 8 layers, the model has 2");
  CHECK_THROWS_AS(Sequential<float>::load(dir.file("w.weights")), FormatError);  // a weights file is not a model
  trained.save(dir.file("m.loom"));
  CHECK(error_of([&] { fresh.load_weights(dir.file("m.loom")); }).find("this is a model file") != std::string::npos);
}

TEST_CASE("load names the file and the first thing that does not match") {
  TempDir dir;
  Tensor<float> x, y;
  random_data(20, x, y);
  auto model = small_model(1);
  model.fit(x, y, FitOptions<float>().epochs(1).verbose(0));
  const std::string good = model.to_bytes();
  const std::string p = dir.file("bad.loom");
  const auto load_error = [&](const std::string& bytes) {
    write(p, bytes);
    return error_of([&] { Sequential<float>::load(p); });
  };

  CHECK(error_of([&] { Sequential<float>::load(dir.file("missing.loom")); }).rfind(dir.file("missing.loom") + ": cannot open", 0) == 0);
  CHECK(load_error("") == p + ": not a loom model file (bad magic number)");
  CHECK(load_error("GIF89a" + good) == p + ": not a loom model file (bad magic number)");
  CHECK(load_error(good.substr(0, 20)) == p + ": truncated: 20 bytes, too short for a model file");
  // Truncated anywhere after the header: the declared length no longer matches.
  for (std::size_t cut : {std::size_t(30), good.size() / 2, good.size() - 1}) {
    CHECK(load_error(good.substr(0, cut)).rfind(p + ": truncated: the header says ", 0) == 0);
  }
  CHECK(load_error(good + "x").rfind(p + ": too long: the header says ", 0) == 0);
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  CHECK(load_error(flipped) == p + ": checksum mismatch: the file is corrupt");
  std::string v4 = good;
  v4[8] = 4;
  CHECK(load_error(v4) == p + ": format version 4, this loom reads versions 1 to 3");
  CHECK(error_of([&] { Sequential<double>::load_bytes(good, "f"); }) ==
        "f: saved with float parameters, loading as double");
  // A well-framed payload that lies: an unknown layer, a layer too big for the file.
  ByteWriter w;
  w.str("m");
  w.u64(0);
  w.shape(Shape{1000});
  w.rng({});
  w.rng({});
  w.u32(1);
  w.str("Dense");
  w.str("dense");
  w.pairs({{"units", "1073741824"}, {"activation", "linear"}, {"use_bias", "1"}});
  CHECK(load_error(framed(w.bytes)).rfind(p + ": layer 1 'dense' (Dense): Dense 'dense': its parameters would need more "
                                            "than the ",
                                        0) == 0);
  ByteWriter u;
  u.str("m");
  u.u64(0);
  u.shape(Shape{10});
  u.rng({});
  u.rng({});
  u.u32(1);
  u.str("Transformer");
  u.str("t");
  u.pairs({});
  CHECK(load_error(framed(u.bytes)).rfind(p + ": layer 1 't' (Transformer): unknown layer 'Transformer' (known: ", 0) == 0);
}

TEST_CASE("saving is atomic: a failed save leaves the old file and no temporary file") {
  TempDir dir;
  auto model = small_model(1);
  const std::string path = dir.file("m.loom");
  model.save(path);
  const std::string before = read(path);
  CHECK_THROWS_AS(model.save(dir.file("no/such/dir/m.loom")), IOError);
  fs::create_directory(dir.file("taken"));
  CHECK_THROWS_AS(model.save(dir.file("taken")), IOError);  // rename onto a directory fails
  CHECK(read(path) == before);
  CHECK(dir.count() == 2);  // m.loom and the directory: no temporary files
}

TEST_CASE("ModelCheckpoint saves every epoch, or only the best; EarlyStopping stops and restores") {
  TempDir dir;
  Tensor<float> x, y;
  random_data(64, x, y);
  auto model = small_model(3);
  auto every = std::make_shared<ModelCheckpoint<float>>(dir.file("e{epoch}.loom"));
  auto best = std::make_shared<ModelCheckpoint<float>>(
      dir.file("best.weights"), ModelCheckpointOptions().monitor("loss").save_best_only(true).save_weights_only(true));
  model.fit(x, y, FitOptions<float>().epochs(3).verbose(0).callback(every).callback(best));
  for (int e = 1; e <= 3; ++e) CHECK(fs::exists(dir.file("e" + std::to_string(e) + ".loom")));
  CHECK(Sequential<float>::load(dir.file("e3.loom")).position().epoch == 3);
  CHECK(fs::exists(dir.file("best.weights")));

  // A metric that never improves: stop after patience 1, put the best weights back.
  auto stop = std::make_shared<EarlyStopping<float>>(
      EarlyStoppingOptions().monitor("loss").patience(1).restore_best_weights(true).min_delta(1e9));
  std::vector<float> after_first;
  auto probe = std::make_shared<LambdaCallback<float>>([&](Model<float>&, int epoch, const Logs&) {
    if (epoch == 1) after_first = weights_of(model);
  });
  const History h = model.fit(x, y, FitOptions<float>().epochs(10).verbose(0).callback(probe).callback(stop));
  CHECK(h.epochs() == 3);
  CHECK(stop->stopped_epoch() == 3);
  CHECK(stop->best_epoch() == 1);
  CHECK(weights_of(model) == after_first);
  auto wrong = std::make_shared<EarlyStopping<float>>(EarlyStoppingOptions().monitor("val_loss"));
  CHECK_THROWS_WITH_AS(model.fit(x, y, FitOptions<float>().verbose(0).callback(wrong)),
                       "EarlyStopping: no metric 'val_loss' to monitor; fit records: loss, accuracy", ConfigError);
}

TEST_CASE("fit stops on a loss that is not finite, naming epoch, batch and layer") {
  Tensor<float> x, y;
  random_data(64, x, y);
  auto model = small_model(3);
  Tensor<float> bad = x;
  bad[3 * 64 + 5] = std::numeric_limits<float>::quiet_NaN();  // in sample 3 of the first batch
  const std::string msg = error_of([&] { model.fit(bad, y, FitOptions<float>().verbose(0).shuffle(false).batch_size(16)); });
  CHECK(msg == "fit: epoch 1, batch 1 of 4: loss is NaN: the input batch holds values that are not finite");

  auto blown = small_model(3);
  Tensor<float>& kernel = *blown.layer("dense").parameters()[0].value;
  kernel.fill(std::numeric_limits<float>::infinity());
  const std::string m2 = error_of([&] { blown.fit(x, y, FitOptions<float>().verbose(0)); });
  CHECK(m2.find("first non-finite output in layer 'dense' (Dense)") != std::string::npos);
  CHECK_THROWS_AS(blown.fit(x, y, FitOptions<float>().verbose(0)), NumericError);
}

TEST_CASE("the training state's one serializer: what it writes it reads back, field for field") {
  Tensor<float> x, y;
  random_data(40, x, y);
  auto model = small_model(11);
  auto stop = std::make_shared<EarlyStopping<float>>(EarlyStoppingOptions().monitor("loss").patience(5));
  std::atomic<bool> ctrl_c{false};
  auto press = std::make_shared<LambdaCallback<float>>();
  press->on_batch_end_fn = [&](Model<float>& m, long batch, const Logs&) { ctrl_c = m.position().epoch == 1 && batch == 2; };
  model.fit(x, y, FitOptions<float>().epochs(3).batch_size(8).verbose(0).callback(stop).callback(press).stop_flag(&ctrl_c));
  REQUIRE(model.interrupted());  // mid-epoch: running sums, a shuffled order, a history, a callback's state
  const TrainingState<float> state = model.trainer().state();
  REQUIRE(state.position.epoch == 1);
  REQUIRE(state.position.step == 3);  // the flag, set after batch 2, is read as batch 3 starts
  REQUIRE(state.order.size() == 40);
  REQUIRE(state.optimizer_steps == 8);
  REQUIRE(state.history.epochs() == 1);
  REQUIRE(state.callback_states.size() == 1);

  ByteWriter w;
  state.write(w);
  ByteReader r("state", reinterpret_cast<const unsigned char*>(w.bytes.data()), w.bytes.size());
  TrainingState<float> back;
  back.read(r);
  CHECK(r.remaining() == 0);
  ByteWriter again;
  back.write(again);
  CHECK(again.bytes == w.bytes);
  CHECK(back.position.loss_sum == state.position.loss_sum);
  CHECK(back.position.seen == state.position.seen);
  CHECK(back.order == state.order);
  CHECK(back.history.history == state.history.history);
  CHECK(back.callback_states == state.callback_states);

  // The model file holds that same state: loaded, the model gives it back byte for byte,
  // and its training stream too.
  const auto loaded = Sequential<float>::load_bytes(model.to_bytes(), "memory");
  const TrainingState<float> from_file = loaded.trainer().state();
  ByteWriter w2;
  from_file.write(w2);
  CHECK(w2.bytes == w.bytes);
  CHECK(from_file.stream == state.stream);
}

TEST_CASE("a model trained by plain SGD, whose optimizer holds no state, saves and loads") {
  Sequential<float> m(3);
  m.add(Flatten<float>(), Shape{4, 4, 1});
  m.add(Dense<float>(DenseOptions(64).activation(Activation::ReLU)));
  m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  m.compile(CategoricalCrossentropy<float>(), SGD<float>());
  Tensor<float> x(Shape{8, 4, 4, 1}), y(Shape{8, 3});
  Rng rng(1);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (Index i = 0; i < 8; ++i) y(i, i % 3) = 1;
  m.fit(x, y, FitOptions<float>().epochs(1).batch_size(4).verbose(0));
  loom::testing::TempDir dir;
  m.save(dir.file("sgd.loom"));
  Sequential<float> again = Sequential<float>::load(dir.file("sgd.loom"));
  const Tensor<float> a = m.predict(x), b = again.predict(x);
  CHECK(std::equal(a.begin(), a.end(), b.begin()));
  // A truncated file still names what is missing.
  std::ifstream in(dir.file("sgd.loom"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(dir.file("cut.loom"), std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  CHECK_THROWS_AS(Sequential<float>::load(dir.file("cut.loom")), FormatError);
}
