#pragma once
/// \file sequential.hpp
/// `Sequential<T>`: a stack of layers with Keras's add / compile / fit /
/// evaluate / predict / summary.
///
/// How a batch flows through `fit`: the dataset stays where it is; each step
/// gathers a shuffled batch into one reused input tensor, every layer's
/// forward writes its own reused output, the loss writes dL/dy (fused p - y
/// after a softmax), every layer's backward writes its input gradient and its
/// parameter gradients, and the optimizer updates the parameters in place.
/// Once the first batch has run, loom's own code allocates nothing in a step;
/// Eigen's GEMM still allocates its packing buffers on every product (about
/// 26 heap allocations per step of the notebook's model, seen with heaptrack).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "../io.hpp"
#include "../layers/layer.hpp"
#include "../losses.hpp"
#include "../metrics.hpp"
#include "../optimizers.hpp"
#include "history.hpp"
#include "progress.hpp"
#include "summary.hpp"

namespace loom {

/// Called by fit after each epoch (1-based) with the history so far; false stops training.
using EpochCallback = std::function<bool(int, const History&)>;

template <class T>
class Sequential;

/// A fit() callback (see model/callbacks.hpp): runs after every epoch, once
/// its line is printed; returning false stops training.
template <class T>
class Callback {
 public:
  virtual ~Callback() = default;
  virtual bool on_epoch_end(Sequential<T>& model, int epoch, const History& history) = 0;
};

/// Keras's fit() arguments. `validation_data` keeps pointers: the tensors must
/// outlive the call to fit.
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
  /// Called after every epoch (1-based) with the history so far, once the
  /// epoch's line is printed; returning false stops training after it.
  LOOM_OPTION(EpochCallback, on_epoch_end, nullptr)
  /// Continue from the model's saved position (after an interrupted fit, or
  /// a model loaded from a checkpoint) instead of starting at epoch 1.
  LOOM_OPTION(bool, resume, false)
  /// Checked after every batch: when it reads true, fit returns after that
  /// batch with `interrupted()` set (for Ctrl-C). Not owned.
  LOOM_OPTION(const std::atomic<bool>*, stop_flag, nullptr)
  /// Stop with a NumericError when a batch's loss is not finite, naming the
  /// epoch, the batch and the first layer whose output is not finite.
  LOOM_OPTION(bool, stop_on_nan, true)

 public:
  FitOptions& callback(std::shared_ptr<Callback<T>> cb) {
    callbacks_.push_back(std::move(cb));
    return *this;
  }
  const std::vector<std::shared_ptr<Callback<T>>>& callbacks() const { return callbacks_; }

 public:
  FitOptions& validation_data(const Tensor<T>& x, const Tensor<T>& y) {
    x_val_ = &x;
    y_val_ = &y;
    return *this;
  }
  const Tensor<T>* validation_x() const { return x_val_; }
  const Tensor<T>* validation_y() const { return y_val_; }

 private:
  const Tensor<T>* x_val_ = nullptr;
  const Tensor<T>* y_val_ = nullptr;
  std::vector<std::shared_ptr<Callback<T>>> callbacks_;
};

namespace detail {
template <class T>
struct ModelFile;  // model/serialization.hpp
}

/// Loss and metrics from `evaluate`.
struct Evaluation {
  double loss = 0;
  double accuracy = 0;
};

template <class T>
class Sequential {
 public:
  /// `seed` drives weight initialization, shuffling and dropout: the same
  /// seed (and thread count) gives the same model.
  explicit Sequential(std::uint64_t seed = 0, std::string name = "sequential")
      : name_(std::move(name)), seed_(seed), init_rng_(seed), train_rng_(seed ^ 0x5EED5EED5EED5EEDULL) {}

  Sequential(Sequential&&) noexcept = default;
  Sequential& operator=(Sequential&&) noexcept = default;

  const std::string& name() const { return name_; }
  std::uint64_t seed() const { return seed_; }

  /// Adds a layer. With `input_shape` (per sample, e.g. {28, 28, 1}) on the
  /// first layer, every layer is built as it is added, so a layer that cannot
  /// take its input fails here, naming itself and both shapes. Returns the
  /// added layer.
  template <class L, class = std::enable_if_t<std::is_base_of_v<Layer<T>, std::decay_t<L>>>>
  std::decay_t<L>& add(L&& layer, std::optional<Shape> input_shape = std::nullopt) {
    auto owned = std::make_unique<std::decay_t<L>>(std::forward<L>(layer));
    auto& ref = *owned;
    add(std::unique_ptr<Layer<T>>(std::move(owned)), input_shape);
    return ref;
  }

