#pragma once
/// \file callbacks.hpp
/// Keras's fit() callbacks: `ModelCheckpoint`, `EarlyStopping`,
/// `LearningRateScheduler` and `ReduceLROnPlateau`. (Stopping on a loss that
/// is not finite is built into fit: FitOptions::stop_on_nan, on by default.)
/// Pass them with `FitOptions<T>().callback(std::make_shared<...>(...))`.
/// They keep their state in the model file (the learning rate they set is
/// the optimizer's, saved with it), so a fit resumed from a checkpoint goes
/// on as if it had never stopped.

#include <cmath>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "callback.hpp"
#include "model.hpp"

namespace loom {
namespace detail {

/// Keras's mode "auto": metrics named like accuracy improve upwards, the rest (losses) downwards.
inline bool improves_upwards(const std::string& monitor) { return monitor.find("acc") != std::string::npos; }

/// The value of `monitor` in `logs`, or a ConfigError naming the metrics there are.
inline double monitored(const Logs& logs, const std::string& monitor, const char* who) {
  if (!logs.has(monitor)) {
    throw ConfigError(std::string(who) + ": no metric '" + monitor + "' to monitor; fit records: " +
                      join_keys(logs.entries()));
  }
  return logs[monitor];
}

}  // namespace detail

class ModelCheckpointOptions {
 public:
  ModelCheckpointOptions() = default;
  LOOM_OPTION(std::string, monitor, "val_loss")
  /// Save only when the monitored metric improves on the best so far.
  LOOM_OPTION(bool, save_best_only, false)
  /// Save parameters only (save_weights) instead of the whole model with its training state.
  LOOM_OPTION(bool, save_weights_only, false)
};

/// Saves the model after every epoch (or only when `monitor` improves) to
/// `path`, where "{epoch}" is replaced by the epoch number. The whole model is
/// saved with its trainer's state, so fit(resume) continues from it exactly;
/// every save is atomic. Its state (best value and epoch) is saved with the
/// model.
template <class T>
class ModelCheckpoint : public Callback<T> {
 public:
  explicit ModelCheckpoint(std::string path, ModelCheckpointOptions options = {})
      : path_(std::move(path)), opt_(std::move(options)) {}

  void on_epoch_end(Model<T>& model, int epoch, const Logs& logs) override {
    if (opt_.save_best_only()) {
      const double v = detail::monitored(logs, opt_.monitor(), "ModelCheckpoint");
      const bool up = detail::improves_upwards(opt_.monitor());
      if (!std::isfinite(v) || (best_epoch_ > 0 && (up ? v <= best_ : v >= best_))) return;
      best_ = v;
      best_epoch_ = epoch;
    }
    const std::string path = path_for(epoch);
    if (opt_.save_weights_only()) {
      model.save_weights(path);
    } else {
      model.save(path);
    }
    last_path_ = path;
  }

  bool saves_model() const override { return true; }
  std::string state_key() const override { return "ModelCheckpoint"; }
  /// The best value and its epoch. (Not the paths: a checkpoint does not
  /// depend on where it is written.)
  void save_state(ByteWriter& out) const override {
    out.f64(best_);
    out.i64(best_epoch_);
  }
  void restore_state(ByteReader& in) override {
    best_ = in.f64("best value");
    best_epoch_ = static_cast<int>(in.i64("best epoch"));
  }

  /// The file this object wrote last ("" before its first save).
  const std::string& last_path() const { return last_path_; }
  /// With save_best_only: the best value of `monitor` and its epoch (0 before the first save).
  double best() const { return best_; }
  int best_epoch() const { return best_epoch_; }

 private:
  std::string path_for(int epoch) const {
    std::string p = path_;
    const auto at = p.find("{epoch}");
    if (at != std::string::npos) p.replace(at, 7, std::to_string(epoch));
    return p;
  }

  std::string path_;
  ModelCheckpointOptions opt_;
  double best_ = 0;
  int best_epoch_ = 0;
  std::string last_path_;
};

class EarlyStoppingOptions {
 public:
  EarlyStoppingOptions() = default;
  LOOM_OPTION(std::string, monitor, "val_loss")
  /// A change smaller than this is not an improvement.
  LOOM_OPTION(double, min_delta, 0.0)
  /// Epochs without improvement before training stops.
  LOOM_OPTION(int, patience, 0)
  /// When stopping, put back the parameters of the best epoch.
  LOOM_OPTION(bool, restore_best_weights, false)
};

/// Stops fit when `monitor` has not improved for `patience` epochs. Its
/// state (best value and epoch, epochs waited, and with
/// restore_best_weights the best parameters) is saved with the model.
template <class T>
class EarlyStopping : public Callback<T> {
 public:
  explicit EarlyStopping(EarlyStoppingOptions options = {}) : opt_(std::move(options)) {}

