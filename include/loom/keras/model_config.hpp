#pragma once
/// \file model_config.hpp
/// Keras's JSON model configs, both ways: a Sequential (or straight-chain
/// Functional) config of Keras 2.1 to 3.x becomes a loom `Sequential<T>`, a
/// Functional one with branches and merges a `Functional<T>` (model/
/// functional.hpp, returned as the Sequential it is), and
/// a loom model becomes the config Keras 3 writes. Each layer is mapped by
/// its LayerMapping (layer_mapping.hpp; loom's own in layers.hpp). The
/// compile config is in compile_config.hpp; weights are not here: see
/// h5_format.hpp and keras_format.hpp.

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>
#include <optional>
#include <string>
#include <vector>

#include "../model/functional.hpp"
#include "../model/sequential.hpp"
#include "json.hpp"
#include "layer_mapping.hpp"
#include "layers.hpp"

namespace loom::keras {

/// The Keras version loom's files say they follow (the format, not the code).
inline constexpr const char* kKerasFormatVersion = "3.0.0";

namespace impl {

/// The per-sample input shape in `batch_shape` / `batch_input_shape`
/// ([null, 28, 28, 1] gives (28, 28, 1)), if the config has one.
inline std::optional<Shape> input_shape_of(const Fields& f) {
  const char* key = f.has("batch_shape") ? "batch_shape" : f.has("batch_input_shape") ? "batch_input_shape" : nullptr;
  if (!key) return std::nullopt;
  const json& v = f.at(key);
  if (!v.is_array() || v.size() < 2 || v.size() > static_cast<std::size_t>(Shape::max_rank) + 1) {
    f.bad(key, "a list [None, dims...]");
  }
  Shape s;
  Index total = 1;
  for (std::size_t i = 1; i < v.size(); ++i) {
    if (!v[i].is_number_integer() || v[i].get<long long>() < 1 || v[i].get<long long>() > (1 << 24)) {
      f.bad(key, "a list of known, positive dimensions after the batch");
    }
    s.push_back(static_cast<Index>(v[i].get<long long>()));
    total *= s.back();
    if (total > (Index{1} << 31)) f.bad(key, "a shape of at most 2^31 values");
  }
  return s;
}

/// The layer entries of a model config, checked to form a straight chain.
/// Keras 2.1's Sequential config is a bare list; later ones hold "layers".
inline const json& layer_list(const json& model, const std::string& what, std::string& model_name, bool& functional) {
  Fields top(model, what + ": model config");
  const std::string cls = top.text("class_name");
  functional = cls == "Functional" || cls == "Model";
  if (cls != "Sequential" && !functional) {
    throw FormatError(what + ": model class '" + cls + "' is not supported: loom reads Sequential and "
                      "Functional models");
  }
  const json& config = top.at("config");
  if (config.is_array()) return config;  // Keras 2.1
  Fields c(config, what + ": model config");
  model_name = c.text("name", "sequential");
  const json& layers = c.at("layers");
  if (!layers.is_array()) c.bad("layers", "a list");
  return layers;
}

/// One entry of a model config's layer list: its own fields, its class,
/// its name, and its config's fields (naming the layer in errors).
struct LayerEntry {
  Fields fields;
  std::string cls, name;
  Fields config;
};
inline LayerEntry layer_entry(const json& entry, const std::string& what, std::size_t index,
                              const std::string& keras_version) {
  Fields e(entry, loom::detail::str(what, ": layer ", index));
  const std::string cls = e.text("class_name");
  Fields f(e.at("config"), loom::detail::str(what, ": layer ", index, " (", cls, ")"));
  const std::string name = f.text("name", e.text("name", ""));
  Fields lf(e.at("config"), loom::detail::str(what, ": layer '", name, "' (", cls, ")"));
  lf.keras_version(keras_version);
  return {e, cls, name, lf};
}

/// A Keras tensor a layer call takes: the layer that made it, which of that
/// layer's calls, which of its outputs.
struct InboundRef {
  std::string layer;
  long long node = 0, tensor = 0;
};

inline void inbound_refs(const json& node, std::vector<InboundRef>& out) {
  if (node.is_object()) {
    if (node.contains("keras_history") && node.at("keras_history").is_array()) {
      const json& h = node.at("keras_history");
      if (h.size() >= 3 && h[0].is_string() && h[1].is_number_integer() && h[2].is_number_integer()) {
        out.push_back({h[0].get<std::string>(), h[1].get<long long>(), h[2].get<long long>()});
        return;
      }
    }
    for (const auto& item : node.items()) inbound_refs(item.value(), out);
  } else if (node.is_array()) {
    if (node.size() >= 3 && node[0].is_string() && node[1].is_number_integer() && node[2].is_number_integer()) {
      out.push_back({node[0].get<std::string>(), node[1].get<long long>(), node[2].get<long long>()});  // Keras 2
      return;
    }
    for (const auto& item : node) inbound_refs(item, out);
  }
}

/// The calls of a Functional layer entry, each with the tensors it takes:
/// Keras 2's `inbound_nodes` is a list of calls, each a list of [layer,
/// call, tensor, kwargs]; Keras 3's a list of calls, each {"args": [...],
/// "kwargs": {...}} holding Keras tensors with their `keras_history`.
inline std::vector<std::vector<InboundRef>> inbound_calls(const Fields& entry) {
  std::vector<std::vector<InboundRef>> calls;
  if (!entry.has("inbound_nodes")) return calls;
  const json& nodes = entry.at("inbound_nodes");
  if (!nodes.is_array()) entry.bad("inbound_nodes", "a list");
  for (const json& node : nodes) {
    std::vector<InboundRef> refs;
    inbound_refs(node.is_object() && node.contains("args") ? node.at("args") : node, refs);
    calls.push_back(std::move(refs));
  }
  return calls;
}

/// A Functional config's `input_layers` or `output_layers`: [[layer, call,
/// tensor], ...], or one [layer, call, tensor].
inline std::vector<InboundRef> endpoint_refs(const Fields& c, const char* key) {
  std::vector<InboundRef> refs;
  if (c.has(key)) inbound_refs(c.at(key), refs);
  return refs;
}

/// Whether a Functional model's layers form a straight chain: each takes
/// the one before it, once (the first, an InputLayer, nothing).
inline bool straight_chain(const json& layers, const std::string& what) {
  std::string previous;
  std::size_t index = 0;
  for (const json& entry : layers) {
    Fields e(entry, loom::detail::str(what, ": layer ", ++index));
    const auto calls = inbound_calls(e);
    const bool first = index == 1;
    if (first ? !calls.empty()
              : calls.size() != 1 || calls[0].size() != 1 || calls[0][0].layer != previous || calls[0][0].node != 0) {
      return false;
    }
    Fields f(e.at("config"), e.where());
    previous = f.text("name", e.text("name", ""));
  }
  return true;
}

/// Whether a layer entry's class is a model's: a model nested in another.
inline bool nested_model_class(const std::string& cls) {
  return cls == "Sequential" || cls == "Functional" || cls == "Model";
}

template <class T>
std::unique_ptr<Layer<T>> keras_layer(const json& entry, const LayerEntry& e, Index max_values_per_layer,
                                      const std::string& keras_version);

/// A model nested in another, as Keras's `keras.Sequential([...])` block
/// placed in a model (a data-augmentation block, say): a Graph layer that
/// is the chain of its layers, named as the model. Its config must give its
/// input shape (Keras writes its InputLayer).
template <class T>
std::unique_ptr<Layer<T>> nested_model(const json& entry, const LayerEntry& e, Index max_values_per_layer,
                                       const std::string& keras_version) {
  const Fields& lf = e.config;
  std::string name;
  bool functional = false;
  const json& layers = layer_list(entry, lf.where(), name, functional);
  if (functional && !straight_chain(layers, lf.where())) {
    lf.refuse("a nested Functional model with branches (loom reads nested chains)");
  }
  std::optional<Shape> input;
  std::string input_name = "input_layer";
  std::vector<typename Graph<T>::LayerPtr> made;
  std::vector<typename Graph<T>::Node> nodes;
  std::size_t index = 0;
  for (const json& json_entry : layers) {
    const LayerEntry inner = layer_entry(json_entry, lf.where(), ++index, keras_version);
    if (auto shape = input_shape_of(inner.config); shape && made.empty()) {
      input = shape;
      if (inner.cls == "InputLayer" && !inner.name.empty()) input_name = inner.name;
    }
    std::unique_ptr<Layer<T>> layer = keras_layer<T>(json_entry, inner, max_values_per_layer, keras_version);
    if (!layer) continue;
    nodes.push_back({static_cast<int>(made.size()), {static_cast<int>(made.size()) - 1}});
    made.emplace_back(std::move(layer));
  }
  if (made.empty()) lf.refuse("a nested model with no layers loom can run");
  if (!input) lf.refuse("a nested model whose config gives no input shape");
  try {
    auto graph = std::make_unique<Graph<T>>(*input, input_name, std::move(made), std::move(nodes));
    graph->set_name(name);
    return graph;
  } catch (const Error& err) {
    throw FormatError(lf.where() + ": " + err.what());
  }
}

/// The loom layer of one Keras layer entry (nullptr for an InputLayer):
/// through the layer mappings, or a nested model.
template <class T>
std::unique_ptr<Layer<T>> keras_layer(const json& entry, const LayerEntry& e, Index max_values_per_layer,
                                      const std::string& keras_version) {
  if (nested_model_class(e.cls)) return nested_model<T>(entry, e, max_values_per_layer, keras_version);
  auto layer = layer_from_keras<T>(e.cls, e.config);
  if (layer) layer->limit_parameter_values(max_values_per_layer);
  return layer;
}

/// A Functional model with branches, merges or shared layers: each layer
/// entry made once and called on the outputs its inbound nodes name, in the
/// config's order (Keras writes them so that each call's inputs come first).
template <class T>
Sequential<T> functional_from_config(const json& model, const json& layers, const std::string& model_name,
                                     const std::string& what, Index max_values_per_layer,
                                     const std::string& keras_version) {
  std::map<std::string, std::vector<Symbol<T>>> outputs;  // each layer's output of each call
  std::optional<Symbol<T>> input;
  struct Made {
    std::string cls, name, where;
    const json* config;
  };
  std::vector<Made> made;
  std::size_t index = 0;
  for (const json& json_entry : layers) {
    const LayerEntry entry = layer_entry(json_entry, what, ++index, keras_version);
    const Fields &e = entry.fields, &lf = entry.config;
    const std::string &cls = entry.cls, &name = entry.name;
    if (outputs.count(name)) throw FormatError(lf.where() + ": a second layer of that name");
    const auto calls = inbound_calls(e);
    auto layer = keras_layer<T>(json_entry, entry, max_values_per_layer, keras_version);
    if (!layer) {  // an InputLayer
      const auto shape = input_shape_of(lf);
      if (!shape) throw FormatError(lf.where() + ": no input shape");
      if (input) lf.refuse("a model with several inputs");
      input = Input<T>(*shape, name);
      outputs[name].push_back(*input);
      continue;
    }
    if (calls.empty()) throw FormatError(lf.where() + ": takes no input");
    SharedLayer<T> handle(std::move(layer));
    for (const auto& refs : calls) {
      std::vector<Symbol<T>> xs;
      for (const InboundRef& r : refs) {
        const auto it = outputs.find(r.layer);
        if (it == outputs.end() || r.node < 0 || r.node >= static_cast<long long>(it->second.size())) {
          throw FormatError(loom::detail::str(lf.where(), ": takes call ", r.node, " of '", r.layer,
                                              "', which no layer before it makes"));
        }
        if (r.tensor != 0) lf.refuse(loom::detail::str("output ", r.tensor, " of '", r.layer, "' (layers with several outputs)"));
        xs.push_back(it->second[static_cast<std::size_t>(r.node)]);
      }
      try {
        outputs[name].push_back(call(handle, xs));
      } catch (const Error& err) {
        throw FormatError(lf.where() + ": " + err.what());
      }
    }
    made.push_back({cls, name, lf.where(), &e.at("config")});
  }
  Fields top(model, what + ": model config");
  Fields c(top.at("config"), what + ": model config");
  const auto ins = endpoint_refs(c, "input_layers"), outs = endpoint_refs(c, "output_layers");
  if (!input || ins.size() > 1) throw FormatError(what + ": loom reads models with one input, this one has " +
                                                  std::to_string(input ? ins.size() : 0));
  if (outs.size() != 1) {
    throw FormatError(what + ": loom reads models with one output, this one has " + std::to_string(outs.size()));
  }
  const auto out = outputs.find(outs[0].layer);
  if (out == outputs.end() || outs[0].node < 0 || outs[0].node >= static_cast<long long>(out->second.size()) ||
      outs[0].tensor != 0) {
    throw FormatError(what + ": its output names a layer call the model does not have ('" + outs[0].layer + "')");
  }
  try {
    Functional<T> result(*input, out->second[static_cast<std::size_t>(outs[0].node)], 0, model_name);
    for (const Made& m : made) check_layer_input(m.cls, Fields(*m.config, m.where), result.layer(m.name).input_shape());
    return std::move(result);
  } catch (const FormatError&) {
    throw;
  } catch (const Error& err) {
    throw FormatError(what + ": " + err.what());
  }
}

/// The order in which Keras lists a functional model's layers (model.layers,
/// and so its config and its weight files): keras/src/ops/function.py's
/// map_graph. A depth-first walk back from the output numbers each layer (the
/// input too) when first reached and lists each call after its inputs; going
/// back over that list from the output, a call's depth is the largest of its
/// consumers' plus one, and a layer's the largest of its calls'. Layers come
/// by decreasing depth, ties in the walk's numbering. Returns layer indices,
/// -1 for the input.
template <class T>
std::vector<int> keras_layer_order(const Graph<T>& g) {
  const auto& nodes = g.nodes();
  const int n = static_cast<int>(nodes.size());
  std::map<int, int> index;  // layer (or -1) -> walk number
  std::vector<int> post;     // calls (-1: the input) in the order the walk finishes them
  std::vector<char> finished(static_cast<std::size_t>(n), 0);
  bool input_finished = false;
  const auto walk = [&](const auto& self, int node) -> void {
    const int layer = node < 0 ? -1 : nodes[static_cast<std::size_t>(node)].layer;
    if (node < 0 ? input_finished : finished[static_cast<std::size_t>(node)] != 0) return;
    index.emplace(layer, static_cast<int>(index.size()));
    if (node >= 0) {
      for (int i : nodes[static_cast<std::size_t>(node)].inputs) self(self, i);
      finished[static_cast<std::size_t>(node)] = 1;
    } else {
      input_finished = true;
    }
    post.push_back(node);
  };
  walk(walk, n - 1);
  std::map<int, int> node_depth, layer_depth;
  for (auto it = post.rbegin(); it != post.rend(); ++it) {
    const int node = *it;
    const int layer = node < 0 ? -1 : nodes[static_cast<std::size_t>(node)].layer;
    int depth = std::max(node_depth.emplace(node, 0).first->second, layer_depth[layer]);
    layer_depth[layer] = depth;
    node_depth[node] = depth;
    if (node >= 0) {
      for (int i : nodes[static_cast<std::size_t>(node)].inputs) node_depth[i] = std::max(depth + 1, node_depth[i]);
    }
  }
  std::vector<int> order;
  for (const auto& kv : layer_depth) order.push_back(kv.first);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return layer_depth[a] != layer_depth[b] ? layer_depth[a] > layer_depth[b] : index[a] < index[b];
  });
  return order;
}

