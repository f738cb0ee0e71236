#pragma once
/// \file keras_format.hpp
/// Keras 3's `.keras` file, as keras/src/saving/saving_lib.py writes it: a
/// zip archive of
///
///     metadata.json      {"keras_version": ..., "date_saved": ...}
///     config.json        the model config, with "compile_config" when compiled
///     model.weights.h5   root "vars" group (the model's own, empty), and
///                        layers/<auto name>/vars/<i> for each layer
///
/// where <auto name> is NOT the layer's name in config.json: it is the
/// snake_case class name, numbered per class in layer order (conv2d,
/// conv2d_1, batch_normalization, ...; `_save_container_state`), and <i>
/// counts the layer's variables, trainable ones first (kernel, bias; gamma,
/// beta, moving_mean, moving_variance). The optimizer's variables are
/// optimizer/vars/<i> (see optimizer_state.hpp).

#include <cctype>
#include <chrono>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "compile_config.hpp"
#include "h5_format.hpp"
#include "hdf5.hpp"
#include "model_config.hpp"
#include "optimizer_state.hpp"
#include "zipfile.hpp"

namespace loom::keras::impl {

/// The graph of a functional model (a Sequential holding one Graph), or null.
template <class T>
Graph<T>* graph_of(const Sequential<T>& model) {
  return model.size() == 1 ? dynamic_cast<Graph<T>*>(model.layers().front().get()) : nullptr;
}

/// The variables of a model nested in a chain (a Graph made from a nested
/// Sequential's entry): Keras keeps them under the nested model's path, as
/// `<path>/layers/<class>[_k]/vars`, numbered within it.
template <class T>
void nested_variable_slots(const json& entry, const std::string& path, Graph<T>& graph, const std::string& what,
                           std::vector<std::pair<std::string, Layer<T>*>>& slots) {
  std::string name;
  bool functional = false;
  std::map<std::string, int> used;
  const std::vector<Layer<T>*> layers = graph.layers();
  std::size_t k = 0;
  for (const json& inner : layer_list(entry, what, name, functional)) {
    const std::string cls = Fields(inner, what + ": nested layer").text("class_name");
    if (cls == "InputLayer") continue;
    std::string inner_path = snake_case(cls);
    const auto it = used.find(inner_path);
    if (it == used.end()) {
      used[inner_path] = 0;
    } else {
      inner_path += "_" + std::to_string(++it->second);
    }
    if (k >= layers.size()) break;
    Layer<T>* layer = layers[k++];
    const std::string at = path + "/layers/" + inner_path;
    if (auto* deeper = dynamic_cast<Graph<T>*>(layer)) {
      nested_variable_slots(inner, at, *deeper, what, slots);
    } else {
      slots.emplace_back(at + "/vars", layer);
    }
  }
}

/// Where each layer's variables are in a .keras file: (path, layer). A
/// functional model's paths are numbered per class in the order of the
/// config's layer list, as Keras numbers `model.layers` (InputLayer
/// included: its name, input_layer, takes no other class's number), and
/// each path belongs to the layer of that entry's name.
template <class T>
std::vector<std::pair<std::string, Layer<T>*>> variable_slots(const Sequential<T>& model, const json& config,
                                                             const std::string& what) {
  std::vector<std::pair<std::string, Layer<T>*>> slots;
  Graph<T>* graph = graph_of(model);
  if (graph == nullptr) {
    // Numbered by class as Keras numbers them; a model nested in the chain
    // (a Graph) by the class its entry names (Sequential), its variables under it.
    std::string name;
    bool functional = false;
    std::map<std::string, int> used;
    std::size_t k = 0;
    for (const json& entry : layer_list(config, what, name, functional)) {
      const std::string cls = Fields(entry, what + ": layer").text("class_name");
      if (cls == "InputLayer") continue;
      if (k >= model.layers().size()) break;
      Layer<T>* layer = model.layers()[k++].get();
      std::string path = snake_case(keras_layer_class(layer->type()));
      auto* nested = dynamic_cast<Graph<T>*>(layer);
      if (nested) path = snake_case(cls);
      const auto it = used.find(path);
      if (it == used.end()) {
        used[path] = 0;
      } else {
        path += "_" + std::to_string(++it->second);
      }
      if (nested) {
        nested_variable_slots(entry, "layers/" + path, *nested, what, slots);
      } else {
        slots.emplace_back("layers/" + path + "/vars", layer);
      }
    }
    return slots;
  }
  std::string name;
  bool functional = false;
  std::map<std::string, int> used;
  for (const json& entry : layer_list(config, what, name, functional)) {
    Fields e(entry, what + ": layer");
    const std::string cls = e.text("class_name");
    std::string path = snake_case(cls);
    const auto it = used.find(path);
    if (it == used.end()) {
      used[path] = 0;
    } else {
      path += "_" + std::to_string(++it->second);
    }
    if (cls == "InputLayer") continue;
    Fields f(e.at("config"), e.where());
    slots.emplace_back("layers/" + path + "/vars", &graph->layer(f.text("name", e.text("name", ""))));
  }
  return slots;
}

/// Whether optimizer state saved under the name `saved` (Keras 3.9+ writes it
/// on optimizer/vars) is the compiled optimizer's, of loom class `type`: the
/// name the compile config `compiled` gives it or, when it gives none, a name
/// Keras gives its class by default, which it numbers within a session
/// (adam, adam_1, ...: keras/src/utils/naming.py, auto_name).
inline bool state_is_compiled_optimizers(const std::string& saved, const json* compiled, const std::string& type) {
  if (compiled && compiled->is_object() && compiled->contains("config") && compiled->at("config").is_object() &&
      compiled->at("config").contains("name") && compiled->at("config").at("name").is_string()) {
    return saved == compiled->at("config").at("name").get<std::string>();
  }
  std::string lower = type;  // Keras 3.9 and earlier also wrote the lower-cased class ("rmsprop")
  for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return default_optimizer_name(saved, type) || saved == lower;
}

inline constexpr std::uint64_t kMaxConfigBytes = std::uint64_t{64} << 20;
inline constexpr std::uint64_t kMaxWeightsBytes = std::uint64_t{4} << 30;

template <class T>
Sequential<T> load_keras(const std::vector<unsigned char>& bytes, const std::string& what, bool compile) {
  const zipfile::Reader archive(bytes, what);
  const auto text = archive.read("config.json", kMaxConfigBytes);
  const json config = parse_json(std::string(text.begin(), text.end()), what + ": config.json");
  if (!archive.has("model.weights.h5")) {
    throw FormatError(what + (archive.has("model.weights.npz") ? ": weights saved as .npz are not supported (only .h5)"
                                                                : ": the archive has no model.weights.h5"));
  }
  const auto weight_bytes = archive.read("model.weights.h5", kMaxWeightsBytes);
  std::string version;  // metadata.json is optional: a .keras file without it counts as today's Keras
  if (archive.has("metadata.json")) {
    const auto m = archive.read("metadata.json", kMaxConfigBytes);
    const json metadata = parse_json(std::string(m.begin(), m.end()), what + ": metadata.json");
    if (metadata.is_object() && metadata.contains("keras_version") && metadata.at("keras_version").is_string()) {
      version = metadata.at("keras_version").get<std::string>();
    }
  }
  Sequential<T> model = model_from_config<T>(config, what, static_cast<Index>(weight_bytes.size() / 2 + 64), version);

  const std::string weights_what = what + ": model.weights.h5";
  auto file = hdf5::File::open_image(weight_bytes, weights_what);
  const hdf5::Group root = file.root();
  for (const auto& [path, layer_pointer] : variable_slots(model, config, what)) {
    Layer<T>& layer = *layer_pointer;
    auto params = layer.parameters();
    if (params.empty()) continue;
    if (!root.has_group(path)) {
      throw FormatError(weights_what + ": no '" + path + "' for layer '" + layer.name() + "' (" + layer.type() + ")");
    }
    const hdf5::Group vars = root.group(path);
    const auto members = vars.members();
    if (members.size() != params.size()) {
      throw FormatError(loom::detail::str(weights_what, ": layer '", layer.name(), "' (", layer.type(), ") has ",
                                          params.size(), " weights in loom, '", path, "' holds ", members.size()));
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      try {
        vars.read(std::to_string(i), *params[i].value);
      } catch (const FormatError& e) {
        throw FormatError(weights_what + ": layer '" + layer.name() + "' (" + layer.type() + "): " + e.what());
      }
    }
  }

  if (compile) {
    Fields top(config, what + ": config.json");
    if (top.has("compile_config")) {
      Fields c(top.at("compile_config"), what + ": compile_config");
      if (c.has("loss")) {
        check_loss_weights(c);
        compile_from_keras(model, single_loss(c.at("loss"), what), c.has("optimizer") ? &c.at("optimizer") : nullptr,
                           c.has("metrics") ? &c.at("metrics") : nullptr, what, version);
      }
    }
    // A graph's parameters are in loom's order of its layers, not Keras's: its optimizer starts afresh.
    if (model.compiled() && root.has_group("optimizer/vars") && graph_of(model) == nullptr) {
      const hdf5::Group state = root.group("optimizer/vars");
      // Keras 3.9+ names the optimizer on the group: state of another one is not for this one.
      const json* compiled = top.has("compile_config") && top.at("compile_config").contains("optimizer")
                                 ? &top.at("compile_config").at("optimizer")
                                 : nullptr;
      const bool same = !state.has_attribute("name") ||
                        state_is_compiled_optimizers(state.string("name"), compiled, model.trainer().optimizer().type());
      const std::size_t n = state.members().size();
      // iteration, then learning_rate unless a schedule gives it, then the slots (optimizer_variables).
      const std::size_t first_slot = model.trainer().optimizer().learning_rate_schedule() ? 1 : 2;
      std::vector<std::string> paths;
      std::vector<SlotKind> kinds;
      const auto wanted = state_kinds(model.trainer().optimizer());
      for (std::size_t i = 0; i < n; ++i) {
        paths.push_back(std::to_string(i));
        kinds.push_back(i == 0 ? SlotKind::Iteration
                        : i < first_slot ? SlotKind::LearningRate
                        : wanted.empty() ? SlotKind::Unknown
                                         : wanted[(i - first_slot) % wanted.size()]);  // Adam's are interleaved
      }
      if (same && n >= first_slot) import_optimizer_state(model, state, paths, kinds, weights_what);
    }
  }
  return model;
}

inline std::string date_saved() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm local{};
  localtime_r(&now, &local);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d@%H:%M:%S", &local);
  return text;
}

