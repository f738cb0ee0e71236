#pragma once
// The experiment's two pieces of crash safety: Ctrl-C asks training to stop
// after the current batch (a second Ctrl-C ends the program at once), and
// KeepBest saves the weights of the epoch with the best val_accuracy.

#include <atomic>
#include <csignal>
#include <string>

#include <loom/loom.hpp>

namespace loom::examples {

/// Set by SIGINT; fit stops after the batch it is in.
inline std::atomic<bool> interrupted{false};

inline void on_sigint(int) {
  interrupted.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the program
}

/// Saves the model's weights to `path` whenever val_accuracy beats the best so far.
class KeepBest : public Callback<float> {
 public:
  KeepBest(std::string path, double best_value, int best_epoch)
      : path_(std::move(path)), best_(best_value), epoch_(best_epoch) {}

  bool on_epoch_end(Sequential<float>& model, int epoch, const History& history) override {
    const double v = history["val_accuracy"].back();
    if (v > best_) {
      best_ = v;
      epoch_ = epoch;
      model.save_weights(path_);
    }
    return true;
  }

  int best_epoch() const { return epoch_; }
  double best_value() const { return best_; }

 private:
  std::string path_;
  double best_;
  int epoch_;
};

}  // namespace loom::examples
