#pragma once
/// \file optimizers/optimizer.hpp
/// `Optimizer<T>`, the base of every optimizer (SGD, RMSprop, Adam and AdamW
/// are in sgd.hpp, rmsprop.hpp and adam.hpp). An optimizer keeps one state
/// slot per trainable parameter, created by `build` and matched to the
/// parameter by name and shape; `step` updates every trainable parameter in
/// place and advances the step counter once.
///
/// Every optimizer also takes what Keras 3's base optimizer takes:
/// - `learning_rate`: a constant, or a LearningRateSchedule (schedules.hpp)
///   asked with the step count before each update;
/// - `weight_decay`: decoupled weight decay, w <- w - lr * weight_decay * w
///   before the update, for every trainable parameter whose name contains
///   none of `exclude_from_weight_decay` (plain substrings, as in Keras's
///   `exclude_from_weight_decay(var_names=[...])`);
/// - one of `clipnorm` (each gradient scaled to norm at most clipnorm),
///   `global_clipnorm` (all gradients together) or `clipvalue` (each value
///   clipped to [-clipvalue, clipvalue]). The gradients are clipped in place.
/// One update is: clip the gradients, decay the weights, then the rule.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "../parallel.hpp"
#include "../parameter.hpp"
#include "../schedules.hpp"
#include "../tensor.hpp"

namespace loom {

/// What every optimizer takes (see the file comment); 0 means "none".
struct OptimizerSettings {
  double learning_rate = 1e-3;
  std::shared_ptr<const LearningRateSchedule> schedule;  ///< replaces learning_rate when set
  double weight_decay = 0;
  double clipnorm = 0, global_clipnorm = 0, clipvalue = 0;
  std::vector<std::string> exclude_from_weight_decay;
};

/// The options every optimizer's options class has, chained as its own:
/// `AdamOptions().learning_rate(schedule).weight_decay(1e-4).beta_1(0.9)`.
template <class Options>
class OptimizerOptionsBase {
 public:
  /// A constant learning rate.
  Options& learning_rate(double v) {
    s_.learning_rate = v;
    s_.schedule.reset();
    return self();
  }
  /// A schedule in place of the constant.
  Options& learning_rate(std::shared_ptr<const LearningRateSchedule> schedule) {
    s_.schedule = std::move(schedule);
    return self();
  }
  double learning_rate() const { return s_.learning_rate; }
  const std::shared_ptr<const LearningRateSchedule>& learning_rate_schedule() const { return s_.schedule; }
  Options& weight_decay(double v) { return s_.weight_decay = v, self(); }
  double weight_decay() const { return s_.weight_decay; }
  Options& exclude_from_weight_decay(std::vector<std::string> names) {
    return s_.exclude_from_weight_decay = std::move(names), self();
  }
  Options& clipnorm(double v) { return s_.clipnorm = v, self(); }
  Options& global_clipnorm(double v) { return s_.global_clipnorm = v, self(); }
  Options& clipvalue(double v) { return s_.clipvalue = v, self(); }
  const OptimizerSettings& settings() const { return s_; }
  /// The common options from `c`, over these: what from_config reads.
  Options& read_settings(const Config& c);

 protected:
  explicit OptimizerOptionsBase(double default_learning_rate) { s_.learning_rate = default_learning_rate; }

 private:
  Options& self() { return static_cast<Options&>(*this); }
  OptimizerSettings s_;
};

template <class T>
class Optimizer {
 public:
  using registry_base = Optimizer<T>;
  static constexpr const char* registry_kind = "optimizer";

  /// The state kept for one trainable parameter.
  struct Slot {
    std::string name;
    Shape shape;
    std::vector<Tensor<T>> state;
  };

  virtual ~Optimizer() = default;
  /// Keras's class name ("RMSprop").
  virtual std::string type() const = 0;
  /// Hyperparameters: what `from_config` needs to make it again.
  virtual Config config() const = 0;

