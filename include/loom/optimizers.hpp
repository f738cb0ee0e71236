#pragma once
/// \file optimizers.hpp
/// SGD (momentum, Nesterov), RMSprop and Adam with Keras's update rules and
/// defaults. An optimizer keeps one state slot per trainable parameter,
/// created by `build` and matched to the parameter by name and shape; `step`
/// updates every trainable parameter in place and advances the step counter
/// once.

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "config.hpp"
#include "layers/layer.hpp"
#include "registry.hpp"

namespace loom {

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
    ++iterations_;
    begin_step();
    std::size_t i = 0;
    for (const auto& p : params) {
      if (!p.trainable()) continue;
      if (i >= slots_.size() || slots_[i].name != p.name || p.value->shape() != slots_[i].shape) {
        throw ConfigError(type() + ": parameter '" + p.name + "' does not match the state built for it");
      }
      update(*p.value, *p.grad, slots_[i].state);
      ++i;
    }
  }

  /// Number of steps taken (Keras's `optimizer.iterations`).
  long long iterations() const { return iterations_; }

 protected:
  int states_per_param() const { return static_cast<int>(state_names().size()); }
  virtual void begin_step() {}
  virtual void update(Tensor<T>& w, const Tensor<T>& g, std::vector<Tensor<T>>& state) = 0;

 private:
  std::vector<Slot> slots_;
  bool built_ = false;
  long long iterations_ = 0;
};

class SGDOptions {
 public:
  SGDOptions() = default;
  LOOM_OPTION(double, learning_rate, 0.01)
  LOOM_OPTION(double, momentum, 0.0)
  LOOM_OPTION(bool, nesterov, false)
};

/// v <- momentum * v - lr * g;  w <- w + v   (Nesterov: w <- w + momentum * v - lr * g)
template <class T>
class SGD : public Optimizer<T> {
 public:
  static constexpr const char* class_name = "SGD";
  explicit SGD(const SGDOptions& options = {}) : opt_(options) {}
  std::string type() const override { return class_name; }
  Config config() const override {
    return Config()
        .set("learning_rate", opt_.learning_rate())
        .set("momentum", opt_.momentum())
        .set("nesterov", opt_.nesterov());
  }
  /// Missing keys take Keras's defaults.
  static std::unique_ptr<Optimizer<T>> from_config(const Config& c) {
    const SGDOptions d;
    return std::make_unique<SGD>(SGDOptions()
                                     .learning_rate(c.real("learning_rate", d.learning_rate()))
                                     .momentum(c.real("momentum", d.momentum()))
                                     .nesterov(c.flag("nesterov", d.nesterov())));
  }

  std::vector<std::string> state_names() const override {
    return opt_.momentum() != 0 ? std::vector<std::string>{"momentum"} : std::vector<std::string>{};
  }

 protected:
  void update(Tensor<T>& w, const Tensor<T>& g, std::vector<Tensor<T>>& state) override {
    const T lr = static_cast<T>(opt_.learning_rate()), mu = static_cast<T>(opt_.momentum());
    if (state.empty()) {
      w.flat() -= lr * g.flat();
      return;
    }
    auto v = state[0].flat();
    v = mu * v - lr * g.flat();
    if (opt_.nesterov()) {
      w.flat() += mu * v - lr * g.flat();
    } else {
      w.flat() += v;
    }
  }

 private:
  SGDOptions opt_;
};

class RMSpropOptions {
 public:
  RMSpropOptions() = default;
  LOOM_OPTION(double, learning_rate, 1e-3)
  LOOM_OPTION(double, rho, 0.9)
  LOOM_OPTION(double, epsilon, 1e-7)
  /// Where epsilon goes. true (the default): inside the square root, as Keras
  /// 3 and tf.keras 2.11+ do. false: outside it, the rule of TensorFlow
  /// 2.0-2.10 (`optimizer_v2`), of standalone Keras 2 and of loom before this
  /// option existed; kept to reproduce old results.
  LOOM_OPTION(bool, epsilon_inside_sqrt, true)
};

