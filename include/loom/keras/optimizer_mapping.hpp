#pragma once
/// \file optimizer_mapping.hpp
/// Optimizers and learning-rate schedules in Keras's terms, both ways. Each
/// has one mapping (its Keras class name, the names Keras may write for it,
/// and what differs from the common rule), registered beside loom's
/// mappings below or, for one's own, with LOOM_KERAS_MAPPING beside the
/// class:
///
///     LOOM_REGISTER(Lion, "lion")
///     LOOM_KERAS_MAPPING(keras::OptimizerMapping("Lion").alias("lion"))
///
/// The common rule: every hyperparameter of loom's optimizer is read from
/// Keras's config under the same key (Keras 2.1's `lr` for learning_rate) and
/// written back as a number; Keras 3's base options (weight_decay, clipnorm,
/// global_clipnorm, clipvalue) likewise; a schedule object in place of the
/// learning rate becomes loom's schedule of that class, its keys carried over.

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../optimizers.hpp"
#include "../schedules.hpp"
#include "json.hpp"
#include "mapping.hpp"

namespace loom::keras {

/// One loom optimizer class's Keras counterpart.
class OptimizerMapping : public MappingNames {
 public:
  /// An import step of one's own: (Keras's optimizer config, the Keras version
  /// that saved the file or "", the loom config being made).
  using In = std::function<void(const Fields& keras, const std::string& keras_version, Config& loom)>;

  explicit OptimizerMapping(std::string keras_class, std::string loom_class = {})
      : MappingNames(std::move(keras_class), std::move(loom_class)), keras_name_(impl::snake_case(keras_class_)) {}

  /// Another name Keras reads for it ("adam", as in compile(optimizer="adam")).
  OptimizerMapping& alias(std::string name) {
    aliases_.push_back(std::move(name));
    return *this;
  }
  /// The name Keras gives an instance by default, which also prefixes its
  /// variables (by default the snake_case of the class name).
  OptimizerMapping& keras_name(std::string name) {
    keras_name_ = std::move(name);
    return *this;
  }
  /// A loom config key Keras writes as true/false (the rest are numbers).
  OptimizerMapping& flag(std::string key) {
    flags_.push_back(std::move(key));
    return *this;
  }
  /// A loom config key Keras has no setting for: not read from Keras's
  /// config by the common rule, never written to it.
  OptimizerMapping& loom_only(std::string key) {
    loom_only_.push_back(std::move(key));
    return *this;
  }
  /// An import step run before the common rule (checks, and keys it sets).
  OptimizerMapping& step(In in) {
    steps_.push_back(std::move(in));
    return *this;
  }

  const std::string& keras_name() const { return keras_name_; }
  bool is_flag(const std::string& key) const { return contains(flags_, key); }
  bool is_loom_only(const std::string& key) const { return contains(loom_only_, key); }
  void run_steps(const Fields& f, const std::string& keras_version, Config& c) const {
    for (const auto& s : steps_) s(f, keras_version, c);
  }

 private:
  static bool contains(const std::vector<std::string>& v, const std::string& key) {
    for (const auto& k : v) {
      if (k == key) return true;
    }
    return false;
  }
  std::string keras_name_;
  std::vector<std::string> flags_, loom_only_;
  std::vector<In> steps_;
};

/// One loom learning-rate schedule class's Keras counterpart: every key of
/// Keras's config but `name` is carried over (a number, a flag or a list of
/// numbers) and written back as its kind says.
class ScheduleMapping : public MappingNames {
 public:
  explicit ScheduleMapping(std::string keras_class, std::string loom_class = {})
      : MappingNames(std::move(keras_class), std::move(loom_class)) {}
  /// A key written as true/false.
  ScheduleMapping& flag(std::string key) {
    flags_.push_back(std::move(key));
    return *this;
  }
  /// A key written as a list of numbers.
  ScheduleMapping& list(std::string key) {
    lists_.push_back(std::move(key));
    return *this;
  }
  /// Keras's value of the loom config entry `key`.
  json value(const Config& c, const std::string& key) const {
    for (const auto& k : flags_) {
      if (k == key) return c.flag(key);
    }
    for (const auto& k : lists_) {
      if (k == key) return c.reals(key);
    }
    return c.real(key);
  }