  /// The learning rate of the next update: the constant, or the schedule at
  /// iterations() (Keras's `optimizer.learning_rate`).
  double learning_rate() const {
    return settings_.schedule ? (*settings_.schedule)(static_cast<double>(iterations_)) : settings_.learning_rate;
  }
  /// Sets the constant learning rate (as Keras's callbacks do). An optimizer
  /// whose rate follows a schedule refuses, as Keras's does.
  void set_learning_rate(double lr) {
    if (settings_.schedule) {
      throw ConfigError(detail::str(type(), ": its learning rate follows a ", settings_.schedule->type(),
                                    " schedule and cannot be set"));
    }
    if (!(lr >= 0) || !std::isfinite(lr)) throw ConfigError(detail::str(type(), ": bad learning rate ", lr));
    settings_.learning_rate = lr;
  }
  /// The schedule, or null for a constant learning rate.
  const LearningRateSchedule* learning_rate_schedule() const { return settings_.schedule.get(); }
  const OptimizerSettings& settings() const { return settings_; }

  /// The state slots, in parameter order (empty before the first build).
  const std::vector<Slot>& slots() const { return slots_; }

  /// What each of a slot's state tensors is, by Keras's name for that
  /// variable ("momentum", "velocity"), in slot order.
  virtual std::vector<std::string> state_names() const = 0;

  /// Restores saved state: every slot must hold states_per_param() tensors of
  /// its shape (FormatError otherwise). Parameters are matched at the next step.
  void restore(std::vector<Slot> slots, long long iterations) {
    for (const auto& s : slots) {
      if (static_cast<int>(s.state.size()) != states_per_param()) {
        throw FormatError(detail::str(type(), ": slot '", s.name, "' has ", s.state.size(), " state tensors, expected ",
                                      states_per_param()));
      }
      for (const auto& t : s.state) {
        if (t.shape() != s.shape) {
          throw FormatError(detail::str(type(), ": slot '", s.name, "' holds a state of shape ", t.shape(),
                                        ", expected ", s.shape));
        }
      }
    }
    if (iterations < 0) throw FormatError(detail::str(type(), ": negative step count ", iterations));
    slots_ = std::move(slots);
    iterations_ = iterations;
    built_ = true;
  }

  /// Creates the state for `params` (buffers are skipped). Building again for
  /// the same parameters keeps the state; for different ones it throws.
  void build(const std::vector<Parameter<T>>& params) {
    std::vector<Slot> slots;
    for (const auto& p : params) {
      if (p.trainable()) slots.push_back({p.name, p.value->shape(), {}});
    }
    if (built_) {
      bool same = slots.size() == slots_.size();
      for (std::size_t i = 0; same && i < slots.size(); ++i) {
        same = slots[i].name == slots_[i].name && slots[i].shape == slots_[i].shape;
      }
      if (!same) throw ConfigError(type() + ": already built for other parameters");
      return;
    }
    for (auto& s : slots) {
      for (int j = 0; j < states_per_param(); ++j) s.state.emplace_back(s.shape);
    }
    slots_ = std::move(slots);
    built_ = true;
  }

  /// One update of every trainable parameter from its gradient.
  void step(const std::vector<Parameter<T>>& params) {
    if (!built_) build(params);
    std::size_t i = 0;
    for (const auto& p : params) {
      if (!p.trainable()) continue;
      if (i >= slots_.size() || slots_[i].name != p.name || p.value->shape() != slots_[i].shape) {
        throw ConfigError(type() + ": parameter '" + p.name + "' does not match the state built for it");
      }
      ++i;
    }
    lr_ = learning_rate();  // at the step count before this update, as Keras asks its schedule
    clip_gradients(params);
    ++iterations_;
    begin_step();
    // The rule is elementwise, so the threads share the values of all the
    // parameters together: each its part of them laid end to end, each
    // tensor's length rounded up to whole groups of kGroup, cut between
    // groups. A value then takes the same path through Eigen's loop (vector
    // or scalar tail) as in one pass over its tensor, which keeps the bits.
    // On one thread, the notebook's model spent 2.7 % of a training step
    // here (the AVX2 build) while the other core waited.
    Index padded = 0;
    for (const auto& p : params) {
      if (p.trainable()) padded += round_up(p.value->size());
    }
    const bool decay = settings_.weight_decay != 0;
    const T keep = static_cast<T>(1 - lr_ * settings_.weight_decay);
    detail::parallel(detail::threads_for(padded / kValuesPerThread), [&](int t, int nt) {
      const detail::Range groups = detail::split(padded / kGroup, t, nt);
      const Index lo = groups.begin * kGroup, hi = groups.end * kGroup;
      Index at = 0;  // where the parameter's values start, end to end
      std::size_t slot = 0;
      for (const auto& p : params) {
        if (!p.trainable()) continue;
        const Index n = p.value->size(), begin = std::max(lo, at) - at, end = std::min(hi - at, n);
        if (begin < end) {
          if (decay && decays(p.name)) part(*p.value, begin, end - begin) *= keep;
          update(*p.value, *p.grad, slots_[slot].state, begin, end - begin);
        }
        at += round_up(n);
        ++slot;
      }
    });
  }

