#pragma once
/// \file callbacks.hpp
/// Keras's fit() callbacks: `ModelCheckpoint` and `EarlyStopping`. (Stopping
/// on a loss that is not finite is built into fit: FitOptions::stop_on_nan,
/// on by default.) Pass them with `FitOptions<T>().callback(std::make_shared<...>(...))`.

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "sequential.hpp"

namespace loom {
namespace detail {

/// Keras's mode "auto": metrics named like accuracy improve upwards, the rest (losses) downwards.
inline bool improves_upwards(const std::string& monitor) { return monitor.find("acc") != std::string::npos; }

/// The last value of `monitor`, or a ConfigError naming the metrics there are.
inline double monitored(const History& h, const std::string& monitor, const char* who) {
  if (!h.has(monitor)) {
    std::string keys;
    for (const auto& kv : h.history) keys += (keys.empty() ? "" : ", ") + kv.first;
    throw ConfigError(std::string(who) + ": no metric '" + monitor + "' to monitor; fit records: " + keys);
  }
  return h[monitor].back();
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
/// saved with its optimizer and training position, so fit(resume) continues
/// from it exactly; every save is atomic.
template <class T>
class ModelCheckpoint : public Callback<T> {
 public:
  explicit ModelCheckpoint(std::string path, ModelCheckpointOptions options = {})
      : path_(std::move(path)), opt_(std::move(options)) {}

  bool on_epoch_end(Sequential<T>& model, int epoch, const History& history) override {
    if (opt_.save_best_only()) {
      const double v = detail::monitored(history, opt_.monitor(), "ModelCheckpoint");
      const bool up = detail::improves_upwards(opt_.monitor());
      if (!std::isfinite(v) || (saved_ && (up ? v <= best_ : v >= best_))) return true;
      best_ = v;
    }
    const std::string path = path_for(epoch);
    if (opt_.save_weights_only()) {
      model.save_weights(path);
    } else {
      model.save(path);
    }
    saved_ = true;
    last_path_ = path;
    return true;
  }

  /// The file written last ("" before the first save).
  const std::string& last_path() const { return last_path_; }

 private:
  std::string path_for(int epoch) const {
    std::string p = path_;
    const auto at = p.find("{epoch}");
    if (at != std::string::npos) p.replace(at, 7, std::to_string(epoch));
    return p;
  }

  std::string path_;
  ModelCheckpointOptions opt_;
  bool saved_ = false;
  double best_ = 0;
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

/// Stops fit when `monitor` has not improved for `patience` epochs.
template <class T>
class EarlyStopping : public Callback<T> {
 public:
  explicit EarlyStopping(EarlyStoppingOptions options = {}) : opt_(std::move(options)) {}

  bool on_epoch_end(Sequential<T>& model, int epoch, const History& history) override {
    const double v = detail::monitored(history, opt_.monitor(), "EarlyStopping");
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
      return true;
    }
    if (++wait_ <= opt_.patience()) return true;
    stopped_epoch_ = epoch;
    if (opt_.restore_best_weights() && !best_weights_.empty()) {
      std::size_t i = 0;
      for (const auto& p : model.parameters()) *p.value = best_weights_[i++];
    }
    return false;
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