 private:
  std::vector<std::string> flags_, lists_;
};

/// Whether a Keras version string ("2.4.0", "3.10.0") is older than 2.11,
/// whose optimizers put RMSprop's epsilon outside the square root. An empty
/// or unreadable version counts as today's.
inline bool keras_before_2_11(const std::string& version) {
  int major = 0, minor = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &major, &minor) != 2) return false;
  return major < 2 || (major == 2 && minor < 11);
}

/// Whether the optimizer config `c` in a file saved by Keras `version` is
/// one of tf.keras's legacy optimizers (optimizer_v2, RMSprop's epsilon
/// outside the square root): every one before 2.11; from 2.11 on, one marked
/// is_legacy_optimizer, or a non-empty config of a 2.x file without the mark
/// (tf.keras.optimizers.legacy.*), as tf.keras's own deserialize reads it
/// (tf_keras/src/optimizers/__init__.py). Keras 3 has no legacy optimizers.
inline bool legacy_optimizer(const Fields& c, const std::string& version) {
  if (keras_before_2_11(version) || c.flag("is_legacy_optimizer", false)) return true;
  return keras_major_version(version) == 2 && c.size() > 0 && !c.has("is_legacy_optimizer");
}

// loom's optimizers and schedules, in the order the supported lists name them.
// The names are Keras 3.0 to 3.14's defaults (keras/src/optimizers/*.py, name="rmsprop",
// name="adamw"), the Keras whose format loom writes. Keras 3.15 names them by the
// snake_case rule instead ("rm_sprop", "adam_w"; keras-team/keras#22972); a name is
// only a label to Keras's loaders, and loom reads both (default_optimizer_name).
LOOM_KERAS_MAPPING(OptimizerMapping("SGD").alias("sgd").flag("nesterov"))
LOOM_KERAS_MAPPING(OptimizerMapping("RMSprop")
                       .alias("rmsprop")
                       .keras_name("rmsprop")
                       .loom_only("epsilon_inside_sqrt")
                       .step([](const Fields& c, const std::string& version, Config& config) {
                         if (c.real("momentum", 0) != 0) c.refuse("RMSprop with momentum");
                         // Not a Keras setting: the saving version or the legacy mark tells (docs/keras-compat.md).
                         if (legacy_optimizer(c, version)) {
                           config.set("epsilon_inside_sqrt", false);
                         }
                       }))
LOOM_KERAS_MAPPING(OptimizerMapping("Adam").alias("adam"))
LOOM_KERAS_MAPPING(OptimizerMapping("AdamW").alias("adamw").keras_name("adamw"))
LOOM_KERAS_MAPPING(ScheduleMapping("ExponentialDecay").flag("staircase"))
LOOM_KERAS_MAPPING(ScheduleMapping("PiecewiseConstantDecay").list("boundaries").list("values"))
LOOM_KERAS_MAPPING(ScheduleMapping("CosineDecay"))

/// The Keras optimizer and schedule classes loom reads and writes.
inline std::vector<std::string> supported_optimizers() { return Mappings<OptimizerMapping>::global().supported(); }
inline std::vector<std::string> supported_schedules() { return Mappings<ScheduleMapping>::global().supported(); }

