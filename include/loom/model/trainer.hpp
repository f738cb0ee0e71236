#pragma once
/// \file trainer.hpp
/// `Trainer<T>`: the fit loop. It holds what `compile` sets (the loss, the
/// optimizer, the metrics) and where training stands (TrainingState: the
/// training random stream, sample order, position, history, stop request),
/// and runs epochs of steps over any model (model.hpp's `Model<T>`, through
/// its public interface), calling the callbacks. Every model owns one
/// (`model.trainer()`).
///
/// How a batch flows through `fit`: the dataset stays where it is; each step
/// gathers the batch's samples, in this epoch's shuffled order, into one
/// reused input tensor, and runs the step (train_step.hpp: forward, loss,
/// backward); the optimizer updates the parameters in place; the running
/// metrics and the callbacks see the batch. After the first batch a step
/// allocates nothing (tests/test_allocations.cpp counts it). At the epoch's
/// end validation runs in inference mode, the History grows, and the
/// callbacks run.
///
/// `state()` and `restore()` give and take everything a resume needs as one
/// value, which the model file saves, so a fit resumed from a file ends
/// exactly as one that never stopped, with the same seed and thread count.
///
/// Data parallelism (FitOptions::distributed): every rank runs this same
/// fit, with a `Replicas<T>` (replicas.hpp) doing the steps and the
/// reductions. Only rank 0 prints and runs the callbacks that save the
/// model. A rank that fails inside a distributed fit prints one line and
/// aborts the job, since the others would otherwise wait for it forever.

#include <algorithm>
#include <exception>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../io/bytes.hpp"
#include "../layers/layer.hpp"
#include "../losses.hpp"
#include "../metrics.hpp"
#include "../optimizers.hpp"
#include "callback.hpp"
#include "fit_options.hpp"
#include "history.hpp"
#include "progress.hpp"
#include "replicas.hpp"
#include "train_step.hpp"
#include "training_state.hpp"

namespace loom {

template <class T>
class Model;  // model.hpp: what the trainer trains

template <class T>
class Trainer {
 public:
  /// The training stream starts from the model's seed.
  explicit Trainer(std::uint64_t seed) : rng_(seed ^ 0x5EED5EED5EED5EEDULL) {}

  void compile(std::unique_ptr<Loss<T>> loss, std::unique_ptr<Optimizer<T>> optimizer,
               const std::vector<std::string>& metrics) {
    if (!loss || !optimizer) throw ConfigError("compile: null loss or optimizer");
    metrics_ = checked_metrics(metrics);
    loss_ = std::move(loss);
    optimizer_ = std::move(optimizer);
    invalidate();
  }
  bool compiled() const { return loss_ != nullptr; }
  const Loss<T>& loss() const { return require_compiled("loss"), *loss_; }
  Loss<T>& loss() { return require_compiled("loss"), *loss_; }
  const Optimizer<T>& optimizer() const { return require_compiled("optimizer"), *optimizer_; }
  Optimizer<T>& optimizer() { return require_compiled("optimizer"), *optimizer_; }
  const std::vector<std::string>& metrics() const { return metrics_; }

  const History& history() const { return history_; }
  const TrainingPosition& position() const { return position_; }
  /// True when the last fit stopped at a stop_flag, mid-epoch.
  bool interrupted() const { return interrupted_; }
  /// Asks fit to stop after the current epoch (Keras's `model.stop_training = True`).
  void stop_training() { stop_requested_ = true; }
  /// The model's output for the last training batch.
  const Tensor<T>& last_output() const { return step_.output(); }

  /// The layers changed (or were loaded): prepare again before the next step.
  void invalidate() { prepared_ = false; }

  History fit(Model<T>& model, const Tensor<T>& x, const Tensor<T>& y, const FitOptions<T>& options) {
    require_compiled(model, "fit");
    if (options.epochs() < 0) throw ConfigError(detail::str("fit: epochs must be >= 0, got ", options.epochs()));
    if (options.batch_size() < 1) {
      throw ConfigError(detail::str("fit: batch_size must be >= 1, got ", options.batch_size()));
    }
    Communicator* const comm =
        options.distributed() && options.distributed()->size() > 1 ? options.distributed().get() : nullptr;
    if (!comm) return fit_on(model, x, y, options, nullptr);
    try {
      Replicas<T> replicas(*comm, model.layers());
      return fit_on(model, x, y, options, &replicas);
    } catch (const std::exception& e) {
      // One write: std::cerr is unbuffered, and mpiexec's own message about
      // the abort, written to the same stream, could land inside the line.
      std::cerr << detail::str("loom: rank ", comm->rank(), " of ", comm->size(), ": ", e.what(), '\n') << std::flush;
      comm->abort(1);
      throw;  // not reached: abort ends every rank (g++ does not carry [[noreturn]] through a virtual call)
    }
  }

