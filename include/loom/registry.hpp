#pragma once
/// \file registry.hpp
/// `Registry<Base>`: makes layers, optimizers and losses by name from a
/// Config, as Keras's `from_config` does. There is one registry per base
/// class (`Layer<T>`, `Optimizer<T>`, `Loss<T>`); each class registers itself
/// beside its own definition:
///
///     template <class T>
///     class Scale : public Layer<T> {
///      public:
///       static constexpr const char* class_name = "Scale";   // also what type() returns
///       static std::unique_ptr<Layer<T>> from_config(const Config& c);
///       Config config() const override;                       // what from_config reads
///       ...
///     };
///     LOOM_REGISTER(Scale)          // Scale<float> and Scale<double>
///
/// A non-template class registers the same way (`LOOM_REGISTER(MyLayer)`),
/// and extra names can follow: `LOOM_REGISTER(RMSprop, "rmsprop")`.
/// The model file records each object's class name and config, so anything
/// registered saves and loads; `save()` refuses an unregistered layer.
/// Registration happens while the program starts (static initialization).

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config.hpp"
#include "error.hpp"

namespace loom {

template <class Base>
class Registry {
 public:
  using Factory = std::function<std::unique_ptr<Base>(const Config&)>;

  /// The process-wide registry of `Base`.
  static Registry& global() {
    static Registry r;
    return r;
  }

  /// Registers `factory` under `class_name` and any `aliases` (replacing an earlier registration).
  void add(const std::string& class_name, Factory factory, const std::vector<std::string>& aliases = {}) {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_[class_name] = {class_name, factory};
    for (const auto& a : aliases) entries_[a] = {class_name, factory};
  }

  bool has(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return entries_.count(name) != 0;
  }

  /// The class name `name` stands for ("rmsprop" -> "RMSprop").
  std::string canonical(const std::string& name) const { return entry(name).class_name; }

  /// A new object of the class registered as `name`, configured by `config`.
  /// Throws ConfigError for a name nobody registered, or a config it cannot take.
  std::unique_ptr<Base> create(const std::string& name, const Config& config = {}) const {
    const Entry e = entry(name);
    return e.factory(config);
  }

  /// Every registered class name (without aliases), sorted.
  std::vector<std::string> names() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> out;
    for (const auto& kv : entries_) {
      if (kv.first == kv.second.class_name) out.push_back(kv.first);
    }
    return out;
  }

 private:
  struct Entry {
    std::string class_name;
    Factory factory;
  };

  Entry entry(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = entries_.find(name);
    if (it != entries_.end()) return it->second;
    std::string known;
    for (const auto& kv : entries_) known += (known.empty() ? "" : ", ") + kv.first;
    throw ConfigError(std::string("unknown ") + Base::registry_kind + " '" + name + "' (known: " + known +
                      "); a class of your own must be registered: LOOM_REGISTER(ClassName) beside its definition");
  }

  mutable std::mutex mutex_;
  std::map<std::string, Entry> entries_;
};

/// Registers the class `C` (a Layer, Optimizer or Loss with `class_name` and `from_config`).
template <class C>
void register_class(const std::vector<std::string>& aliases = {}) {
  using Base = typename C::registry_base;
  Registry<Base>::global().add(
      C::class_name, [](const Config& c) -> std::unique_ptr<Base> { return C::from_config(c); }, aliases);
}

/// Registers `C<float>` and `C<double>`.
template <template <class> class C>
void register_class(const std::vector<std::string>& aliases = {}) {
  register_class<C<float>>(aliases);
  register_class<C<double>>(aliases);
}

}  // namespace loom

#define LOOM_REGISTRY_CONCAT_(a, b) a##b
#define LOOM_REGISTRY_NAME_(n) LOOM_REGISTRY_CONCAT_(loom_registered_, n)
/// Registers a class (or a class template of the scalar type) in its
/// registry when the program starts; extra arguments are aliases. At
/// namespace scope, beside the class.
#define LOOM_REGISTER(Class, ...)                                          \
  [[maybe_unused]] static const bool LOOM_REGISTRY_NAME_(__COUNTER__) = \
      (::loom::register_class<Class>({__VA_ARGS__}), true);
