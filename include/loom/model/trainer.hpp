#pragma once
/// \file trainer.hpp
/// `Trainer<T>`: everything a Sequential model needs to be trained, apart
/// from the model: the loss, the optimizer and the metrics (set by
/// `compile`), the training random stream and sample order, where training
/// stands (epoch, batch, running sums), the history, and the callbacks with
/// their state. Each Sequential owns one (`model.trainer()`); `model.fit`
/// and `model.train_step` hand the model to it.
///
/// How a batch flows through `fit`: the dataset stays where it is; each step
/// gathers the batch's samples, in this epoch's shuffled order, into one
/// reused input tensor; every layer's forward writes its own reused output;
/// the loss writes dL/dy (the fused p - y after a softmax); every layer's
/// backward writes its input gradient and its parameter gradients; the
/// optimizer updates the parameters in place; the running metrics and the
/// callbacks see the batch. After the first batch a step allocates nothing
/// (tests/test_allocations.cpp counts it). At the epoch's end validation
/// runs in inference mode, the History grows, and the callbacks run.
///
/// The model file (model_file.hpp) saves and restores all of it, so a fit
/// resumed from a file ends exactly as one that never stopped, with the same
/// seed and thread count.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
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

namespace loom {
namespace detail {
template <class T>
struct ModelFile;  // model_file.hpp
}

/// Where training stands: epochs finished, and batches done in the next.
struct TrainingPosition {
  int epoch = 0;
  long step = 0;
  double loss_sum = 0;  ///< running sums of the unfinished epoch
  Index correct = 0, seen = 0;
};

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
  bool stop_requested() const { return stop_requested_; }
  /// The model's output for the last training batch.
  const Tensor<T>& last_output() const { return *output_; }

  /// The layers changed (or were loaded): prepare again before the next step.
  void invalidate() { prepared_ = false; }

