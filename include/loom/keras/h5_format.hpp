#pragma once
/// \file h5_format.hpp
/// The legacy HDF5 format (`model.save("m.h5")`) of Keras 2.x and 3.x, as
/// keras/src/legacy/saving/legacy_h5_format.py reads and writes it:
///
///     /                        attrs: model_config (JSON), training_config
///                              (JSON, when compiled), keras_version, backend
///     /model_weights           attrs: layer_names (one per layer, possibly
///                              chunked as layer_names0, layer_names1, ...)
///     /model_weights/<layer>   attrs: weight_names, paths of the layer's
///                              datasets relative to this group:
///                                Keras 2     <layer>/kernel:0
///                                Keras 3.0   kernel
///                                Keras 3.1+  <model>/<layer>/kernel
///
/// Weights are matched as Keras matches them (load_weights_from_hdf5_group):
/// the groups whose weight_names are not empty, in layer_names order, to the
/// model's layers that have weights, in order; within a layer, by the last
/// part of each weight name (kernel, bias, gamma, beta, moving_mean,
/// moving_variance), so the order in the file does not matter.

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "compile_config.hpp"
#include "hdf5.hpp"
#include "model_config.hpp"
#include "optimizer_state.hpp"

namespace loom::keras::impl {

/// "sequential/conv2d/kernel:0" -> "kernel".
inline std::string weight_stem(const std::string& name) {
  std::string s = name.substr(name.rfind('/') == std::string::npos ? 0 : name.rfind('/') + 1);
  const auto colon = s.find(':');
  if (colon != std::string::npos) s.resize(colon);
  return s;
}

/// The layer and the weight a weight's path names ("block/conv2d/kernel:0"
/// -> "conv2d/kernel"); a path of one part, that part.
inline std::string weight_key(const std::string& name) {
  const std::string stem = weight_stem(name);
  const std::string rest = name.rfind('/') == std::string::npos ? std::string() : name.substr(0, name.rfind('/'));
  return rest.empty() ? stem : rest.substr(rest.rfind('/') == std::string::npos ? 0 : rest.rfind('/') + 1) + "/" + stem;
}

/// Loads one layer's weights from `group`, at the paths `names`: each to
/// the weight of the same layer and name (a nested model's layers hold
/// weights of the same names; Keras lists them trainable first), else of
/// the same name, else in Keras's order.
template <class T>
void read_layer_weights(const hdf5::Group& group, const std::vector<std::string>& names, Layer<T>& layer,
                        const std::string& what) {
  auto params = layer.parameters();
  if (names.size() != params.size()) {
    throw FormatError(loom::detail::str(what, ": layer '", layer.name(), "' (", layer.type(), ") has ", params.size(),
                                        " weights in loom, the file holds ", names.size()));
  }
  std::vector<bool> done(params.size(), false);
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::string stem = weight_stem(names[i]), key = weight_key(names[i]);
    std::size_t target = params.size();
    for (std::size_t p = 0; p < params.size() && target == params.size(); ++p) {
      if (!done[p] && params[p].name == key) target = p;
    }
    if (target == params.size()) {
      for (std::size_t p = 0; p < params.size(); ++p) {
        if (!done[p] && weight_stem(params[p].name) == stem) target = p;
      }
    }
    if (target == params.size()) target = i;  // names loom does not know: Keras's order
    if (done[target]) throw FormatError(what + ": layer '" + layer.name() + "' has weight '" + stem + "' twice");
    done[target] = true;
    try {
      group.read(names[i], *params[target].value);
    } catch (const FormatError& e) {
      throw FormatError(what + ": layer '" + layer.name() + "' (" + layer.type() + "): " + e.what());
    }
  }
}

