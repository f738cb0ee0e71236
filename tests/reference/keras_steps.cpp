// keras_steps: loom's side of the step-for-step check against Keras
// (tests/reference/step_check.py). Loads a compiled Keras file, takes one
// training step per batch and writes, after each step, the loss, every
// parameter (buffers too: BatchNormalization's moving statistics) and every
// optimizer state tensor, as float64.
//
//   keras_steps MODEL BATCHES.json OUT [--double]
//
// BATCHES.json: {"steps": S, "batch": B, "x": "x.f64", "y": "y.f64",
//                "x_shape": [28, 28, 1], "y_shape": [] or [10]}
// where x.f64 and y.f64 (beside the JSON file) hold the batches one after the
// other, float64 little-endian, row-major. OUT.json gets the names and shapes
// of what OUT.f64 holds per step: loss, the parameters in model order, then
// the optimizer's slots (per trainable parameter, its state tensors in
// state_names() order). A model with Dropout also gets OUT.masks.f64: per
// step, each Dropout layer's keep mask (1 or 0 per value of its input, in
// model order), the mask loom's Dropout draws from its stream (its key, the
// next number of the layer's generator; kept where splitmix64(key, i) >> 11
// >= rate * 2^53, layers/dropout.hpp), so that Keras can be handed the same
// masks. Every error is one line on stderr and exit status 1.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <loom/keras.hpp>

using namespace loom;
using json = nlohmann::json;

namespace {

std::vector<double> read_doubles(const std::string& path, Index count) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IOError("cannot open " + path);
  std::vector<double> v(static_cast<std::size_t>(count));
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(sizeof(double) * v.size()));
  if (in.gcount() != static_cast<std::streamsize>(sizeof(double) * v.size()) || in.peek() != EOF) {
    throw FormatError(detail::str(path, " does not hold exactly ", count, " float64 values"));
  }
  return v;
}

Shape shape_of(const json& dims, Index batch) {
  Shape s{batch};
  for (const auto& v : dims) s.push_back(v.get<Index>());
  return s;
}

template <class T>
void append(std::vector<double>& out, const Tensor<T>& t) {
  for (Index i = 0; i < t.size(); ++i) out.push_back(static_cast<double>(t[i]));
}

json shape_json(const Shape& s) {
  json j = json::array();
  for (Index v : s) j.push_back(v);
  return j;
}

/// The keep mask the next training forward of `layer` (a Dropout) will draw, appended to `out`.
template <class T>
void append_mask(std::vector<double>& out, const Dropout<T>& layer, Index batch) {
  Rng rng;
  rng.set_state(layer.rng_state());
  const std::uint64_t key = rng.next_u64();
  const auto threshold = static_cast<std::uint64_t>(layer.rate() * 0x1.0p53);
  const Index n = batch * layer.input_shape().size();
  for (Index i = 0; i < n; ++i) out.push_back((splitmix64(key, static_cast<std::uint64_t>(i)) >> 11) >= threshold);
}

template <class T>
void run(const std::string& model_path, const std::string& batches_path, const std::string& out) {
  std::ifstream f(batches_path);
  if (!f) throw IOError("cannot open " + batches_path);
  const json b = json::parse(f);
  const std::string dir = batches_path.substr(0, batches_path.find_last_of('/') + 1);
  const Index steps = b.at("steps").get<Index>(), batch = b.at("batch").get<Index>();
  const Shape xs = shape_of(b.at("x_shape"), batch), ys = shape_of(b.at("y_shape"), batch);
  const auto x = read_doubles(dir + b.at("x").get<std::string>(), steps * xs.size());
  const auto y = read_doubles(dir + b.at("y").get<std::string>(), steps * ys.size());

  Sequential<T> model = keras::load_model<T>(model_path);
  if (!model.compiled()) throw ConfigError(model_path + " is not compiled: the check needs Keras's compile config");
  Tensor<T> xb(xs), yb(ys);
  std::vector<double> values, masks;
  std::vector<const Dropout<T>*> dropouts;
  for (const auto& l : model.layers()) {
    const auto* d = dynamic_cast<const Dropout<T>*>(l.get());
    if (d && d->rate() > 0) dropouts.push_back(d);
  }
  json manifest = {{"tensors", json::array()}, {"optimizer", model.trainer().optimizer().type()}};
  for (Index s = 0; s < steps; ++s) {
    for (Index i = 0; i < xb.size(); ++i) xb[i] = static_cast<T>(x[static_cast<std::size_t>(s * xb.size() + i)]);
    for (Index i = 0; i < yb.size(); ++i) yb[i] = static_cast<T>(y[static_cast<std::size_t>(s * yb.size() + i)]);
    for (const auto* d : dropouts) append_mask(masks, *d, batch);
    values.push_back(model.train_step(xb, yb));
    const bool first = s == 0;
    for (const auto& p : model.parameters()) {
      append(values, *p.value);
      if (first) manifest["tensors"].push_back({{"name", p.name}, {"shape", shape_json(p.value->shape())},
                                                {"kind", p.trainable() ? "weight" : "buffer"}});
    }
    const auto& optimizer = model.trainer().optimizer();
    for (const auto& slot : optimizer.slots()) {
      for (std::size_t j = 0; j < slot.state.size(); ++j) {
        append(values, slot.state[j]);
        if (first) manifest["tensors"].push_back({{"name", slot.name + "/" + optimizer.state_names()[j]},
                                                  {"shape", shape_json(slot.shape)}, {"kind", optimizer.state_names()[j]}});
      }
    }
  }
  manifest["masks"] = json::array();
  for (const auto* d : dropouts) manifest["masks"].push_back({{"layer", d->name()}, {"shape", shape_json(d->input_shape())}});
  if (!dropouts.empty()) {
    write_file_atomically(out + ".masks.f64", std::string(reinterpret_cast<const char*>(masks.data()), sizeof(double) * masks.size()));
  }
  manifest["steps"] = steps;
  manifest["values_per_step"] = static_cast<Index>(values.size()) / steps;
  write_file_atomically(out + ".f64", std::string(reinterpret_cast<const char*>(values.data()), sizeof(double) * values.size()));
  write_file_atomically(out + ".json", manifest.dump(1));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args;
  bool use_double = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--double") {
      use_double = true;
    } else {
      args.push_back(a);
    }
  }
  if (args.size() != 3) {
    std::cerr << "usage: keras_steps MODEL BATCHES.json OUT [--double]\n";
    return 1;
  }
  try {
    if (use_double) {
      run<double>(args[0], args[1], args[2]);
    } else {
      run<float>(args[0], args[1], args[2]);
    }
  } catch (const std::exception& e) {
    std::cerr << "keras_steps: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