namespace impl {

/// The name Keras gives an optimizer of loom class `type` by default, which
/// also prefixes its variables (its mapping's keras_name; the snake_case of
/// the class for an optimizer with no mapping).
inline std::string keras_optimizer_name(const std::string& type) {
  const auto m = Mappings<OptimizerMapping>::global().from_loom(type);
  return m ? m->keras_name() : snake_case(type);
}

/// Whether `name` is one Keras gives an optimizer of loom class `type` by
/// default: keras_optimizer_name (Keras 3.0 to 3.14: "rmsprop") or the
/// snake_case of the class (Keras 3.15+: "rm_sprop"), either numbered as
/// Keras 3.15 numbers the second one of a session ("rm_sprop_1").
inline bool default_optimizer_name(const std::string& name, const std::string& type) {
  std::string stem = name;
  const auto last = stem.find_last_not_of("0123456789");
  if (last != std::string::npos && last + 1 < stem.size() && stem[last] == '_') stem.resize(last);
  return stem == keras_optimizer_name(type) || stem == snake_case(type);
}

/// A Keras learning-rate schedule, {"class_name": "CosineDecay", "config":
/// {...}} (Keras 3 adds "module"), into `config` as loom's optimizer
/// configs hold one ("learning_rate_schedule" and its keys behind
/// "learning_rate_schedule.").
inline void schedule_from_keras(const json& v, const std::string& what, Config& config) {
  Fields f(v, what + ": learning-rate schedule");
  const std::string cls = f.text("class_name");
  const auto& mappings = Mappings<ScheduleMapping>::global();
  const auto m = mappings.from_keras(cls);
  if (!m || !m->refusal().empty()) {
    throw FormatError(what + ": learning-rate schedule '" + cls + "' is not supported (loom has " +
                      mappings.supported_list(" and ") + ")");
  }
  const json settings = f.has("config") ? f.at("config") : json::object();
  Fields c(settings, what + ": learning-rate schedule " + cls);
  Config sc;
  for (const auto& item : settings.items()) {
    const std::string& key = item.key();
    const json& value = item.value();
    if (key == "name" || value.is_null()) continue;
    if (value.is_boolean()) {
      sc.set(key, value.get<bool>());
    } else if (value.is_number()) {
      sc.set(key, value.get<double>());
    } else if (value.is_array()) {
      std::vector<double> list;
      for (const auto& e : value) {
        if (!e.is_number()) c.bad(key.c_str(), "a list of numbers");
        list.push_back(e.get<double>());
      }
      sc.set_reals(key, list);
    } else {
      c.bad(key.c_str(), "a number, a flag or a list of numbers");
    }
  }
  try {
    make_schedule(m->loom_class(), sc);  // its own checks, named here
  } catch (const Error& e) {
    throw FormatError(what + ": learning-rate schedule " + cls + ": " + e.what());
  }
  config.set("learning_rate_schedule", m->loom_class());
  for (const auto& [k, text] : sc.entries()) config.set("learning_rate_schedule." + k, text);
}

/// Keras's config of a loom schedule: Keras 3's object reference, which
/// Keras 3 and tf.keras 2.21 write in .keras and .h5 files alike (and Keras
/// 3 needs: without "module" it cannot find the class).
inline json schedule_to_keras(const LearningRateSchedule& s) {
  const auto m = Mappings<ScheduleMapping>::global().from_loom(s.type());
  if (!m || !m->refusal().empty()) {
    throw FormatError("learning-rate schedule " + s.type() + " has no Keras counterpart loom can write");
  }
  json sc = {{"name", m->keras_class()}};
  const Config scfg = s.config();
  for (const auto& entry : scfg.entries()) sc[entry.first] = m->value(scfg, entry.first);
  return keras_object("keras.optimizers.schedules", m->keras_class().c_str(), std::move(sc));
}

}  // namespace impl

