#pragma once
/// \file model_file.hpp
/// Reading and writing `Sequential<T>` models: the payload inside the frame
/// of io/frame.hpp. docs/file-format.md describes every field; in short:
///
///     model      name, seed, input shape, the model's and the trainer's
///                random streams, every layer (class name, name, config,
///                its own random stream), every parameter and buffer
///                (name, trainable, shape, values)
///     training   (optional) loss, metrics, optimizer (class name, config,
///                step count, state), position, sample order, history; from
///                format 2 also the stop request, each callback's state and
///                the loss's config
///
/// A weights file (save_weights) holds the layer class names and the
/// parameters only. Layers, optimizers and losses are made again through
/// their registries (registry.hpp), so whatever is registered loads, and
/// saving an unregistered layer fails at once, saying how to register it.
///
/// Loading trusts nothing: every length is checked against the bytes that
/// are there before anything is allocated or read (a layer may create no
/// more parameter values than the file holds), and the first thing that
/// does not match raises a FormatError that names the file.

#include <cstdint>
#include <iostream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../io/bytes.hpp"
#include "../io/frame.hpp"
#include "../kernels/bf16_gemm.hpp"
#include "../layers/layer.hpp"
#include "../registry.hpp"
#include "trainer.hpp"
#include "training_state.hpp"

namespace loom {

template <class T>
class Sequential;

namespace detail {

/// Reads and writes model files, through the public interfaces of
/// Sequential<T> and its Trainer<T>.
template <class T>
struct ModelFile {
  static std::string write(const Sequential<T>& m, bool training, bool weights_only) {
    m.require_built("save");
    ByteWriter w;
    const auto& layers = m.layers();
    if (weights_only) {
      w.u32(static_cast<std::uint32_t>(layers.size()));
      for (const auto& l : layers) w.str(l->type());
      write_parameters(w, m);
      return frame(w.bytes, kWeightsOnly, sizeof(T), 2);
    }
    for (const auto& l : layers) require_registered<Layer<T>>(l->type(), "layer '" + l->name() + "'");
    w.str(m.name());
    w.u64(m.seed());
    w.shape(m.input_shape());
    w.rng(m.init_rng_state());
    w.rng(m.trainer().rng_state());  // the training stream: here since format 1, also without the training state
    const bool policy = m.policy() != Precision::Float32;  // format 3; a float32 model is written as format 2
    if (policy) w.str(to_string(m.policy()));
    w.u32(static_cast<std::uint32_t>(layers.size()));
    for (const auto& l : layers) {
      w.str(l->type());
      w.str(l->name());
      w.pairs(l->config().entries());
      // Flag 0: no stream; 1: one (rng_state); 2: a count, then each (a graph's layers', rng_states).
      const std::vector<Rng::State> states = l->rng_states();
      if (states.size() == (l->has_rng() ? 1u : 0u)) {
        w.u8(l->has_rng() ? 1 : 0);
        if (l->has_rng()) w.rng(l->rng_state());
      } else {
        w.u8(2);
        w.u32(static_cast<std::uint32_t>(states.size()));
        for (const auto& st : states) w.rng(st);
      }
    }
    write_parameters(w, m);
    const bool with_training = training && m.compiled();
    w.u8(with_training ? 1 : 0);
    if (with_training) write_training(w, m.trainer());
    return frame(w.bytes, with_training ? kHasTraining : 0, sizeof(T), policy ? 3 : 2);
  }