  /// One optimizer step on the batch (x, y); returns the batch's mean loss
  /// (with the weight regularizers' penalties, as Keras reports it).
  /// A loss that is not finite throws NumericError naming the first layer
  /// whose output is not finite, before any weight changes.
  double train_step(Model<T>& model, const Tensor<T>& x, const Tensor<T>& y) {
    require_compiled(model, "train_step");
    prepare(model);
    return step(model, x, y, true);
  }

  /// Once per compile or change of layers: the optimizer's state for the
  /// model's parameters, and the step's fusions (train_step.hpp).
  void prepare(Model<T>& model) {
    if (prepared_) return;
    optimizer_->build(model.parameters());
    step_.prepare(model.layers(), *loss_);
    prepared_ = true;
  }

  /// Checks a dataset against the model and the loss (ShapeError or FormatError).
  void check_data(Model<T>& model, const Tensor<T>& x, const Tensor<T>& y, const char* what) const {
    require_compiled(model, what);
    model.check_inputs(x, what);
    if (y.rank() < 1 || y.dim(0) != x.dim(0)) {
      throw ShapeError(detail::str(what, ": x and y must hold the same number of samples, got x ", x.shape(),
                                   " and y ", y.shape()));
    }
    loss_->validate(y, model.output_shape().size());
  }

  /// The training stream (saved with the model).
  Rng::State rng_state() const { return rng_.state(); }
  void set_rng_state(const Rng::State& s) { rng_.set_state(s); }

  /// Everything a resume needs, as one value (training_state.hpp): the
  /// callbacks' states are those of the last fit, or those restored from a
  /// file that no fit has taken yet. Needs a compiled trainer.
  TrainingState<T> state() const {
    TrainingState<T> s;
    s.stream = rng_.state();
    s.position = position_;
    s.order = order_;
    s.optimizer_steps = optimizer().iterations();
    s.optimizer_slots = optimizer_->slots();
    s.history = history_;
    s.stop_requested = stop_requested_;
    if (callbacks_.empty()) {
      s.callback_states = saved_states_;
    } else {
      for (const auto& cb : callbacks_) {
        if (cb->state_key().empty()) continue;
        ByteWriter w;
        cb->save_state(w);
        s.callback_states.emplace_back(cb->state_key(), std::move(w.bytes));
      }
    }
    return s;
  }

  /// Takes a state from state() (of a file, or of rank 0): the optimizer
  /// must be built for the model's parameters (prepare) when the state holds
  /// optimizer slots. The callbacks' states wait for the next fit with
  /// resume(true); `source` names them in its errors.
  void restore(TrainingState<T> s, std::string source) {
    if (!s.optimizer_slots.empty()) optimizer().restore(std::move(s.optimizer_slots), s.optimizer_steps);
    rng_.set_state(s.stream);
    position_ = s.position;
    order_ = std::move(s.order);
    history_ = std::move(s.history);
    stop_requested_ = s.stop_requested;
    saved_states_ = std::move(s.callback_states);
    state_source_ = std::move(source);
  }

 private:
  /// The start of a fit: the data checked, the position restarted (or, to
  /// resume, checked against the data), the replicas made identical, the
  /// callbacks set and their states restored. Returns the batch count.
  long begin_fit(Model<T>& model, const Tensor<T>& x, const Tensor<T>& y, const FitOptions<T>& options,
                 Replicas<T>* replicas) {
    check_data(model, x, y, "fit");
    const Tensor<T>* xv = options.validation_x();
    if (xv) check_data(model, *xv, *options.validation_y(), "fit (validation_data)");
    prepare(model);
    if (replicas) replicas->prepare(model.parameters());
    if (replicas) replicas->check_same_data(x, y, xv, options.validation_y(), options);

    const Index n = x.dim(0), bs = std::min(options.batch_size(), n);
    const long steps = static_cast<long>((n + bs - 1) / bs);
    if (options.resume()) {
      if (order_.size() != static_cast<std::size_t>(n) || position_.step > steps) {
        throw ConfigError(detail::str("fit: cannot resume: the saved position is for ", order_.size(),
                                      " samples in batches of a different size, x has ", n));
      }
    } else {
      if (options.seed()) {  // restart shuffling and every layer's random stream
        rng_.seed(*options.seed());
        for (const auto& l : model.layers()) l->seed_from(rng_);
      }
      position_ = {};
      history_ = {};
      stop_requested_ = false;
      order_.resize(static_cast<std::size_t>(n));
      std::iota(order_.begin(), order_.end(), Index(0));
    }
    if (replicas) {
      TrainingState<T> s = state();
      replicas->share_from_rank0(model.parameters(), *optimizer_, s);
      if (!replicas->rank0()) restore(std::move(s), state_source_);
    }
    interrupted_ = false;
    set_callbacks(options.callbacks(), !replicas || replicas->rank0());
    for (const auto& cb : callbacks_) cb->on_train_begin(model);
    if (options.resume()) restore_callback_states();
    saved_states_.clear();  // taken, or not wanted by a fresh fit
    return steps;
  }