  /// Number of steps taken (Keras's `optimizer.iterations`).
  long long iterations() const { return iterations_; }

 protected:
  /// `who` (the class name) names the optimizer in errors while it is constructed.
  Optimizer(const char* who, OptimizerSettings settings) : settings_(std::move(settings)) { check_settings(who); }

  int states_per_param() const { return static_cast<int>(state_names().size()); }
  /// The learning rate of the update in progress.
  double lr() const { return lr_; }
  virtual void begin_step() {}
  /// The rule on values [begin, begin + count) of w, of its gradient g and
  /// of its state. Threads call it at once on disjoint ranges.
  virtual void update(Tensor<T>& w, const Tensor<T>& g, std::vector<Tensor<T>>& state, Index begin,
                      Index count) = 0;
  /// Values [begin, begin + count) of t as an Eigen array.
  static auto part(Tensor<T>& t, Index begin, Index count) { return t.flat().segment(begin, count).array(); }
  static auto part(const Tensor<T>& t, Index begin, Index count) { return t.flat().segment(begin, count).array(); }

  /// The config: the learning rate (or its schedule, as "learning_rate_schedule"
  /// and its keys behind "learning_rate_schedule."), then `own`'s keys, then
  /// the common options that are set.
  Config config_with(const Config& own) const {
    Config c;
    if (settings_.schedule) {
      c.set("learning_rate_schedule", settings_.schedule->type());
      for (const auto& [k, v] : settings_.schedule->config().entries()) c.set("learning_rate_schedule." + k, v);
    } else {
      c.set("learning_rate", settings_.learning_rate);
    }
    for (const auto& [k, v] : own.entries()) c.set(k, v);
    if (settings_.weight_decay != 0) c.set("weight_decay", settings_.weight_decay);
    if (!settings_.exclude_from_weight_decay.empty()) {
      std::string names;
      for (const auto& n : settings_.exclude_from_weight_decay) names += (names.empty() ? "" : ",") + n;
      c.set("exclude_from_weight_decay", names);
    }
    if (settings_.clipnorm != 0) c.set("clipnorm", settings_.clipnorm);
    if (settings_.global_clipnorm != 0) c.set("global_clipnorm", settings_.global_clipnorm);
    if (settings_.clipvalue != 0) c.set("clipvalue", settings_.clipvalue);
    return c;
  }

 private:
  /// The threads' shares are cut between groups of 16 values (a multiple of
  /// every vector width, from a tensor's aligned start); a thread is worth
  /// starting for 32768 values (the notebook's model updates 256,567).
  static constexpr Index kGroup = 16, kValuesPerThread = 32768;
  static Index round_up(Index n) { return (n + kGroup - 1) / kGroup * kGroup; }

