#pragma once
/// \file compile_config.hpp
/// Keras's compile config, both ways: the loss, optimizer and metrics a
/// model was compiled with (`training_config` in a legacy .h5,
/// `compile_config` in a .keras config.json) compile a loom model, and a
/// compiled loom model gives the config Keras writes. The loss, optimizer and
/// schedule each map through their Keras mapping (loss_mapping.hpp,
/// optimizer_mapping.hpp).

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "../model/sequential.hpp"
#include "json.hpp"
#include "loss_mapping.hpp"
#include "optimizer_mapping.hpp"

namespace loom::keras {

namespace impl {

/// The single loss of a training config: a name, an object, or a
/// one-output dict or list of them.
inline const json& single_loss(const json& loss, const std::string& what) {
  if (loss.is_array() && loss.size() == 1) return loss[0];
  if (loss.is_object() && !loss.contains("class_name") && loss.size() == 1) return loss.begin().value();
  if (loss.is_array() || (loss.is_object() && !loss.contains("class_name"))) {
    throw FormatError(what + ": a loss per output is not supported (loom models have one output)");
  }
  return loss;
}

/// Refuses a compile config's `loss_weights` unless it leaves the loss as it
/// is (1, [1] or {"output": 1}): the gradients Keras took were scaled by it.
inline void check_loss_weights(const Fields& c) {
  if (!c.has("loss_weights")) return;
  const json& w = c.at("loss_weights");
  const json& one = (w.is_array() || w.is_object()) && w.size() == 1 ? *w.begin() : w;
  if (!(one.is_number() && one.get<double>() == 1)) c.refuse("'loss_weights' " + w.dump());
}

/// Whether Keras's metrics list asks for accuracy (in any of its spellings).
inline bool wants_accuracy(const json& metrics) {
  std::vector<std::string> names;
  std::function<void(const json&)> walk = [&](const json& m) {
    if (m.is_string()) names.push_back(m.get<std::string>());
    if (m.is_array()) {
      for (const auto& x : m) walk(x);
    }
    if (m.is_object()) {
      if (m.contains("config") && m.at("config").is_object() && m.at("config").contains("name") &&
          m.at("config").at("name").is_string()) {
        names.push_back(m.at("config").at("name").get<std::string>());
      }
    }
  };
  walk(metrics);
  return std::any_of(names.begin(), names.end(), [](const std::string& n) {
    return n == "accuracy" || n == "acc" || n == "sparse_categorical_accuracy" || n == "categorical_accuracy";
  });
}

}  // namespace impl

/// Compiles `model` as Keras's compile config says: `loss`, `optimizer` (null
/// or absent: Keras's default, RMSprop) and `metrics` (accuracy, when asked).
/// `keras_version` is the Keras that saved the file, when it says (see
/// optimizer_from_keras).
template <class T>
void compile_from_keras(Sequential<T>& model, const json& loss, const json* optimizer, const json* metrics,
                        const std::string& what, const std::string& keras_version = {}) {
  auto l = impl::loss_from_keras<T>(loss, what);
  auto o = optimizer && !optimizer->is_null() ? optimizer_from_keras<T>(*optimizer, what, keras_version)
                                              : optimizer_from_keras<T>(json("rmsprop"), what, keras_version);
  std::vector<std::string> m;
  if (metrics && impl::wants_accuracy(*metrics)) m.push_back("accuracy");
  model.compile(std::move(l), std::move(o), m);
}

/// Keras's training_config (legacy .h5) or, with `keras_v3`, compile_config
/// (.keras) of a compiled loom model.
template <class T>
json compile_config(const Sequential<T>& model, bool keras_v3) {
  const auto& trainer = model.trainer();
  json c = {{"loss", loss_to_keras(trainer.loss())},
            {"loss_weights", nullptr},
            {"metrics", trainer.metrics().empty() ? json(nullptr) : json(trainer.metrics())},
            {"weighted_metrics", nullptr},
            {"run_eagerly", false},
            {"steps_per_execution", 1},
            {"jit_compile", false}};
  c[keras_v3 ? "optimizer" : "optimizer_config"] = optimizer_to_keras(trainer.optimizer(), keras_v3);
  return c;
}

}  // namespace loom::keras