template <class T>
Sequential<T> load_h5(const std::vector<unsigned char>& bytes, const std::string& what, bool compile) {
  auto file = hdf5::File::open_image(bytes, what);
  const hdf5::Group root = file.root();
  if (!root.has_attribute("model_config")) {
    throw FormatError(what + ": no 'model_config': a weights-only file (save_weights) or not a Keras model");
  }
  const json config = parse_json(root.string("model_config"), what + ": model_config");
  const std::string version = root.has_attribute("keras_version") ? root.string("keras_version") : "";
  // A float16 value takes 2 bytes: no layer can have more values than this.
  Sequential<T> model = model_from_config<T>(config, what, static_cast<Index>(bytes.size() / 2 + 64), version);

  const hdf5::Group weights = root.has_group("model_weights") ? root.group("model_weights") : file.root();
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;  // layers with weights: (name, weight_names)
  for (const auto& name : weights.chunked_strings("layer_names")) {
    auto names = weights.group(name).chunked_strings("weight_names");
    if (!names.empty()) groups.emplace_back(name, std::move(names));
  }
  std::vector<Layer<T>*> layers;
  const Graph<T>* graph = model.size() == 1 ? dynamic_cast<const Graph<T>*>(model.layers().front().get()) : nullptr;
  if (graph != nullptr) {  // a functional model: each group to the layer of its name
    for (const auto& [name, names] : groups) {
      Layer<T>* layer = nullptr;
      try {
        layer = &graph->layer(name);
      } catch (const Error&) {
        throw FormatError(what + ": the file holds weights for a layer '" + name + "' its config does not have");
      }
      layers.push_back(layer);
    }
    for (Layer<T>* l : graph->layers()) {
      if (!l->parameters().empty() && std::find(layers.begin(), layers.end(), l) == layers.end()) {
        throw FormatError(what + ": the file holds no weights for layer '" + l->name() + "' (" + l->type() + ")");
      }
    }
  } else {
    for (const auto& l : model.layers()) {
      if (!l->parameters().empty()) layers.push_back(l.get());
    }
  }
  if (groups.size() != layers.size()) {
    throw FormatError(loom::detail::str(what, ": the file holds weights for ", groups.size(),
                                        " layers, its config has ", layers.size(), " layers with weights"));
  }
  for (std::size_t k = 0; k < groups.size(); ++k) {
    read_layer_weights(weights.group(groups[k].first), groups[k].second, *layers[k], what);
  }

  if (compile && root.has_attribute("training_config")) {
    const json tc = parse_json(root.string("training_config"), what + ": training_config");
    Fields f(tc, what + ": training_config");
    if (f.has("loss")) {
      check_loss_weights(f);
      const json* optimizer = f.has("optimizer_config") ? &f.at("optimizer_config") : nullptr;
      const json* metrics = f.has("metrics") ? &f.at("metrics") : nullptr;
      compile_from_keras(model, single_loss(f.at("loss"), what), optimizer, metrics, what, version);
    }
    // A graph's parameters are in loom's order of its layers, not Keras's: its optimizer starts afresh.
    if (model.compiled() && root.has_group("optimizer_weights") && graph == nullptr) {
      const hdf5::Group state = root.group("optimizer_weights");
      const auto names = state.chunked_strings("weight_names");
      std::vector<SlotKind> kinds;
      for (const auto& n : names) kinds.push_back(slot_kind(n));
      import_optimizer_state(model, state, names, kinds, what);
    }
  }
  return model;
}

template <class T>
std::vector<unsigned char> save_h5(Sequential<T>& model) {
  const json config = model_to_config(model, false);
  auto file = hdf5::File::create_in_memory();
  hdf5::Group root = file.root();
  root.set_string("backend", "tensorflow");
  root.set_string("keras_version", kKerasFormatVersion);
  root.set_string("model_config", config.dump());
  if (model.compiled()) root.set_string("training_config", compile_config(model, false).dump());

  hdf5::Group weights = root.create_group("model_weights");
  std::vector<Layer<T>*> layers;
  std::vector<std::string> names;
  const auto* graph = model.size() == 1 ? dynamic_cast<const Graph<T>*>(model.layers().front().get()) : nullptr;
  if (graph != nullptr) {  // a functional model: its layers in Keras's order (the config's), the input's too
    for (const json& entry : config.at("config").at("layers")) {
      names.push_back(entry.at("name").get<std::string>());
      if (names.back() == graph->input_name()) {
        weights.create_group(names.back()).set_strings("weight_names", {});
      } else {
        layers.push_back(&graph->layer(names.back()));
      }
    }
  } else {
    for (const auto& l : model.layers()) {
      layers.push_back(l.get());
      names.push_back(l->name());
    }
  }
  weights.set_strings("layer_names", names);
  weights.set_string("backend", "tensorflow");
  weights.set_string("keras_version", kKerasFormatVersion);
  // Keras writes the groups sorted by name (legacy_h5_format.py), with
  // weight names as Keras 3 gives them: "<model>/<layer>/<weight>".
  std::sort(layers.begin(), layers.end(), [](auto* a, auto* b) { return a->name() < b->name(); });
  for (Layer<T>* l : layers) {
    hdf5::Group g = weights.create_group(l->name());
    std::vector<std::string> paths;
    auto params = l->parameters();
    for (const auto& p : params) paths.push_back(model.name() + "/" + p.name);
    g.set_strings("weight_names", paths);
    for (std::size_t i = 0; i < params.size(); ++i) g.write(paths[i], *params[i].value);
  }
  weights.create_group("top_level_model_weights").set_strings("weight_names", {});

  // The optimizer's state, named as Keras 3 names it (legacy_h5_format.py's
  // save_optimizer_weights_to_hdf5_group: paths are the variables' names).
  // A graph's parameters are in loom's order of its layers, not Keras's: its optimizer state is not written.
  const auto vars = graph ? decltype(optimizer_variables(model)){} : optimizer_variables(model);
  if (!vars.empty()) {
    hdf5::Group state = root.create_group("optimizer_weights");
    std::vector<std::string> names;
    for (const auto& v : vars) names.push_back(v.name);
    state.set_strings("weight_names", names);
    write_optimizer_variables(model, state, vars, [](std::size_t, const auto& v) { return v.name; });
  }
  return file.image();
}

}  // namespace loom::keras::impl
