#pragma once
/// \file replicas.hpp
/// `Replicas<T>`: the data-parallel part of a fit (FitOptions::distributed,
/// docs/distributed.md), for the length of one fit.
///
/// Every rank runs the same fit. At the start rank 0's parameters and
/// training state (training_state.hpp) are copied to every rank. Each step,
/// every rank takes its contiguous slice of the global batch (split as
/// evenly as possible), scales dL/d(output) by its share of the batch, runs
/// backward, and one allreduce sums the gradients (with the batch's loss
/// sum, correct count and stop requests packed behind them); every rank then
/// takes the same optimizer step (after adding the weight regularizers'
/// gradients, once). At the end of each epoch the moving
/// statistics are averaged across ranks and validation is split among them.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../communicator.hpp"
#include "../io/bytes.hpp"
#include "../layers/layer.hpp"
#include "../losses.hpp"
#include "../metrics.hpp"
#include "../optimizers.hpp"
#include "../random.hpp"
#include "fit_options.hpp"
#include "train_step.hpp"
#include "training_state.hpp"

namespace loom {

/// What a training step adds to the epoch's running sums.
struct StepSums {
  double loss_sum = 0;  ///< the batch's mean loss times its size
  Index correct = 0;
  bool stop = false;  ///< some rank's stop_flag was set
};

template <class T>
class Replicas {
 public:
  using Layers = std::vector<std::unique_ptr<Layer<T>>>;

  /// Gives the layers the replicas (BatchNormalization(synchronized) reduces
  /// its statistics across them) until destroyed.
  Replicas(Communicator& comm, const Layers& layers) : comm_(comm), layers_(layers) {
    for (const auto& l : layers_) l->set_replicas(&comm_);
  }
  ~Replicas() {
    for (const auto& l : layers_) l->set_replicas(nullptr);
  }
  Replicas(const Replicas&) = delete;
  Replicas& operator=(const Replicas&) = delete;

  Communicator& comm() const { return comm_; }
  bool rank0() const { return comm_.rank() == 0; }

  /// Every rank must train on the same data with the same schedule: rank
  /// 0's sizes, sums and options are compared with each rank's own, and a
  /// rank that differs says how.
  void check_same_data(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>* xv, const Tensor<T>* yv,
                       const FitOptions<T>& options) const {
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
    comm_.broadcast(root, sizeof root, 0);
    static const char* const what[kFacts] = {
        "training samples", "sum of x",    "sum of y",   "validation samples", "sum of validation x",
        "sum of validation y", "epochs", "batch_size", "shuffle"};
    for (int i = 0; i < kFacts; ++i) {
      if (mine[i] != root[i]) {
        throw ConfigError(detail::str("fit: every rank must be given the same data and options, but rank ", comm_.rank(),
                                      "'s differs from rank 0's: ", what[i], " ", mine[i], " against ", root[i]));
      }
    }
  }

