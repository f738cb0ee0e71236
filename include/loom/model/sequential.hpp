#pragma once
/// \file sequential.hpp
/// `Sequential<T>`: a stack of layers with Keras's add / build / summary /
/// predict / evaluate, and Keras's compile / fit / train_step / save / load.
///
/// The model owns its layers and their parameters, builds them, and runs
/// them forward. Training lives in the model's `Trainer<T>` (trainer.hpp):
/// `compile` gives it the loss, optimizer and metrics, `fit` and
/// `train_step` hand it the model. Saving and loading go through the model
/// file (model_file.hpp, docs/file-format.md).

#include <algorithm>
#include <cstdint>
#include <exception>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../io.hpp"
#include "../layers/fusion.hpp"
#include "../layers/layer.hpp"
#include "../losses.hpp"
#include "../metrics.hpp"
#include "../optimizers.hpp"
#include "../parallel.hpp"
#include "fit_options.hpp"
#include "history.hpp"
#include "model_file.hpp"
#include "summary.hpp"
#include "trainer.hpp"

namespace loom {

template <class T>
class Sequential {
 public:
  /// `seed` drives weight initialization, shuffling and dropout: the same
  /// seed (and thread count) gives the same model.
  explicit Sequential(std::uint64_t seed = 0, std::string name = "sequential")
      : name_(std::move(name)), seed_(seed), init_rng_(seed), trainer_(seed) {}

  Sequential(Sequential&&) noexcept = default;
  Sequential& operator=(Sequential&&) noexcept = default;

  const std::string& name() const { return name_; }
  std::uint64_t seed() const { return seed_; }

  // ---- Layers ---------------------------------------------------------------

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
    copies_.clear();
    no_copies_ = false;
    trainer_.invalidate();
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

  // ---- Inference ------------------------------------------------------------

  /// Runs every layer on a batch; returns the last layer's output. In
  /// inference a layer that can absorb the work of the ones after it (a
  /// Conv2D, then a BatchNormalization and a MaxPool2D: InferenceFusion in
  /// layers/fusion.hpp) does it in its own output pass, and they are
  /// skipped: the same function up to rounding, with fewer passes over memory.
  const Tensor<T>& forward(const Tensor<T>& x, Mode mode) {
    check_inputs(x, "forward");
    return run_layers(layers_, x, mode);
  }

  /// Inference (predict, evaluate) runs the layers on at most this many
  /// samples at a time, whatever the batch_size: 32 of the notebook's
  /// images keep their activations in cache where 1,000 do not (15,300
  /// against 13,300 images/s on the development machine, AVX-512, in one
  /// run). In inference a sample's outputs depend on that sample alone: with
  /// loom's own float GEMM (x86 with AVX2 or AVX-512) they are the same bit
  /// for bit whatever the batch and whichever thread runs it; with Eigen's
  /// kernel, whose blocking depends on the sizes, the same to rounding (tested).
  static constexpr Index kInferenceChunk = 32;

  /// The model's outputs for x, computed in batches in inference mode.
  Tensor<T> predict(const Tensor<T>& x, Index batch_size = 32) {
    check_inputs(x, "predict");
    if (batch_size < 1) throw ConfigError(detail::str("predict: batch_size must be >= 1, got ", batch_size));
    const Index n = x.dim(0);
    Tensor<T> result(layers_.back()->output_shape().with_batch(n));
    const Index width = result.size() / std::max<Index>(n, 1);
    infer_chunks(x, 0, n, std::min(batch_size, kInferenceChunk),
                 [&](Index /*chunk*/, Index start, const Tensor<T>& p, Tensor<T>& /*scratch*/) {
                   std::copy(p.begin(), p.end(), result.data() + start * width);
                 });
    return result;
  }

