#pragma once
/// \file optimizers/rmsprop.hpp
/// RMSprop: Keras's rule (either place of epsilon) and defaults.

#include <memory>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../option.hpp"
#include "../registry.hpp"
#include "../tensor.hpp"
#include "optimizer.hpp"

namespace loom {

class RMSpropOptions : public OptimizerOptionsBase<RMSpropOptions> {
 public:
  RMSpropOptions() : OptimizerOptionsBase(1e-3) {}
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
  explicit RMSprop(const RMSpropOptions& options = {}) : Optimizer<T>(class_name, options.settings()), opt_(options) {}
  std::string type() const override { return class_name; }
  Config config() const override {
    return this->config_with(Config()
                                 .set("rho", opt_.rho())
                                 .set("epsilon", opt_.epsilon())
                                 .set("epsilon_inside_sqrt", opt_.epsilon_inside_sqrt()));
  }
  /// Missing keys take Keras's defaults (so today's rule; files saved before
  /// the rule was recorded are read by model_file.hpp, which says which rule
  /// they were trained with).
  static std::unique_ptr<Optimizer<T>> from_config(const Config& c) {
    const RMSpropOptions d;
    return std::make_unique<RMSprop>(
        RMSpropOptions()
            .read_settings(c)
            .rho(c.real("rho", d.rho()))
            .epsilon(c.real("epsilon", d.epsilon()))
            .epsilon_inside_sqrt(c.flag("epsilon_inside_sqrt", d.epsilon_inside_sqrt())));
  }
  const RMSpropOptions& options() const { return opt_; }

  /// The moving mean of squared gradients.
  std::vector<std::string> state_names() const override { return {"velocity"}; }

 protected:
  void update(Tensor<T>& w, const Tensor<T>& g, std::vector<Tensor<T>>& state, Index begin, Index count) override {
    const T lr = static_cast<T>(this->lr()), rho = static_cast<T>(opt_.rho()),
            eps = static_cast<T>(opt_.epsilon());
    auto a = this->part(state[0], begin, count);
    const auto ga = this->part(g, begin, count);
    a = rho * a + (T(1) - rho) * ga.square();
    if (opt_.epsilon_inside_sqrt()) {
      this->part(w, begin, count) -= lr * ga / (a + eps).sqrt();
    } else {
      this->part(w, begin, count) -= lr * ga / (a.sqrt() + eps);
    }
  }

 private:
  RMSpropOptions opt_;
};

LOOM_REGISTER(RMSprop, "rmsprop")

}  // namespace loom