  History fit_on(Model<T>& model, const Tensor<T>& x, const Tensor<T>& y, const FitOptions<T>& options,
                 Replicas<T>* replicas) {
    const long steps = begin_fit(model, x, y, options, replicas);
    if (stop_requested_) {  // a callback had stopped the run this resumes: nothing more to train
      for (const auto& cb : callbacks_) cb->on_train_end(model);
      return history_;
    }
    Progress progress(!replicas || replicas->rank0() ? options.output() : nullptr, options.verbose(), steps,
                      stdout_is_terminal());
    for (int epoch = position_.epoch + 1; epoch <= options.epochs(); ++epoch) {
      if (!run_epoch(model, x, y, options, replicas, epoch, steps, progress)) return history_;  // interrupted
      end_epoch(model, options, replicas, epoch, progress);
      if (replicas) stop_requested_ = replicas->any(stop_requested_);  // a callback on any rank stops every rank
      if (stop_requested_) break;
    }
    for (const auto& cb : callbacks_) cb->on_train_end(model);
    return history_;
  }

  /// The epoch's batches from where the position stands; false when a
  /// stop_flag interrupted it (resume() continues after that batch).
  bool run_epoch(Model<T>& model, const Tensor<T>& x, const Tensor<T>& y, const FitOptions<T>& options,
                 Replicas<T>* replicas, int epoch, long steps, Progress& progress) {
    TrainingPosition& at = position_;
    const Index n = x.dim(0), bs = std::min(options.batch_size(), n);
    if (at.step == 0) {
      if (options.shuffle()) rng_.shuffle(order_.begin(), order_.end());
      for (const auto& cb : callbacks_) cb->on_epoch_begin(model, epoch);
    }
    progress.begin_epoch(epoch, options.epochs());
    logs_.clear();
    for (long s = at.step; s < steps; ++s) {
      const Index start = s * bs, b = std::min(bs, n - start);
      const bool stop_here = options.stop_flag() && options.stop_flag()->load();
      StepSums sums;
      try {
        if (replicas) {
          sums = replicas->step(step_, model.parameters(), *loss_, *optimizer_, !metrics_.empty(), rng_.state(), x, y,
                                order_.data() + start, b, epoch, s, options.stop_on_nan(), stop_here);
        } else {
          step_.gather(x, y, order_.data() + start, b);
          sums.loss_sum = step(model, step_.inputs(), step_.targets(), options.stop_on_nan()) * static_cast<double>(b);
          if (!metrics_.empty()) sums.correct = count_correct(step_.output(), step_.targets(), *loss_);
          sums.stop = stop_here;
        }
      } catch (const NumericError& e) {
        throw NumericError(detail::str("fit: epoch ", epoch, ", batch ", s + 1, " of ", steps, ": ", e.what()));
      }
      at.loss_sum += sums.loss_sum;
      at.correct += sums.correct;
      at.seen += b;
      at.step = s + 1;
      running_logs(at);
      progress.update(s + 1, logs_.entries());
      for (const auto& cb : callbacks_) cb->on_batch_end(model, s + 1, logs_);
      if (sums.stop) {  // after this batch; resume() continues here
        interrupted_ = true;
        if (replicas) replicas->average_buffers(model.parameters());
        if ((!replicas || replicas->rank0()) && options.output() && options.verbose() > 0) *options.output() << "\n";
        return false;
      }
    }
    return true;
  }

