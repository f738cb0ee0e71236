#pragma once
/// \file functional.hpp
/// Keras's functional API: models that are graphs of layers, not chains.
///
///     using namespace loom;
///     const auto conv = [] { return Conv2D<float>(Conv2DOptions(32, {3, 3}).padding(Padding::Same)); };
///     Symbol<float> inputs = Input<float>({28, 28, 1});
///     Symbol<float> x = call(conv(), inputs);
///     Symbol<float> y = call(conv(), x);
///     x = call(Add<float>(), {x, y});                      // a residual join
///     Symbol<float> outputs = call(Dense<float>(DenseOptions(10).activation(Activation::Softmax)),
///                                  call(Flatten<float>(), x));
///     Functional<float> model(inputs, outputs, /*seed=*/42);
///     model.compile(...); model.fit(...);                   // as a Sequential
///
/// Calling a layer on a symbolic tensor (`call`, Keras's `layer(x)`)
/// records a node: the layer and its inputs. `Functional(inputs, outputs)`
/// walks the nodes back from the output and keeps them in a `Graph`, a
/// layer that runs them in topological order. A layer called twice
/// (`shared(layer)`, then `call` it twice) is one layer with two nodes: its
/// weights are shared and its gradients add up, as in Keras.
///
/// How a graph runs (docs/architecture.md, "Graphs"):
/// - Its nodes are cut into *segments*: maximal chains in which each node
///   takes the one before it as its only input and is that one's only
///   consumer. A segment runs exactly as a Sequential runs its layers, with
///   the same fusions (layers/fusion.hpp), so a graph that is a chain trains
///   bit for bit as the Sequential of its layers. A merge, and each call of
///   a shared layer after its first, is a segment of its own.
/// - Forward keeps each segment's output until its consumers have run.
///   Backward runs the segments in reverse; where an output feeds several
///   nodes (fan-out), their gradients are summed in reverse topological
///   order into one buffer of that node, which the first gradient is copied
///   into (a node with one consumer takes its gradient without a copy).
/// - A layer called again runs, at that node, on a copy of itself
///   (inference_copy) that reads the layer's parameters just before its
///   forward and adds its gradients to the layer's after backward; what its
///   training forward changes in the buffers (BatchNormalization's moving
///   statistics) goes back to the layer, so the calls update them in turn,
///   as Keras's calls do.
/// Every buffer is kept from step to step: once warm, a step allocates nothing.
///
/// A `Functional` is a Sequential whose one layer is the Graph: it trains,
/// evaluates, predicts, saves and loads (in loom's format, the Graph's
/// config holding its layers and nodes), serves through a Predictor and
/// trains data-parallel as a Sequential does. A Graph is also a layer like
/// any other, so a model can be called inside another.
///
/// Today: one input and one output per graph.

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../io/bytes.hpp"
#include "../layers/fusion.hpp"
#include "../layers/layer.hpp"
#include "../layers/merge.hpp"
#include "../registry.hpp"
#include "inference.hpp"
#include "sequential.hpp"
#include "summary.hpp"

namespace loom {

template <class T>
class Graph;

namespace detail {

/// A layer as the functional API holds it. `initialized` is set once a
/// model has built it with its own seed: another model made from the same
/// symbols shares the layer, weights and all, as Keras's do.
template <class T>
struct LayerSlot {
  std::shared_ptr<Layer<T>> layer;
  bool initialized = false;
};

/// What a symbolic tensor is: an Input (no slot), or the output of a call
/// of a layer on other symbolic tensors.
template <class T>
struct SymbolNode {
  std::shared_ptr<LayerSlot<T>> slot;
  std::vector<std::shared_ptr<const SymbolNode<T>>> inputs;
  Shape shape;       ///< per sample
  std::string name;  ///< an Input's
};

template <class T>
T scalar_of(const Layer<T>*);
/// The scalar type of a layer type L (Conv2D<float> gives float).
template <class L>
using layer_scalar_t = decltype(scalar_of(std::declval<std::decay_t<L>*>()));

/// Lower-case hex of bytes, and back (the graph's config holds its nodes so).
inline std::string to_hex(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}
inline std::string from_hex(const std::string& hex, const char* what) {
  const auto value = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw ConfigError(detail::str(what, ": not hexadecimal"));
  };
  if (hex.size() % 2 != 0) throw ConfigError(detail::str(what, ": odd length"));
  std::string out(hex.size() / 2, '\0');
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(value(hex[2 * i]) * 16 + value(hex[2 * i + 1]));
  return out;
}

}  // namespace detail

/// A symbolic tensor (Keras's KerasTensor): what `Input` and `call` return.
/// It knows its per-sample shape and how it was made.
template <class T>
class Symbol {
 public:
  /// Per-sample shape (without the batch).
  const Shape& shape() const { return node_->shape; }
  /// The layer whose call made it (nullptr for an Input).
  Layer<T>* layer() const { return node_->slot ? node_->slot->layer.get() : nullptr; }
  bool is_input() const { return !node_->slot; }

