#pragma once
/// \file loss_mapping.hpp
/// Losses in Keras's terms, both ways. Each loss has one mapping (its Keras
/// class name, the function name Keras also reads, and the keys its Keras
/// config adds), registered below for loom's own or, for one's own, with
/// LOOM_KERAS_MAPPING beside the class. Every loss reads Keras's
/// `from_logits` and `label_smoothing`; an `axis` other than the last, an
/// `ignore_class` and a `reduction` other than the mean over the batch are
/// refused.

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../losses.hpp"
#include "json.hpp"
#include "mapping.hpp"

namespace loom::keras {

/// One loom loss class's Keras counterpart.
class LossMapping : public MappingNames {
 public:
  /// Keras config keys of its own, from the loom config (which holds
  /// from_logits and label_smoothing when set); may refuse with FormatError.
  using Out = std::function<void(const Config& loom, json& keras)>;

  explicit LossMapping(std::string keras_class, std::string loom_class = {})
      : MappingNames(std::move(keras_class), std::move(loom_class)), keras_name_(impl::snake_case(keras_class_)) {
    aliases_.push_back(keras_name_);  // "categorical_crossentropy", as in compile(loss=...)
  }
  /// Another name Keras reads for it.
  LossMapping& alias(std::string name) {
    aliases_.push_back(std::move(name));
    return *this;
  }
  /// What the Keras config of the object form adds to name, reduction and from_logits.
  LossMapping& out(Out out) {
    out_ = std::move(out);
    return *this;
  }

  /// Keras's function name, which it also writes as the loss's name.
  const std::string& keras_name() const { return keras_name_; }
  void config_to_keras(const Config& c, json& k) const {
    if (out_) out_(c, k);
  }

 private:
  std::string keras_name_;
  Out out_;
};

LOOM_KERAS_MAPPING(LossMapping("CategoricalCrossentropy").out([](const Config& c, json& k) {
  k["label_smoothing"] = c.real("label_smoothing", 0.0);
  k["axis"] = -1;
}))
LOOM_KERAS_MAPPING(LossMapping("SparseCategoricalCrossentropy").out([](const Config& c, json& k) {
  if (c.real("label_smoothing", 0.0) != 0) {
    throw FormatError("SparseCategoricalCrossentropy with label_smoothing has no Keras counterpart (Keras's sparse "
                      "loss has no label_smoothing): use one-hot targets and CategoricalCrossentropy to export it");
  }
  k["ignore_class"] = nullptr;
}))

/// The Keras loss classes loom reads and writes.
inline std::vector<std::string> supported_losses() { return Mappings<LossMapping>::global().supported(); }

namespace impl {

/// A loss from Keras's "sparse_categorical_crossentropy", or
/// {"class_name": "SparseCategoricalCrossentropy", "config": {...}}.
template <class T>
std::unique_ptr<Loss<T>> loss_from_keras(const json& v, const std::string& what) {
  std::string name;
  Config config;
  if (v.is_string()) {
    name = v.get<std::string>();
  } else if (v.is_object()) {
    Fields f(v, what + ": loss");
    name = f.text("class_name");
    if (f.has("config")) {
      Fields c(f.at("config"), what + ": loss");
      if (c.flag("from_logits", false)) config.set("from_logits", true);
      if (c.real("label_smoothing", 0) != 0) config.set("label_smoothing", c.real("label_smoothing"));
      if (c.has("axis") && !(c.at("axis").is_number_integer() && c.at("axis").get<long long>() == -1)) c.refuse("a loss over an axis other than the last");
      if (c.has("ignore_class")) c.refuse("'ignore_class'");
      // Keras 3's default, and tf.keras's "auto" (the same: the mean over the batch).
      const std::string reduction = c.text("reduction", "sum_over_batch_size");
      if (reduction != "sum_over_batch_size" && reduction != "auto") c.refuse("the loss reduction '" + reduction + "'");
    }
  } else {
    throw FormatError(what + ": the loss should be a name or an object, got " + v.dump());
  }
  const auto& mappings = Mappings<LossMapping>::global();
  const auto m = mappings.from_keras(name);
  if (!m || !m->refusal().empty()) {
    const auto function_name = [](const LossMapping& e) { return e.keras_name(); };
    throw FormatError(what + ": loss '" + name + "' is not supported (loom has " +
                      mappings.supported_list(function_name, " and ") + ")");
  }
  return make_loss<T>(m->loom_class(), config);
}

}  // namespace impl

/// Keras's form of a loom loss: its function name when it has no settings
/// ("sparse_categorical_crossentropy"), else Keras 3's object reference.
template <class T>
json loss_to_keras(const Loss<T>& loss) {
  const auto m = Mappings<LossMapping>::global().from_loom(loss.type());
  if (!m || !m->refusal().empty()) throw FormatError("loss " + loss.type() + " has no Keras counterpart loom can write");
  if (!loss.from_logits() && loss.label_smoothing() == 0) return m->keras_name();
  json cfg = {{"name", m->keras_name()}, {"reduction", "sum_over_batch_size"}, {"from_logits", loss.from_logits()}};
  m->config_to_keras(loss.config(), cfg);
  return impl::keras_object("keras.losses", m->keras_class().c_str(), std::move(cfg));
}

}  // namespace loom::keras