  /// The epoch's end: validation, the logs into the History, the callbacks.
  void end_epoch(Model<T>& model, const FitOptions<T>& options, Replicas<T>* replicas, int epoch, Progress& progress) {
    running_logs(position_);  // again: a fit stopped after an epoch's last batch resumes here with no batch to run
    if (replicas) replicas->average_buffers(model.parameters());
    if (const Tensor<T>* xv = options.validation_x()) {
      const Tensor<T>& yv = *options.validation_y();
      const Index bs = options.batch_size();
      Evaluation v =
          replicas ? replicas->evaluate(xv->dim(0),
                                        [&](Index begin, Index end) { return model.evaluation_sums(*xv, yv, begin, end, bs, nullptr); })
                   : model.evaluate(*xv, yv, bs);
      if (replicas) v.loss += regularization_penalty(model.parameters());  // model.evaluate adds it itself
      logs_.set("val_loss", v.loss);
      if (!metrics_.empty()) logs_.set("val_accuracy", v.accuracy);
    }
    for (const auto& cb : callbacks_) cb->on_epoch_logs(model, epoch, logs_);
    for (const auto& m : logs_.entries()) history_.append(m.first, m.second);
    position_ = {epoch, 0, 0.0, 0, 0};
    progress.end_epoch(logs_.entries());
    for (const auto& cb : callbacks_) cb->on_epoch_end(model, epoch, logs_);
  }

  double step(Model<T>& model, const Tensor<T>& x, const Tensor<T>& y, bool guard) {
    double loss = step_.forward_backward(model.layers(), *loss_, x, y, guard, T(1));
    loss += add_regularization(model.parameters());  // the weight regularizers' penalties and gradients
    optimizer_->step(model.parameters());
    return loss;
  }

  void require_compiled(const char* what) const {
    if (!loss_) throw ConfigError(detail::str(what, ": the model is not compiled: call compile() first"));
  }
  void require_compiled(const Model<T>& model, const char* what) const {
    if (!loss_) throw ConfigError(detail::str(what, ": model '", model.name(), "' is not compiled: call compile() first"));
  }

  /// The epoch's running metrics into logs_ (no allocation once the keys exist).
  void running_logs(const TrainingPosition& at) {
    const double seen = static_cast<double>(std::max<Index>(at.seen, 1));
    logs_.set("loss", at.loss_sum / seen);
    if (!metrics_.empty()) logs_.set("accuracy", static_cast<double>(at.correct) / seen);
  }

  /// Callbacks that save the model run after the others (see callback.hpp),
  /// and in a distributed fit on rank 0 only.
  void set_callbacks(const std::vector<std::shared_ptr<Callback<T>>>& callbacks, bool with_savers) {
    callbacks_.clear();
    for (int savers = 0; savers < (with_savers ? 2 : 1); ++savers) {
      for (const auto& cb : callbacks) {
        if (cb->saves_model() == (savers == 1)) callbacks_.push_back(cb);
      }
    }
  }

  /// Gives each callback the first saved state with its key not yet taken.
  void restore_callback_states() {
    std::vector<bool> used(saved_states_.size(), false);
    for (const auto& cb : callbacks_) {
      const std::string key = cb->state_key();
      if (key.empty()) continue;
      for (std::size_t i = 0; i < saved_states_.size(); ++i) {
        if (used[i] || saved_states_[i].first != key) continue;
        used[i] = true;
        const std::string& bytes = saved_states_[i].second;
        ByteReader r(state_source_ + ": state of callback " + key,
                     reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
        cb->restore_state(r);
        if (r.remaining() != 0) r.fail(ByteReader::str_of(r.remaining(), " unexpected bytes after it"));
        break;
      }
    }
  }

  std::unique_ptr<Loss<T>> loss_;
  std::unique_ptr<Optimizer<T>> optimizer_;
  std::vector<std::string> metrics_;
  Rng rng_;
  std::vector<Index> order_;  ///< the current epoch's sample order (reshuffled in place each epoch)
  TrainingPosition position_;
  History history_;
  bool interrupted_ = false;
  bool stop_requested_ = false;
  std::vector<std::shared_ptr<Callback<T>>> callbacks_;  ///< of the last fit, in calling order
  /// Callback states restored from a file, (key, bytes), until a resumed fit takes them.
  std::vector<std::pair<std::string, std::string>> saved_states_;
  std::string state_source_;
  bool prepared_ = false;
  TrainStep<T> step_;
  Logs logs_;
};

}  // namespace loom
