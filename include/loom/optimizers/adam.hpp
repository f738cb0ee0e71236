#pragma once
/// \file optimizers/adam.hpp
/// Adam and AdamW (Adam with decoupled weight decay): Keras's rules and
/// defaults.

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../error.hpp"
#include "../option.hpp"
#include "../registry.hpp"
#include "../tensor.hpp"
#include "optimizer.hpp"

namespace loom {

class AdamOptions : public OptimizerOptionsBase<AdamOptions> {
 public:
  AdamOptions() : OptimizerOptionsBase(1e-3) {}
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
  explicit Adam(const AdamOptions& options = {}) : Adam(class_name, options) {}
  std::string type() const override { return class_name; }
  Config config() const override {
    return this->config_with(
        Config().set("beta_1", opt_.beta_1()).set("beta_2", opt_.beta_2()).set("epsilon", opt_.epsilon()));
  }
  /// Missing keys take Keras's defaults.
  static std::unique_ptr<Optimizer<T>> from_config(const Config& c) { return std::make_unique<Adam>(read(c, {})); }

  /// The first and second moments, m and v.
  std::vector<std::string> state_names() const override { return {"momentum", "velocity"}; }

 protected:
  Adam(const char* who, const AdamOptions& options) : Optimizer<T>(who, options.settings()), opt_(options) {}
  /// Options from `c` over `defaults`.
  static AdamOptions read(const Config& c, AdamOptions defaults) {
    const AdamOptions d = defaults;
    return defaults.read_settings(c)
        .beta_1(c.real("beta_1", d.beta_1()))
        .beta_2(c.real("beta_2", d.beta_2()))
        .epsilon(c.real("epsilon", d.epsilon()));
  }

  void begin_step() override {
    const double t = static_cast<double>(this->iterations());
    lr_t_ = static_cast<T>(this->lr() * std::sqrt(1 - std::pow(opt_.beta_2(), t)) /
                           (1 - std::pow(opt_.beta_1(), t)));
  }
  void update(Tensor<T>& w, const Tensor<T>& g, std::vector<Tensor<T>>& state, Index begin, Index count) override {
    const T b1 = static_cast<T>(opt_.beta_1()), b2 = static_cast<T>(opt_.beta_2()),
            eps = static_cast<T>(opt_.epsilon());
    auto m = this->part(state[0], begin, count);
    auto v = this->part(state[1], begin, count);
    const auto ga = this->part(g, begin, count);
    m = b1 * m + (T(1) - b1) * ga;
    v = b2 * v + (T(1) - b2) * ga.square();
    this->part(w, begin, count) -= lr_t_ * m / (v.sqrt() + eps);
  }

 private:
  AdamOptions opt_;
  T lr_t_ = 0;
};

/// Adam with decoupled weight decay (Loshchilov & Hutter), Keras's AdamW:
/// Adam whose weight_decay defaults to 0.004 (the common `weight_decay`
/// option, applied before each update as w <- w - lr * weight_decay * w).
template <class T>
class AdamW : public Adam<T> {
 public:
  static constexpr const char* class_name = "AdamW";
  /// AdamOptions with AdamW's default decay, 0.004.
  static AdamOptions defaults() { return AdamOptions().weight_decay(0.004); }
  explicit AdamW(const AdamOptions& options = defaults()) : Adam<T>(class_name, options) {
    if (options.weight_decay() <= 0) {
      throw ConfigError(detail::str(class_name, ": weight_decay must be > 0 (use Adam for none), got ",
                                    options.weight_decay()));
    }
  }
  std::string type() const override { return class_name; }
  static std::unique_ptr<Optimizer<T>> from_config(const Config& c) {
    return std::make_unique<AdamW>(Adam<T>::read(c, defaults()));
  }
};

LOOM_REGISTER(Adam, "adam")
LOOM_REGISTER(AdamW, "adamw")

}  // namespace loom
