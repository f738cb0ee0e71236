// IDX reading (plain and gzip) and its error paths, the Fashion-MNIST loader
// on the real files, the notebook's preprocessing helpers, and the
// confusion-matrix analysis on hand-made predictions.
#include <doctest/doctest.h>

#include <loom/data/encoding.hpp>
#include <loom/data/fashion_mnist.hpp>
#include <loom/data/idx.hpp>
#include <loom/loom.hpp>

#include "test_support.hpp"

#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::error_of;
using loom::testing::TempDir;

namespace {


void write_bytes(const std::string& path, const std::vector<unsigned char>& bytes, bool gzip = false) {
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                static_cast<std::streamsize>(bytes.size()));
  }
}

std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// A valid u8 IDX file of dims with payload 0, 1, 2, ...
std::vector<unsigned char> idx_u8(std::vector<std::uint32_t> dims) {
  std::vector<unsigned char> b{0, 0, 0x08, static_cast<unsigned char>(dims.size())};
  std::size_t n = 1;
  for (auto d : dims) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>((d >> s) & 0xff));
    n *= d;
  }
  for (std::size_t i = 0; i < n; ++i) b.push_back(static_cast<unsigned char>(i % 251));
  return b;
}


}  // namespace

TEST_CASE("IDX: round trip of plain and gzipped files, detected by content") {
  TempDir dir;
  Tensor<float> t(Shape{3, 4, 5});
  for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<float>((i * 7) % 256);
  for (bool gzip : {false, true}) {
    CAPTURE(gzip);
    const std::string path = dir.file(gzip ? "a.idx.gz" : "a.idx");
    data::write_idx_u8(path, t, gzip);
    CHECK_FALSE(fs::exists(path + ".tmp"));
    const Tensor<float> back = data::read_idx<float>(path);
    CHECK(back.shape() == t.shape());
    CHECK(std::equal(back.begin(), back.end(), t.begin()));
    // The name does not matter: a gzipped file without .gz, a plain one with it.
    const std::string renamed = dir.file(gzip ? "plain-name" : "looks.gz");
    fs::copy_file(path, renamed);
    CHECK(data::read_idx<double>(renamed).size() == t.size());
  }
}

TEST_CASE("IDX: other element types are decoded big-endian") {
  TempDir dir;
  // i16 values -2 and 300, f32 value 1.5
  write_bytes(dir.file("s16"), {0, 0, 0x0B, 1, 0, 0, 0, 2, 0xff, 0xfe, 0x01, 0x2c});
  const auto s = data::read_idx<double>(dir.file("s16"));
  CHECK(s[0] == -2.0);
  CHECK(s[1] == 300.0);
  write_bytes(dir.file("f32"), {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3f, 0xc0, 0, 0});
  CHECK(data::read_idx<float>(dir.file("f32"))[0] == 1.5f);
}