  void add(std::unique_ptr<Layer<T>> layer, std::optional<Shape> input_shape = std::nullopt) {
    if (!layer) throw ConfigError("Sequential::add: null layer");
    if (input_shape) {
      if (!layers_.empty()) {
        throw ConfigError(detail::str("Sequential::add: only the first layer takes an input shape; '",
                                      layer->base_name(), "' is layer ", layers_.size() + 1));
      }
      input_shape_ = *input_shape;
    }
    name_layer(*layer);
    if (input_shape_) {
      const Shape in = layers_.empty() ? *input_shape_ : layers_.back()->output_shape();
      layer->build(in, init_rng_);
    }
    layers_.push_back(std::move(layer));
    params_.clear();
    compiled_layers_ = false;
  }

  /// Builds every layer for per-sample inputs of `input_shape`, if not built yet.
  void build(const Shape& input_shape) {
    if (input_shape_) {
      if (*input_shape_ != input_shape) {
        throw ShapeError(detail::str("model '", name_, "' expects inputs ", input_shape_->str("N"), ", got ",
                                     input_shape.str("N")));
      }
      return;
    }
    input_shape_ = input_shape;
    Shape s = input_shape;
    for (auto& l : layers_) s = l->build(s, init_rng_);
  }

  bool built() const { return input_shape_.has_value() && !layers_.empty(); }
  std::size_t size() const { return layers_.size(); }
  Layer<T>& layer(std::size_t i) { return *layers_.at(i); }
  Layer<T>& layer(const std::string& name) {
    for (auto& l : layers_) {
      if (l->name() == name) return *l;
    }
    throw ConfigError("model '" + name_ + "' has no layer '" + name + "'");
  }
  const std::vector<std::unique_ptr<Layer<T>>>& layers() const { return layers_; }

  /// Per-sample shapes of the input and output.
  Shape input_shape() const { return require_built("input_shape"), *input_shape_; }
  Shape output_shape() const { return require_built("output_shape"), layers_.back()->output_shape(); }

  /// Every parameter and buffer of every layer, in layer order.
  const std::vector<Parameter<T>>& parameters() {
    require_built("parameters");
    if (params_.empty()) {
      for (auto& l : layers_) {
        for (auto& p : l->parameters()) params_.push_back(p);
      }
    }
    return params_;
  }

  Index count_params() {
    Index n = 0;
    for (auto& l : layers_) n += l->count_params();
    return n;
  }
  Index count_trainable_params() {
    Index n = 0;
    for (auto& l : layers_) n += l->count_trainable_params();
    return n;
  }

  /// Keras's summary table.
  void summary(std::ostream& out = std::cout) const {
    require_built("summary");
    write_summary(out, name_, layers_);
  }

  /// Sets the loss, the optimizer and the metrics.
  void compile(std::unique_ptr<Loss<T>> loss, std::unique_ptr<Optimizer<T>> optimizer,
               const std::vector<std::string>& metrics = {}) {
    if (!loss || !optimizer) throw ConfigError("Sequential::compile: null loss or optimizer");
    metrics_ = checked_metrics(metrics);
    loss_ = std::move(loss);
    optimizer_ = std::move(optimizer);
    compiled_layers_ = false;
  }

  template <class L, class O, class = std::enable_if_t<std::is_base_of_v<Loss<T>, L>>>
  void compile(L loss, O optimizer, const std::vector<std::string>& metrics = {}) {
    compile(std::make_unique<L>(std::move(loss)), std::make_unique<O>(std::move(optimizer)), metrics);
  }

  /// Keras's `compile(loss='categorical_crossentropy', metrics=['accuracy'])`:
  /// by name, with RMSprop unless another optimizer is named.
  void compile(const std::string& loss, const std::vector<std::string>& metrics = {},
               const std::string& optimizer = "rmsprop") {
    compile(make_loss<T>(loss), make_optimizer<T>(optimizer), metrics);
  }

  bool compiled() const { return loss_ != nullptr; }
  Loss<T>& loss() { return require_compiled("loss"), *loss_; }
  const Loss<T>& loss() const { return require_compiled("loss"), *loss_; }
  Optimizer<T>& optimizer() { return require_compiled("optimizer"), *optimizer_; }
  const Optimizer<T>& optimizer() const { return require_compiled("optimizer"), *optimizer_; }