 /// (How Input and call make one, and a Graph reads it.)
  explicit Symbol(std::shared_ptr<const detail::SymbolNode<T>> node) : node_(std::move(node)) {}
  const std::shared_ptr<const detail::SymbolNode<T>>& node() const { return node_; }

 private:
  std::shared_ptr<const detail::SymbolNode<T>> node_;
};

/// Keras's `keras.Input(shape)`: a model's input, per sample (without the batch).
template <class T>
Symbol<T> Input(const Shape& shape, std::string name = "input_layer") {
  if (shape.rank() == 0 || shape.size() <= 0) throw ShapeError(detail::str("Input: empty shape ", shape.str("None")));
  auto node = std::make_shared<detail::SymbolNode<T>>();
  node->shape = shape;
  node->name = std::move(name);
  return Symbol<T>(std::move(node));
}

/// A layer that several calls share: `auto dense = shared(Dense<float>(64));`
/// then `call(dense, a)` and `call(dense, b)` use one set of weights.
template <class T>
class SharedLayer {
 public:
  explicit SharedLayer(std::unique_ptr<Layer<T>> layer) : slot_(std::make_shared<detail::LayerSlot<T>>()) {
    if (!layer) throw ConfigError("shared: null layer");
    slot_->layer = std::move(layer);
  }
  Layer<T>& operator*() const { return *slot_->layer; }
  Layer<T>* operator->() const { return slot_->layer.get(); }
  const std::shared_ptr<detail::LayerSlot<T>>& slot() const { return slot_; }

 private:
  std::shared_ptr<detail::LayerSlot<T>> slot_;
};

template <class L>
SharedLayer<detail::layer_scalar_t<L>> shared(L&& layer) {
  static_assert(!std::is_lvalue_reference_v<L>, "shared: pass a new layer (a temporary, or std::move(layer))");
  using T = detail::layer_scalar_t<L>;
  return SharedLayer<T>(std::unique_ptr<Layer<T>>(std::make_unique<std::decay_t<L>>(std::forward<L>(layer))));
}

/// Records a call of the slot's layer on xs, building the layer for their
/// shapes if it is not built yet: a layer that cannot take them fails here,
/// naming itself and the shapes, as Keras fails at the call.
template <class T>
Symbol<T> call_layer(const std::shared_ptr<detail::LayerSlot<T>>& slot, const std::vector<Symbol<T>>& xs) {
  Layer<T>& layer = *slot->layer;
  const std::string who = layer.type() + (layer.name().empty() ? "" : " '" + layer.name() + "'");
  if (xs.empty()) throw ConfigError("call: " + who + " called on no inputs");
  std::vector<Shape> shapes;
  for (const auto& x : xs) shapes.push_back(x.shape());
  if (auto* merge = dynamic_cast<Merge<T>*>(&layer)) {
    if (!merge->built()) {
      Rng scratch;  // a model builds it again with its own seed
      merge->build(shapes, scratch);
    } else if (merge->input_shapes() != shapes) {
      throw ShapeError(detail::str("call: ", who, " was built for inputs ", merge->shapes_str(merge->input_shapes()),
                                   ", called on ", merge->shapes_str(shapes)));
    }
  } else {
    if (xs.size() != 1) {
      throw ConfigError(detail::str("call: ", who, " takes one input, called on ", xs.size()));
    }
    if (!layer.built()) {
      Rng scratch;
      layer.build(shapes[0], scratch);
    } else if (layer.input_shape() != shapes[0]) {
      throw ShapeError(detail::str("call: ", who, " was built for inputs ", layer.input_shape().str("None"),
                                   ", called on ", shapes[0].str("None")));
    }
  }
  auto node = std::make_shared<detail::SymbolNode<T>>();
  node->slot = slot;
  for (const auto& x : xs) node->inputs.push_back(x.node());
  node->shape = layer.output_shape();
  return Symbol<T>(std::move(node));
}

/// Keras's `layer(x)`: the layer (a new one, which the graph then owns)
/// called on x. For a layer called several times, see shared().
template <class L, class T, class = std::enable_if_t<std::is_base_of_v<Layer<T>, std::decay_t<L>>>>
Symbol<T> call(L&& layer, const Symbol<T>& x) {
  static_assert(!std::is_lvalue_reference_v<L>,
                "call: pass a new layer (a temporary, or std::move(layer)), or shared(layer) to call one layer "
                "several times");
  return call_layer(shared(std::forward<L>(layer)).slot(), {x});
}
template <class T>
Symbol<T> call(const SharedLayer<T>& layer, const Symbol<T>& x) {
  return call_layer(layer.slot(), {x});
}
/// A merge layer (merge.hpp) called on several symbolic tensors.
template <class L, class T, class = std::enable_if_t<std::is_base_of_v<Layer<T>, std::decay_t<L>>>>
Symbol<T> call(L&& layer, const std::vector<Symbol<T>>& xs) {
  static_assert(!std::is_lvalue_reference_v<L>, "call: pass a new layer (a temporary, or std::move(layer))");
  return call_layer(shared(std::forward<L>(layer)).slot(), xs);
}
template <class L, class T, class = std::enable_if_t<std::is_base_of_v<Layer<T>, std::decay_t<L>>>>
Symbol<T> call(L&& layer, std::initializer_list<Symbol<T>> xs) {
  return call(std::forward<L>(layer), std::vector<Symbol<T>>(xs));
}
template <class T>
Symbol<T> call(const SharedLayer<T>& layer, const std::vector<Symbol<T>>& xs) {
  return call_layer(layer.slot(), xs);
}

