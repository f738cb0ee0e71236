#pragma once
/// \file callbacks.hpp
/// Keras's fit() callbacks: `ModelCheckpoint` and `EarlyStopping`. (Stopping
/// on a loss that is not finite is built into fit: FitOptions::stop_on_nan,
/// on by default.) Pass them with `FitOptions<T>().callback(std::make_shared<...>(...))`.
/// Both keep their state in the model file, so a fit resumed from a
/// checkpoint goes on as if it had never stopped.

#include <cmath>
#include <string>
#include <vector>

#include "callback.hpp"
#include "sequential.hpp"

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

  void on_epoch_end(Sequential<T>& model, int epoch, const Logs& logs) override {
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

  void on_train_begin(Sequential<T>&) override {
    best_ = 0;
    best_epoch_ = wait_ = stopped_epoch_ = 0;
    best_weights_.clear();
  }

  void on_epoch_end(Sequential<T>& model, int epoch, const Logs& logs) override {
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

}  // namespace loom