/// RMSprop without momentum, not centered, what Keras's compile() uses by
/// default. a <- rho * a + (1 - rho) * g^2, then
///   w <- w - lr * g / sqrt(a + eps)     Keras 3, tf.keras >= 2.11 (the default)
///   w <- w - lr * g / (sqrt(a) + eps)   TensorFlow 2.0-2.10 (epsilon_inside_sqrt(false))
/// With eps = 1e-7 the two differ where a is tiny: the first never divides by
/// less than sqrt(1e-7) ~ 3.2e-4, the second lets a near-zero gradient take
/// a step of about lr.
template <class T>
class RMSprop : public Optimizer<T> {
 public:
  static constexpr const char* class_name = "RMSprop";
  explicit RMSprop(const RMSpropOptions& options = {}) : opt_(options) {}
  std::string type() const override { return class_name; }
  Config config() const override {
    return Config()
        .set("learning_rate", opt_.learning_rate())
        .set("rho", opt_.rho())
        .set("epsilon", opt_.epsilon())
        .set("epsilon_inside_sqrt", opt_.epsilon_inside_sqrt());
  }
  /// Missing keys take Keras's defaults (so today's rule; files saved before
  /// the rule was recorded are read by model_file.hpp, which says which rule
  /// they were trained with).
  static std::unique_ptr<Optimizer<T>> from_config(const Config& c) {
    const RMSpropOptions d;
    return std::make_unique<RMSprop>(
        RMSpropOptions()
            .learning_rate(c.real("learning_rate", d.learning_rate()))
            .rho(c.real("rho", d.rho()))
            .epsilon(c.real("epsilon", d.epsilon()))
            .epsilon_inside_sqrt(c.flag("epsilon_inside_sqrt", d.epsilon_inside_sqrt())));
  }
  const RMSpropOptions& options() const { return opt_; }

  /// The moving mean of squared gradients.
  std::vector<std::string> state_names() const override { return {"velocity"}; }

 protected:
  void update(Tensor<T>& w, const Tensor<T>& g, std::vector<Tensor<T>>& state) override {
    const T lr = static_cast<T>(opt_.learning_rate()), rho = static_cast<T>(opt_.rho()),
            eps = static_cast<T>(opt_.epsilon());
    auto a = state[0].flat().array();
    const auto ga = g.flat().array();
    a = rho * a + (T(1) - rho) * ga.square();
    if (opt_.epsilon_inside_sqrt()) {
      w.flat().array() -= lr * ga / (a + eps).sqrt();
    } else {
      w.flat().array() -= lr * ga / (a.sqrt() + eps);
    }
  }

 private:
  RMSpropOptions opt_;
};

class AdamOptions {
 public:
  AdamOptions() = default;
  LOOM_OPTION(double, learning_rate, 1e-3)
  LOOM_OPTION(double, beta_1, 0.9)
  LOOM_OPTION(double, beta_2, 0.999)
  LOOM_OPTION(double, epsilon, 1e-7)
};

/// m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
/// lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);  w <- w - lr_t m / (sqrt(v) + eps)
template <class T>
class Adam : public Optimizer<T> {
 public:
  static constexpr const char* class_name = "Adam";
  explicit Adam(const AdamOptions& options = {}) : opt_(options) {}
  std::string type() const override { return class_name; }
  Config config() const override {
    return Config()
        .set("learning_rate", opt_.learning_rate())
        .set("beta_1", opt_.beta_1())
        .set("beta_2", opt_.beta_2())
        .set("epsilon", opt_.epsilon());
  }
  /// Missing keys take Keras's defaults.
  static std::unique_ptr<Optimizer<T>> from_config(const Config& c) {
    const AdamOptions d;
    return std::make_unique<Adam>(AdamOptions()
                                      .learning_rate(c.real("learning_rate", d.learning_rate()))
                                      .beta_1(c.real("beta_1", d.beta_1()))
                                      .beta_2(c.real("beta_2", d.beta_2()))
                                      .epsilon(c.real("epsilon", d.epsilon())));
  }

  /// The first and second moments, m and v.
  std::vector<std::string> state_names() const override { return {"momentum", "velocity"}; }

 protected:
  void begin_step() override {
    const double t = static_cast<double>(this->iterations());
    lr_t_ = static_cast<T>(opt_.learning_rate() * std::sqrt(1 - std::pow(opt_.beta_2(), t)) /
                           (1 - std::pow(opt_.beta_1(), t)));
  }
  void update(Tensor<T>& w, const Tensor<T>& g, std::vector<Tensor<T>>& state) override {
    const T b1 = static_cast<T>(opt_.beta_1()), b2 = static_cast<T>(opt_.beta_2()),
            eps = static_cast<T>(opt_.epsilon());
    auto m = state[0].flat().array();
    auto v = state[1].flat().array();
    const auto ga = g.flat().array();
    m = b1 * m + (T(1) - b1) * ga;
    v = b2 * v + (T(1) - b2) * ga.square();
    w.flat().array() -= lr_t_ * m / (v.sqrt() + eps);
  }

 private:
  AdamOptions opt_;
  T lr_t_ = 0;
};

LOOM_REGISTER(SGD, "sgd")
LOOM_REGISTER(RMSprop, "rmsprop")
LOOM_REGISTER(Adam, "adam")

/// An optimizer by Keras's name, its class name ("RMSprop") or its string
/// alias ("rmsprop"), or any optimizer registered with LOOM_REGISTER, with
/// `config` over Keras's defaults. Throws ConfigError naming those there are.
template <class T>
std::unique_ptr<Optimizer<T>> make_optimizer(const std::string& name, const Config& config = {}) {
  return Registry<Optimizer<T>>::global().create(name, config);
}

}  // namespace loom