  void check_settings(const char* who) const {
    const auto& s = settings_;
    const auto require = [&](bool ok, const char* what, double v) {
      if (!ok) throw ConfigError(detail::str(who, ": ", what, ", got ", v));
    };
    if (!s.schedule) require(s.learning_rate >= 0 && std::isfinite(s.learning_rate), "learning_rate must be >= 0", s.learning_rate);
    require(s.weight_decay >= 0 && std::isfinite(s.weight_decay), "weight_decay must be >= 0", s.weight_decay);
    require(s.clipnorm >= 0 && std::isfinite(s.clipnorm), "clipnorm must be >= 0", s.clipnorm);
    require(s.global_clipnorm >= 0 && std::isfinite(s.global_clipnorm), "global_clipnorm must be >= 0", s.global_clipnorm);
    require(s.clipvalue >= 0 && std::isfinite(s.clipvalue), "clipvalue must be >= 0", s.clipvalue);
    const int clips = (s.clipnorm > 0) + (s.global_clipnorm > 0) + (s.clipvalue > 0);
    if (clips > 1) {
      throw ConfigError(detail::str(who, ": only one of clipnorm, global_clipnorm and clipvalue can be set"));
    }
    for (const auto& n : s.exclude_from_weight_decay) {
      if (n.empty() || n.find(',') != std::string::npos) {
        throw ConfigError(detail::str(who, ": bad name '", n, "' in exclude_from_weight_decay"));
      }
    }
  }
  bool decays(const std::string& name) const {
    for (const auto& n : settings_.exclude_from_weight_decay) {
      if (name.find(n) != std::string::npos) return false;
    }
    return true;
  }

  /// Keras's _clip_gradients: g * c / max(||g||, c) per gradient (clipnorm)
  /// or over all of them (global_clipnorm; a norm that is not finite makes
  /// every gradient NaN, as Keras's does), or each value into [-c, c].
  void clip_gradients(const std::vector<Parameter<T>>& params) const {
    const auto& s = settings_;
    if (s.clipnorm > 0) {
      for (const auto& p : params) {
        if (!p.trainable()) continue;
        const double norm = squared_norm(*p.grad);
        if (norm > 0) scale(*p.grad, s.clipnorm / std::max(std::sqrt(norm), s.clipnorm));
      }
    } else if (s.global_clipnorm > 0) {
      double sum = 0;
      for (const auto& p : params) sum += p.trainable() ? squared_norm(*p.grad) : 0.0;
      const double norm = std::sqrt(sum);
      const double factor = std::isfinite(norm) ? s.global_clipnorm / std::max(norm, s.global_clipnorm)
                                                : std::numeric_limits<double>::quiet_NaN();
      for (const auto& p : params) {
        if (p.trainable()) scale(*p.grad, factor);
      }
    } else if (s.clipvalue > 0) {
      const T c = static_cast<T>(s.clipvalue);
      for (const auto& p : params) {
        if (p.trainable()) p.grad->flat() = p.grad->flat().cwiseMax(-c).cwiseMin(c);
      }
    }
  }
  static double squared_norm(const Tensor<T>& g) {
    double sum = 0;
    for (T v : g) sum += static_cast<double>(v) * static_cast<double>(v);
    return sum;
  }
  static void scale(Tensor<T>& g, double factor) {
    if (factor != 1.0) g.flat() *= static_cast<T>(factor);
  }

  OptimizerSettings settings_;
  std::vector<Slot> slots_;
  bool built_ = false;
  long long iterations_ = 0;
  double lr_ = 0;
};

template <class Options>
Options& OptimizerOptionsBase<Options>::read_settings(const Config& c) {
  if (c.has("learning_rate_schedule")) {
    Config sc;
    const std::string prefix = "learning_rate_schedule.";
    for (const auto& [k, v] : c.entries()) {
      if (k.rfind(prefix, 0) == 0) sc.set(k.substr(prefix.size()), v);
    }
    learning_rate(std::shared_ptr<const LearningRateSchedule>(make_schedule(c.text("learning_rate_schedule"), sc)));
  } else {
    learning_rate(c.real("learning_rate", s_.learning_rate));
  }
  weight_decay(c.real("weight_decay", s_.weight_decay));
  if (c.has("exclude_from_weight_decay")) {
    std::vector<std::string> names;
    const std::string& text = c.text("exclude_from_weight_decay");
    for (std::size_t at = 0; at <= text.size();) {
      const std::size_t comma = std::min(text.find(',', at), text.size());
      names.push_back(text.substr(at, comma - at));
      at = comma + 1;
    }
    exclude_from_weight_decay(std::move(names));
  }
  clipnorm(c.real("clipnorm", s_.clipnorm));
  global_clipnorm(c.real("global_clipnorm", s_.global_clipnorm));
  clipvalue(c.real("clipvalue", s_.clipvalue));
  return self();
}

}  // namespace loom
