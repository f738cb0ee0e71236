#pragma once
/// \file fit_options.hpp
/// `FitOptions<T>`: Keras's `fit()` arguments, with chained setters:
///
///     model.fit(x, y, FitOptions<float>().epochs(20).batch_size(32).validation_data(xv, yv)
///                         .callback(std::make_shared<EarlyStopping<float>>()));

#include <atomic>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <vector>

#include "../communicator.hpp"
#include "../layers/layer.hpp"
#include "callback.hpp"

namespace loom {

template <class T>
class FitOptions {
 public:
  FitOptions() = default;
  LOOM_OPTION(int, epochs, 1)
  LOOM_OPTION(Index, batch_size, 32)
  LOOM_OPTION(bool, shuffle, true)
  /// Restarts shuffling and every layer's random stream (dropout) from this
  /// seed; without it they continue the streams the model's seed started.
  LOOM_OPTION(std::optional<std::uint64_t>, seed, std::nullopt)
  /// 0 silent, 1 progress bar, 2 one line per epoch.
  LOOM_OPTION(int, verbose, 1)
  /// Where progress goes (std::cout by default).
  LOOM_OPTION(std::ostream*, output, &std::cout)
  /// Continue from the model's saved position (after an interrupted fit, or
  /// a model loaded from a checkpoint) instead of starting at epoch 1; the
  /// callbacks' saved state is restored too.
  LOOM_OPTION(bool, resume, false)
  /// Checked after every batch: when it reads true, fit returns after that
  /// batch with `interrupted()` set (for Ctrl-C). Not owned.
  LOOM_OPTION(const std::atomic<bool>*, stop_flag, nullptr)
  /// Stop with a NumericError when a batch's loss is not finite, naming the
  /// epoch, the batch and the first layer whose output is not finite.
  LOOM_OPTION(bool, stop_on_nan, true)
  /// Data-parallel training over the ranks of `comm` (loom/distributed.hpp):
  /// every rank calls fit with the same data and options; each trains on its
  /// own slice of every global batch of `batch_size` samples, the gradients
  /// are averaged before every step, and rank 0 prints and saves. See
  /// docs/distributed.md. Null, or a communicator of one rank: a plain fit.
  LOOM_OPTION(std::shared_ptr<Communicator>, distributed, nullptr)

 public:
  /// Adds a callback (see model/callback.hpp); fit calls them in the order added.
  FitOptions& callback(std::shared_ptr<Callback<T>> cb) {
    if (!cb) throw ConfigError("FitOptions::callback: null callback");
    callbacks_.push_back(std::move(cb));
    return *this;
  }
  const std::vector<std::shared_ptr<Callback<T>>>& callbacks() const { return callbacks_; }

  /// Data to evaluate after every epoch. Only pointers are kept, so the
  /// tensors must outlive the call to fit; temporaries do not compile.
  FitOptions& validation_data(const Tensor<T>& x, const Tensor<T>& y) {
    x_val_ = &x;
    y_val_ = &y;
    return *this;
  }
  FitOptions& validation_data(Tensor<T>&&, const Tensor<T>&) = delete;
  FitOptions& validation_data(const Tensor<T>&, Tensor<T>&&) = delete;
  FitOptions& validation_data(Tensor<T>&&, Tensor<T>&&) = delete;
  const Tensor<T>* validation_x() const { return x_val_; }
  const Tensor<T>* validation_y() const { return y_val_; }

 private:
  const Tensor<T>* x_val_ = nullptr;
  const Tensor<T>* y_val_ = nullptr;
  std::vector<std::shared_ptr<Callback<T>>> callbacks_;
};

}  // namespace loom
