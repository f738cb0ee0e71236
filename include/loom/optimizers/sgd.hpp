#pragma once
/// \file optimizers/sgd.hpp
/// SGD, with momentum and Nesterov's variant: Keras's rule and defaults.

#include <memory>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../option.hpp"
#include "../registry.hpp"
#include "../tensor.hpp"
#include "optimizer.hpp"

namespace loom {

class SGDOptions : public OptimizerOptionsBase<SGDOptions> {
 public:
  SGDOptions() : OptimizerOptionsBase(0.01) {}
  LOOM_OPTION(double, momentum, 0.0)
  LOOM_OPTION(bool, nesterov, false)
};

/// v <- momentum * v - lr * g;  w <- w + v   (Nesterov: w <- w + momentum * v - lr * g)
template <class T>
class SGD : public Optimizer<T> {
 public:
  static constexpr const char* class_name = "SGD";
  explicit SGD(const SGDOptions& options = {}) : Optimizer<T>(class_name, options.settings()), opt_(options) {}
  std::string type() const override { return class_name; }
  Config config() const override {
    return this->config_with(Config().set("momentum", opt_.momentum()).set("nesterov", opt_.nesterov()));
  }
  /// Missing keys take Keras's defaults.
  static std::unique_ptr<Optimizer<T>> from_config(const Config& c) {
    SGDOptions o;
    return std::make_unique<SGD>(
        o.read_settings(c).momentum(c.real("momentum", o.momentum())).nesterov(c.flag("nesterov", o.nesterov())));
  }

  std::vector<std::string> state_names() const override {
    return opt_.momentum() != 0 ? std::vector<std::string>{"momentum"} : std::vector<std::string>{};
  }

 protected:
  void update(Tensor<T>& w, const Tensor<T>& g, std::vector<Tensor<T>>& state, Index begin, Index count) override {
    const T lr = static_cast<T>(this->lr()), mu = static_cast<T>(opt_.momentum());
    auto wa = this->part(w, begin, count);
    const auto ga = this->part(g, begin, count);
    if (state.empty()) {
      wa -= lr * ga;
      return;
    }
    auto v = this->part(state[0], begin, count);
    v = mu * v - lr * ga;
    if (opt_.nesterov()) {
      wa += mu * v - lr * ga;
    } else {
      wa += v;
    }
  }

 private:
  SGDOptions opt_;
};

LOOM_REGISTER(SGD, "sgd")

}  // namespace loom