/// Keras's config of a functional model: its layers in Keras's order, each
/// with the calls it makes (`inbound_nodes`: Keras 3's {"args": [keras
/// tensors]} in a .keras file, Keras 2's [[layer, call, 0, {}]] in a legacy
/// .h5, which Keras 3 reads too).
template <class T>
json graph_to_config(const Sequential<T>& model, const Graph<T>& g, bool keras_v3) {
  const auto& nodes = g.nodes();
  const std::vector<Layer<T>*> layers = g.layers();
  std::vector<int> call(nodes.size(), 0), calls(layers.size(), 0);
  for (std::size_t i = 0; i < nodes.size(); ++i) call[i] = calls[static_cast<std::size_t>(nodes[i].layer)]++;
  const auto source = [&](int i) {  // (layer name, call, shape) of what node input i is
    if (i < 0) return std::make_tuple(g.input_name(), 0, g.input_shape());
    const auto k = static_cast<std::size_t>(i);
    return std::make_tuple(layers[static_cast<std::size_t>(nodes[k].layer)]->name(), call[k], g.node_shape(k));
  };
  const auto tensor = [&](int i) -> json {
    const auto [name, c, shape] = source(i);
    if (!keras_v3) return json::array({name, c, 0, json::object()});
    return {{"class_name", "__keras_tensor__"},
            {"config", {{"shape", shape_json(shape)}, {"dtype", "float32"}, {"keras_history", json::array({name, c, 0})}}}};
  };
  json entries = json::array();
  for (int l : keras_layer_order(g)) {
    if (l < 0) {
      json config = {{keras_v3 ? "batch_shape" : "batch_input_shape", shape_json(g.input_shape())},
                     {"dtype", "float32"}, {"sparse", false}, {"name", g.input_name()}};
      json e = keras_v3 ? keras_object("keras.layers", "InputLayer", std::move(config))
                        : json{{"class_name", "InputLayer"}, {"config", std::move(config)}};
      e["name"] = g.input_name();
      e["inbound_nodes"] = json::array();
      entries.push_back(std::move(e));
      continue;
    }
    Layer<T>& layer = *layers[static_cast<std::size_t>(l)];
    const std::string cls = keras_layer_class(layer.type());
    json e = {{"class_name", cls}, {"config", layer_to_keras(layer, keras_v3)}};
    json inbound = json::array();
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      if (nodes[i].layer != l) continue;
      json args = json::array();
      for (int in : nodes[i].inputs) args.push_back(tensor(in));
      if (!keras_v3) {
        inbound.push_back(std::move(args));
        continue;
      }
      const bool merge = dynamic_cast<const Merge<T>*>(&layer) != nullptr;
      inbound.push_back({{"args", merge ? json::array({std::move(args)}) : std::move(args)}, {"kwargs", json::object()}});
    }
    if (keras_v3) {
      e = keras_object("keras.layers", cls.c_str(), e["config"]);
      if (const auto* merge = dynamic_cast<const Merge<T>*>(&layer)) {
        json shapes = json::array();
        for (const Shape& s : merge->input_shapes()) shapes.push_back(shape_json(s));
        e["build_config"] = {{"input_shape", std::move(shapes)}};
      } else {
        e["build_config"] = {{"input_shape", shape_json(layer.input_shape())}};
      }
    }
    e["name"] = layer.name();
    e["inbound_nodes"] = std::move(inbound);
    entries.push_back(std::move(e));
  }
  const json input = json::array({g.input_name(), 0, 0});
  const auto [out_name, out_call, out_shape] = source(static_cast<int>(nodes.size()) - 1);
  (void)out_shape;
  const json output = json::array({out_name, out_call, 0});
  json config = {{"name", model.name()},
                 {"trainable", true},
                 {"layers", std::move(entries)},
                 {"input_layers", keras_v3 ? input : json::array({input})},
                 {"output_layers", keras_v3 ? output : json::array({output})}};
  if (!keras_v3) return {{"class_name", "Functional"}, {"config", std::move(config)}};
  json top = keras_object("keras.src.models.functional", "Functional", std::move(config));
  top["registered_name"] = "Functional";
  top["build_config"] = {{"input_shape", nullptr}};
  return top;
}

}  // namespace impl

