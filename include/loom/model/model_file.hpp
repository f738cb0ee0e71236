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
#include "../layers/layer.hpp"
#include "../registry.hpp"
#include "trainer.hpp"

namespace loom {

template <class T>
class Sequential;

namespace detail {

/// Reads and writes model files. A friend of Sequential<T> and Trainer<T>.
template <class T>
struct ModelFile {
  static std::string write(const Sequential<T>& m, bool training, bool weights_only) {
    m.require_built("save");
    ByteWriter w;
    if (weights_only) {
      w.u32(static_cast<std::uint32_t>(m.layers_.size()));
      for (const auto& l : m.layers_) w.str(l->type());
      write_parameters(w, m);
      return frame(w.bytes, kWeightsOnly, sizeof(T));
    }
    for (const auto& l : m.layers_) require_registered<Layer<T>>(l->type(), "layer '" + l->name() + "'");
    w.str(m.name_);
    w.u64(m.seed_);
    w.shape(*m.input_shape_);
    w.rng(m.init_rng_.state());
    w.rng(m.trainer_.rng_state());
    w.u32(static_cast<std::uint32_t>(m.layers_.size()));
    for (const auto& l : m.layers_) {
      w.str(l->type());
      w.str(l->name());
      w.pairs(l->config().entries());
      w.u8(l->has_rng() ? 1 : 0);
      if (l->has_rng()) w.rng(l->rng_state());
    }
    write_parameters(w, m);
    const bool with_training = training && m.trainer_.compiled();
    w.u8(with_training ? 1 : 0);
    if (with_training) write_training(w, m.trainer_);
    return frame(w.bytes, with_training ? kHasTraining : 0, sizeof(T));
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
    const std::uint32_t n_layers = r.u32("layer count");
    if (n_layers == 0 || n_layers > 4096) r.fail(ByteReader::str_of("layer count ", n_layers, " is not in [1, 4096]"));
    std::vector<std::pair<bool, Rng::State>> layer_rngs;
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
      const bool has_rng = r.u8("layer random flag") != 0;
      layer_rngs.emplace_back(has_rng, has_rng ? r.rng("layer random state") : Rng::State{});
    }
    read_parameters(r, m);
    m.init_rng_.set_state(init);
    m.trainer_.set_rng_state(train);
    for (std::size_t i = 0; i < layer_rngs.size(); ++i) {
      if (layer_rngs[i].first) m.layers_[i]->set_rng_state(layer_rngs[i].second);
    }
    const bool with_training = r.u8("training flag") != 0;
    if (with_training != ((info.flags & kHasTraining) != 0)) r.fail("the training flag disagrees with the header");
    if (with_training) read_training(r, m, info.version);
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
    const std::uint32_t n = r.u32("layer count");
    if (n != m.layers_.size()) {
      r.fail(ByteReader::str_of("the file holds ", n, " layers, the model has ", m.layers_.size()));
    }
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::string type = r.str("layer type");
      if (type != m.layers_[i]->type()) {
        r.fail(ByteReader::str_of("layer ", i + 1, " is a ", type, " in the file, a ", m.layers_[i]->type(), " ('",
                                  m.layers_[i]->name(), "') in the model"));
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

  static void write_training(ByteWriter& w, const Trainer<T>& t) {
    require_registered<Loss<T>>(t.loss_->type(), "the loss");
    require_registered<Optimizer<T>>(t.optimizer_->type(), "the optimizer");
    w.str(t.loss_->type());
    w.u32(static_cast<std::uint32_t>(t.metrics_.size()));
    for (const auto& s : t.metrics_) w.str(s);
    const Optimizer<T>& opt = *t.optimizer_;
    w.str(opt.type());
    w.pairs(opt.config().entries());
    w.i64(opt.iterations());
    w.u32(static_cast<std::uint32_t>(opt.slots().size()));
    for (const auto& s : opt.slots()) {
      w.str(s.name);
      w.shape(s.shape);
      w.u32(static_cast<std::uint32_t>(s.state.size()));
      for (const auto& v : s.state) w.values(v);
    }
    const TrainingPosition& at = t.position_;
    w.i64(at.epoch);
    w.i64(at.step);
    w.f64(at.loss_sum);
    w.i64(at.correct);
    w.i64(at.seen);
    w.u64(t.order_.size());
    for (Index i : t.order_) w.i64(i);
    w.u32(static_cast<std::uint32_t>(t.history_.history.size()));
    for (const auto& kv : t.history_.history) {
      w.str(kv.first);
      w.u64(kv.second.size());
      for (double v : kv.second) w.f64(v);
    }
    // Format 2: the stop request and the callbacks' states (those of the last
    // fit, or those read from a file that no fit has taken yet).
    w.u8(t.stop_requested_ ? 1 : 0);
    std::vector<std::pair<std::string, std::string>> fresh;
    for (const auto& cb : t.callbacks_) {
      if (cb->state_key().empty()) continue;
      ByteWriter s;
      cb->save_state(s);
      fresh.emplace_back(cb->state_key(), std::move(s.bytes));
    }
    const auto& states = t.callbacks_.empty() ? t.saved_states_ : fresh;
    w.u32(static_cast<std::uint32_t>(states.size()));
    for (const auto& s : states) {
      w.str(s.first);
      w.str(s.second);
    }
    w.pairs(t.loss_->config().entries());
  }

  static void read_training(ByteReader& r, Sequential<T>& m, std::uint32_t version) {
    Trainer<T>& t = m.trainer_;
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
    const std::int64_t iterations = r.i64("optimizer step count");
    const std::uint32_t n_slots = r.u32("optimizer slot count");
    std::vector<typename Optimizer<T>::Slot> slots;
    for (std::uint32_t i = 0; i < n_slots; ++i) {
      typename Optimizer<T>::Slot s;
      s.name = r.str("slot name");
      s.shape = r.shape("slot shape", sizeof(T));
      const std::uint32_t n_state = r.u32("slot state count");
      if (n_state > 4) r.fail(ByteReader::str_of("slot '", s.name, "' has ", n_state, " state tensors, at most 4"));
      for (std::uint32_t j = 0; j < n_state; ++j) {
        Tensor<T> v(s.shape);
        r.values(v, "slot values");
        s.state.push_back(std::move(v));
      }
      slots.push_back(std::move(s));
    }
    TrainingPosition& at = t.position_;
    at.epoch = static_cast<int>(r.i64("epoch"));
    at.step = static_cast<long>(r.i64("batch"));
    at.loss_sum = r.f64("running loss");
    at.correct = static_cast<Index>(r.i64("running correct count"));
    at.seen = static_cast<Index>(r.i64("running sample count"));
    if (at.epoch < 0 || at.step < 0 || at.correct < 0 || at.seen < at.correct) r.fail("the training position is inconsistent");
    const std::uint64_t n = r.count("sample order", 8);
    std::vector<char> used(static_cast<std::size_t>(n), 0);
    t.order_.assign(static_cast<std::size_t>(n), 0);
    for (auto& i : t.order_) {
      const std::int64_t v = r.i64("sample order");
      if (v < 0 || static_cast<std::uint64_t>(v) >= n || used[static_cast<std::size_t>(v)]) {
        r.fail("the sample order is not a permutation");
      }
      used[static_cast<std::size_t>(v)] = 1;
      i = static_cast<Index>(v);
    }
    const std::uint32_t n_keys = r.u32("history size");
    if (n_keys > 64) r.fail(ByteReader::str_of("history has ", n_keys, " metrics, at most 64 expected"));
    for (std::uint32_t k = 0; k < n_keys; ++k) {
      const std::string key = r.str("history key");
      const std::uint64_t len = r.count("history length", 8);
      auto& values = t.history_.history[key];
      for (std::uint64_t i = 0; i < len; ++i) values.push_back(r.f64("history value"));
    }
    Config loss_config;
    if (version >= 2) {  // format 1 ends before these
      t.stop_requested_ = r.u8("stop request") != 0;
      const std::uint32_t n_states = r.u32("callback state count");
      if (n_states > 256) r.fail(ByteReader::str_of(n_states, " callback states, at most 256 expected"));
      for (std::uint32_t i = 0; i < n_states; ++i) {
        std::string key = r.str("callback state key");
        t.saved_states_.emplace_back(std::move(key), r.str("callback state"));
      }
      t.state_source_ = r.source();
      loss_config = Config(r.pairs("loss config"));
    }
    if (slots.empty() && iterations != 0) r.fail("the optimizer has taken steps but holds no state");
    if (!slots.empty()) check_slots(r, m, slots);
    try {  // the registries, compile and the optimizer's own checks: name the file
      t.compile(make_loss<T>(loss, loss_config), make_optimizer<T>(opt_type, opt_config), metrics);
      t.prepare(m);  // builds the optimizer for this architecture
      if (!slots.empty()) t.optimizer_->restore(std::move(slots), iterations);
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