/// A graph of layers from one input to one output, as a layer (Keras's
/// `Functional`, which is a layer too): see the top of this file.
template <class T>
class Graph : public Layer<T> {
 public:
  /// One call of a layer: layers()[layer] on the outputs of the nodes
  /// `inputs` (-1: the graph's input).
  struct Node {
    int layer = 0;
    std::vector<int> inputs;
  };
  using LayerPtr = std::shared_ptr<Layer<T>>;

  /// The graph of every call between `input` and `output`.
  Graph(const Symbol<T>& input, const Symbol<T>& output)
      : input_shape_(input.shape()), input_name_(input.node()->name) {
    if (!input.is_input()) throw ConfigError("Functional: its input must be an Input, not a layer's output");
    std::map<const detail::SymbolNode<T>*, int> index;  // node -> its place in nodes_
    std::map<const detail::LayerSlot<T>*, int> layer_index;
    std::set<const detail::SymbolNode<T>*> visiting;
    // Depth first from the output, inputs in call order: a node comes after its inputs.
    const auto visit = [&](const auto& self, const std::shared_ptr<const detail::SymbolNode<T>>& n) -> int {
      if (!n->slot) {
        if (n != input.node()) {
          throw ConfigError("Functional: the output depends on an Input ('" + n->name +
                            "') that is not the model's input");
        }
        return -1;
      }
      if (auto it = index.find(n.get()); it != index.end()) return it->second;
      if (!visiting.insert(n.get()).second) throw ConfigError("Functional: the graph has a cycle");
      Node node;
      for (const auto& in : n->inputs) node.inputs.push_back(self(self, in));
      auto [at, added] = layer_index.emplace(n->slot.get(), static_cast<int>(slots_.size()));
      if (added) slots_.push_back(n->slot);
      node.layer = at->second;
      nodes_.push_back(std::move(node));
      const int i = static_cast<int>(nodes_.size()) - 1;
      index.emplace(n.get(), i);
      return i;
    };
    if (visit(visit, output.node()) < 0) throw ConfigError("Functional: the output is the input: add a layer");
    name_layers();
  }

  /// The graph of `layers` and `nodes` (topological order, the last is
  /// the output), unbuilt: what from_config and inference_copy make.
  Graph(Shape input_shape, std::string input_name, std::vector<LayerPtr> layers, std::vector<Node> nodes)
      : input_shape_(std::move(input_shape)), input_name_(std::move(input_name)), nodes_(std::move(nodes)) {
    for (auto& l : layers) {
      if (!l) throw ConfigError("Functional: null layer");
      auto slot = std::make_shared<detail::LayerSlot<T>>();
      slot->layer = std::move(l);
      slots_.push_back(std::move(slot));
    }
    check_nodes();
  }