namespace impl {

/// Whether any layer in a Keras model config (nested models too) runs
/// under the "mixed_bfloat16" dtype policy.
inline bool uses_mixed_bfloat16(const json& j) {
  if (j.is_object()) {
    if (j.contains("dtype")) {
      const json& d = j.at("dtype");
      const bool named = (d.is_string() && d.get<std::string>() == "mixed_bfloat16") ||
                         (d.is_object() && d.contains("config") && d.at("config").is_object() &&
                          d.at("config").contains("name") && d.at("config").at("name") == "mixed_bfloat16");
      if (named) return true;
    }
    for (const auto& item : j.items()) {
      if (uses_mixed_bfloat16(item.value())) return true;
    }
  } else if (j.is_array()) {
    for (const auto& item : j) {
      if (uses_mixed_bfloat16(item)) return true;
    }
  }
  return false;
}

/// A model Keras trained under mixed_bfloat16 (any of its layers) gets that
/// policy, where it can run (a float model on a CPU with AVX512_BF16);
/// elsewhere it stays float32, whose products are the more precise, as a
/// loom file's policy does. Keras's per-layer exceptions (an output layer
/// left in float32) are not kept: loom's policy is the model's.
template <class T>
void apply_policy(Sequential<T>& m, const json& config) {
  if constexpr (std::is_same_v<T, float>) {
    if (loom::detail::bf16_supported() && uses_mixed_bfloat16(config)) m.set_policy(Precision::MixedBFloat16);
  }
}

}  // namespace impl