  void on_train_begin(Model<T>&) override {
    best_ = 0;
    best_epoch_ = wait_ = stopped_epoch_ = 0;
    best_weights_.clear();
  }

  void on_epoch_end(Model<T>& model, int epoch, const Logs& logs) override {
    const double v = detail::monitored(logs, opt_.monitor(), "EarlyStopping");
    const bool up = detail::improves_upwards(opt_.monitor());
    const double delta = std::fabs(opt_.min_delta());
    const bool better = best_epoch_ == 0 || (up ? v > best_ + delta : v < best_ - delta);
    if (better) {
      best_ = v;
      best_epoch_ = epoch;
      wait_ = 0;
      if (opt_.restore_best_weights()) {
        best_weights_.clear();
        for (const auto& p : model.parameters()) best_weights_.push_back(*p.value);
      }
      return;
    }
    if (++wait_ <= opt_.patience()) return;
    stopped_epoch_ = epoch;
    if (opt_.restore_best_weights() && !best_weights_.empty()) {
      const auto& params = model.parameters();
      bool fits = params.size() == best_weights_.size();
      for (std::size_t i = 0; fits && i < params.size(); ++i) fits = params[i].value->shape() == best_weights_[i].shape();
      if (!fits) throw ConfigError("EarlyStopping: the best weights it holds do not fit this model's parameters");
      for (std::size_t i = 0; i < params.size(); ++i) *params[i].value = best_weights_[i];
    }
    model.trainer().stop_training();
  }

  std::string state_key() const override { return "EarlyStopping"; }
  void save_state(ByteWriter& out) const override {
    out.f64(best_);
    out.i64(best_epoch_);
    out.i64(wait_);
    out.i64(stopped_epoch_);
    out.u32(static_cast<std::uint32_t>(best_weights_.size()));
    for (const auto& t : best_weights_) out.tensor(t);
  }
  void restore_state(ByteReader& in) override {
    best_ = in.f64("best value");
    best_epoch_ = static_cast<int>(in.i64("best epoch"));
    wait_ = static_cast<int>(in.i64("epochs waited"));
    stopped_epoch_ = static_cast<int>(in.i64("stopped epoch"));
    const std::uint32_t n = in.u32("best weights count");
    if (n > 1u << 16) in.fail(ByteReader::str_of(n, " best weights, at most 65536 expected"));
    best_weights_.clear();
    for (std::uint32_t i = 0; i < n; ++i) best_weights_.push_back(in.tensor<T>("best weights"));
  }

  /// The epoch training stopped after (0 if it ran to the end), and the best epoch.
  int stopped_epoch() const { return stopped_epoch_; }
  int best_epoch() const { return best_epoch_; }

 private:
  EarlyStoppingOptions opt_;
  double best_ = 0;
  int best_epoch_ = 0, wait_ = 0, stopped_epoch_ = 0;
  std::vector<Tensor<T>> best_weights_;
};

/// Keras's LearningRateScheduler: before each epoch the optimizer's learning
/// rate becomes schedule(epoch, lr), with `epoch` counted from 0 as Keras
/// passes it and `lr` the rate now. The epoch's rate is logged as
/// "learning_rate" (History and the progress line). With verbose, each
/// change is printed as Keras prints it.
///
///     LearningRateScheduler<float>([](int epoch, double lr) { return epoch < 10 ? lr : lr * std::exp(-0.1); })
template <class T>
class LearningRateScheduler : public Callback<T> {
 public:
  using Schedule = std::function<double(int epoch, double learning_rate)>;
  explicit LearningRateScheduler(Schedule schedule, int verbose = 0)
      : schedule_(std::move(schedule)), verbose_(verbose) {
    if (!schedule_) throw ConfigError("LearningRateScheduler: no schedule function");
  }

  void on_epoch_begin(Model<T>& model, int epoch) override {
    Optimizer<T>& opt = model.trainer().optimizer();
    const double lr = schedule_(epoch - 1, opt.learning_rate());
    if (!std::isfinite(lr) || lr < 0) {
      throw ConfigError(detail::str("LearningRateScheduler: the schedule gave learning rate ", lr, " for epoch ",
                                    epoch, "; it must be a finite number >= 0"));
    }
    opt.set_learning_rate(lr);
    if (verbose_ > 0) std::cout << "\nEpoch " << epoch << ": LearningRateScheduler setting learning rate to " << lr << ".\n";
  }
  void on_epoch_logs(Model<T>& model, int, Logs& logs) override {
    logs.set("learning_rate", model.trainer().optimizer().learning_rate());
  }