  /// Loss and accuracy over (x, y) in inference mode, with the compiled loss.
  Evaluation evaluate(const Tensor<T>& x, const Tensor<T>& y, Index batch_size = 32) {
    trainer_.check_data(*this, x, y, "evaluate");
    if (batch_size < 1) throw ConfigError(detail::str("evaluate: batch_size must be >= 1, got ", batch_size));
    const Index n = x.dim(0);
    const auto [sum, correct] = evaluation_sums(x, y, 0, n, batch_size);
    return {sum / static_cast<double>(n), static_cast<double>(correct) / static_cast<double>(n)};
  }

  /// What `evaluate` divides, over the samples [begin, end) of checked data:
  /// the loss times the samples, and the correct predictions. (A distributed
  /// fit splits validation among its ranks with it.) The sums run over
  /// chunks of at most kInferenceChunk samples, in order, so they are the
  /// same whatever the batch_size (up to rounding) and the thread count.
  std::pair<double, Index> evaluation_sums(const Tensor<T>& x, const Tensor<T>& y, Index begin, Index end,
                                           Index batch_size) {
    const Loss<T>& loss = trainer_.loss();
    const Index step = std::min(batch_size, kInferenceChunk), chunks = (end - begin + step - 1) / step;
    if (static_cast<Index>(chunk_sums_.size()) < chunks) chunk_sums_.resize(static_cast<std::size_t>(chunks));
    infer_chunks(x, begin, end, step, [&](Index chunk, Index start, const Tensor<T>& p, Tensor<T>& yb) {
      slice(y, start, p.dim(0), yb);
      chunk_sums_[static_cast<std::size_t>(chunk)] = {loss.value(p, yb) * static_cast<double>(p.dim(0)),
                                                      count_correct(p, yb, loss)};
    });
    double sum = 0;
    Index correct = 0;
    for (Index c = 0; c < chunks; ++c) {
      sum += chunk_sums_[static_cast<std::size_t>(c)].first;
      correct += chunk_sums_[static_cast<std::size_t>(c)].second;
    }
    return {sum, correct};
  }

  // ---- Training (the Trainer's, see trainer.hpp) ----------------------------