  /// Trains for `options.epochs()` epochs on x (N, input...) and y (targets
  /// as the loss expects them). Returns the per-epoch history.
  History fit(const Tensor<T>& x, const Tensor<T>& y, const FitOptions<T>& options = {}) {
    require_compiled("fit");
    if (options.epochs() < 0) throw ConfigError(detail::str("fit: epochs must be >= 0, got ", options.epochs()));
    if (options.batch_size() < 1) {
      throw ConfigError(detail::str("fit: batch_size must be >= 1, got ", options.batch_size()));
    }
    check_data(x, y, "fit");
    const Tensor<T>* xv = options.validation_x();
    const Tensor<T>* yv = options.validation_y();
    if (xv) check_data(*xv, *yv, "fit (validation_data)");
    prepare_training();

    const Index n = x.dim(0), bs = std::min(options.batch_size(), n);
    const long steps = static_cast<long>((n + bs - 1) / bs);
    if (options.resume()) {
      if (order_.size() != static_cast<std::size_t>(n) || position_.step > steps) {
        throw ConfigError(detail::str("fit: cannot resume: the saved position is for ", order_.size(),
                                      " samples in batches of a different size, x has ", n));
      }
    } else {
      if (options.seed()) {  // restart shuffling and every layer's random stream
        train_rng_.seed(*options.seed());
        for (auto& l : layers_) l->seed(train_rng_.next_u64());
      }
      position_ = {};
      history_ = {};
      order_.resize(static_cast<std::size_t>(n));
      std::iota(order_.begin(), order_.end(), Index(0));
    }
    interrupted_ = false;

    Progress progress(options.output(), options.verbose(), steps, stdout_is_terminal());
    const bool live = options.verbose() == 1 && options.output() != nullptr && stdout_is_terminal();
    const bool accuracy = !metrics_.empty();
    TrainingPosition& at = position_;
    for (int epoch = at.epoch + 1; epoch <= options.epochs(); ++epoch) {
      if (at.step == 0 && options.shuffle()) train_rng_.shuffle(order_.begin(), order_.end());
      progress.begin_epoch(epoch, options.epochs());
      for (long step = at.step; step < steps; ++step) {
        const Index start = step * bs, b = std::min(bs, n - start);
        gather(x, order_.data() + start, b, xb_);
        gather(y, order_.data() + start, b, yb_);
        double loss = 0;
        try {
          loss = step_impl(xb_, yb_, options.stop_on_nan());
        } catch (const NumericError& e) {
          throw NumericError(detail::str("fit: epoch ", epoch, ", batch ", step + 1, " of ", steps, ": ", e.what()));
        }
        at.loss_sum += loss * static_cast<double>(b);
        if (accuracy) at.correct += count_correct(*output_, yb_, *loss_);
        at.seen += b;
        at.step = step + 1;
        if (live) progress.update(step + 1, epoch_metrics(at.loss_sum, at.correct, at.seen));
        if (options.stop_flag() && options.stop_flag()->load()) {  // after this batch; resume() continues here
          interrupted_ = true;
          if (options.output() && options.verbose() > 0) *options.output() << "\n";
          return history_;
        }
      }
      auto metrics = epoch_metrics(at.loss_sum, at.correct, at.seen);
      if (xv) {
        const Evaluation v = evaluate(*xv, *yv, options.batch_size());
        metrics.emplace_back("val_loss", v.loss);
        if (accuracy) metrics.emplace_back("val_accuracy", v.accuracy);
      }
      for (const auto& m : metrics) history_.append(m.first, m.second);
      at = {epoch, 0, 0.0, 0, 0};
      progress.end_epoch(metrics);
      bool go_on = true;
      for (const auto& cb : options.callbacks()) go_on = cb->on_epoch_end(*this, epoch, history_) && go_on;
      if (options.on_epoch_end()) go_on = options.on_epoch_end()(epoch, history_) && go_on;
      if (!go_on) break;
    }
    return history_;
  }

  /// One optimizer step on the batch (x, y); returns the batch's mean loss.
  /// The batch's output stays available as `last_output()`. A loss that is
  /// not finite throws NumericError naming the first layer whose output is
  /// not finite, before any weight changes.
  double train_step(const Tensor<T>& x, const Tensor<T>& y) {
    require_compiled("train_step");
    prepare_training();
    return step_impl(x, y, true);
  }

  /// The history of every epoch trained so far (kept across fit(resume) and save/load).
  const History& history() const { return history_; }

