#pragma once
/// \file optimizer_state.hpp
/// The optimizer's state (step count, Adam's moments, RMSprop's mean square,
/// SGD's momentum) in Keras's files, so that fit continues where Keras left
/// off and Keras continues where loom left off.
///
/// Keras 3 keeps `optimizer.variables`: iteration, learning_rate (only for a
/// constant rate: an optimizer whose rate follows a schedule has no such
/// variable), then its slots per trainable variable in model order, Adam's interleaved (momentum,
/// velocity of the first variable, then of the second, ...; adam.py's
/// build). A .keras file stores them as optimizer/vars/<i>; a legacy .h5 as
/// the `optimizer_weights` group, named (Keras 3: "adam/<model>_<layer>_kernel_
/// momentum"; tf.keras 2.11+: "Adam/m/<layer>/kernel:0", "RMSprop/velocity/
/// <layer>/kernel:0"; tf.keras 2.0-2.10: "Adam/<layer>/kernel/m:0"). Slots
/// are told apart by those names and counted per kind, so the order between
/// kinds does not matter. Keras 2.1's anonymous "training/Adam/Variable_N" is
/// not read.
///
/// State is imported only when it is complete for the compiled optimizer
/// (every kind it needs, once per trainable parameter, and nothing else but
/// the momentum tf.keras 2.11+'s SGD keeps at momentum 0, which is skipped);
/// otherwise the optimizer starts fresh, as Keras's does in that case.

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "../model/sequential.hpp"
#include "hdf5.hpp"
#include "optimizer_mapping.hpp"