  static Sequential<T> read(const std::string& bytes, const std::string& source) {
    FrameInfo info;
    ByteReader r = unframe(bytes, source, sizeof(T), info);
    if (info.flags & kWeightsOnly) r.fail("this is a weights file (save_weights): use load_weights on a model of its architecture");
    const std::string name = r.str("model name");
    const std::uint64_t seed = r.u64("seed");
    const Shape input = r.shape("input shape", 0);
    double input_size = 1;
    for (Index d : input) input_size *= static_cast<double>(d);
    if (input.rank() == 0 || input_size < 1 || input_size > double(1 << 30)) {
      r.fail("input shape " + input.str() + " is empty or absurdly large");
    }
    Sequential<T> m(seed, name);
    const Rng::State init = r.rng("random state"), train = r.rng("random state");
    Precision policy = Precision::Float32;
    if (info.version >= 3) {
      const std::string p = r.str("precision policy");
      try {
        policy = precision_from(p);
      } catch (const Error& e) {
        r.fail(e.what());
      }
    }
    const std::uint32_t n_layers = r.u32("layer count");
    if (n_layers == 0 || n_layers > 4096) r.fail(ByteReader::str_of("layer count ", n_layers, " is not in [1, 4096]"));
    std::vector<std::pair<std::uint8_t, std::vector<Rng::State>>> layer_rngs;
    for (std::uint32_t i = 0; i < n_layers; ++i) {
      const std::string type = r.str("layer type"), lname = r.str("layer name");
      const std::string where = ByteReader::str_of("layer ", i + 1, " '", lname, "' (", type, ")");
      const Config config(r.pairs("layer config"));
      try {
        std::unique_ptr<Layer<T>> layer = Registry<Layer<T>>::global().create(type, config);
        layer->set_name(lname);
        // A header alone allocates nothing: the parameters must be in the file.
        layer->limit_parameter_values(static_cast<Index>(r.remaining() / sizeof(T)));
        Layer<T>& added = *layer;
        if (i == 0) {
          m.add(std::move(layer), input);
        } else {
          m.add(std::move(layer));
        }
        added.limit_parameter_values(std::numeric_limits<Index>::max());
      } catch (const Error& e) {  // from the registry, the layer or add: name the file and the layer
        r.fail(where + ": " + e.what());
      }
      const std::uint8_t flag = r.u8("layer random flag");
      std::uint32_t count = flag == 2 ? r.u32("layer random stream count") : flag;
      if (flag > 2 || count > 4096) r.fail(where + ": bad random stream flag or count");
      std::vector<Rng::State> states;
      for (std::uint32_t k = 0; k < count; ++k) states.push_back(r.rng("layer random state"));
      layer_rngs.emplace_back(flag, std::move(states));
    }
    read_parameters(r, m);
    // A policy this machine cannot run loads as float32 (whose products
    // are the more precise): the model still predicts and trains, and
    // policy() says what it runs.
    if (policy == Precision::Float32 || detail::bf16_supported()) m.set_policy(policy);
    m.set_init_rng_state(init);
    m.trainer().set_rng_state(train);
    for (std::size_t i = 0; i < layer_rngs.size(); ++i) {
      try {
        if (layer_rngs[i].first == 1) m.layers()[i]->set_rng_state(layer_rngs[i].second[0]);
        if (layer_rngs[i].first == 2) m.layers()[i]->set_rng_states(layer_rngs[i].second);
      } catch (const Error& e) {
        r.fail(e.what());
      }
    }
    const bool with_training = r.u8("training flag") != 0;
    if (with_training != ((info.flags & kHasTraining) != 0)) r.fail("the training flag disagrees with the header");
    if (with_training) read_training(r, m, info.version, train);
    if (r.remaining() != 0) r.fail(ByteReader::str_of(r.remaining(), " unexpected bytes after the model"));
    return m;
  }

  static void read_weights(Sequential<T>& m, const std::string& bytes, const std::string& source) {
    m.require_built("load_weights");
    FrameInfo info;
    ByteReader r = unframe(bytes, source, sizeof(T), info);
    if (!(info.flags & kWeightsOnly)) {
      r.fail("this is a model file (save): use Sequential::load, or save_weights to make a weights file");
    }
    const auto& layers = m.layers();
    const std::uint32_t n = r.u32("layer count");
    if (n != layers.size()) {
      r.fail(ByteReader::str_of("the file holds ", n, " layers, the model has ", layers.size()));
    }
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::string type = r.str("layer type");
      if (type != layers[i]->type()) {
        r.fail(ByteReader::str_of("layer ", i + 1, " is a ", type, " in the file, a ", layers[i]->type(), " ('",
                                  layers[i]->name(), "') in the model"));
      }
    }
    read_parameters(r, m);
    if (r.remaining() != 0) r.fail(ByteReader::str_of(r.remaining(), " unexpected bytes after the weights"));
  }

 private:
  template <class Base>
  static void require_registered(const std::string& type, const std::string& what) {
    if (Registry<Base>::global().has(type)) return;
    throw ConfigError("save: " + what + " is a " + type + ", which is not registered, so the file could not be " +
                      "loaded: give the class a class_name, config() and a static from_config(const Config&), and " +
                      "add LOOM_REGISTER(" + type + ") beside it (see docs/architecture.md)");
  }

  static void write_parameters(ByteWriter& w, const Sequential<T>& m) {
    const auto& params = const_cast<Sequential<T>&>(m).parameters();  // caches views; modifies nothing
    w.u32(static_cast<std::uint32_t>(params.size()));
    for (const auto& p : params) {
      w.str(p.name);
      w.u8(p.trainable() ? 1 : 0);
      w.tensor(*p.value);
    }
  }

