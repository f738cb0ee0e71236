// keras_export_corpus: every kind of model loom exports for Keras, written
// with loom's predictions, for check_exports.py to load in real Keras.
//
//   keras_export_corpus DIR
//
// For each case of corpus_cases.hpp, DIR gets the model as <case>.keras and
// <case>.h5 (keras::save_model), fixed deterministic inputs and loom's
// predictions for them, as raw little-endian float32 files, and one entry
// in DIR/manifest.json naming the files, their shapes and what the case
// covers. A compiled case is first trained three steps on fixed batches (so
// that the optimizer's state and step count are not trivial), then saved;
// then it takes one more step on a fixed batch, and the batch, the loss
// that step reports and every weight after it are written too.
//
// The program refuses to write a corpus that leaves out a layer, optimizer,
// loss or schedule loom maps to Keras (keras::supported_layers() and the like).
//
// Everything is deterministic: the same program writes the same numbers.
// Errors are one line on stderr and exit status 1.

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "corpus_cases.hpp"

namespace {

using namespace loom;
using corpus::json;
using corpus::Model;

constexpr Index kPredictBatch = 4;   // images predicted per case
constexpr Index kTrainBatch = 8;     // samples per training step
constexpr int kStepsBeforeSaving = 3;

/// Writes `t` as little-endian float32 to DIR/file and returns its manifest entry.
json write_tensor(const std::filesystem::path& dir, const std::string& file, const Tensor<float>& t) {
  std::string bytes(static_cast<std::size_t>(t.size()) * 4, '\0');
  for (Index i = 0; i < t.size(); ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, t.data() + i, 4);
    for (int b = 0; b < 4; ++b) bytes[static_cast<std::size_t>(i) * 4 + b] = static_cast<char>((bits >> (8 * b)) & 0xff);
  }
  std::ofstream out(dir / file, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw IOError("cannot write " + (dir / file).string());
  json shape = json::array();
  for (Index d = 0; d < t.rank(); ++d) shape.push_back(t.dim(d));
  return {{"file", file}, {"shape", shape}};
}

/// `n` inputs of the model's shape, uniform in [0, 1) (images) or [-1, 1) (features).
Tensor<float> inputs(const Shape& per_sample, Index n, std::uint64_t seed) {
  Tensor<float> x(per_sample.with_batch(n));
  Rng rng(seed);
  const double low = per_sample.rank() >= 2 ? 0.0 : -1.0;
  for (float& v : x) v = static_cast<float>(rng.uniform(low, 1.0));
  return x;
}

/// Gives biases and BatchNormalization's four vectors values of their own
/// (kernels keep their Glorot draws), so that none is a trivial 0 or 1.
void vary_weights(Model& m, std::uint64_t seed) {
  Rng rng(seed);
  for (const auto& p : m.parameters()) {
    const std::string stem = p.name.substr(p.name.rfind('/') + 1);
    const bool positive = stem == "gamma" || stem == "moving_variance";
    if (stem == "kernel") continue;
    for (float& v : *p.value) v = static_cast<float>(positive ? rng.uniform(0.5, 1.5) : rng.uniform(-0.2, 0.2));
  }
}

/// loom's Config of the number, flag or list of numbers under each key of `settings`, behind `prefix`.
void add_settings(const json& settings, const std::string& prefix, Config& c) {
  for (const auto& [key, v] : settings.items()) {
    if (v.is_boolean()) {
      c.set(prefix + key, v.get<bool>());
    } else if (v.is_number()) {
      c.set(prefix + key, v.get<double>());
    } else if (v.is_array()) {
      c.set_reals(prefix + key, v.get<std::vector<double>>());
    } else {
      throw ConfigError("corpus: setting '" + key + "' is neither a number, a flag nor a list");
    }
  }
}

/// Compiles `m` as the case's {"loss", "optimizer"} says, through loom's own registry.
void compile(Model& m, const json& spec) {
  const json& l = spec.at("loss");
  Config loss;
  loss.set("from_logits", l.at("from_logits").get<bool>());
  if (l.contains("label_smoothing")) loss.set("label_smoothing", l.at("label_smoothing").get<double>());
  const json& o = spec.at("optimizer");
  Config optimizer;
  add_settings(o.at("config"), "", optimizer);
  if (o.contains("schedule")) {
    optimizer.set("learning_rate_schedule", o.at("schedule").at("class").get<std::string>());
    add_settings(o.at("schedule").at("config"), "learning_rate_schedule.", optimizer);
  }
  m.compile(make_loss<float>(l.at("class").get<std::string>(), loss),
            make_optimizer<float>(o.at("class").get<std::string>(), optimizer), {"accuracy"});
}

/// A batch of targets for `classes` outputs: integer labels, or one-hot for CategoricalCrossentropy.
Tensor<float> targets(const std::string& loss_class, Index classes, std::uint64_t seed) {
  Rng rng(seed);
  const bool one_hot = loss_class == "CategoricalCrossentropy";
  Tensor<float> y(one_hot ? Shape{kTrainBatch, classes} : Shape{kTrainBatch});
  for (Index i = 0; i < kTrainBatch; ++i) {
    const Index label = static_cast<Index>(rng.below(static_cast<std::uint64_t>(classes)));
    if (one_hot) {
      y[i * classes + label] = 1;
    } else {
      y[i] = static_cast<float>(label);
    }
  }
  return y;
}

/// The Keras classes the corpus exports, by kind ("layers", "optimizers", "losses", "schedules").
using Classes = std::map<std::string, std::set<std::string>>;

/// Refuses a corpus that leaves out a class loom maps to Keras, so that a
/// mapping added without a case here is noticed.
void require_every_mapping(const Classes& exported) {
  const std::map<std::string, std::vector<std::string>> mapped = {
      {"layers", keras::supported_layers()},
      {"optimizers", keras::supported_optimizers()},
      {"losses", keras::supported_losses()},
      {"schedules", keras::supported_schedules()}};
  std::string missing;
  for (const auto& [kind, classes] : mapped) {
    for (const auto& cls : classes) {
      if (cls != "InputLayer" && !exported.at(kind).count(cls)) missing += " " + cls;
    }
  }
  if (!missing.empty()) throw ConfigError("corpus: no case exports" + missing + " (add one to corpus_cases.hpp)");
}

json write_case(const corpus::Case& c, const std::filesystem::path& dir, Classes& exported) {
  Model m = c.model();
  json entry = {{"name", c.name}, {"covers", c.covers}};
  for (const auto& l : m.layers()) {
    if (const auto* g = dynamic_cast<const Graph<float>*>(l.get())) {
      for (const Layer<float>* inner : g->layers()) exported["layers"].insert(keras::keras_layer_class(inner->type()));
    } else {
      exported["layers"].insert(keras::keras_layer_class(l->type()));
    }
  }
  if (!c.compile.is_null()) {
    exported["losses"].insert(c.compile.at("loss").at("class").get<std::string>());
    exported["optimizers"].insert(c.compile.at("optimizer").at("class").get<std::string>());
    if (c.compile.at("optimizer").contains("schedule")) {
      exported["schedules"].insert(c.compile.at("optimizer").at("schedule").at("class").get<std::string>());
    }
  }
  const Shape in = m.input_shape();
  const Index classes = m.output_shape()[0];
  const bool compiled = !c.compile.is_null();
  if (compiled) {
    compile(m, c.compile);
    const std::string loss_class = c.compile.at("loss").at("class").get<std::string>();
    for (int s = 0; s < kStepsBeforeSaving; ++s) {
      m.train_step(inputs(in, kTrainBatch, 100 + s), targets(loss_class, classes, 200 + s));
    }
  } else {
    vary_weights(m, 300);
  }
  for (const char* ext : {"keras", "h5"}) {
    if (ext == std::string("h5") && !c.no_h5.empty()) {
      entry["no_h5"] = c.no_h5;
      continue;
    }
    const std::string file = c.name + "." + ext;
    keras::save_model(m, (dir / file).string());
    entry["files"][ext] = file;
  }
  const Tensor<float> x = inputs(in, kPredictBatch, 400);
  entry["input"] = write_tensor(dir, c.name + ".input.f32", x);
  entry["predictions"] = write_tensor(dir, c.name + ".predictions.f32", m.predict(x));
  if (!compiled) return entry;

  entry["compile"] = c.compile;
  entry["steps_before_saving"] = kStepsBeforeSaving;
  const std::string loss_class = c.compile.at("loss").at("class").get<std::string>();
  const Tensor<float> bx = inputs(in, kTrainBatch, 500), by = targets(loss_class, classes, 600);
  const double loss = m.train_step(bx, by);  // with the regularizers' penalties, as Keras reports it
  entry["step"] = {{"x", write_tensor(dir, c.name + ".step_x.f32", bx)},
                   {"y", write_tensor(dir, c.name + ".step_y.f32", by)},
                   {"loss", loss}};
  json weights = json::array();
  int i = 0;
  for (const auto& p : m.parameters()) {
    json w = write_tensor(dir, c.name + ".after." + std::to_string(i++) + ".f32", *p.value);
    w["name"] = p.name;  // "<layer>/<weight>"
    weights.push_back(std::move(w));
  }
  entry["weights_after_step"] = std::move(weights);
  return entry;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " DIR\n";
    return 1;
  }
  try {
    const std::filesystem::path dir = argv[1];
    std::filesystem::create_directories(dir);
    json manifest = {{"format", "little-endian float32"}, {"cases", json::array()}};
    Classes exported{{"layers", {}}, {"optimizers", {}}, {"losses", {}}, {"schedules", {}}};
    for (const auto& c : corpus::cases()) manifest["cases"].push_back(write_case(c, dir, exported));
    require_every_mapping(exported);
    manifest["exported"] = exported;
    std::ofstream(dir / "manifest.json") << manifest.dump(1) << '\n';
    std::cout << manifest["cases"].size() << " cases written to " << dir.string() << '\n';
  } catch (const std::exception& e) {
    std::cerr << "keras_export_corpus: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
