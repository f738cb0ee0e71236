#pragma once
/// \file callback.hpp
/// `Callback<T>`: the one interface through which `fit` calls back, with
/// Keras's hooks, and `LambdaCallback<T>` for a few lines without a class.
///
/// Epochs are numbered from 1 and batches within an epoch from 1, as the
/// progress line prints them. A callback stops training after the current
/// epoch with `model.trainer().stop_training()`.
///
/// State. A callback that keeps state across epochs (a best value, a
/// counter) names it with `state_key()` and writes and reads it with
/// `save_state` / `restore_state`. The model file holds the state of every
/// callback of the fit that saved it, so `fit(..., resume(true))` with the
/// same callbacks continues them exactly where they were. Callbacks that
/// save the model (`saves_model()`, like ModelCheckpoint) run after all the
/// others in every hook, so a file they write holds every other callback's
/// state after that epoch.

#include <functional>
#include <string>

#include "../io/bytes.hpp"
#include "history.hpp"

namespace loom {

template <class T>
class Model;

template <class T>
class Callback {
 public:
  virtual ~Callback() = default;

  /// Once, when fit starts (also when it resumes, before the state is restored).
  virtual void on_train_begin(Model<T>& /*model*/) {}
  /// Before the first batch of each epoch (not again when resuming mid-epoch).
  virtual void on_epoch_begin(Model<T>& /*model*/, int /*epoch*/) {}
  /// After each batch, with the epoch's running "loss" (and "accuracy").
  virtual void on_batch_end(Model<T>& /*model*/, long /*batch*/, const Logs& /*logs*/) {}
  /// After each epoch's validation, before the epoch enters the History and
  /// its line is printed: a callback may add to the logs here (Keras's
  /// learning-rate callbacks add "learning_rate").
  virtual void on_epoch_logs(Model<T>& /*model*/, int /*epoch*/, Logs& /*logs*/) {}
  /// After each epoch, once its line is printed, with its metrics and validation metrics.
  virtual void on_epoch_end(Model<T>& /*model*/, int /*epoch*/, const Logs& /*logs*/) {}
  /// Once, when fit has run its epochs or was stopped by a callback (not when interrupted).
  virtual void on_train_end(Model<T>& /*model*/) {}

  /// True for callbacks that write the model to a file: they run last.
  virtual bool saves_model() const { return false; }

  /// Names this callback's saved state ("" = it keeps none). Saved states
  /// are matched to callbacks by this key, in order.
  virtual std::string state_key() const { return ""; }
  virtual void save_state(ByteWriter& /*out*/) const {}
  /// Reads what save_state wrote; throws FormatError (from `in`) when it does not fit.
  virtual void restore_state(ByteReader& /*in*/) {}
};

/// Keras's LambdaCallback: each hook is an optional function.
///
///     auto log = std::make_shared<LambdaCallback<float>>();
///     log->on_epoch_end_fn = [](Model<float>&, int epoch, const Logs& logs) { ... };
template <class T>
class LambdaCallback : public Callback<T> {
 public:
  std::function<void(Model<T>&)> on_train_begin_fn, on_train_end_fn;
  std::function<void(Model<T>&, int)> on_epoch_begin_fn;
  std::function<void(Model<T>&, long, const Logs&)> on_batch_end_fn;
  std::function<void(Model<T>&, int, const Logs&)> on_epoch_end_fn;

  LambdaCallback() = default;
  /// The common case: a function called after every epoch.
  explicit LambdaCallback(std::function<void(Model<T>&, int, const Logs&)> on_epoch_end)
      : on_epoch_end_fn(std::move(on_epoch_end)) {}

  void on_train_begin(Model<T>& m) override {
    if (on_train_begin_fn) on_train_begin_fn(m);
  }
  void on_epoch_begin(Model<T>& m, int epoch) override {
    if (on_epoch_begin_fn) on_epoch_begin_fn(m, epoch);
  }
  void on_batch_end(Model<T>& m, long batch, const Logs& logs) override {
    if (on_batch_end_fn) on_batch_end_fn(m, batch, logs);
  }
  void on_epoch_end(Model<T>& m, int epoch, const Logs& logs) override {
    if (on_epoch_end_fn) on_epoch_end_fn(m, epoch, logs);
  }
  void on_train_end(Model<T>& m) override {
    if (on_train_end_fn) on_train_end_fn(m);
  }
};

}  // namespace loom