  /// Rank 0's parameters (weights and moving statistics) and training state
  /// to every rank, so that replicas start (and resume) identical: on rank 0
  /// `state` is read, on the others overwritten. The model and the optimizer
  /// must be the same kind on every rank; a rank whose are not says so.
  void share_from_rank0(const std::vector<Parameter<T>>& params, const Optimizer<T>& optimizer,
                        TrainingState<T>& state) {
    std::string kind;  // what must agree: parameter names and shapes, the optimizer and its config
    for (const auto& p : params) kind += p.name + " " + p.value->shape().str() + (p.trainable() ? "; " : " (buffer); ");
    kind += optimizer.type();
    for (const auto& e : optimizer.config().entries()) kind += " " + e.first + "=" + e.second;
    std::string bytes;
    if (rank0()) {
      ByteWriter w;
      w.str(kind);
      for (const auto& p : params) w.values(*p.value);
      w.rng(state.stream);
      state.write(w);
      bytes = std::move(w.bytes);
    }
    comm_.broadcast(bytes);
    if (rank0()) return;
    ByteReader r("rank 0's training state", reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
    const std::string root_kind = r.str("model");
    if (root_kind != kind) {
      throw ConfigError(detail::str("fit: every rank must train the same model with the same optimizer, but rank ",
                                    comm_.rank(), " has [", kind, "] and rank 0 [", root_kind, "]"));
    }
    for (const auto& p : params) r.values(*p.value, "parameter");
    state.stream = r.rng("training stream");
    state.read(r);
  }

  /// Sizes the allreduce buffer: every gradient, then the loss sum, the
  /// correct count and the stop requests.
  void prepare(const std::vector<Parameter<T>>& params) {
    Index n = 3;
    for (const auto& p : params) n += p.trainable() ? p.grad->size() : 0;
    reduce_.assign(static_cast<std::size_t>(n), T(0));
  }

  /// This rank's share of one global batch, `batch[0..b)`: the samples
  /// [first, first + mine), split as evenly as possible (the first b % P
  /// ranks take one more). Forward and backward on them with dL/d(output)
  /// scaled by mine / b, so that the sum over ranks of the parameter
  /// gradients is the global batch's; then one allreduce and the optimizer's
  /// step. `stream` is the training stream's state: rank 0 continues the
  /// layers' own random streams, the others draw from (stream, step, rank).
  StepSums step(TrainStep<T>& ts, const std::vector<Parameter<T>>& params, const Loss<T>& loss,
                Optimizer<T>& optimizer, bool accuracy, const Rng::State& stream, const Tensor<T>& x,
                const Tensor<T>& y, const Index* batch, Index b, int epoch, long step, bool guard, bool stop_here) {
    const Index ranks = comm_.size(), rank = comm_.rank();
    const Index share = b / ranks, extra = b % ranks;
    const Index mine = share + (rank < extra ? 1 : 0), first = rank * share + std::min(rank, extra);
    if (rank > 0) {
      const std::uint64_t key = splitmix64(stream[0] ^ stream[1] ^ stream[2] ^ stream[3],
                                           (static_cast<std::uint64_t>(epoch) << 32) + static_cast<std::uint64_t>(step));
      for (std::size_t i = 0; i < layers_.size(); ++i) {
        if (layers_[i]->has_rng()) layers_[i]->seed(splitmix64(key, static_cast<std::uint64_t>(rank) * 4096 + i));
      }
    }
    T* out = reduce_.data();
    double value = 0;
    Index correct = 0;
    if (mine > 0) {
      ts.gather(x, y, batch + first, mine);
      value = ts.forward_backward(layers_, loss, ts.inputs(), ts.targets(), guard,
                                  static_cast<T>(static_cast<double>(mine) / static_cast<double>(b)));
      for (const auto& p : params) {
        if (p.trainable()) out = std::copy(p.grad->begin(), p.grad->end(), out);
      }
      if (accuracy) correct = count_correct(ts.output(), ts.targets(), loss);
    } else {  // no samples here: take part in the layers' reductions, add nothing
      for (const auto& l : layers_) l->forward_without_samples();
      for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) (*it)->backward_without_samples();
      out = std::fill_n(out, reduce_.size() - 3, T(0));
    }
    out[0] = static_cast<T>(value * static_cast<double>(mine));
    out[1] = static_cast<T>(correct);
    out[2] = stop_here ? T(1) : T(0);
    comm_.allreduce_sum(reduce_.data(), static_cast<Index>(reduce_.size()));
    const T* in = reduce_.data();
    for (const auto& p : params) {
      if (!p.trainable()) continue;
      std::copy(in, in + p.grad->size(), p.grad->begin());
      in += p.grad->size();
    }
    // The weight regularizers, once, on the summed gradients (every rank has the same weights).
    const double penalty = add_regularization(params);
    optimizer.step(params);
    return {static_cast<double>(in[0]) + penalty * static_cast<double>(b), static_cast<Index>(std::lround(in[1])),
            in[2] > 0};
  }

  /// The moving statistics (every buffer) <- their mean across ranks,
  /// summed in double: identical values stay exactly what they are.
  void average_buffers(const std::vector<Parameter<T>>& params) {
    buffer_sums_.clear();
    for (const auto& p : params) {
      if (!p.trainable()) buffer_sums_.insert(buffer_sums_.end(), p.value->begin(), p.value->end());
    }
    if (buffer_sums_.empty()) return;
    comm_.allreduce_sum(buffer_sums_.data(), static_cast<Index>(buffer_sums_.size()));
    const double ranks = comm_.size();
    const double* v = buffer_sums_.data();
    for (const auto& p : params) {
      if (p.trainable()) continue;
      for (T& e : *p.value) e = static_cast<T>(*v++ / ranks);
    }
  }

  /// An evaluation of n samples split among the ranks: `sums(begin, end)`
  /// gives this rank's (loss sum, correct count) over its samples [begin, end).
  template <class Sums>
  Evaluation evaluate(Index n, Sums&& sums) const {
    const Index ranks = comm_.size(), rank = comm_.rank();
    const std::pair<double, Index> mine = sums(n * rank / ranks, n * (rank + 1) / ranks);
    double total[2] = {mine.first, static_cast<double>(mine.second)};
    comm_.allreduce_sum(total, 2);
    return {total[0] / static_cast<double>(n), total[1] / static_cast<double>(n)};
  }

  /// Whether `mine` is true on any rank.
  bool any(bool mine) const {
    double v = mine ? 1 : 0;
    comm_.allreduce_sum(&v, 1);
    return v > 0;
  }

 private:
  Communicator& comm_;
  const Layers& layers_;
  std::vector<T> reduce_;            ///< a step's allreduce: gradients, loss sum, correct, stop
  std::vector<double> buffer_sums_;  ///< the moving statistics, averaged across ranks
};

}  // namespace loom