namespace loom::keras::impl {

enum class SlotKind { Iteration, LearningRate, Momentum, Velocity, Unknown };

/// What a Keras optimizer variable is, from its name in one of the three
/// layouts (see the file comment): the slot is the last part of a tf.keras
/// 2.0-2.10 name ("Adam/dense/kernel/m", RMSprop's ".../rms"), the second
/// of a tf.keras 2.11+ one ("Adam/m/dense/kernel", RMSprop's
/// "RMSprop/velocity/dense/kernel"), the suffix of a Keras 3 one
/// ("adam/sequential_dense_kernel_momentum").
inline SlotKind slot_kind(std::string name) {
  const auto colon = name.rfind(':');
  if (colon != std::string::npos) name.resize(colon);
  std::vector<std::string> parts(1);
  for (const char ch : name) {
    if (ch == '/') {
      parts.emplace_back();
    } else {
      parts.back() += ch;
    }
  }
  const std::string& stem = parts.back();
  if (stem == "iteration" || stem == "iter" || stem == "iterations") return SlotKind::Iteration;
  if (stem == "learning_rate") return SlotKind::LearningRate;
  const auto kind_of = [](const std::string& slot) {
    if (slot == "m" || slot == "momentum") return SlotKind::Momentum;
    if (slot == "v" || slot == "velocity" || slot == "rms") return SlotKind::Velocity;
    return SlotKind::Unknown;
  };
  if (parts.size() >= 3 && kind_of(stem) != SlotKind::Unknown) return kind_of(stem);
  if (parts.size() >= 3 && kind_of(parts[1]) != SlotKind::Unknown) return kind_of(parts[1]);
  const auto ends = [&](const std::string& e) {
    return name.size() >= e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0;
  };
  if (ends("_momentum")) return SlotKind::Momentum;
  if (ends("_velocity")) return SlotKind::Velocity;
  return SlotKind::Unknown;
}

/// The kinds of state a loom optimizer keeps per parameter, in its order.
template <class T>
std::vector<SlotKind> state_kinds(const Optimizer<T>& o) {
  std::vector<SlotKind> kinds;
  for (const auto& name : o.state_names()) {
    kinds.push_back(name == "momentum" ? SlotKind::Momentum : name == "velocity" ? SlotKind::Velocity : SlotKind::Unknown);
  }
  return kinds;
}

/// Restores the compiled optimizer of `model` from the datasets `paths`
/// (relative to `group`), whose kinds are `kinds`. Returns whether it did.
template <class T>
bool import_optimizer_state(Sequential<T>& model, const hdf5::Group& group, const std::vector<std::string>& paths,
                            const std::vector<SlotKind>& kinds, const std::string& what) {
  if (!model.compiled()) return false;
  Optimizer<T>& optimizer = model.trainer().optimizer();
  const std::vector<SlotKind> wanted = state_kinds(optimizer);
  std::vector<const Parameter<T>*> trainable;
  const auto params = model.parameters();
  for (const auto& p : params) {
    if (p.trainable()) trainable.push_back(&p);
  }
  std::optional<std::size_t> iteration;
  std::vector<std::vector<std::size_t>> per_kind(wanted.size());
  for (std::size_t i = 0; i < paths.size(); ++i) {
    if (kinds[i] == SlotKind::Iteration) {
      iteration = i;
      continue;
    }
    if (kinds[i] == SlotKind::LearningRate) continue;
    const auto at = std::find(wanted.begin(), wanted.end(), kinds[i]);
    // tf.keras 2.11+'s SGD keeps a momentum even at momentum 0, where it does not carry over from step to step.
    if (at == wanted.end() && kinds[i] == SlotKind::Momentum && optimizer.type() == "SGD") continue;
    if (at == wanted.end()) return false;  // state of another optimizer (or one loom cannot name)
    per_kind[static_cast<std::size_t>(at - wanted.begin())].push_back(i);
  }
  if (!iteration) return false;
  for (const auto& k : per_kind) {
    if (k.size() != trainable.size()) return false;
  }
  const double steps = group.scalar(paths[*iteration]);
  if (!(steps >= 0 && steps < 9e15) || steps != static_cast<double>(static_cast<long long>(steps))) {
    throw FormatError(what + ": the optimizer's iteration count " + std::to_string(steps) + " is not a step count");
  }
  std::vector<typename Optimizer<T>::Slot> slots;
  for (std::size_t p = 0; p < trainable.size(); ++p) {
    typename Optimizer<T>::Slot slot{trainable[p]->name, trainable[p]->value->shape(), {}};
    for (std::size_t k = 0; k < wanted.size(); ++k) {
      slot.state.emplace_back(slot.shape);
      try {
        group.read(paths[per_kind[k][p]], slot.state.back());
      } catch (const FormatError& e) {
        throw FormatError(what + ": the optimizer's state for '" + slot.name + "': " + e.what());
      }
    }
    slots.push_back(std::move(slot));
  }
  optimizer.restore(std::move(slots), static_cast<long long>(steps));
  return true;
}

/// Keras 3's `optimizer.variables` of a compiled, built loom optimizer, as
/// (name, kind, tensor or nullptr for the scalars) in Keras's order:
/// iteration, learning_rate unless a schedule gives it, then the slots.
template <class T>
struct KerasOptimizerVariable {
  std::string name;
  SlotKind kind;
  const Tensor<T>* value;
};

template <class T>
std::vector<KerasOptimizerVariable<T>> optimizer_variables(const Sequential<T>& model) {
  std::vector<KerasOptimizerVariable<T>> out;
  if (!model.compiled() || model.trainer().optimizer().slots().empty()) return out;
  const Optimizer<T>& o = model.trainer().optimizer();
  const std::string prefix = keras_optimizer_name(o.type()) + "/";
  out.push_back({prefix + "iteration", SlotKind::Iteration, nullptr});
  // A constant learning rate is a variable; a schedule is not (base_optimizer.py, __init__).
  if (!o.learning_rate_schedule()) out.push_back({prefix + "learning_rate", SlotKind::LearningRate, nullptr});
  const auto kinds = state_kinds(o);
  for (const auto& slot : o.slots()) {
    std::string flat = model.name() + "_" + slot.name;  // "sequential_conv2d_kernel", as Keras 3 names them
    std::replace(flat.begin(), flat.end(), '/', '_');
    for (std::size_t k = 0; k < kinds.size() && k < slot.state.size(); ++k) {
      out.push_back({prefix + flat + "_" + o.state_names()[k], kinds[k], &slot.state[k]});
    }
  }
  return out;
}

/// Writes the variables of optimizer_variables() into `group`, each at
/// `path_of(index, variable)`.
template <class T, class PathOf>
void write_optimizer_variables(const Sequential<T>& model, hdf5::Group& group,
                               const std::vector<KerasOptimizerVariable<T>>& vars, PathOf path_of) {
  const Optimizer<T>& o = model.trainer().optimizer();
  for (std::size_t i = 0; i < vars.size(); ++i) {
    const std::string path = path_of(i, vars[i]);
    if (vars[i].kind == SlotKind::Iteration) {
      group.write_scalar(path, static_cast<double>(o.iterations()), true);
    } else if (vars[i].kind == SlotKind::LearningRate) {
      group.write_scalar(path, o.config().real("learning_rate"), false);
    } else {
      group.write(path, *vars[i].value);
    }
  }
}

}  // namespace loom::keras::impl