 private:
  Schedule schedule_;
  int verbose_;
};

class ReduceLROnPlateauOptions {
 public:
  ReduceLROnPlateauOptions() = default;
  LOOM_OPTION(std::string, monitor, "val_loss")
  /// The new rate is the old times factor (< 1).
  LOOM_OPTION(double, factor, 0.1)
  /// Epochs without improvement before the rate is reduced.
  LOOM_OPTION(int, patience, 10)
  /// An improvement must beat the best by more than this.
  LOOM_OPTION(double, min_delta, 1e-4)
  /// Epochs after a reduction before waiting starts again.
  LOOM_OPTION(int, cooldown, 0)
  /// The rate is never reduced below this.
  LOOM_OPTION(double, min_lr, 0.0)
  /// 1: print each reduction, as Keras does.
  LOOM_OPTION(int, verbose, 0)
};

/// Keras's ReduceLROnPlateau: when `monitor` has not improved for `patience`
/// epochs, the learning rate becomes max(lr * factor, min_lr), then
/// `cooldown` epochs pass before it counts again. Like Keras's "auto" mode,
/// metrics named like accuracy improve upwards, the rest downwards. The
/// epoch's rate is logged as "learning_rate"; its state (best value, epochs
/// waited, cooldown left) is saved with the model. The optimizer's rate must
/// be a constant, not a schedule.
template <class T>
class ReduceLROnPlateau : public Callback<T> {
 public:
  explicit ReduceLROnPlateau(ReduceLROnPlateauOptions options = {}) : opt_(std::move(options)) {
    if (!(opt_.factor() < 1.0) || !(opt_.factor() >= 0)) {
      throw ConfigError(detail::str("ReduceLROnPlateau: factor must be in [0, 1), got ", opt_.factor()));
    }
    if (opt_.patience() < 0 || opt_.cooldown() < 0) {
      throw ConfigError(detail::str("ReduceLROnPlateau: patience and cooldown must be >= 0, got ", opt_.patience(),
                                    " and ", opt_.cooldown()));
    }
  }

  void on_train_begin(Model<T>& model) override {
    const Optimizer<T>& o = model.trainer().optimizer();
    if (o.learning_rate_schedule()) {
      throw ConfigError(detail::str("ReduceLROnPlateau: the optimizer's learning rate follows a ",
                                    o.learning_rate_schedule()->type(), " schedule and cannot be reduced"));
    }
    up_ = detail::improves_upwards(opt_.monitor());
    best_ = up_ ? -INFINITY : INFINITY;
    wait_ = cooldown_left_ = 0;
  }

  /// Keras's on_epoch_end: the rate is logged before it is reduced.
  void on_epoch_logs(Model<T>& model, int epoch, Logs& logs) override {
    Optimizer<T>& o = model.trainer().optimizer();
    logs.set("learning_rate", o.learning_rate());
    const double v = detail::monitored(logs, opt_.monitor(), "ReduceLROnPlateau");
    if (cooldown_left_ > 0) {
      --cooldown_left_;
      wait_ = 0;
    }
    if (up_ ? v > best_ + opt_.min_delta() : v < best_ - opt_.min_delta()) {
      best_ = v;
      wait_ = 0;
      return;
    }
    if (cooldown_left_ > 0 || ++wait_ < opt_.patience()) return;
    const double old_lr = o.learning_rate();
    if (old_lr > static_cast<double>(static_cast<float>(opt_.min_lr()))) {
      const double lr = std::max(old_lr * opt_.factor(), opt_.min_lr());
      o.set_learning_rate(lr);
      if (opt_.verbose() > 0) std::cout << "\nEpoch " << epoch << ": ReduceLROnPlateau reducing learning rate to " << lr << ".\n";
      cooldown_left_ = opt_.cooldown();
      wait_ = 0;
    }
  }

  std::string state_key() const override { return "ReduceLROnPlateau"; }
  void save_state(ByteWriter& out) const override {
    out.f64(best_);
    out.i64(wait_);
    out.i64(cooldown_left_);
  }
  void restore_state(ByteReader& in) override {
    best_ = in.f64("best value");
    wait_ = static_cast<int>(in.i64("epochs waited"));
    cooldown_left_ = static_cast<int>(in.i64("cooldown left"));
  }

  /// The best value of `monitor` so far, epochs waited since, cooldown epochs left.
  double best() const { return best_; }
  int wait() const { return wait_; }
  int cooldown_left() const { return cooldown_left_; }

 private:
  ReduceLROnPlateauOptions opt_;
  bool up_ = false;
  double best_ = INFINITY;
  int wait_ = 0, cooldown_left_ = 0;
};

}  // namespace loom
