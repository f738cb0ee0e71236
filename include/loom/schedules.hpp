#pragma once
/// \file schedules.hpp
/// Learning-rate schedules, Keras's `keras.optimizers.schedules`: a learning
/// rate as a function of the optimizer's step count, given to an optimizer in
/// place of a constant.
///
///     auto lr = std::make_shared<CosineDecay>(0.0, 30 * 1500, 0.0, 1e-3, 1500);
///     model.compile("categorical_crossentropy", std::make_unique<Adam<float>>(AdamOptions().learning_rate(lr)));
///
/// As in Keras, the optimizer asks its schedule once per update with
/// `optimizer.iterations` before that update: 0 for the first. A schedule is
/// an immutable description (a class name and a Config), so it saves with
/// the optimizer in the model file and a resumed fit continues it exactly.
/// Schedules of your own register like layers: LOOM_REGISTER(MySchedule).

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config.hpp"
#include "registry.hpp"

namespace loom {

class LearningRateSchedule {
 public:
  using registry_base = LearningRateSchedule;
  static constexpr const char* registry_kind = "learning-rate schedule";

  virtual ~LearningRateSchedule() = default;
  /// Keras's class name ("CosineDecay").
  virtual std::string type() const = 0;
  /// What `from_config` needs to make it again.
  virtual Config config() const = 0;
  /// The learning rate of the update that follows `step` updates.
  virtual double operator()(double step) const = 0;
};

namespace detail {
inline void require_positive_steps(const char* who, double steps, const char* what) {
  if (!(steps > 0)) throw ConfigError(detail::str(who, ": ", what, " must be > 0, got ", steps));
}
inline void require_finite(const char* who, double v, const char* what) {
  if (!std::isfinite(v)) throw ConfigError(detail::str(who, ": ", what, " must be finite, got ", v));
}
}  // namespace detail

/// initial_learning_rate * decay_rate ^ (step / decay_steps), the exponent
/// rounded down with `staircase`.
class ExponentialDecay : public LearningRateSchedule {
 public:
  static constexpr const char* class_name = "ExponentialDecay";
  ExponentialDecay(double initial_learning_rate, double decay_steps, double decay_rate, bool staircase = false)
      : initial_(initial_learning_rate), steps_(decay_steps), rate_(decay_rate), staircase_(staircase) {
    detail::require_finite(class_name, initial_, "initial_learning_rate");
    detail::require_positive_steps(class_name, steps_, "decay_steps");
    detail::require_finite(class_name, rate_, "decay_rate");
  }
  static std::unique_ptr<LearningRateSchedule> from_config(const Config& c) {
    return std::make_unique<ExponentialDecay>(c.real("initial_learning_rate"), c.real("decay_steps"),
                                              c.real("decay_rate"), c.flag("staircase", false));
  }
  std::string type() const override { return class_name; }
  Config config() const override {
    return Config()
        .set("initial_learning_rate", initial_)
        .set("decay_steps", steps_)
        .set("decay_rate", rate_)
        .set("staircase", staircase_);
  }
  double operator()(double step) const override {
    double p = step / steps_;
    if (staircase_) p = std::floor(p);
    return initial_ * std::pow(rate_, p);
  }

 private:
  double initial_, steps_, rate_;
  bool staircase_;
};

/// values[0] while step <= boundaries[0], values[i] while boundaries[i-1] <
/// step <= boundaries[i], and the last value after the last boundary.
class PiecewiseConstantDecay : public LearningRateSchedule {
 public:
  static constexpr const char* class_name = "PiecewiseConstantDecay";
  PiecewiseConstantDecay(std::vector<double> boundaries, std::vector<double> values)
      : boundaries_(std::move(boundaries)), values_(std::move(values)) {
    if (values_.size() != boundaries_.size() + 1) {
      throw ConfigError(detail::str(class_name, ": needs one more value than boundaries, got ", boundaries_.size(),
                                    " boundaries and ", values_.size(), " values"));
    }
    if (!std::is_sorted(boundaries_.begin(), boundaries_.end())) {
      throw ConfigError(detail::str(class_name, ": the boundaries must be in increasing order"));
    }
    for (double v : values_) detail::require_finite(class_name, v, "every value");
  }
  static std::unique_ptr<LearningRateSchedule> from_config(const Config& c) {
    return std::make_unique<PiecewiseConstantDecay>(c.reals("boundaries"), c.reals("values"));
  }
  std::string type() const override { return class_name; }
  Config config() const override { return Config().set_reals("boundaries", boundaries_).set_reals("values", values_); }
  double operator()(double step) const override {
    // The first boundary not below step: values before it apply up to and including it.
    const auto at = std::lower_bound(boundaries_.begin(), boundaries_.end(), step);
    return values_[static_cast<std::size_t>(at - boundaries_.begin())];
  }

