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
///
/// Data parallelism (FitOptions::distributed, docs/distributed.md). Every
/// rank runs this same fit. At the start rank 0's state (weights, moving
/// statistics, optimizer state, training stream, position, sample order) is
/// copied to every rank. Each step, every rank takes its contiguous slice of
/// the global batch (split as evenly as possible), scales dL/d(output) by its
/// share of the batch, runs backward, and one allreduce sums the gradients
/// (with the batch's loss sum, correct count and stop requests packed behind
/// them); every rank then takes the same optimizer step. At the end of each
/// epoch the moving statistics are averaged across ranks and validation is
/// split among them. Only rank 0 prints and runs the callbacks that save the
/// model. A rank that fails inside a distributed fit prints one line and
/// aborts the job, since the others would otherwise wait for it forever.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <iostream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "../io/bytes.hpp"
#include "../layers/fusion.hpp"
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

/// Loss and metrics from `evaluate`.
struct Evaluation {
  double loss = 0;
  double accuracy = 0;
};

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
    Communicator* const comm =
        options.distributed() && options.distributed()->size() > 1 ? options.distributed().get() : nullptr;
    if (!comm) return fit_impl(model, x, y, options, nullptr);
    try {
      ReplicasOf<Model> replicas(model, comm);
      return fit_impl(model, x, y, options, comm);
    } catch (const std::exception& e) {
      // One write: std::cerr is unbuffered, and mpiexec's own message about
      // the abort, written to the same stream, could land inside the line.
      std::cerr << detail::str("loom: rank ", comm->rank(), " of ", comm->size(), ": ", e.what(), '\n') << std::flush;
      comm->abort(1);
      throw;  // not reached: abort ends every rank (g++ does not carry [[noreturn]] through a virtual call)
    }
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
    Index n = 3;  // the allreduce buffer: every gradient, then loss sum, correct count, stop requests
    for (const auto& p : params) n += p.trainable() ? p.grad->size() : 0;
    reduce_.assign(static_cast<std::size_t>(n), T(0));
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

  /// What a training step adds to the epoch's running sums.
  struct StepSums {
    double loss_sum = 0;  ///< the batch's mean loss times its size
    Index correct = 0;
    bool stop = false;  ///< some rank's stop_flag was set
  };

  /// Gives the layers the replicas for the length of a distributed fit.
  template <class Model>
  struct ReplicasOf {
    Model& model;
    ReplicasOf(Model& m, Communicator* comm) : model(m) {
      for (const auto& l : model.layers()) l->set_replicas(comm);
    }
    ~ReplicasOf() {
      for (const auto& l : model.layers()) l->set_replicas(nullptr);
    }
  };

  template <class Model>
  History fit_impl(Model& model, const Tensor<T>& x, const Tensor<T>& y, const FitOptions<T>& options,
                   Communicator* comm) {
    check_data(model, x, y, "fit");
    const Tensor<T>* xv = options.validation_x();
    const Tensor<T>* yv = options.validation_y();
    if (xv) check_data(model, *xv, *yv, "fit (validation_data)");
    prepare(model);
    if (comm) check_same_data(*comm, x, y, xv, yv, options);

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
    if (comm) copy_state_from_rank0(model, *comm);
    interrupted_ = false;
    const bool rank0 = !comm || comm->rank() == 0;
    set_callbacks(options.callbacks(), rank0);
    for (const auto& cb : callbacks_) cb->on_train_begin(model);
    if (options.resume()) restore_callback_states();
    saved_states_.clear();  // taken, or not wanted by a fresh fit
    if (stop_requested_) {  // a callback had stopped the run this resumes: nothing more to train
      for (const auto& cb : callbacks_) cb->on_train_end(model);
      return history_;
    }

    Progress progress(rank0 ? options.output() : nullptr, options.verbose(), steps, stdout_is_terminal());
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
        const bool stop_here = options.stop_flag() && options.stop_flag()->load();
        StepSums sums;
        try {
          if (comm) {
            sums = replica_step(model, *comm, x, y, order_.data() + start, b, epoch, step, options.stop_on_nan(),
                                stop_here);
          } else {
            gather(x, order_.data() + start, b, xb_);
            gather(y, order_.data() + start, b, yb_);
            sums.loss_sum = step_impl(model, xb_, yb_, options.stop_on_nan()) * static_cast<double>(b);
            if (accuracy) sums.correct = count_correct(*output_, yb_, *loss_);
            sums.stop = stop_here;
          }
        } catch (const NumericError& e) {
          throw NumericError(detail::str("fit: epoch ", epoch, ", batch ", step + 1, " of ", steps, ": ", e.what()));
        }
        at.loss_sum += sums.loss_sum;
        at.correct += sums.correct;
        at.seen += b;
        at.step = step + 1;
        running_logs(at);
        progress.update(step + 1, logs_.entries());
        for (const auto& cb : callbacks_) cb->on_batch_end(model, step + 1, logs_);
        if (sums.stop) {  // after this batch; resume() continues here
          interrupted_ = true;
          if (comm) average_buffers(model, *comm);
          if (rank0 && options.output() && options.verbose() > 0) *options.output() << "\n";
          return history_;
        }
      }
      running_logs(at);  // again: a fit stopped after an epoch's last batch resumes here with no batch to run
      if (comm) average_buffers(model, *comm);
      if (xv) {
        const auto v = comm ? replica_evaluate(model, *comm, *xv, *yv, options.batch_size())
                            : model.evaluate(*xv, *yv, options.batch_size());
        logs_.set("val_loss", v.loss);
        if (accuracy) logs_.set("val_accuracy", v.accuracy);
      }
      for (const auto& cb : callbacks_) cb->on_epoch_logs(model, epoch, logs_);
      for (const auto& m : logs_.entries()) history_.append(m.first, m.second);
      at = {epoch, 0, 0.0, 0, 0};
      progress.end_epoch(logs_.entries());
      for (const auto& cb : callbacks_) cb->on_epoch_end(model, epoch, logs_);
      if (comm) {  // a callback on any rank stops every rank
        double stop = stop_requested_ ? 1 : 0;
        comm->allreduce_sum(&stop, 1);
        stop_requested_ = stop > 0;
      }
      if (stop_requested_) break;
    }
    for (const auto& cb : callbacks_) cb->on_train_end(model);
    return history_;
  }

  template <class Model>
  double step_impl(Model& model, const Tensor<T>& x, const Tensor<T>& y, bool guard) {
    const double loss = forward_backward(model, x, y, guard, T(1));
    optimizer_->step(model.parameters());
    return loss;
  }

  /// Forward in Mode::Train, the loss and its gradient (times `grad_scale`),
  /// backward: every parameter gradient written; returns the batch's mean loss.
  /// The layers fuse as the planner arranges for the step (TrainingFusion,
  /// layers/fusion.hpp): a layer that does the next one's work in its own
  /// passes does, both ways, and the next is skipped; a ReLU's derivative
  /// may be applied by a later layer.
  template <class Model>
  double forward_backward(Model& model, const Tensor<T>& x, const Tensor<T>& y, bool guard, T grad_scale) {
    const auto& layers = model.layers();
    TrainingFusion<T> fusion(layers);  // for the step, also when it throws
    const Tensor<T>* out = &x;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const bool fused = fusion.fused(i);
      out = &layers[i]->forward(*out, Mode::Train);
      outputs_[i] = out;
      if (fused) outputs_[++i] = out;
    }
    output_ = out;
    const double loss = loss_->gradient(*out, y, grad_, fused_softmax_);
    if (guard && !std::isfinite(loss)) throw NumericError(describe_non_finite(layers, x, loss));
    if (grad_scale != T(1)) {
      for (T& g : grad_) g *= grad_scale;
    }
    const Tensor<T>* g = &grad_;
    for (std::size_t i = layers.size(); i-- > 0;) {
      if (fusion.skips(i)) continue;  // done by layers[i - 1]
      g = &layers[i]->backward(*g);
    }
    return loss;
  }

  // ---- Data parallelism (see the file comment) -------------------------------

  /// Every rank must train on the same data with the same schedule: rank
  /// 0's sizes, sums and options are compared with each rank's own, and a
  /// rank that differs says how.
  static void check_same_data(Communicator& comm, const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* xv,
                              const Tensor<T>* yv, const FitOptions<T>& options) {
    const auto sum = [](const Tensor<T>* t) {
      double s = 0;
      if (t) {
        for (T v : *t) s += static_cast<double>(v);
      }
      return s;
    };
    constexpr int kFacts = 9;
    const double mine[kFacts] = {static_cast<double>(x.dim(0)),
                                 sum(&x),
                                 sum(&y),
                                 xv ? static_cast<double>(xv->dim(0)) : -1.0,
                                 sum(xv),
                                 sum(yv),
                                 static_cast<double>(options.epochs()),
                                 static_cast<double>(options.batch_size()),
                                 options.shuffle() ? 1.0 : 0.0};
    double root[kFacts];
    std::copy(mine, mine + kFacts, root);
    comm.broadcast(root, sizeof root, 0);
    static const char* const what[kFacts] = {
        "training samples", "sum of x",    "sum of y",   "validation samples", "sum of validation x",
        "sum of validation y", "epochs", "batch_size", "shuffle"};
    for (int i = 0; i < kFacts; ++i) {
      if (mine[i] != root[i]) {
        throw ConfigError(detail::str("fit: every rank must be given the same data and options, but rank ", comm.rank(),
                                      "'s differs from rank 0's: ", what[i], " ", mine[i], " against ", root[i]));
      }
    }
  }

  /// Rank 0's weights, moving statistics, optimizer state, training stream,
  /// position, sample order and stop request to every rank, so that replicas start (and
  /// resume) identical. The model and the optimizer must be the same kind on
  /// every rank; a rank whose are not says so.
  template <class Model>
  void copy_state_from_rank0(Model& model, Communicator& comm) {
    const auto& params = model.parameters();
    std::string kind;  // what must agree: parameter names and shapes, the optimizer and its config
    for (const auto& p : params) kind += p.name + " " + p.value->shape().str() + (p.trainable() ? "; " : " (buffer); ");
    kind += optimizer_->type();
    for (const auto& e : optimizer_->config().entries()) kind += " " + e.first + "=" + e.second;
    std::string bytes;
    if (comm.rank() == 0) {
      ByteWriter w;
      w.str(kind);
      for (const auto& p : params) w.values(*p.value);
      w.i64(optimizer_->iterations());
      for (const auto& slot : optimizer_->slots()) {
        for (const auto& v : slot.state) w.values(v);
      }
      w.rng(rng_.state());
      w.i64(position_.epoch);
      w.i64(position_.step);
      w.f64(position_.loss_sum);
      w.i64(position_.correct);
      w.i64(position_.seen);
      for (Index i : order_) w.i64(i);
      w.u8(stop_requested_ ? 1 : 0);
      bytes = std::move(w.bytes);
    }
    comm.broadcast(bytes);
    if (comm.rank() == 0) return;
    ByteReader r("rank 0's training state", reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
    const std::string root_kind = r.str("model");
    if (root_kind != kind) {
      throw ConfigError(detail::str("fit: every rank must train the same model with the same optimizer, but rank ",
                                    comm.rank(), " has [", kind, "] and rank 0 [", root_kind, "]"));
    }
    for (const auto& p : params) r.values(*p.value, "parameter");
    const long long iterations = r.i64("optimizer steps");
    std::vector<typename Optimizer<T>::Slot> slots = optimizer_->slots();
    for (auto& slot : slots) {
      for (auto& v : slot.state) r.values(v, "optimizer state");
    }
    optimizer_->restore(std::move(slots), iterations);
    rng_.set_state(r.rng("training stream"));
    position_.epoch = static_cast<int>(r.i64("epoch"));
    position_.step = static_cast<long>(r.i64("step"));
    position_.loss_sum = r.f64("loss sum");
    position_.correct = static_cast<Index>(r.i64("correct"));
    position_.seen = static_cast<Index>(r.i64("seen"));
    for (Index& i : order_) i = static_cast<Index>(r.i64("sample order"));
    stop_requested_ = r.u8("stop request") != 0;
  }

  /// This rank's share of one global batch, `batch[0..b)`: the samples
  /// [first, first + mine), split as evenly as possible (the first b % P
  /// ranks take one more). Forward and backward on them with dL/d(output)
  /// scaled by mine / b, so that the sum over ranks of the parameter
  /// gradients is the global batch's; then one allreduce and the step.
  template <class Model>
  StepSums replica_step(Model& model, Communicator& comm, const Tensor<T>& x, const Tensor<T>& y, const Index* batch,
                        Index b, int epoch, long step, bool guard, bool stop_here) {
    const Index ranks = comm.size(), rank = comm.rank();
    const Index share = b / ranks, extra = b % ranks;
    const Index mine = share + (rank < extra ? 1 : 0), first = rank * share + std::min(rank, extra);
    const auto& layers = model.layers();
    if (rank > 0) {  // rank 0 continues the layers' own streams; the others draw from (stream, step, rank)
      const Rng::State s = rng_.state();
      const std::uint64_t key = splitmix64(s[0] ^ s[1] ^ s[2] ^ s[3], (static_cast<std::uint64_t>(epoch) << 32) +
                                                                           static_cast<std::uint64_t>(step));
      for (std::size_t i = 0; i < layers.size(); ++i) {
        if (layers[i]->has_rng()) layers[i]->seed(splitmix64(key, static_cast<std::uint64_t>(rank) * 4096 + i));
      }
    }
    const auto& params = model.parameters();
    T* out = reduce_.data();
    double loss = 0;
    Index correct = 0;
    if (mine > 0) {
      gather(x, batch + first, mine, xb_);
      gather(y, batch + first, mine, yb_);
      loss = forward_backward(model, xb_, yb_, guard, static_cast<T>(static_cast<double>(mine) / static_cast<double>(b)));
      for (const auto& p : params) {
        if (p.trainable()) out = std::copy(p.grad->begin(), p.grad->end(), out);
      }
      if (!metrics_.empty()) correct = count_correct(*output_, yb_, *loss_);
    } else {  // no samples here: take part in the layers' reductions, add nothing
      for (const auto& l : layers) l->forward_without_samples();
      for (auto it = layers.rbegin(); it != layers.rend(); ++it) (*it)->backward_without_samples();
      out = std::fill_n(out, reduce_.size() - 3, T(0));
    }
    out[0] = static_cast<T>(loss * static_cast<double>(mine));
    out[1] = static_cast<T>(correct);
    out[2] = stop_here ? T(1) : T(0);
    comm.allreduce_sum(reduce_.data(), static_cast<Index>(reduce_.size()));
    const T* in = reduce_.data();
    for (const auto& p : params) {
      if (!p.trainable()) continue;
      std::copy(in, in + p.grad->size(), p.grad->begin());
      in += p.grad->size();
    }
    optimizer_->step(params);
    return {static_cast<double>(in[0]), static_cast<Index>(std::lround(in[1])), in[2] > 0};
  }

  /// The moving statistics (every buffer) <- their mean across ranks,
  /// summed in double: identical values stay exactly what they are.
  template <class Model>
  void average_buffers(Model& model, Communicator& comm) {
    buffer_sums_.clear();
    for (const auto& p : model.parameters()) {
      if (!p.trainable()) buffer_sums_.insert(buffer_sums_.end(), p.value->begin(), p.value->end());
    }
    if (buffer_sums_.empty()) return;
    comm.allreduce_sum(buffer_sums_.data(), static_cast<Index>(buffer_sums_.size()));
    const double ranks = comm.size();
    const double* v = buffer_sums_.data();
    for (const auto& p : model.parameters()) {
      if (p.trainable()) continue;
      for (T& e : *p.value) e = static_cast<T>(*v++ / ranks);
    }
  }

  /// Model::evaluate with the samples split among the ranks.
  template <class Model>
  Evaluation replica_evaluate(Model& model, Communicator& comm, const Tensor<T>& x, const Tensor<T>& y,
                              Index batch_size) {
    const Index n = x.dim(0), ranks = comm.size(), rank = comm.rank();
    const auto mine = model.evaluation_sums(x, y, n * rank / ranks, n * (rank + 1) / ranks, batch_size);
    double sums[2] = {mine.first, static_cast<double>(mine.second)};  // loss sum, correct count
    comm.allreduce_sum(sums, 2);
    return {sums[0] / static_cast<double>(n), sums[1] / static_cast<double>(n)};
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
  std::vector<T> reduce_;             ///< a distributed step's allreduce: gradients, loss sum, correct, stop
  std::vector<double> buffer_sums_;   ///< the moving statistics, averaged across ranks
  std::vector<const Tensor<T>*> outputs_;  ///< every layer's output of the last training forward
};

}  // namespace loom