TEST_CASE("IDX: every malformed file is a FormatError naming the file and the fault") {
  TempDir dir;
  const std::string p = dir.file("bad");
  auto bytes = idx_u8({2, 3, 3});

  SUBCASE("missing file") {
    CHECK(error_of([&] { data::read_idx<float>(dir.file("nope")); }).find("nope: cannot open") != std::string::npos);
    CHECK_THROWS_AS(data::read_idx<float>(dir.file("nope")), IOError);
  }
  SUBCASE("empty file") {
    write_bytes(p, {});
    CHECK(error_of([&] { data::read_idx<float>(p); }) ==
          p + ": truncated: 0 bytes, too short for an IDX header");
  }
  SUBCASE("wrong magic") {
    bytes[0] = 0x12;
    write_bytes(p, bytes);
    CHECK_THROWS_AS(data::read_idx<float>(p), FormatError);
    CHECK(error_of([&] { data::read_idx<float>(p); }).rfind(p + ": not an IDX file: magic 0x12 0x00 0x08 0x03", 0) == 0);
  }
  SUBCASE("unknown element type") {
    bytes[2] = 0x07;
    write_bytes(p, bytes);
    CHECK(error_of([&] { data::read_idx<float>(p); }).find("not an IDX file") != std::string::npos);
  }
  SUBCASE("rank 0 or too large") {
    write_bytes(p, {0, 0, 8, 0});
    CHECK(error_of([&] { data::read_idx<float>(p); }) == p + ": IDX rank 0 is not in [1, 6]");
  }
  SUBCASE("header cut short") {
    write_bytes(p, {0, 0, 8, 3, 0, 0, 0, 2, 0, 0});
    CHECK(error_of([&] { data::read_idx<float>(p); }) == p + ": truncated: the header needs 16 bytes, the data has 10");
  }
  SUBCASE("truncated payload, plain and gzip") {
    bytes.resize(bytes.size() - 5);
    for (bool gz : {false, true}) {
      write_bytes(p, bytes, gz);
      CHECK(error_of([&] { data::read_idx<float>(p); }) ==
            p + ": truncated: the header says 2x3x3 (18 bytes of data), the file holds 13");
    }
  }
  SUBCASE("data past the end") {
    bytes.push_back(1);
    write_bytes(p, bytes);
    CHECK(error_of([&] { data::read_idx<float>(p); }) ==
          p + ": too long: the header says 2x3x3 (18 bytes of data), the file holds 19");
  }
  SUBCASE("absurd dimensions are refused before any allocation") {
    write_bytes(p, {0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3});
    CHECK(error_of([&] { data::read_idx<float>(p); }).find("need more than the limit of 1073741824 bytes") !=
          std::string::npos);
  }
  SUBCASE("corrupt gzip stream") {
    write_bytes(p, bytes, true);
    auto gz = read_bytes(p);
    for (std::size_t i = 12; i < gz.size() - 8; ++i) gz[i] ^= 0x5a;
    write_bytes(p, gz);
    CHECK(error_of([&] { data::read_idx<float>(p); }).rfind(p + ": corrupt or truncated gzip stream", 0) == 0);
  }
  SUBCASE("gzip stream cut short") {
    write_bytes(p, bytes, true);
    auto gz = read_bytes(p);
    gz.resize(gz.size() / 2);
    write_bytes(p, gz);
    CHECK(error_of([&] { data::read_idx<float>(p); }).rfind(p + ": corrupt or truncated gzip stream", 0) == 0);
  }
  SUBCASE("a gzip bomb stops at the limit") {
    std::vector<unsigned char> big = idx_u8({1});
    big.resize(4 + 4 + 3000000, 0);  // a header for 1 byte, then 3 MB of zeros
    write_bytes(p, big, true);
    data::IdxLimits small;
    small.max_payload_bytes = 1 << 20;
    CHECK(error_of([&] { data::read_idx<float>(p, small); }).find("inflates to more than the limit") !=
          std::string::npos);
  }
}

TEST_CASE("Fashion-MNIST: errors name the missing file and the package, or the files that disagree") {
  TempDir dir;
  const std::string msg = error_of([&] { datasets::fashion_mnist::load<float>(dir.path.string()); });
  CHECK(msg.find("Fashion-MNIST not found: " + dir.path.string() + " has no train-images-idx3-ubyte[.gz]") == 0);
  CHECK(msg.find("apt-get install dataset-fashion-mnist") != std::string::npos);

  // Small stand-ins: 4 training images but 3 labels.
  write_bytes(dir.file("train-images-idx3-ubyte"), idx_u8({4, 28, 28}));
  write_bytes(dir.file("train-labels-idx1-ubyte"), idx_u8({3}));
  write_bytes(dir.file("t10k-images-idx3-ubyte.gz"), idx_u8({2, 28, 28}), true);
  write_bytes(dir.file("t10k-labels-idx1-ubyte.gz"), idx_u8({2}), true);
  CHECK(error_of([&] { datasets::fashion_mnist::load<float>(dir.path.string(), false); })
            .find("holds 4 images but") != std::string::npos);
  write_bytes(dir.file("train-labels-idx1-ubyte"), idx_u8({4}));
  const auto d = datasets::fashion_mnist::load<float>(dir.path.string(), false);
  CHECK(d.x_train.shape() == Shape{4, 28, 28});
  CHECK(d.y_test.shape() == Shape{2});
  CHECK(error_of([&] { datasets::fashion_mnist::load<float>(dir.path.string()); }).find("expected 60000 images") !=
        std::string::npos);
  write_bytes(dir.file("train-images-idx3-ubyte"), idx_u8({4, 28, 27}));
  CHECK(error_of([&] { datasets::fashion_mnist::load<float>(dir.path.string(), false); })
            .find("expected images of shape (N, 28, 28), got (4, 28, 27)") != std::string::npos);
}

