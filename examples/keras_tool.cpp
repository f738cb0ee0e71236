// keras_tool: Keras model files from the command line, through loom::keras.
//
//   keras_tool summary MODEL                  what loom reads from a .keras / .h5 file
//   keras_tool predict MODEL IMAGES N OUT     the model's outputs for the first N images of an
//                                             IDX file (scaled to [0, 1]; --raw keeps 0..255),
//                                             written as N x classes float32, little-endian
//   keras_tool convert IN OUT                 IN: a Keras file or a loom model file; OUT: .keras or .h5
//
// Every error is one line on stderr and exit status 1.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include <loom/data/idx.hpp>
#include <loom/keras.hpp>

using namespace loom;

namespace {

/// A Keras file, or a model saved by loom's own `save` (converted on the way).
Sequential<float> load_any(const std::string& path) {
  const auto bytes = loom::detail::read_whole_file<std::vector<unsigned char>>(path, UINT64_MAX, "a model");
  try {
    keras::detect_format(bytes, path);
  } catch (const FormatError&) {  // not Keras: perhaps loom's own format
    return Sequential<float>::load_bytes(std::string(bytes.begin(), bytes.end()), path);
  }
  return keras::load_model_from_bytes<float>(bytes, path);
}

void summary(const std::string& path) {
  auto model = keras::load_model<float>(path);
  model.summary(std::cout);
  if (!model.compiled()) {
    std::cout << "not compiled\n";
    return;
  }
  const auto& t = model.trainer();
  const auto settings = [](const Config& config) {
    std::string out;
    for (const auto& [key, value] : config.entries()) out += ' ' + key + '=' + value;
    return out;
  };
  std::cout << "loss: " << t.loss().type() << settings(t.loss().config()) << '\n'
            << "optimizer: " << t.optimizer().type() << settings(t.optimizer().config()) << '\n'
            << "metrics:";
  for (const auto& m : t.metrics()) std::cout << ' ' << m;
  std::cout << '\n';
  // The step count of the optimizer state imported with the model; 0: it starts fresh.
  std::cout << "optimizer state: iterations=" << t.optimizer().iterations() << '\n';
}

void predict(const std::string& path, const std::string& images, Index count, const std::string& out, bool raw) {
  auto model = keras::load_model<float>(path, keras::LoadOptions().compile(false));
  Tensor<float> x = data::read_idx<float>(images);
  if (count < 1 || count > x.dim(0)) {
    throw ConfigError(detail::str("N must be in [1, ", x.dim(0), "] for ", images, ", got ", count));
  }
  Tensor<float> batch(model.input_shape().with_batch(count));
  if (batch.size() != count * (x.size() / x.dim(0))) {
    throw ShapeError(detail::str(path, " takes inputs ", model.input_shape(), ", ", images, " holds images ",
                                 x.shape().without_batch()));
  }
  for (Index i = 0; i < batch.size(); ++i) batch[i] = raw ? x[i] : x[i] / 255.0f;
  const Tensor<float> p = model.predict(batch, 500);
  std::string bytes(reinterpret_cast<const char*>(p.data()), sizeof(float) * static_cast<std::size_t>(p.size()));
  write_file_atomically(out, bytes);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Keras model files (.keras, .h5) through loom"};
  app.require_subcommand(1);
  std::string model, images, out, in;
  Index count = 0;
  bool raw = false;
  auto* s = app.add_subcommand("summary", "print the model loom reads from a Keras file");
  s->add_option("MODEL", model, "a .keras or .h5 file")->required();
  auto* p = app.add_subcommand("predict", "write the model's outputs for the first N images as float32");
  p->add_option("MODEL", model, "a .keras or .h5 file")->required();
  p->add_option("IMAGES", images, "an IDX file of images (gzipped or not)")->required();
  p->add_option("N", count, "how many images")->required();
  p->add_option("OUT", out, "where to write N x classes float32 values")->required();
  p->add_flag("--raw", raw, "give pixels as they are (0..255) instead of scaled to [0, 1]");
  auto* c = app.add_subcommand("convert", "save a Keras or loom model file as .keras or .h5");
  c->add_option("IN", in, "a .keras, .h5, or loom model file")->required();
  c->add_option("OUT", out, "the file to write: its extension (.keras or .h5) picks the format")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    if (*s) summary(model);
    if (*p) predict(model, images, count, out, raw);
    if (*c) {
      auto m = load_any(in);
      keras::save_model(m, out);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keras_tool: %s\n", e.what());
    return 1;
  }
  return 0;
}