  /// Where training stands: epochs finished, and batches done in the next.
  struct TrainingPosition {
    int epoch = 0;
    long step = 0;
    double loss_sum = 0;  ///< running sums of the unfinished epoch
    Index correct = 0, seen = 0;
  };
  const TrainingPosition& position() const { return position_; }
  /// True when the last fit stopped at a stop_flag, mid-epoch.
  bool interrupted() const { return interrupted_; }

  /// Saves architecture, parameters, buffers and, with `include_optimizer`,
  /// the loss, optimizer state and training position (to resume exactly), to
  /// one file written to a temporary name in the same folder and renamed into
  /// place. See model/serialization.hpp for the format.
  void save(const std::string& path, bool include_optimizer = true) const;
  /// The model (compiled, if saved with its optimizer) from a file by save().
  static Sequential load(const std::string& path);
  /// load() from the bytes of a file; `source` names them in errors.
  static Sequential load_bytes(const std::string& bytes, const std::string& source);
  /// The bytes save() writes.
  std::string to_bytes(bool include_optimizer = true) const;
  /// Parameters and buffers only, into / from a model of the same architecture.
  void save_weights(const std::string& path) const;
  void load_weights(const std::string& path);

  const Tensor<T>& last_output() const { return *output_; }

  /// Loss and accuracy over (x, y) in inference mode.
  Evaluation evaluate(const Tensor<T>& x, const Tensor<T>& y, Index batch_size = 32) {
    require_compiled("evaluate");
    check_data(x, y, "evaluate");
    if (batch_size < 1) throw ConfigError(detail::str("evaluate: batch_size must be >= 1, got ", batch_size));
    double loss = 0;
    Index correct = 0;
    const Index n = x.dim(0);
    for (Index start = 0; start < n; start += batch_size) {
      const Index b = std::min(batch_size, n - start);
      slice(x, start, b, xb_);
      slice(y, start, b, yb_);
      const Tensor<T>& p = forward(xb_, Mode::Inference);
      loss += loss_->value(p, yb_) * static_cast<double>(b);
      correct += count_correct(p, yb_, *loss_);
    }
    return {loss / static_cast<double>(n), static_cast<double>(correct) / static_cast<double>(n)};
  }

  /// The model's outputs for x, computed in batches in inference mode.
  Tensor<T> predict(const Tensor<T>& x, Index batch_size = 32) {
    check_inputs(x, "predict");
    if (batch_size < 1) throw ConfigError(detail::str("predict: batch_size must be >= 1, got ", batch_size));
    const Index n = x.dim(0);
    Tensor<T> result(layers_.back()->output_shape().with_batch(n));
    const Index width = result.size() / std::max<Index>(n, 1);
    for (Index start = 0; start < n; start += batch_size) {
      const Index b = std::min(batch_size, n - start);
      slice(x, start, b, xb_);
      const Tensor<T>& p = forward(xb_, Mode::Inference);
      std::copy(p.begin(), p.end(), result.data() + start * width);
    }
    return result;
  }

  /// Runs every layer on a batch; returns the last layer's output.
  const Tensor<T>& forward(const Tensor<T>& x, Mode mode) {
    check_inputs(x, "forward");
    const Tensor<T>* out = &x;
    for (auto& l : layers_) out = &l->forward(*out, mode);
    return *out;
  }

 private:
  friend struct detail::ModelFile<T>;