  /// Sets the loss, the optimizer and the metrics.
  void compile(std::unique_ptr<Loss<T>> loss, std::unique_ptr<Optimizer<T>> optimizer,
               const std::vector<std::string>& metrics = {}) {
    trainer_.compile(std::move(loss), std::move(optimizer), metrics);
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

  /// Trains for `options.epochs()` epochs on x (N, input...) and y (targets
  /// as the loss expects them). Returns the history of every epoch so far.
  History fit(const Tensor<T>& x, const Tensor<T>& y, const FitOptions<T>& options = {}) {
    return trainer_.fit(*this, x, y, options);
  }
  /// One optimizer step on the batch (x, y); returns the batch's mean loss.
  double train_step(const Tensor<T>& x, const Tensor<T>& y) { return trainer_.train_step(*this, x, y); }

  Trainer<T>& trainer() { return trainer_; }
  const Trainer<T>& trainer() const { return trainer_; }
  bool compiled() const { return trainer_.compiled(); }
  Loss<T>& loss() { return trainer_.loss(); }
  const Loss<T>& loss() const { return trainer_.loss(); }
  Optimizer<T>& optimizer() { return trainer_.optimizer(); }
  const Optimizer<T>& optimizer() const { return trainer_.optimizer(); }
  /// The history of every epoch trained so far (kept across fit(resume) and save/load).
  const History& history() const { return trainer_.history(); }
  const TrainingPosition& position() const { return trainer_.position(); }
  /// True when the last fit stopped at a stop_flag, mid-epoch.
  bool interrupted() const { return trainer_.interrupted(); }
  /// The output of the last training batch.
  const Tensor<T>& last_output() const { return trainer_.last_output(); }

  // ---- Files (model_file.hpp) -----------------------------------------------

  /// Saves architecture, parameters, buffers and, with `include_optimizer`,
  /// the trainer's state (loss, optimizer, position, history, callbacks) to
  /// resume exactly, to one file written to a temporary name in the same
  /// folder and renamed into place. Throws ConfigError at once for a layer
  /// type that is not registered (it could never be loaded).
  void save(const std::string& path, bool include_optimizer = true) const {
    write_file_atomically(path, to_bytes(include_optimizer));
  }
  /// The model (compiled, if saved with its optimizer) from a file by save().
  static Sequential load(const std::string& path) { return load_bytes(detail::read_whole_file(path), path); }
  /// load() from the bytes of a file; `source` names them in errors.
  static Sequential load_bytes(const std::string& bytes, const std::string& source) {
    return detail::ModelFile<T>::read(bytes, source);
  }
  /// The bytes save() writes.
  std::string to_bytes(bool include_optimizer = true) const {
    return detail::ModelFile<T>::write(*this, include_optimizer, false);
  }
  /// Parameters and buffers only, into / from a model of the same architecture.
  void save_weights(const std::string& path) const {
    write_file_atomically(path, detail::ModelFile<T>::write(*this, false, true));
  }
  void load_weights(const std::string& path) {
    detail::ModelFile<T>::read_weights(*this, detail::read_whole_file(path), path);
  }

 private:
  friend struct detail::ModelFile<T>;
  friend class Trainer<T>;

  void require_built(const char* what) const {
    if (layers_.empty()) throw ConfigError(detail::str(what, ": model '", name_, "' has no layers"));
    if (!input_shape_) {
      throw ConfigError(detail::str(what, ": model '", name_,
                                    "' is not built: give the first layer an input shape, or call fit or build"));
    }
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

  /// A batch of inputs the model can take: builds the model for it if needed.
  void check_inputs(const Tensor<T>& x, const char* what) {
    if (layers_.empty()) throw ConfigError(detail::str(what, ": model '", name_, "' has no layers"));
    if (x.rank() < 1 || x.dim(0) == 0) throw ShapeError(detail::str(what, ": empty dataset, x has shape ", x.shape()));
    build(x.shape().without_batch());
  }

  /// Runs `layers` on a batch; see forward.
  static const Tensor<T>& run_layers(std::vector<std::unique_ptr<Layer<T>>>& layers, const Tensor<T>& x, Mode mode) {
    const Tensor<T>* out = &x;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      InferenceFusion<T> fusion(layers, i, mode);  // ends with the forward, also when it throws
      out = &layers[i]->forward(*out, mode);
      i += fusion.taken();
    }
    return *out;
  }

  /// Inference over the samples [begin, end) of x, `step` at a time: calls
  /// done(chunk, start, output, scratch) for each chunk (numbered from 0,
  /// starting at sample `start`), with a tensor `done` may use as it likes.
  ///
  /// With several threads and at least two chunks for each, every thread
  /// runs whole chunks on its own copy of the layers (InferenceCopy), one
  /// thread to a chunk: no barrier between the layers, and a thread whose
  /// core runs faster takes more chunks (detail::WorkQueue). Otherwise the
  /// model's own layers run the chunks in turn, each splitting its work
  /// across the threads. A chunk's output is the same either way (see
  /// kInferenceChunk). `done` runs once per chunk, maybe on another thread
  /// than the caller's, so it must write only what belongs to its chunk.
  template <class Done>
  void infer_chunks(const Tensor<T>& x, Index begin, Index end, Index step, Done&& done) {
    const Index chunks = (end - begin + step - 1) / step;
    const int threads = num_threads();
    if (threads < 2 || chunks < 2 * Index(threads) || !prepare_copies(threads)) {
      for (Index c = 0; c < chunks; ++c) {
        const Index start = begin + c * step;
        slice(x, start, std::min(step, end - start), xb_);
        done(c, start, run_layers(layers_, xb_, Mode::Inference), yb_);
      }
      return;
    }
    chunk_queue_.reset(chunks, 1, threads);
    std::exception_ptr error;
    detail::parallel(threads, [&](int t, int /*nt*/) {
      try {
        set_num_threads(1);  // this thread's own: its layers' work is not split again
        InferenceCopy& copy = copies_[static_cast<std::size_t>(t)];
        copy.take_parameters(params_, layers_);
        for (detail::Range c = chunk_queue_.take(t); c.size() > 0; c = chunk_queue_.take(t)) {
          const Index start = begin + c.begin * step;
          slice(x, start, std::min(step, end - start), copy.xb);
          done(c.begin, start, run_layers(copy.layers, copy.xb, Mode::Inference), copy.yb);
        }
      } catch (...) {
#pragma omp critical(loom_inference_error)
        if (!error) error = std::current_exception();
      }
    });
    if (error) std::rethrow_exception(error);
  }

  /// A thread's copy of the model's layers, for infer_chunks, with its own
  /// batch buffers. Its layers hold their own outputs and scratch; the
  /// parameters are the model's, copied in before each use (about 1 MB for
  /// the notebook's model, against 2 ms for a chunk of 32 images).
  struct InferenceCopy {
    std::vector<std::unique_ptr<Layer<T>>> layers;
    std::vector<Parameter<T>> params;
    Tensor<T> xb, yb;

    void take_parameters(const std::vector<Parameter<T>>& from, const std::vector<std::unique_ptr<Layer<T>>>& model) {
      for (std::size_t i = 0; i < params.size(); ++i) {
        std::copy(from[i].value->begin(), from[i].value->end(), params[i].value->begin());
      }
      for (std::size_t i = 0; i < layers.size(); ++i) model[i]->copy_settings_to(*layers[i]);
    }
  };

  /// Makes `threads` copies of the layers, if not made yet, and the model's
  /// parameter list (params_) before the threads read it. False when a
  /// layer has no inference_copy, cannot be made again from its config
  /// (a user's class whose from_config throws), or its copy's parameters do
  /// not match its own: then the model runs its own layers, as it can.
  bool prepare_copies(int threads) {
    if (no_copies_) return false;
    const std::vector<Parameter<T>>& mine = parameters();
    while (copies_.size() < static_cast<std::size_t>(threads)) {
      std::optional<InferenceCopy> copy = make_copy(mine);
      if (!copy) {
        no_copies_ = true;
        copies_.clear();
        return false;
      }
      copies_.push_back(std::move(*copy));
    }
    return true;
  }

  std::optional<InferenceCopy> make_copy(const std::vector<Parameter<T>>& mine) const {
    InferenceCopy copy;
    Rng rng;  // the copy's initial weights are overwritten before use
    try {
      for (const auto& layer : layers_) {
        std::unique_ptr<Layer<T>> twin = layer->inference_copy();
        if (!twin) return std::nullopt;
        twin->set_name(layer->name());
        twin->build(layer->input_shape(), rng);
        for (const auto& p : twin->parameters()) copy.params.push_back(p);
        copy.layers.push_back(std::move(twin));
      }
    } catch (const std::exception&) {  // the model's own layers still work
      return std::nullopt;
    }
    const bool same = copy.params.size() == mine.size() &&
                      std::equal(mine.begin(), mine.end(), copy.params.begin(),
                                 [](const auto& a, const auto& b) { return a.value->shape() == b.value->shape(); });
    if (!same) return std::nullopt;
    return copy;
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
  Rng init_rng_;  ///< weight initialization
  std::vector<std::unique_ptr<Layer<T>>> layers_;
  std::map<std::string, int> name_counts_;
  std::optional<Shape> input_shape_;
  std::vector<Parameter<T>> params_;
  Tensor<T> xb_, yb_;  ///< reused by predict and evaluate
  std::vector<InferenceCopy> copies_;  ///< infer_chunks' threads' layers, made when first needed
  bool no_copies_ = false;             ///< a layer cannot be copied
  detail::WorkQueue chunk_queue_;
  std::vector<std::pair<double, Index>> chunk_sums_;  ///< evaluation_sums' loss sum and correct count per chunk
  Trainer<T> trainer_;
};

}  // namespace loom
