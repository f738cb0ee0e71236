#pragma once
/// \file mapping.hpp
/// `Mappings<M>`: the process-wide table of how loom's classes of one kind
/// (layers, optimizers, losses, learning-rate schedules) map to Keras's. One
/// entry per class says its Keras class name, the other names Keras may use
/// for it, and the loom class it stands for; the entry itself (a
/// LayerMapping, OptimizerMapping, ...) says how its config maps both ways.
/// The lists of what loom reads and writes, and the messages naming them,
/// come from this table, in registration order.
///
/// Each entry registers itself beside its definition, as loom's own classes
/// do with LOOM_REGISTER: loom's in keras/layers.hpp and the mapping headers,
/// a user's beside the user's class (LOOM_KERAS_LAYER, LOOM_KERAS_OPTIMIZER,
/// LOOM_KERAS_LOSS, LOOM_KERAS_SCHEDULE; docs/keras.md).

#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../registry.hpp"

namespace loom::keras {

/// What every mapping has: Keras's class name, other names Keras may write
/// for it, loom's class (by default Keras's), and a refusal: a class loom
/// knows but will not map, with the reason.
class MappingNames {
 public:
  explicit MappingNames(std::string keras_class, std::string loom_class = {})
      : keras_class_(std::move(keras_class)), loom_class_(loom_class.empty() ? keras_class_ : std::move(loom_class)) {}
  const std::string& keras_class() const { return keras_class_; }
  const std::string& loom_class() const { return loom_class_; }
  const std::vector<std::string>& aliases() const { return aliases_; }
  /// Why the class is refused both ways (empty: it is mapped).
  const std::string& refusal() const { return refusal_; }
  bool answers_to(const std::string& name) const {
    if (name == keras_class_) return true;
    for (const auto& a : aliases_) {
      if (a == name) return true;
    }
    return false;
  }

 protected:
  std::string keras_class_, loom_class_;
  std::vector<std::string> aliases_;
  std::string refusal_;
};

/// The table of mappings of one kind, in registration order.
template <class M>
class Mappings {
 public:
  static Mappings& global() {
    static Mappings m;
    return m;
  }

  /// Adds `m`, or replaces the entry of the same Keras class where it stands.
  void add(M m) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& e : entries_) {
      if (e.keras_class() == m.keras_class()) {
        e = std::move(m);
        return;
      }
    }
    entries_.push_back(std::move(m));
  }

  /// The entry Keras's `name` (its class name or an alias) stands for.
  std::optional<M> from_keras(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& e : entries_) {
      if (e.answers_to(name)) return e;
    }
    return std::nullopt;
  }

  /// The entry of loom's class `loom_class` (the first registered, if several).
  std::optional<M> from_loom(const std::string& loom_class) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& e : entries_) {
      if (e.loom_class() == loom_class) return e;
    }
    return std::nullopt;
  }

  /// The Keras class names loom maps (refused ones left out), in registration order.
  std::vector<std::string> supported() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> out;
    for (const auto& e : entries_) {
      if (e.refusal().empty()) out.push_back(e.keras_class());
    }
    return out;
  }

  /// The supported entries for a message: each as `name_of(entry)` gives it
  /// (by default its Keras class), joined "A, B, C", or "A, B and C" when
  /// `last` is " and ".
  template <class NameOf>
  std::string supported_list(NameOf name_of, const char* last = ", ") const {
    std::vector<std::string> names;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const auto& e : entries_) {
        if (e.refusal().empty()) names.push_back(name_of(e));
      }
    }
    std::string out;
    for (std::size_t i = 0; i < names.size(); ++i) {
      out += (i == 0 ? "" : i + 1 == names.size() ? last : ", ") + names[i];
    }
    return out;
  }
  std::string supported_list(const char* last = ", ") const {
    return supported_list([](const M& e) { return e.keras_class(); }, last);
  }

 private:
  mutable std::mutex mutex_;
  std::vector<M> entries_;
};

/// Adds `m` to the table of its kind; what the LOOM_KERAS_* macros call.
template <class M>
void register_mapping(M m) {
  Mappings<M>::global().add(std::move(m));
}

}  // namespace loom::keras

/// Registers a Keras mapping (a LayerMapping, OptimizerMapping, LossMapping or
/// ScheduleMapping) when the program starts. At namespace scope, beside the
/// class it maps and its LOOM_REGISTER.
#define LOOM_KERAS_MAPPING(...)                                           \
  [[maybe_unused]] static const bool LOOM_REGISTRY_NAME_(__COUNTER__) = \
      (::loom::keras::register_mapping(__VA_ARGS__), true);