 private:
  std::vector<double> boundaries_, values_;
};

/// Cosine decay (Loshchilov & Hutter's SGDR, without restarts), after an
/// optional linear warmup:
///   without warmup_target: s = min(step, decay_steps),
///     lr = initial * ((1 - alpha) * 0.5 * (1 + cos(pi s / decay_steps)) + alpha);
///   with it: s = min(step, warmup_steps + decay_steps); while s < warmup_steps
///     lr rises linearly from initial to warmup_target, then decays from
///     warmup_target as above over (s - warmup_steps).
class CosineDecay : public LearningRateSchedule {
 public:
  static constexpr const char* class_name = "CosineDecay";
  CosineDecay(double initial_learning_rate, double decay_steps, double alpha = 0.0,
              std::optional<double> warmup_target = std::nullopt, double warmup_steps = 0)
      : initial_(initial_learning_rate),
        steps_(decay_steps),
        alpha_(alpha),
        target_(warmup_target),
        warmup_(warmup_steps) {
    detail::require_finite(class_name, initial_, "initial_learning_rate");
    detail::require_positive_steps(class_name, steps_, "decay_steps");
    detail::require_finite(class_name, alpha_, "alpha");
    if (target_) detail::require_finite(class_name, *target_, "warmup_target");
    if (!(warmup_ >= 0)) throw ConfigError(detail::str(class_name, ": warmup_steps must be >= 0, got ", warmup_));
    if (target_ && warmup_ == 0) {
      throw ConfigError(detail::str(class_name, ": a warmup_target needs warmup_steps > 0"));
    }
  }
  static std::unique_ptr<LearningRateSchedule> from_config(const Config& c) {
    std::optional<double> target;
    if (c.has("warmup_target")) target = c.real("warmup_target");
    return std::make_unique<CosineDecay>(c.real("initial_learning_rate"), c.real("decay_steps"), c.real("alpha", 0.0),
                                         target, c.real("warmup_steps", 0.0));
  }
  std::string type() const override { return class_name; }
  Config config() const override {
    Config c;
    c.set("initial_learning_rate", initial_).set("decay_steps", steps_).set("alpha", alpha_);
    if (target_) c.set("warmup_target", *target_).set("warmup_steps", warmup_);
    return c;
  }
  double operator()(double step) const override {
    if (!target_) return decayed(std::min(step, steps_), initial_);
    const double s = std::min(step, warmup_ + steps_);
    if (s < warmup_) return initial_ + (*target_ - initial_) * (s / warmup_);
    return decayed(s - warmup_, *target_);
  }

 private:
  double decayed(double s, double from) const {
    const double pi = 3.14159265358979323846;
    const double cosine = 0.5 * (1.0 + std::cos(pi * s / steps_));
    return from * ((1.0 - alpha_) * cosine + alpha_);
  }

  double initial_, steps_, alpha_;
  std::optional<double> target_;
  double warmup_;
};

LOOM_REGISTER(ExponentialDecay)
LOOM_REGISTER(PiecewiseConstantDecay)
LOOM_REGISTER(CosineDecay)

/// A schedule by class name, or any schedule registered with LOOM_REGISTER.
inline std::unique_ptr<LearningRateSchedule> make_schedule(const std::string& name, const Config& config) {
  return Registry<LearningRateSchedule>::global().create(name, config);
}

}  // namespace loom