template <class T>
std::vector<unsigned char> save_keras(Sequential<T>& model) {
  json config = model_to_config(model, true);
  if (model.compiled()) config["compile_config"] = compile_config(model, true);
  const json metadata = {{"keras_version", kKerasFormatVersion}, {"date_saved", date_saved()}};

  auto file = hdf5::File::create_in_memory();
  hdf5::Group root = file.root();
  root.create_group("vars");
  for (const auto& [path, layer] : variable_slots(model, config, "keras")) {
    hdf5::Group vars = root.create_group(path);
    auto params = layer->parameters();
    for (std::size_t i = 0; i < params.size(); ++i) vars.write(std::to_string(i), *params[i].value);
  }
  // A graph's parameters are in loom's order of its layers, not Keras's: its optimizer state is not written.
  const auto optimizer = graph_of(model) ? decltype(optimizer_variables(model)){} : optimizer_variables(model);
  if (!optimizer.empty()) {
    hdf5::Group state = root.create_group("optimizer/vars");
    write_optimizer_variables(model, state, optimizer, [](std::size_t i, const auto&) { return std::to_string(i); });
  }

  zipfile::Writer archive;
  archive.add("metadata.json", metadata.dump());
  archive.add("config.json", config.dump());
  archive.add("model.weights.h5", file.image());
  return archive.finish();
}

}  // namespace loom::keras::impl