  double step_impl(const Tensor<T>& x, const Tensor<T>& y, bool guard) {
    const Tensor<T>* out = &x;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      out = &layers_[i]->forward(*out, Mode::Train);
      outputs_[i] = out;
    }
    output_ = out;
    const double loss = loss_->gradient(*out, y, grad_, fused_softmax_);
    if (guard && !std::isfinite(loss)) throw NumericError(describe_non_finite(x, loss));
    const Tensor<T>* g = &grad_;
    for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) g = &(*it)->backward(*g);
    optimizer_->step(params_);
    return loss;
  }

  /// Which of the input and the layers' outputs of the last forward first holds a value that is not finite.
  std::string describe_non_finite(const Tensor<T>& x, double loss) const {
    const auto finite = [](const Tensor<T>& t) {
      return std::all_of(t.begin(), t.end(), [](T v) { return std::isfinite(v); });
    };
    const std::string head = std::string("loss is ") + (std::isnan(loss) ? "NaN" : "infinite") + ": ";
    if (!finite(x)) return head + "the input batch holds values that are not finite";
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      if (!finite(*outputs_[i])) {
        return head + "first non-finite output in layer '" + layers_[i]->name() + "' (" + layers_[i]->type() + ")";
      }
    }
    return head + "every layer's output is finite (the loss overflowed)";
  }

  void require_built(const char* what) const {
    if (layers_.empty()) throw ConfigError(detail::str(what, ": model '", name_, "' has no layers"));
    if (!input_shape_) {
      throw ConfigError(detail::str(what, ": model '", name_,
                                    "' is not built: give the first layer an input shape, or call fit or build"));
    }
  }
  void require_compiled(const char* what) const {
    if (!loss_) throw ConfigError(detail::str(what, ": model '", name_, "' is not compiled: call compile() first"));
  }

  /// Keras's automatic names: conv2d, conv2d_1, ... unique within the model.
  void name_layer(Layer<T>& layer) {
    if (!layer.name().empty()) {
      for (const auto& l : layers_) {
        if (l->name() == layer.name()) throw ConfigError("model '" + name_ + "' already has a layer '" + layer.name() + "'");
      }
      return;
    }
    const std::string base = layer.base_name();
    int& count = name_counts_[base];
    const auto taken = [&](const std::string& n) {
      return std::any_of(layers_.begin(), layers_.end(), [&](const auto& l) { return l->name() == n; });
    };
    std::string name;
    do {
      name = count == 0 ? base : base + "_" + std::to_string(count);
      ++count;
    } while (taken(name));
    layer.set_name(name);
  }

  void check_inputs(const Tensor<T>& x, const char* what) {
    if (layers_.empty()) throw ConfigError(detail::str(what, ": model '", name_, "' has no layers"));
    if (x.rank() < 1 || x.dim(0) == 0) throw ShapeError(detail::str(what, ": empty dataset, x has shape ", x.shape()));
    build(x.shape().without_batch());
  }

  void check_data(const Tensor<T>& x, const Tensor<T>& y, const char* what) {
    check_inputs(x, what);
    if (y.rank() < 1 || y.dim(0) != x.dim(0)) {
      throw ShapeError(detail::str(what, ": x and y must hold the same number of samples, got x ", x.shape(),
                                   " and y ", y.shape()));
    }
    loss_->validate(y, layers_.back()->output_shape().size());
  }

  /// Once per compile: parameter list, optimizer state, fused softmax, first-layer input grad.
  void prepare_training() {
    if (compiled_layers_) return;
    require_built("fit");
    parameters();
    optimizer_->build(params_);
    for (auto& l : layers_) l->set_fused_softmax_grad(false);  // layers may have been added since
    Layer<T>& last = *layers_.back();
    fused_softmax_ = last.activation() == Activation::Softmax;
    last.set_fused_softmax_grad(fused_softmax_);
    layers_.front()->set_needs_input_grad(false);
    outputs_.assign(layers_.size(), nullptr);
    compiled_layers_ = true;
  }

  std::vector<std::pair<std::string, double>> epoch_metrics(double loss_sum, Index correct, Index seen) const {
    std::vector<std::pair<std::string, double>> m{{"loss", loss_sum / static_cast<double>(seen)}};
    if (!metrics_.empty()) m.emplace_back("accuracy", static_cast<double>(correct) / static_cast<double>(seen));
    return m;
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

  /// dst <- rows [start, start + b) of src.
  static void slice(const Tensor<T>& src, Index start, Index b, Tensor<T>& dst) {
    Shape s = src.shape();
    s[0] = b;
    dst.resize_for_overwrite(s);
    const Index row = src.size() / src.dim(0);
    std::copy(src.data() + start * row, src.data() + (start + b) * row, dst.data());
  }

  std::string name_;
  std::uint64_t seed_;
  Rng init_rng_, train_rng_;
  std::vector<std::unique_ptr<Layer<T>>> layers_;
  std::map<std::string, int> name_counts_;
  std::optional<Shape> input_shape_;
  std::vector<Parameter<T>> params_;
  std::unique_ptr<Loss<T>> loss_;
  std::unique_ptr<Optimizer<T>> optimizer_;
  std::vector<std::string> metrics_;
  bool compiled_layers_ = false;
  bool fused_softmax_ = false;
  // Reused across steps.
  Tensor<T> xb_, yb_, grad_;
  std::vector<Index> order_;  ///< the current epoch's sample order (reshuffled in place each epoch)
  const Tensor<T>* output_ = nullptr;
  std::vector<const Tensor<T>*> outputs_;  ///< every layer's output of the last training forward
  // Training progress, saved with the model.
  TrainingPosition position_;
  History history_;
  bool interrupted_ = false;
};

}  // namespace loom

#include "serialization.hpp"  // the definitions of save, load, to_bytes, save_weights, load_weights