  static constexpr const char* class_name = "Functional";
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "functional"; }

  /// Each layer once, in the order of its first call.
  std::vector<Layer<T>*> layers() const {
    std::vector<Layer<T>*> out;
    for (const auto& s : slots_) out.push_back(s->layer.get());
    return out;
  }
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::string& input_name() const { return input_name_; }
  /// The layer called `name` (ConfigError when there is none).
  Layer<T>& layer(const std::string& name) const {
    for (const auto& s : slots_) {
      if (s->layer->name() == name) return *s->layer;
    }
    throw ConfigError("model '" + this->name() + "' has no layer '" + name + "'");
  }
  /// The per-sample output shape of node i (built graphs).
  const Shape& node_shape(std::size_t i) const { return node_shapes_.at(i); }

  // ---- Configuration: the layers and the nodes ------------------------------

  Config config() const override {
    ByteWriter w;
    w.shape(input_shape_);
    w.str(input_name_);
    w.u32(static_cast<std::uint32_t>(slots_.size()));
    for (const auto& s : slots_) {
      const Layer<T>& l = *s->layer;
      if (!Registry<Layer<T>>::global().has(l.type())) {
        throw ConfigError("Functional: layer '" + l.name() + "' is a " + l.type() +
                          ", which is not registered: give the class a class_name, config() and a static "
                          "from_config(const Config&), and add LOOM_REGISTER(" + l.type() + ") beside it");
      }
      w.str(l.type());
      w.str(l.name());
      w.pairs(l.config().entries());
    }
    w.u32(static_cast<std::uint32_t>(nodes_.size()));
    for (const Node& n : nodes_) {
      w.u32(static_cast<std::uint32_t>(n.layer));
      w.u32(static_cast<std::uint32_t>(n.inputs.size()));
      for (int i : n.inputs) w.i64(i);
    }
    Config c;
    c.set("graph", detail::to_hex(w.bytes));
    return c;
  }

  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    const std::string bytes = detail::from_hex(c.text("graph"), "Functional: its config 'graph'");
    ByteReader r("Functional config", reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
    Shape input = r.shape("input shape", 0);
    std::string input_name = r.str("input name");
    const std::uint32_t n_layers = r.u32("layer count");
    if (n_layers == 0 || n_layers > 4096) r.fail(ByteReader::str_of("layer count ", n_layers, " is not in [1, 4096]"));
    std::vector<LayerPtr> layers;
    for (std::uint32_t i = 0; i < n_layers; ++i) {
      const std::string type = r.str("layer type"), name = r.str("layer name");
      const Config config(r.pairs("layer config"));
      try {
        std::unique_ptr<Layer<T>> l = Registry<Layer<T>>::global().create(type, config);
        l->set_name(name);
        layers.push_back(LayerPtr(std::move(l)));
      } catch (const Error& e) {
        r.fail(ByteReader::str_of("layer ", i + 1, " '", name, "' (", type, "): ", e.what()));
      }
    }
    const std::uint32_t n_nodes = r.u32("node count");
    if (n_nodes == 0 || n_nodes > 16384) r.fail(ByteReader::str_of("node count ", n_nodes, " is not in [1, 16384]"));
    std::vector<Node> nodes(n_nodes);
    for (Node& n : nodes) {
      n.layer = static_cast<int>(r.u32("node layer"));
      const std::uint32_t k = r.u32("node input count");
      if (k == 0 || k > 64) r.fail(ByteReader::str_of("a node has ", k, " inputs, not in [1, 64]"));
      for (std::uint32_t j = 0; j < k; ++j) {
        const std::int64_t v = r.i64("node input");
        if (v < -1 || v > 16384) r.fail("a node input is out of range");
        n.inputs.push_back(static_cast<int>(v));
      }
    }
    if (r.remaining() != 0) r.fail("unexpected bytes after the nodes");
    return std::make_unique<Graph>(std::move(input), std::move(input_name), std::move(layers), std::move(nodes));
  }

  // ---- What the model sees: parameters, activation, streams, replicas ------

  /// Every layer's parameters and buffers, layer by layer (a shared layer once).
  std::vector<Parameter<T>> parameters() override {
    std::vector<Parameter<T>> out;
    for (const auto& s : slots_) {
      for (auto& p : s->layer->parameters()) out.push_back(p);
    }
    return out;
  }
  /// The output layer's.
  Activation activation() const override {
    return run_.empty() ? slots_[static_cast<std::size_t>(nodes_.back().layer)]->layer->activation()
                        : run_.back()->activation();
  }

  void seed(std::uint64_t seed) override {
    Rng stream(seed);
    seed_from(stream);
  }
  /// One draw for each layer that runs, in node order (a graph that is a
  /// chain draws as a Sequential of its layers does).
  void seed_from(Rng& stream) override {
    for (const auto& l : run_) l->seed_from(stream);
  }
  bool has_rng() const override {
    return std::any_of(run_.begin(), run_.end(), [](const LayerPtr& l) { return l->has_rng(); });
  }
  /// The first layer's stream that has one (rng_states gives every one).
  Rng::State rng_state() const override {
    for (const auto& l : run_) {
      if (l->has_rng()) return l->rng_state();
    }
    return {};
  }
  void set_rng_state(const Rng::State& state) override {
    for (const auto& l : run_) {
      if (l->has_rng()) return l->set_rng_state(state);
    }
  }
  std::vector<Rng::State> rng_states() const override {
    std::vector<Rng::State> out;
    for (const auto& l : run_) {
      for (const auto& s : l->rng_states()) out.push_back(s);
    }
    return out;
  }
  void set_rng_states(const std::vector<Rng::State>& states) override {
    std::size_t at = 0;
    for (const auto& l : run_) {
      const std::size_t k = l->rng_states().size();
      if (at + k > states.size()) throw ConfigError(this->where() + ": fewer random streams than its layers hold");
      l->set_rng_states(std::vector<Rng::State>(states.begin() + static_cast<std::ptrdiff_t>(at),
                                                states.begin() + static_cast<std::ptrdiff_t>(at + k)));
      at += k;
    }
    if (at != states.size()) throw ConfigError(this->where() + ": more random streams than its layers hold");
  }

  void set_replicas(Communicator* replicas) override {
    for (const auto& l : run_) l->set_replicas(replicas);
  }
  void forward_without_samples() override {
    for (const auto& l : run_) l->forward_without_samples();
  }
  void backward_without_samples() override {
    for (auto it = run_.rbegin(); it != run_.rend(); ++it) (*it)->backward_without_samples();
  }

  // ---- Copies for inference (Sequential's threads, a Predictor) -------------

  std::unique_ptr<Layer<T>> inference_copy() const override {
    std::vector<LayerPtr> copies;
    for (const auto& s : slots_) {
      std::unique_ptr<Layer<T>> c = s->layer->inference_copy();
      if (!c) return nullptr;
      c->set_name(s->layer->name());
      copies.push_back(LayerPtr(std::move(c)));
    }
    return std::make_unique<Graph>(input_shape_, input_name_, std::move(copies), nodes_);
  }
  void set_precision(Precision p) override {
    Layer<T>::set_precision(p);
    for (const auto& s : slots_) s->layer->set_precision(p);
  }
  void copy_settings_to(Layer<T>& copy) const override {
    Layer<T>::copy_settings_to(copy);
    auto* g = dynamic_cast<Graph*>(&copy);
    if (g == nullptr || g->run_.size() != run_.size()) return;
    for (std::size_t n = 0; n < run_.size(); ++n) run_[n]->copy_settings_to(*g->run_[n]);
  }
  void seal_parameters() override {
    if (!sealed_) {
      for (std::size_t n = 0; n < run_.size(); ++n) pull(n);
    }
    for (const auto& l : run_) l->seal_parameters();
    sealed_ = true;
  }
  bool share_parameters_of(const Layer<T>& source) override {
    const Graph* s = this->template share_source<Graph>(source);
    if (s == nullptr || s->run_.size() != run_.size()) return false;
    for (std::size_t n = 0; n < run_.size(); ++n) {
      Layer<T>& mine = *run_[n];
      if (mine.parameters().empty() || mine.share_parameters_of(*s->run_[n])) continue;
      auto to = mine.parameters(), from = s->run_[n]->parameters();  // a type that does not share: a copy
      for (std::size_t p = 0; p < to.size(); ++p) *to[p].value = *from[p].value;
    }
    sealed_ = true;
    this->shares_parameters();
    return true;
  }

 protected:
  Shape build_impl(const Shape& input, Rng& rng) override {
    if (input != input_shape_) this->reject_input(input, input_shape_.str("None"));
    const std::size_t n_nodes = nodes_.size();
    run_.assign(n_nodes, nullptr);
    node_shapes_.assign(n_nodes, Shape{});
    first_call_.assign(n_nodes, 0);
    std::vector<int> first(slots_.size(), -1);
    Index budget = this->parameter_value_limit();
    for (std::size_t n = 0; n < n_nodes; ++n) {
      const Node& node = nodes_[n];
      std::vector<Shape> shapes;
      for (int i : node.inputs) shapes.push_back(i < 0 ? input_shape_ : node_shapes_[static_cast<std::size_t>(i)]);
      detail::LayerSlot<T>& slot = *slots_[static_cast<std::size_t>(node.layer)];
      Layer<T>& layer = *slot.layer;
      int& first_n = first[static_cast<std::size_t>(node.layer)];
      if (first_n < 0) {
        first_n = static_cast<int>(n);
        if (!slot.initialized) {
          layer.limit_parameter_values(budget);
          build_layer(layer, shapes, rng);
          layer.limit_parameter_values(std::numeric_limits<Index>::max());
          slot.initialized = true;
        } else {
          check_built_for(layer, shapes);
        }
        budget -= layer.count_params();
        run_[n] = slot.layer;
      } else {  // a later call of a shared layer: a copy of its own for its state
        check_built_for(layer, shapes);
        std::unique_ptr<Layer<T>> twin = layer.inference_copy();
        if (!twin) {
          throw ConfigError(detail::str(this->where(), ": layer '", layer.name(), "' (", layer.type(),
                                        ") is called ", "more than once, which needs its type registered ",
                                        "(LOOM_REGISTER) so that each call has a copy of its own state"));
        }
        twin->set_name(layer.name());
        Rng scratch;
        build_layer(*twin, shapes, scratch);
        layer.copy_settings_to(*twin);
        run_[n] = LayerPtr(std::move(twin));
      }
      first_call_[n] = static_cast<std::size_t>(first_n);
      node_shapes_[n] = run_[n]->output_shape();
    }
    plan();
    return node_shapes_.back();
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    end_step();
    prepare_flags();
    for (std::size_t s = 0; s < segments_.size(); ++s) {
      Segment& seg = segments_[s];
      const Node& node = nodes_[seg.first];
      const Tensor<T>* out = nullptr;
      if (seg.merge != nullptr) {
        for (std::size_t i = 0; i < node.inputs.size(); ++i) seg.inputs[i] = value(x, node.inputs[i]);
        out = &seg.merge->forward(seg.inputs, mode);
      } else {
        const Tensor<T>& in = *value(x, node.inputs[0]);
        const bool later_call = first_call_[seg.first] != seg.first;
        if (later_call) pull(seg.first);
        if (mode == Mode::Train) {
          fusions_[s].emplace(seg.layers);
          out = &train_forward(seg.layers, *fusions_[s], in);
          if (later_call) push_buffers(seg.first);
        } else {
          out = &Inference<T>::run(seg.layers, in, mode);
        }
      }
      values_[seg.last] = out;
    }
    return *values_.back();
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    struct End {
      Graph* g;
      ~End() { g->end_step(); }
    } end{this};
    std::fill(grads_.begin(), grads_.end(), nullptr);
    input_grad_ = nullptr;
    grads_.back() = &dy;
    for (std::size_t s = segments_.size(); s-- > 0;) {
      Segment& seg = segments_[s];
      const Node& node = nodes_[seg.first];
      const Tensor<T>& g = *grads_[seg.last];
      if (seg.merge != nullptr) {
        seg.merge->backward(g);
        for (std::size_t i = 0; i < node.inputs.size(); ++i) accumulate(node.inputs[i], seg.merge->input_grad(i));
      } else {
        if (!fusions_[s]) throw ConfigError(this->where() + ": backward() needs a forward() in Mode::Train first");
        accumulate(node.inputs[0], train_backward(seg.layers, *fusions_[s], g));
      }
    }
    for (const auto& [to, from] : shared_grads_) {  // a later call's gradients add to its layer's
      for (Index k = 0; k < to->size(); ++k) to->data()[k] += from->data()[k];
    }
    if (!this->needs_input_grad() || input_grad_ == nullptr) return this->empty_;
    return *input_grad_;
  }

 private:
  /// A chain of nodes first..last run as a Sequential runs its layers, or one merge.
  struct Segment {
    std::size_t first = 0, last = 0;
    std::vector<LayerPtr> layers;
    Merge<T>* merge = nullptr;
    std::vector<const Tensor<T>*> inputs;  ///< a merge's, during forward
  };
  using Fusion = TrainingFusion<T, std::vector<LayerPtr>>;

  static void build_layer(Layer<T>& layer, const std::vector<Shape>& shapes, Rng& rng) {
    if (auto* merge = dynamic_cast<Merge<T>*>(&layer)) {
      merge->build(shapes, rng);
    } else {
      if (shapes.size() != 1) {
        throw ConfigError(detail::str(layer.type(), " '", layer.name(), "' takes one input, called on ", shapes.size()));
      }
      layer.build(shapes[0], rng);
    }
  }
  void check_built_for(const Layer<T>& layer, const std::vector<Shape>& shapes) const {
    const auto* merge = dynamic_cast<const Merge<T>*>(&layer);
    const bool ok = layer.built() && (merge ? merge->input_shapes() == shapes
                                            : shapes.size() == 1 && layer.input_shape() == shapes[0]);
    if (!ok) {
      throw ShapeError(detail::str(this->where(), ": layer '", layer.name(), "' is called on inputs of a shape ",
                                   "it was not built for (", shapes.empty() ? std::string() : shapes[0].str("None"),
                                   ")"));
    }
  }

  /// Keras's automatic names for layers that have none, unique in the graph.
  void name_layers() {
    std::set<std::string> taken;
    for (const auto& s : slots_) {
      const std::string& n = s->layer->name();
      if (n.empty()) continue;
      if (!taken.insert(n).second) throw ConfigError("Functional: two layers are named '" + n + "'");
    }
    std::map<std::string, int> counts;
    for (const auto& s : slots_) {
      if (!s->layer->name().empty()) continue;
      const std::string base = s->layer->base_name();
      std::string name;
      do {
        const int k = counts[base]++;
        name = k == 0 ? base : base + "_" + std::to_string(k);
      } while (taken.count(name));
      taken.insert(name);
      s->layer->set_name(name);
    }
  }

  void check_nodes() const {
    if (nodes_.empty()) throw ConfigError("Functional: no nodes");
    std::vector<int> used(slots_.size(), 0);
    for (std::size_t n = 0; n < nodes_.size(); ++n) {
      const Node& node = nodes_[n];
      if (node.layer < 0 || static_cast<std::size_t>(node.layer) >= slots_.size()) {
        throw ConfigError(detail::str("Functional: node ", n, " names layer ", node.layer, " of ", slots_.size()));
      }
      ++used[static_cast<std::size_t>(node.layer)];
      if (node.inputs.empty()) throw ConfigError(detail::str("Functional: node ", n, " has no inputs"));
      for (int i : node.inputs) {
        if (i < -1 || i >= static_cast<int>(n)) {
          throw ConfigError(detail::str("Functional: node ", n, " takes node ", i, ", which does not come before it"));
        }
      }
    }
    for (std::size_t l = 0; l < slots_.size(); ++l) {
      if (used[l] == 0) throw ConfigError(detail::str("Functional: layer ", l, " is never called"));
    }
  }

  /// Cuts the nodes into segments and sizes what forward and backward keep.
  void plan() {
    const std::size_t n_nodes = nodes_.size();
    std::vector<int> consumers(n_nodes, 0);
    for (const Node& node : nodes_) {
      for (int i : node.inputs) {
        if (i >= 0) ++consumers[static_cast<std::size_t>(i)];
      }
    }
    const auto merge_at = [&](std::size_t n) { return dynamic_cast<Merge<T>*>(run_[n].get()); };
    segments_.clear();
    for (std::size_t n = 0; n < n_nodes; ++n) {
      const Node& node = nodes_[n];
      const bool chained = n > 0 && !segments_.empty() && segments_.back().last == n - 1 &&
                           segments_.back().merge == nullptr && merge_at(n) == nullptr &&
                           first_call_[n] == n && first_call_[n - 1] == n - 1 && node.inputs.size() == 1 &&
                           node.inputs[0] == static_cast<int>(n - 1) && consumers[n - 1] == 1;
      if (chained) {
        segments_.back().layers.push_back(run_[n]);
        segments_.back().last = n;
        continue;
      }
      Segment seg;
      seg.first = seg.last = n;
      seg.layers.push_back(run_[n]);
      seg.merge = merge_at(n);
      seg.inputs.assign(node.inputs.size(), nullptr);
      segments_.push_back(std::move(seg));
    }
    fusions_ = std::make_unique<std::optional<Fusion>[]>(segments_.size());
    values_.assign(n_nodes, nullptr);
    grads_.assign(n_nodes, nullptr);
    sums_.resize(n_nodes);
    shared_params_.clear();
    shared_grads_.clear();
    for (std::size_t n = 0; n < n_nodes; ++n) {
      if (first_call_[n] == n) continue;
      auto mine = run_[n]->parameters(), theirs = run_[first_call_[n]]->parameters();
      for (std::size_t p = 0; p < mine.size(); ++p) {
        shared_params_.push_back({n, mine[p].value, theirs[p].value, mine[p].trainable()});
        if (mine[p].trainable()) shared_grads_.emplace_back(theirs[p].grad, mine[p].grad);
      }
    }
  }

  /// The output of node i (-1: the graph's input x) in this forward.
  const Tensor<T>* value(const Tensor<T>& x, int i) const {
    return i < 0 ? &x : values_[static_cast<std::size_t>(i)];
  }

  /// Adds g to the gradient of node i's output (-1: the graph's input).
  void accumulate(int i, const Tensor<T>& g) {
    if (i < 0 && !this->needs_input_grad()) return;
    const Tensor<T>*& slot = i < 0 ? input_grad_ : grads_[static_cast<std::size_t>(i)];
    Tensor<T>& sum = i < 0 ? input_sum_ : sums_[static_cast<std::size_t>(i)];
    if (slot == nullptr) {
      slot = &g;
      return;
    }
    if (slot != &sum) {
      sum.resize_for_overwrite(slot->shape());
      std::copy(slot->begin(), slot->end(), sum.begin());
      slot = &sum;
    }
    T* to = sum.data();
    const T* from = g.data();
    for (Index k = 0; k < sum.size(); ++k) to[k] += from[k];
  }

  /// A later call of a shared layer (node n) takes its layer's current parameters and buffers.
  void pull(std::size_t n) {
    if (sealed_) return;
    for (const auto& sp : shared_params_) {
      if (sp.node == n) std::copy(sp.theirs->begin(), sp.theirs->end(), sp.mine->begin());
    }
  }
  /// ... and gives back what its training forward changed in the buffers.
  void push_buffers(std::size_t n) {
    for (const auto& sp : shared_params_) {
      if (sp.node == n && !sp.trainable) std::copy(sp.mine->begin(), sp.mine->end(), sp.theirs->begin());
    }
  }

  /// Passes the graph's own flags to the layers they concern: the fused
  /// softmax gradient to the output layer, the input gradient to the first
  /// layers that take the graph's input.
  void prepare_flags() {
    run_.back()->set_fused_softmax_grad(this->fused_softmax_grad());
    for (Segment& seg : segments_) {
      const Node& node = nodes_[seg.first];
      if (seg.merge == nullptr && node.inputs[0] < 0) seg.layers.front()->set_needs_input_grad(this->needs_input_grad());
    }
  }
  /// Undoes the training fusions of the last step.
  void end_step() {
    for (std::size_t s = 0; s < segments_.size(); ++s) fusions_[s].reset();
  }

  struct SharedParam {
    std::size_t node;
    Tensor<T>* mine;
    Tensor<T>* theirs;
    bool trainable;
  };

  Shape input_shape_;
  std::string input_name_;
  std::vector<std::shared_ptr<detail::LayerSlot<T>>> slots_;  ///< each layer once
  std::vector<Node> nodes_;

  // Made by build:
  std::vector<LayerPtr> run_;           ///< the layer that runs each node (a later call's copy)
  std::vector<std::size_t> first_call_; ///< each node's layer's first node
  std::vector<Shape> node_shapes_;
  std::vector<Segment> segments_;
  std::unique_ptr<std::optional<Fusion>[]> fusions_;  ///< each segment's, from a training forward to its backward
  std::vector<const Tensor<T>*> values_, grads_;
  std::vector<Tensor<T>> sums_;  ///< gradients summed at fan-out
  const Tensor<T>* input_grad_ = nullptr;
  Tensor<T> input_sum_;
  std::vector<SharedParam> shared_params_;
  std::vector<std::pair<Tensor<T>*, const Tensor<T>*>> shared_grads_;  ///< (layer's, later call's)
  bool sealed_ = false;
};