/// A loom model from a Keras model config (the JSON of `model.to_json()`,
/// `model_config` in a .h5, config.json in a .keras), with fresh weights.
/// FormatError naming the layer for anything loom cannot represent.
///
/// `max_values_per_layer` caps what any one layer may allocate for its
/// parameters: loaders pass what the file could hold, so that a config cannot
/// ask for more memory than its weights could fill. `keras_version` is the
/// version that saved the config (empty: unknown, read as today's Keras 3).
template <class T>
Sequential<T> model_from_config(const json& model, const std::string& what = "Keras model",
                                Index max_values_per_layer = std::numeric_limits<Index>::max(),
                                const std::string& keras_version = "") {
  std::string model_name = "sequential";
  bool functional = false;
  const json& layers = impl::layer_list(model, what, model_name, functional);
  if (functional && !impl::straight_chain(layers, what)) {
    Sequential<T> graph =
        impl::functional_from_config<T>(model, layers, model_name, what, max_values_per_layer, keras_version);
    impl::apply_policy(graph, model);
    return graph;
  }
  Sequential<T> out(0, model_name);
  std::optional<Shape> input_shape;
  struct Made {           // a layer made, for the checks that need its input shape
    std::string cls, where;
    const json* config;
  };
  std::vector<Made> made;
  std::size_t index = 0;
  for (const json& json_entry : layers) {
    const impl::LayerEntry entry = impl::layer_entry(json_entry, what, ++index, keras_version);
    const Fields &e = entry.fields, &lf = entry.config;
    const std::string& cls = entry.cls;
    if (auto s = impl::input_shape_of(lf)) {
      if (input_shape && *input_shape != *s) throw FormatError(lf.where() + ": a second, different input shape");
      input_shape = s;
    }
    auto layer = impl::keras_layer<T>(json_entry, entry, max_values_per_layer, keras_version);
    if (!layer) continue;
    made.push_back({cls, lf.where(), &e.at("config")});
    try {
      out.add(std::move(layer), out.layers().empty() ? input_shape : std::nullopt);
    } catch (const Error& err) {
      throw FormatError(lf.where() + ": " + err.what());
    }
  }
  if (out.layers().empty()) throw FormatError(what + ": the model has no layers loom can run");
  if (!input_shape) {  // Keras 3 .keras: the model's build_config
    Fields top(model, what);
    if (top.has("build_config")) {
      Fields b(top.at("build_config"), what + ": build_config");
      if (b.has("input_shape")) {
        const json wrapped = {{"batch_shape", b.at("input_shape")}};
        input_shape = impl::input_shape_of(Fields(wrapped, what + ": build_config"));
      }
    }
    if (!input_shape) throw FormatError(what + ": the config gives no input shape");
    try {
      out.build(*input_shape);
    } catch (const Error& err) {
      throw FormatError(what + ": " + err.what());
    }
  }
  for (std::size_t i = 0; i < made.size(); ++i) {
    impl::check_layer_input(made[i].cls, Fields(*made[i].config, made[i].where), out.layers()[i]->input_shape());
  }
  impl::apply_policy(out, model);
  return out;
}