  /// Reads every parameter, checking names, shapes and flags against the
  /// model's, into copies first: a file that fails halfway leaves the model as it was.
  static void read_parameters(ByteReader& r, Sequential<T>& m) {
    const auto& params = m.parameters();
    const std::uint32_t n = r.u32("parameter count");
    if (n != params.size()) r.fail(ByteReader::str_of("the file holds ", n, " parameters, the model has ", params.size()));
    std::vector<Tensor<T>> values;
    for (const auto& p : params) {
      const std::string name = r.str("parameter name");
      const bool trainable = r.u8("parameter flag") != 0;
      const Shape shape = r.shape("parameter shape", sizeof(T));
      if (shape != p.value->shape() || trainable != p.trainable()) {
        r.fail(ByteReader::str_of("parameter '", name, "' ", shape, (trainable ? "" : " (buffer)"),
                                  " does not match the model's '", p.name, "' ", p.value->shape(),
                                  (p.trainable() ? "" : " (buffer)")));
      }
      Tensor<T> t(shape);
      r.values(t, "parameter values");
      values.push_back(std::move(t));
    }
    std::size_t i = 0;
    for (const auto& p : params) *p.value = std::move(values[i++]);
  }

  /// The training section: what compile set (loss, metrics, optimizer), then
  /// the training state (training_state.hpp), then the loss's config.
  static void write_training(ByteWriter& w, const Trainer<T>& t) {
    require_registered<Loss<T>>(t.loss().type(), "the loss");
    require_registered<Optimizer<T>>(t.optimizer().type(), "the optimizer");
    w.str(t.loss().type());
    w.u32(static_cast<std::uint32_t>(t.metrics().size()));
    for (const auto& s : t.metrics()) w.str(s);
    w.str(t.optimizer().type());
    w.pairs(t.optimizer().config().entries());
    t.state().write(w);
    w.pairs(t.loss().config().entries());
  }

  /// Reads the training section and compiles the model with it; `stream` is
  /// the training stream, read from the model part.
  static void read_training(ByteReader& r, Sequential<T>& m, std::uint32_t version, const Rng::State& stream) {
    const std::string loss = r.str("loss type");
    const std::uint32_t n_metrics = r.u32("metric count");
    if (n_metrics > 16) r.fail(ByteReader::str_of(n_metrics, " metrics, at most 16 expected"));
    std::vector<std::string> metrics;
    for (std::uint32_t i = 0; i < n_metrics; ++i) metrics.push_back(r.str("metric name"));
    const std::string opt_type = r.str("optimizer type");
    Config opt_config(r.pairs("optimizer config"));
    if (opt_type == "RMSprop" && !opt_config.has("epsilon_inside_sqrt")) {
      // Saved before loom recorded RMSprop's rule: it was trained with
      // epsilon outside the square root, and resumes so.
      opt_config.set("epsilon_inside_sqrt", false);
      std::clog << "loom: " << r.source()
                << ": saved before loom recorded RMSprop's rule; its optimizer keeps the rule it was trained with, "
                   "w -= lr*g/(sqrt(a) + eps) (TensorFlow 2.0-2.10), not today's Keras rule w -= lr*g/sqrt(a + eps)\n";
    }
    TrainingState<T> state;
    state.read(r, version);
    state.stream = stream;
    const Config loss_config = version >= 2 ? Config(r.pairs("loss config")) : Config();  // format 1 ends before it
    if (!state.optimizer_slots.empty()) check_slots(r, m, state.optimizer_slots);
    Trainer<T>& t = m.trainer();
    try {  // the registries, compile and the optimizer's own checks: name the file
      t.compile(make_loss<T>(loss, loss_config), make_optimizer<T>(opt_type, opt_config), metrics);
      t.prepare(m);  // builds the optimizer for this architecture
      t.restore(std::move(state), r.source());
    } catch (const Error& e) {
      r.fail(std::string("training state: ") + e.what());
    }
  }

  /// The saved optimizer slots must be the model's trainable parameters, in order.
  static void check_slots(const ByteReader& r, Sequential<T>& m, const std::vector<typename Optimizer<T>::Slot>& slots) {
    std::size_t i = 0;
    for (const auto& p : m.parameters()) {
      if (!p.trainable()) continue;
      if (i >= slots.size() || slots[i].name != p.name || slots[i].shape != p.value->shape()) {
        r.fail("optimizer state does not match parameter '" + p.name + "'");
      }
      ++i;
    }
    if (i != slots.size()) r.fail(ByteReader::str_of("optimizer state has ", slots.size(), " slots for ", i, " parameters"));
  }
};

}  // namespace detail
}  // namespace loom