LOOM_REGISTER(Graph)

/// Keras's functional model, `keras.Model(inputs, outputs)`: a Sequential
/// whose one layer is the Graph from `input` to `output` (so compile, fit,
/// evaluate, predict, save, Predictor and data-parallel fit are the
/// Sequential's), with the graph's own summary and layer lookup.
template <class T>
class Functional : public Sequential<T> {
 public:
  /// `seed` drives weight initialization (in node order, so a graph that
  /// is a chain starts with the weights of the same Sequential), shuffling
  /// and dropout.
  Functional(const Symbol<T>& input, const Symbol<T>& output, std::uint64_t seed = 0,
             std::string name = "functional")
      : Sequential<T>(seed, name) {
    auto graph = std::make_unique<Graph<T>>(input, output);
    graph->set_name(name);
    Sequential<T>::add(std::unique_ptr<Layer<T>>(std::move(graph)), input.shape());
  }
  /// A Sequential holding one Graph (what Sequential::load gives for a
  /// functional model's file) as a Functional.
  explicit Functional(Sequential<T>&& model) : Sequential<T>(std::move(model)) {
    if (this->size() != 1 || dynamic_cast<Graph<T>*>(&Sequential<T>::layer(0)) == nullptr) {
      throw ConfigError("Functional: model '" + this->name() + "' is not a functional model (one Functional layer)");
    }
  }
  /// A functional model from a file by save().
  static Functional load(const std::string& path) { return Functional(Sequential<T>::load(path)); }