/// Keras 3's config of a built loom model. `keras_v3` adds what `.keras`
/// files carry (module, registered_name, build_config); without it the
/// entries are as Keras 3 writes them into a legacy .h5 (model_config),
/// but for the input shape, written so that tf.keras 2 reads it too.
template <class T>
json model_to_config(const Sequential<T>& model, bool keras_v3) {
  if (!model.built()) throw ConfigError("keras: model '" + model.name() + "' is not built: build or fit it first");
  if (model.size() == 1) {
    if (const auto* graph = dynamic_cast<const Graph<T>*>(model.layers().front().get())) {
      return impl::graph_to_config(model, *graph, keras_v3);
    }
  }
  json layers = json::array();
  auto entry = [&](const char* cls, json config, const Shape* input) {
    json e = {{"class_name", cls}, {"config", std::move(config)}};
    if (keras_v3) {
      e = impl::keras_object("keras.layers", cls, e["config"]);
      if (input) e["build_config"] = {{"input_shape", impl::shape_json(*input)}};
    }
    return e;
  };
  const Shape input = model.input_shape();
  // Keras 3 writes batch_shape; tf.keras 2 reads only batch_input_shape,
  // which Keras 3 reads too (InputLayer takes it as batch_shape): the legacy
  // .h5, the file tf.keras users load, says batch_input_shape.
  layers.push_back(entry("InputLayer",
                         {{keras_v3 ? "batch_shape" : "batch_input_shape", impl::shape_json(input)},
                          {"dtype", "float32"}, {"sparse", false}, {"name", "input_layer"}},
                         nullptr));
  for (const auto& l : model.layers()) {
    const std::string cls = keras_layer_class(l->type());
    const Shape in = l->input_shape();
    layers.push_back(entry(cls.c_str(), impl::layer_to_keras(*l, keras_v3), &in));
  }
  json config = {{"name", model.name()},
                 {"trainable", true},
                 {"dtype", impl::dtype_policy_json(model.policy(), keras_v3)},
                 {"layers", std::move(layers)}};
  if (!keras_v3) return {{"class_name", "Sequential"}, {"config", std::move(config)}};
  json top = impl::keras_object("keras", "Sequential", std::move(config));
  top["build_config"] = {{"input_shape", impl::shape_json(input)}};
  return top;
}

}  // namespace loom::keras