  template <class Model>
  History fit(Model& model, const Tensor<T>& x, const Tensor<T>& y, const FitOptions<T>& options) {
    require_compiled(model, "fit");
    if (options.epochs() < 0) throw ConfigError(detail::str("fit: epochs must be >= 0, got ", options.epochs()));
    if (options.batch_size() < 1) {
      throw ConfigError(detail::str("fit: batch_size must be >= 1, got ", options.batch_size()));
    }
    check_data(model, x, y, "fit");
    const Tensor<T>* xv = options.validation_x();
    const Tensor<T>* yv = options.validation_y();
    if (xv) check_data(model, *xv, *yv, "fit (validation_data)");
    prepare(model);

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
        for (const auto& l : model.layers()) l->seed(rng_.next_u64());
      }
      position_ = {};
      history_ = {};
      stop_requested_ = false;
      order_.resize(static_cast<std::size_t>(n));
      std::iota(order_.begin(), order_.end(), Index(0));
    }
    interrupted_ = false;
    set_callbacks(options.callbacks());
    for (const auto& cb : callbacks_) cb->on_train_begin(model);
    if (options.resume()) restore_callback_states();
    saved_states_.clear();  // taken, or not wanted by a fresh fit
    if (stop_requested_) {  // a callback had stopped the run this resumes: nothing more to train
      for (const auto& cb : callbacks_) cb->on_train_end(model);
      return history_;
    }

    Progress progress(options.output(), options.verbose(), steps, stdout_is_terminal());
    const bool accuracy = !metrics_.empty();
    TrainingPosition& at = position_;
    for (int epoch = at.epoch + 1; epoch <= options.epochs(); ++epoch) {
      if (at.step == 0) {
        if (options.shuffle()) rng_.shuffle(order_.begin(), order_.end());
        for (const auto& cb : callbacks_) cb->on_epoch_begin(model, epoch);
      }
      progress.begin_epoch(epoch, options.epochs());
      logs_.clear();
      for (long step = at.step; step < steps; ++step) {
        const Index start = step * bs, b = std::min(bs, n - start);
        gather(x, order_.data() + start, b, xb_);
        gather(y, order_.data() + start, b, yb_);
        double loss = 0;
        try {
          loss = step_impl(model, xb_, yb_, options.stop_on_nan());
        } catch (const NumericError& e) {
          throw NumericError(detail::str("fit: epoch ", epoch, ", batch ", step + 1, " of ", steps, ": ", e.what()));
        }
        at.loss_sum += loss * static_cast<double>(b);
        if (accuracy) at.correct += count_correct(*output_, yb_, *loss_);
        at.seen += b;
        at.step = step + 1;
        running_logs(at);
        progress.update(step + 1, logs_.entries());
        for (const auto& cb : callbacks_) cb->on_batch_end(model, step + 1, logs_);
        if (options.stop_flag() && options.stop_flag()->load()) {  // after this batch; resume() continues here
          interrupted_ = true;
          if (options.output() && options.verbose() > 0) *options.output() << "\n";
          return history_;
        }
      }
      running_logs(at);  // again: a fit stopped after an epoch's last batch resumes here with no batch to run
      if (xv) {
        const auto v = model.evaluate(*xv, *yv, options.batch_size());
        logs_.set("val_loss", v.loss);
        if (accuracy) logs_.set("val_accuracy", v.accuracy);
      }
      for (const auto& m : logs_.entries()) history_.append(m.first, m.second);
      at = {epoch, 0, 0.0, 0, 0};
      progress.end_epoch(logs_.entries());
      for (const auto& cb : callbacks_) cb->on_epoch_end(model, epoch, logs_);
      if (stop_requested_) break;
    }
    for (const auto& cb : callbacks_) cb->on_train_end(model);
    return history_;
  }

  /// One optimizer step on the batch (x, y); returns the batch's mean loss.
  /// A loss that is not finite throws NumericError naming the first layer
  /// whose output is not finite, before any weight changes.
  template <class Model>
  double train_step(Model& model, const Tensor<T>& x, const Tensor<T>& y) {
    require_compiled(model, "train_step");
    prepare(model);
    return step_impl(model, x, y, true);
  }

  /// Once per compile or change of layers: the optimizer's state for the
  /// model's parameters, the fused softmax gradient, no input gradient for
  /// the first layer.
  template <class Model>
  void prepare(Model& model) {
    if (prepared_) return;
    const auto& params = model.parameters();
    optimizer_->build(params);
    const auto& layers = model.layers();
    for (const auto& l : layers) l->set_fused_softmax_grad(false);  // layers may have been added since
    Layer<T>& last = *layers.back();
    fused_softmax_ = last.activation() == Activation::Softmax && !loss_->from_logits();
    last.set_fused_softmax_grad(fused_softmax_);
    layers.front()->set_needs_input_grad(false);
    outputs_.assign(layers.size(), nullptr);
    prepared_ = true;
  }

  /// Checks a dataset against the model and the loss (ShapeError or FormatError).
  template <class Model>
  void check_data(Model& model, const Tensor<T>& x, const Tensor<T>& y, const char* what) const {
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

 private:
  friend struct detail::ModelFile<T>;  // saves and restores all of the state below

  template <class Model>
  double step_impl(Model& model, const Tensor<T>& x, const Tensor<T>& y, bool guard) {
    const auto& layers = model.layers();
    const Tensor<T>* out = &x;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      out = &layers[i]->forward(*out, Mode::Train);
      outputs_[i] = out;
    }
    output_ = out;
    const double loss = loss_->gradient(*out, y, grad_, fused_softmax_);
    if (guard && !std::isfinite(loss)) throw NumericError(describe_non_finite(layers, x, loss));
    const Tensor<T>* g = &grad_;
    for (auto it = layers.rbegin(); it != layers.rend(); ++it) g = &(*it)->backward(*g);
    optimizer_->step(model.parameters());
    return loss;
  }

  /// Which of the input and the layers' outputs of the last forward first holds a value that is not finite.
  std::string describe_non_finite(const std::vector<std::unique_ptr<Layer<T>>>& layers, const Tensor<T>& x,
                                  double loss) const {
    const auto finite = [](const Tensor<T>& t) {
      return std::all_of(t.begin(), t.end(), [](T v) { return std::isfinite(v); });
    };
    const std::string head = std::string("loss is ") + (std::isnan(loss) ? "NaN" : "infinite") + ": ";
    if (!finite(x)) return head + "the input batch holds values that are not finite";
    for (std::size_t i = 0; i < layers.size(); ++i) {
      if (!finite(*outputs_[i])) {
        return head + "first non-finite output in layer '" + layers[i]->name() + "' (" + layers[i]->type() + ")";
      }
    }
    return head + "every layer's output is finite (the loss overflowed)";
  }

  void require_compiled(const char* what) const {
    if (!loss_) throw ConfigError(detail::str(what, ": the model is not compiled: call compile() first"));
  }
  template <class Model>
  void require_compiled(const Model& model, const char* what) const {
    if (!loss_) throw ConfigError(detail::str(what, ": model '", model.name(), "' is not compiled: call compile() first"));
  }

  /// The epoch's running metrics into logs_ (no allocation once the keys exist).
  void running_logs(const TrainingPosition& at) {
    const double seen = static_cast<double>(std::max<Index>(at.seen, 1));
    logs_.set("loss", at.loss_sum / seen);
    if (!metrics_.empty()) logs_.set("accuracy", static_cast<double>(at.correct) / seen);
  }

  /// Callbacks that save the model run after the others (see callback.hpp).
  void set_callbacks(const std::vector<std::shared_ptr<Callback<T>>>& callbacks) {
    callbacks_.clear();
    for (int savers = 0; savers < 2; ++savers) {
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

  /// dst <- the rows `idx[0..b)` of src.
  static void gather(const Tensor<T>& src, const Index* idx, Index b, Tensor<T>& dst) {
    Shape s = src.shape();
    s[0] = b;
    dst.resize_for_overwrite(s);
    const Index row = src.size() / src.dim(0);
    for (Index i = 0; i < b; ++i) {
      std::memcpy(dst.data() + i * row, src.data() + idx[i] * row, sizeof(T) * static_cast<std::size_t>(row));
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
  /// Callback states read from a file, (key, bytes), until a resumed fit takes them.
  std::vector<std::pair<std::string, std::string>> saved_states_;
  std::string state_source_;
  // Reused across steps.
  bool prepared_ = false;
  bool fused_softmax_ = false;
  Tensor<T> xb_, yb_, grad_;
  Logs logs_;
  const Tensor<T>* output_ = nullptr;
  std::vector<const Tensor<T>*> outputs_;  ///< every layer's output of the last training forward
};

}  // namespace loom
