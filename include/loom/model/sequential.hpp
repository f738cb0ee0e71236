#pragma once
/// \file sequential.hpp
/// `Sequential<T>`: a stack of layers, with Keras's add / build / summary /
/// predict and, from `Model<T>` (model.hpp), compile / fit / train_step /
/// evaluate; save / load through the model file (model_file.hpp,
/// docs/file-format.md).
///
/// The model owns its layers and their parameters, builds them, and runs
/// them forward; inference over a dataset runs on every thread
/// (inference.hpp), training on the model's Trainer (trainer.hpp).

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../io.hpp"
#include "../layers/layer.hpp"
#include "../metrics.hpp"
#include "inference.hpp"
#include "model.hpp"
#include "model_file.hpp"
#include "summary.hpp"

namespace loom {

template <class T>
class Sequential : public Model<T> {
 public:
  /// `seed` drives weight initialization, shuffling and dropout: the same
  /// seed (and thread count) gives the same model.
  explicit Sequential(std::uint64_t seed = 0, std::string name = "sequential")
      : Model<T>(seed), name_(std::move(name)), seed_(seed), init_rng_(seed) {}

  Sequential(Sequential&&) noexcept = default;
  Sequential& operator=(Sequential&&) noexcept = default;

  const std::string& name() const override { return name_; }
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
    layer->set_precision(this->policy());
    if (input_shape_) {
      const Shape in = layers_.empty() ? *input_shape_ : layers_.back()->output_shape();
      layer->build(in, init_rng_);
    }
    layers_.push_back(std::move(layer));
    params_.clear();
    inference_.invalidate();
    this->trainer().invalidate();
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
  const std::vector<std::unique_ptr<Layer<T>>>& layers() const override { return layers_; }

  /// Per-sample shapes of the input and output.
  Shape input_shape() const { return require_built("input_shape"), *input_shape_; }
  Shape output_shape() const override { return require_built("output_shape"), layers_.back()->output_shape(); }

  /// Every parameter and buffer of every layer, in layer order.
  const std::vector<Parameter<T>>& parameters() override {
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

  /// Runs every layer on a batch; returns the last layer's output (in
  /// inference with the fusions of Inference::run).
  const Tensor<T>& forward(const Tensor<T>& x, Mode mode) {
    check_inputs(x, "forward");
    return Inference<T>::run(layers_, x, mode);
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
    return inference_.outputs(layers_, parameters(), x, batch_size, kInferenceChunk);
  }

  /// What `evaluate` divides (see Model::evaluation_sums; a distributed fit
  /// splits validation among its ranks with it). The sums run over chunks of
  /// at most kInferenceChunk samples, in order, so they are the same
  /// whatever the batch_size (up to rounding) and the thread count.
  std::pair<double, Index> evaluation_sums(const Tensor<T>& x, const Tensor<T>& y, Index begin, Index end,
                                           Index batch_size, Tensor<T>* predictions) override {
    const Loss<T>& loss = this->trainer().loss();
    const Index step = std::min(batch_size, kInferenceChunk), chunks = (end - begin + step - 1) / step;
    if (static_cast<Index>(chunk_sums_.size()) < chunks) chunk_sums_.resize(static_cast<std::size_t>(chunks));
    const auto sums = [&](Index chunk, Index start, const Tensor<T>& p, Tensor<T>& yb) {
      if (predictions) std::copy(p.begin(), p.end(), predictions->data() + start * (p.size() / p.dim(0)));
      Inference<T>::slice(y, start, p.dim(0), yb);
      chunk_sums_[static_cast<std::size_t>(chunk)] = {loss.value(p, yb) * static_cast<double>(p.dim(0)),
                                                      count_correct(p, yb, loss)};
    };
    inference_.chunks(layers_, parameters(), x, begin, end, step, sums);
    double sum = 0;
    Index correct = 0;
    for (Index c = 0; c < chunks; ++c) {
      sum += chunk_sums_[static_cast<std::size_t>(c)].first;
      correct += chunk_sums_[static_cast<std::size_t>(c)].second;
    }
    return {sum, correct};
  }

  // ---- Files (model_file.hpp) -----------------------------------------------

  /// Saves architecture, parameters, buffers and, with `include_optimizer`,
  /// the trainer's state (loss, optimizer, position, history, callbacks) to
  /// resume exactly, to one file written to a temporary name in the same
  /// folder and renamed into place. Throws ConfigError at once for a layer
  /// type that is not registered (it could never be loaded).
  void save(const std::string& path, bool include_optimizer = true) const override {
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
  void save_weights(const std::string& path) const override {
    write_file_atomically(path, detail::ModelFile<T>::write(*this, false, true));
  }
  void load_weights(const std::string& path) {
    detail::ModelFile<T>::read_weights(*this, detail::read_whole_file(path), path);
  }

  /// The weight-initialization stream (saved with the model).
  Rng::State init_rng_state() const { return init_rng_.state(); }
  void set_init_rng_state(const Rng::State& s) { init_rng_.set_state(s); }

  /// Throws ConfigError, naming `what`, unless the model has layers and an input shape.
  void require_built(const char* what) const {
    if (layers_.empty()) throw ConfigError(detail::str(what, ": model '", name_, "' has no layers"));
    if (!input_shape_) {
      throw ConfigError(detail::str(what, ": model '", name_,
                                    "' is not built: give the first layer an input shape, or call fit or build"));
    }
  }

  /// A batch of inputs the model can take: builds the model for it if needed.
  void check_inputs(const Tensor<T>& x, const char* what) override {
    if (layers_.empty()) throw ConfigError(detail::str(what, ": model '", name_, "' has no layers"));
    if (x.rank() < 1 || x.dim(0) == 0) throw ShapeError(detail::str(what, ": empty dataset, x has shape ", x.shape()));
    build(x.shape().without_batch());
  }

 private:
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

  std::string name_;
  std::uint64_t seed_;
  Rng init_rng_;  ///< weight initialization
  std::vector<std::unique_ptr<Layer<T>>> layers_;
  std::map<std::string, int> name_counts_;
  std::optional<Shape> input_shape_;
  std::vector<Parameter<T>> params_;
  Inference<T> inference_;  ///< predict's and evaluate's threads
  std::vector<std::pair<double, Index>> chunk_sums_;  ///< evaluation_sums' loss sum and correct count per chunk
};

}  // namespace loom