TEST_CASE("Fashion-MNIST: the real files from Debian's dataset-fashion-mnist") {
  const auto d = datasets::fashion_mnist::load<float>();
  CHECK(d.x_train.shape() == Shape{60000, 28, 28});
  CHECK(d.y_train.shape() == Shape{60000});
  CHECK(d.x_test.shape() == Shape{10000, 28, 28});
  CHECK(d.y_test.shape() == Shape{10000});
  CHECK(d.x_train.flat().minCoeff() == 0.0f);
  CHECK(d.x_train.flat().maxCoeff() == 255.0f);
  std::vector<int> per_class(10, 0);
  for (float v : d.y_train) ++per_class[static_cast<std::size_t>(v)];
  for (int c : per_class) CHECK(c == 6000);
  CHECK(d.y_train[0] == 9.0f);  // the first training image is an ankle boot
  CHECK(datasets::fashion_mnist::class_names[9] == "Ankle boot");
}

TEST_CASE("preprocessing: the notebook's split, scaling, one-hot and reshape") {
  Tensor<float> x(Shape{5, 2, 2}), y(Shape{5}, {0, 2, 1, 2, 0});
  for (Index i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i * 10);
  const auto first = data::take(x, 0, 3), last = data::take(x, 3, 5);
  CHECK(first.shape() == Shape{3, 2, 2});
  CHECK(last(0, 0, 0) == 120.0f);
  CHECK_THROWS_AS(data::take(x, 3, 6), ShapeError);
  const auto s = data::scaled(x, 1.0 / 255);
  CHECK(s[19] == doctest::Approx(190.0 / 255));
  const auto onehot = data::to_categorical(y, 3);
  CHECK(onehot.shape() == Shape{5, 3});
  CHECK(onehot(1, 2) == 1.0f);
  CHECK(onehot.flat().sum() == 5.0f);
  CHECK_THROWS_AS(data::to_categorical(Tensor<float>(Shape{2}, {0, 3}), 3), FormatError);
  data::add_channel_axis(x);
  CHECK(x.shape() == Shape{5, 2, 2, 1});
}

TEST_CASE("analysis: a confusion matrix from hand-made predictions") {
  // 3 classes. truth:     0 0 0 0 1 1 1 2 2 2
  //            predicted: 0 0 1 2 1 1 0 2 2 1
  const std::vector<Index> truth{0, 0, 0, 0, 1, 1, 1, 2, 2, 2}, pred{0, 0, 1, 2, 1, 1, 0, 2, 2, 1};
  const ConfusionMatrix cm(truth, pred, 3);
  // rows = truth, columns = predictions
  const long long expected[3][3] = {{2, 1, 1}, {1, 2, 0}, {0, 1, 2}};
  for (Index t = 0; t < 3; ++t) {
    for (Index p = 0; p < 3; ++p) CHECK(cm.count(t, p) == expected[t][p]);
  }
  CHECK(cm.total() == 10);
  CHECK(cm.correct() == 6);
  CHECK(cm.accuracy() == doctest::Approx(0.6));
  CHECK(cm.misses(0) == 2);        // class 0 was missed twice
  CHECK(cm.false_alarms(1) == 2);  // two images of other classes were called class 1
  CHECK(cm.recall(0) == doctest::Approx(0.5));
  CHECK(cm.precision(0) == doctest::Approx(2.0 / 3));
  CHECK(cm.precision(1) == doctest::Approx(0.5));
  CHECK(cm.recall(2) == doctest::Approx(2.0 / 3));
  CHECK(cm.f1(0) == doctest::Approx(2 * 0.5 * (2.0 / 3) / (0.5 + 2.0 / 3)));
  CHECK_THROWS_AS(ConfusionMatrix({0, 1}, {0}, 3), ShapeError);
  CHECK_THROWS_AS(ConfusionMatrix({0, 3}, {0, 1}, 3), FormatError);
  const ConfusionMatrix none({0, 0}, {0, 0}, 2);
  CHECK(none.precision(1) == 0.0);  // never predicted: 0, not NaN
  CHECK(none.recall(1) == 0.0);

  Tensor<float> p(Shape{2, 3}, {0.1f, 0.7f, 0.2f, 0.5f, 0.2f, 0.3f});
  CHECK(argmax_rows(p) == std::vector<Index>{1, 0});
}