  /// Layers are given at construction (a Sequential's add does not apply).
  template <class... A>
  void add(A&&...) = delete;

  Graph<T>& graph() const { return dynamic_cast<Graph<T>&>(*this->layers().front()); }
  /// The layer called `name`, inside the graph.
  Layer<T>& layer(const std::string& name) { return graph().layer(name); }
  Layer<T>& layer(std::size_t i) { return *graph().layers().at(i); }

  /// Keras's summary of a functional model: one row for the input and one
  /// for each call, with the calls whose outputs it takes ("Connected to",
  /// as `layer[call][0]`).
  void summary(std::ostream& out = std::cout) const {
    const Graph<T>& g = graph();
    const auto& nodes = g.nodes();
    const std::vector<Layer<T>*> layers = g.layers();
    std::vector<int> call(nodes.size(), 0), calls(layers.size(), 0);
    for (std::size_t n = 0; n < nodes.size(); ++n) call[n] = calls[static_cast<std::size_t>(nodes[n].layer)]++;
    const auto ref = [&](int i) {
      if (i < 0) return g.input_name() + "[0][0]";
      return layers[static_cast<std::size_t>(nodes[static_cast<std::size_t>(i)].layer)]->name() + "[" +
             std::to_string(call[static_cast<std::size_t>(i)]) + "][0]";
    };
    const auto row = [](const std::vector<std::string>& fields) {
      return detail::summary_row(fields, {33, 55, 67, 98});  // a functional model's four columns, as tf.keras's
    };
    const std::string rule(98, '_'), double_rule(98, '=');
    out << "Model: \"" << this->name() << "\"\n" << rule << "\n";
    out << row({"Layer (type)", "Output Shape", "Param #", "Connected to"}) << "\n" << double_rule << "\n";
    out << row({g.input_name() + " (InputLayer)", "[" + g.input_shape().str("None") + "]", "0", "[]"}) << "\n\n";
    for (std::size_t n = 0; n < nodes.size(); ++n) {
      Layer<T>& l = *layers[static_cast<std::size_t>(nodes[n].layer)];
      const bool first = call[n] == 0;
      std::vector<std::string> links;
      for (int i : nodes[n].inputs) links.push_back("'" + ref(i) + "'");
      out << row({l.name() + " (" + l.type() + ")", g.node_shape(n).str("None"),
                  std::to_string(first ? l.count_params() : 0), "[" + links[0] + (links.size() > 1 ? "," : "]")})
          << "\n";
      for (std::size_t k = 1; k < links.size(); ++k) {
        out << row({"", "", "", " " + links[k] + (k + 1 < links.size() ? "," : "]")}) << "\n";
      }
      out << (n + 1 == nodes.size() ? double_rule : std::string()) << "\n";
    }
    long long total = 0, trainable = 0;
    for (Layer<T>* l : layers) {
      total += l->count_params();
      trainable += l->count_trainable_params();
    }
    out << "Total params: " << detail::thousands(total) << "\n"
        << "Trainable params: " << detail::thousands(trainable) << "\n"
        << "Non-trainable params: " << detail::thousands(total - trainable) << "\n"
        << rule << "\n";
  }
};

}  // namespace loom