/// An optimizer from a name ("adam") or {"class_name": "Adam" (or
/// "Custom>Adam"), "config": {...}}, with Keras's defaults for what is
/// missing. Settings loom does not implement are refused by name.
/// `keras_version` is the version that saved the file, when it says: an
/// RMSprop of tf.keras's legacy optimizers (legacy_optimizer) keeps its rule
/// (epsilon outside the square root).
template <class T>
std::unique_ptr<Optimizer<T>> optimizer_from_keras(const json& v, const std::string& what,
                                                   const std::string& keras_version = {}) {
  const auto& mappings = Mappings<OptimizerMapping>::global();
  const auto unsupported = [&](const std::string& name) {
    return FormatError(what + ": optimizer '" + name + "' is not supported (loom has " +
                       mappings.supported_list(" and ") + ")");
  };
  const json no_settings = json::object();
  std::string cls;
  const json* settings = &no_settings;  // a name alone: Keras's defaults
  if (v.is_string()) {
    cls = v.get<std::string>();
  } else {
    Fields f(v, what + ": optimizer");
    cls = f.text("class_name");
    if (cls.rfind("Custom>", 0) == 0) cls = cls.substr(7);
    if (f.has("config")) settings = &f.at("config");
  }
  Fields c(*settings, what + ": optimizer " + cls);
  const auto m = mappings.from_keras(cls);
  if (!m || !m->refusal().empty()) throw unsupported(cls);
  for (const char* key : {"loss_scale_factor", "gradient_accumulation_steps"}) {
    if (c.has(key) && !(c.at(key).is_number() && c.at(key).get<double>() == 0)) c.refuse(std::string("'") + key + "'");
  }
  if (c.flag("use_ema", false)) c.refuse("use_ema");
  if (c.flag("amsgrad", false)) c.refuse("amsgrad");
  if (c.flag("centered", false)) c.refuse("centered RMSprop");
  if (c.real("decay", 0) != 0) c.refuse("a learning-rate 'decay'");
  Config config;
  m->run_steps(c, keras_version, config);
  // Every hyperparameter loom's optimizer has, from Keras's config when it is
  // there (Keras 2.1 says lr for learning_rate); the rest keep their defaults.
  for (const auto& entry : make_optimizer<T>(m->loom_class())->config().entries()) {
    const std::string& key = entry.first;
    const char* k = key == "learning_rate" && !c.has("learning_rate") ? "lr" : key.c_str();
    if (m->is_loom_only(key) || !c.has(k)) continue;
    if (key == "learning_rate" && c.at(k).is_object()) {
      impl::schedule_from_keras(c.at(k), what, config);
      continue;
    }
    if (c.at(k).is_boolean()) {
      config.set(key, c.flag(k, false));
    } else {
      config.set(key, c.real(k));
    }
  }
  // Keras 3's base optimizer options (null: not set).
  for (const char* key : {"weight_decay", "clipnorm", "global_clipnorm", "clipvalue"}) {
    if (c.has(key)) config.set(key, c.real(key));
  }
  try {
    return make_optimizer<T>(m->loom_class(), config);
  } catch (const ConfigError& e) {
    throw FormatError(what + ": optimizer " + cls + ": " + e.what());
  }
}

/// Keras's config of a loom optimizer: Keras 3's object reference
/// (`keras_v3`), or tf.keras 2's {"class_name", "config"}.
template <class T>
json optimizer_to_keras(const Optimizer<T>& optimizer, bool keras_v3) {
  const auto m = Mappings<OptimizerMapping>::global().from_loom(optimizer.type());
  if (!m || !m->refusal().empty()) {
    throw FormatError("optimizer " + optimizer.type() + " has no Keras counterpart loom can write");
  }
  const Config c = optimizer.config();
  json cfg = {{"name", m->keras_name()}};
  if (const LearningRateSchedule* s = optimizer.learning_rate_schedule()) {
    cfg["learning_rate"] = impl::schedule_to_keras(*s);
  }
  for (const auto& [key, value] : c.entries()) {
    if (m->is_loom_only(key)) continue;  // e.g. RMSprop's epsilon_inside_sqrt: Keras has one rule (docs/keras-compat.md)
    if (key.rfind("learning_rate_schedule", 0) == 0) continue;  // written above
    if (key == "exclude_from_weight_decay") {
      throw FormatError(optimizer.type() + ": exclude_from_weight_decay is not part of a Keras optimizer's config; "
                        "Keras would decay every variable, so the model is not exported");
    }
    cfg[key] = m->is_flag(key) ? json(c.flag(key)) : json(c.real(key));
  }
  if (!keras_v3) return {{"class_name", m->keras_class()}, {"config", std::move(cfg)}};
  return impl::keras_object("keras.optimizers", m->keras_class().c_str(), std::move(cfg));
}

}  // namespace loom::keras
