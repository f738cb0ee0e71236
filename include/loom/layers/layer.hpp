#pragma once
/// \file layer.hpp
/// `Layer<T>`, the interface every layer implements. It includes what layers
/// share: the enums Mode, Activation and Padding (enums.hpp), Parameter<T>
/// (parameter.hpp) and LOOM_OPTION (option.hpp).
///
/// Contract. A layer learns its per-sample input shape once, in `build`, and
/// fixes its parameters and scratch buffers then. `forward(x, mode)` writes
/// the layer's own output tensor and returns it; `backward(dy)` (after a
/// forward in `Mode::Train`) overwrites every parameter gradient and returns
/// the gradient with respect to the input. Returned references stay valid
/// until the next call on the same layer. A layer keeps whatever backward
/// needs (never a pointer to its caller's input), and reuses its buffers
/// across calls: in steady state, forward and backward allocate nothing.
///
/// A layer type that is to be saved and loaded also has a `class_name`, a
/// `config()` and a static `from_config(const Config&)`, and registers them
/// with `LOOM_REGISTER(Class)` beside its definition (see registry.hpp).

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../communicator.hpp"
#include "../config.hpp"
#include "../enums.hpp"
#include "../error.hpp"
#include "../option.hpp"
#include "../parameter.hpp"
#include "../random.hpp"
#include "../registry.hpp"
#include "../tensor.hpp"

namespace loom {

/// What a layer declares about itself to the fusion planner (fusion.hpp),
/// which fuses adjacent layers only by its own rules between the concrete
/// layers it knows and by these flags: a layer it does not know that
/// declares nothing (a user's own, by default) is never fused, and no
/// fusion steps over it.
struct FusionTraits {
  /// Its Mode::Inference forward returns its input unchanged (Dropout, the
  /// random augmentations): a layer absorbing the ones after it in inference
  /// may step over it.
  bool identity_in_inference = false;
  /// Its forward and backward multiply each element by one factor >= 0
  /// (Dropout): its output is positive exactly where its input is, or its
  /// gradient is 0 there, so a ReLU's derivative may be handed past it.
  bool scales_elementwise = false;
};

template <class T>
class Layer {
 public:
  using registry_base = Layer<T>;
  static constexpr const char* registry_kind = "layer";

  virtual ~Layer() = default;
  Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;
  Layer(Layer&&) noexcept = default;
  Layer& operator=(Layer&&) noexcept = default;

  /// Keras's class name, as `summary()` prints it ("Conv2D").
  virtual std::string type() const = 0;
  /// The stem of automatic names ("conv2d" gives conv2d, conv2d_1, ...).
  virtual std::string base_name() const = 0;

  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }

  /// Fixes the per-sample input shape (without the batch dimension), creates
  /// and initializes parameters from `rng`, and returns the per-sample output
  /// shape. Throws ShapeError, naming the layer, if it cannot take `input`.
  Shape build(const Shape& input, Rng& rng) {
    parameter_values_ = 0;
    output_shape_ = build_impl(input, rng);
    input_shape_ = input;
    built_ = true;
    return output_shape_;
  }
  bool built() const { return built_; }
  const Shape& input_shape() const { return input_shape_; }
  const Shape& output_shape() const { return output_shape_; }

  /// Computes the output for a batch `x` of shape (N, input_shape...).
  const Tensor<T>& forward(const Tensor<T>& x, Mode mode) {
    if (!built_) throw ConfigError(where() + ": forward() before build()");
    if (x.rank() != input_shape_.rank() + 1 || x.shape().without_batch() != input_shape_) {
      throw ShapeError(detail::str(where(), ": expected input ", input_shape_.str("N"), ", got ", x.shape()));
    }
    if (shares_parameters_ && mode == Mode::Train) {
      throw ConfigError(where() + ": it reads the weights of a Predictor (share_parameters_of) and cannot train");
    }
    batch_ = x.dim(0);
    last_mode_ = mode;
    forward_done_ = true;
    return forward_impl(x, mode);
  }

  /// Given dL/d(output) of the last forward (which must have run in
  /// Mode::Train), overwrites the parameter gradients and returns dL/d(input)
  /// (an empty tensor when `set_needs_input_grad(false)`).
  const Tensor<T>& backward(const Tensor<T>& dy) {
    if (!forward_done_ || last_mode_ != Mode::Train) {
      throw ConfigError(where() + ": backward() needs a forward() in Mode::Train first");
    }
    const Shape& out = fused_next_ ? fused_next_->output_shape() : output_shape_;
    if (dy.shape() != out.with_batch(batch_)) {
      throw ShapeError(detail::str(where(), ": expected output gradient ", out.with_batch(batch_), ", got ",
                                   dy.shape()));
    }
    return backward_impl(dy);
  }

  /// Trainable parameters and buffers, with names.
  virtual std::vector<Parameter<T>> parameters() { return {}; }

  Index count_params() { return count(false); }
  Index count_trainable_params() { return count(true); }

  /// The activation the layer applies last (Dense, Conv2D, and the activation layers).
  virtual Activation activation() const { return Activation::None; }

  /// When on and `activation()` is Softmax, `backward` takes dL/d(logits)
  /// (the fused, stable p - y of a cross-entropy loss) instead of dL/d(p).
  void set_fused_softmax_grad(bool on) { fused_softmax_grad_ = on; }
  bool fused_softmax_grad() const { return fused_softmax_grad_; }

  /// What the layer declares to the fusion planner (fusion.hpp), which
  /// decides every fusion between adjacent layers: see FusionTraits.
  virtual FusionTraits fusion_traits() const { return {}; }

  /// Training fusion (arranged by fusion.hpp's TrainingFusion for one step):
  /// the later layer whose work this one does in its own Mode::Train passes,
  /// or nullptr. While set, its Mode::Train forward returns that layer's
  /// output and its backward takes that output's gradient; the caller skips
  /// the other layer both ways. Only BatchNormalization sets it, taking a
  /// MaxPool2D (BatchNormalization::fuse_pool).
  const Layer* fused_next() const { return fused_next_; }

  /// The first layer of a model need not compute its input gradient.
  void set_needs_input_grad(bool on) { needs_input_grad_ = on; }
  bool needs_input_grad() const { return needs_input_grad_; }

  /// Restarts the layer's own random stream (used by Dropout).
  virtual void seed(std::uint64_t /*seed*/) {}
  /// Restarts it from the next value of `stream` (fit's reseeding): a layer
  /// holding other layers (a graph, model/functional.hpp) draws one for each.
  virtual void seed_from(Rng& stream) { seed(stream.next_u64()); }

  /// The layer's own random stream, if it has one (saved with the model so
  /// that training resumes exactly).
  virtual bool has_rng() const { return false; }
  virtual Rng::State rng_state() const { return {}; }
  virtual void set_rng_state(const Rng::State& /*state*/) {}
  /// Every random stream the layer holds, for the model file: its own, or,
  /// for a layer holding others (a graph), each of theirs in order.
  virtual std::vector<Rng::State> rng_states() const {
    return has_rng() ? std::vector<Rng::State>{rng_state()} : std::vector<Rng::State>{};
  }
  virtual void set_rng_states(const std::vector<Rng::State>& states) {
    if (states.size() != (has_rng() ? 1u : 0u)) {
      throw ConfigError(detail::str(where(), ": ", states.size(), " random streams given, it holds ", has_rng() ? 1 : 0));
    }
    if (!states.empty()) set_rng_state(states[0]);
  }

  /// Data-parallel training (FitOptions::distributed): the replicas whose
  /// batches together make the global batch, or null after the fit. Only a
  /// layer whose training statistics span the global batch uses it
  /// (BatchNormalization with `synchronized`).
  virtual void set_replicas(Communicator* /*replicas*/) {}
  /// A data-parallel step in which this replica holds no samples (a last
  /// batch smaller than the number of ranks): the layer takes part, with
  /// nothing, in whatever its forward and backward reduce across replicas.
  virtual void forward_without_samples() {}
  virtual void backward_without_samples() {}

  /// The layer's hyperparameters: what `from_config` needs to make it again.
  virtual Config config() const { return {}; }

  /// For Sequential's inference on several threads at once (predict,
  /// evaluate): a new, unbuilt layer of this type and configuration, made
  /// by the registry from type() and config() as a loaded model's layers
  /// are; nullptr for a type nobody registered. Sequential builds the copy,
  /// and before each use copies the parameters and buffers into it and
  /// calls copy_settings_to. Without a copy of every layer (nullptr, or an
  /// exception here or in the copy's build), the model splits each layer's
  /// work across the threads instead.
  virtual std::unique_ptr<Layer> inference_copy() const {
    const Registry<Layer>& registry = Registry<Layer>::global();
    return registry.has(type()) ? registry.create(type(), config()) : nullptr;
  }
  /// Gives an inference_copy of this layer the settings that are neither
  /// its configuration nor parameters but change its output, if only by
  /// rounding (Conv2D's algorithm; every layer's precision). An override
  /// calls this one first.
  virtual void copy_settings_to(Layer& copy) const { copy.set_precision(precision_); }

  /// The precision of this layer's products (Conv2D's, Dense's,
  /// Conv2DTranspose's GEMMs): set for every layer by a model's policy
  /// (Model::set_policy), which checks first that it can run here. Layers
  /// without products keep it and ignore it; a layer holding layers (a
  /// nested model) passes it on.
  virtual void set_precision(Precision p) { precision_ = p; }
  Precision precision() const { return precision_; }
  /// Called by the owner of a copy whose parameters and buffers nobody will
  /// change again (a Predictor's, which never hands them out): what
  /// inference derives from them may then be kept without checking, call
  /// after call, that they are still the ones it was derived from
  /// (Conv2D's Winograd transform of its kernel). Once called, training
  /// this layer is the owner's error.
  virtual void seal_parameters() {}
  /// Called by a Predictor on a session's copy of `source` (its
  /// inference_copy, built, with source sealed): from now on this layer
  /// reads its parameters, and what inference derives from them, from
  /// `source`, and frees its own, so that any number of sessions predict
  /// at once from one set of weights. `source` must outlive it and never
  /// change; this layer can no longer train (a Mode::Train forward throws).
  /// False when the type does not share (the default): the owner copies the
  /// parameters in instead (Inference::Copy::share).
  virtual bool share_parameters_of(const Layer& /*source*/) { return false; }

  /// Caps the parameter values the next `build` may create: a build that
  /// would create more throws ConfigError before allocating them. The model
  /// loader sets it to what the file holds, so a file cannot make a layer
  /// allocate more than its own size.
  void limit_parameter_values(Index max_values) { max_parameter_values_ = max_values; }
  Index parameter_value_limit() const { return max_parameter_values_; }

 protected:
  virtual Shape build_impl(const Shape& input, Rng& rng) = 0;
  virtual const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) = 0;
  virtual const Tensor<T>& backward_impl(const Tensor<T>& dy) = 0;
  /// Sets fused_next (for a layer whose kernels do that layer's work).
  void set_fused_next(const Layer* next) { fused_next_ = next; }

  /// "Conv2D 'conv2d_1'", the prefix of every message about this layer.
  std::string where() const { return type() + " '" + (name_.empty() ? base_name() : name_) + "'"; }

  /// Throws the ShapeError for an input this layer cannot take.
  [[noreturn]] void reject_input(const Shape& input, const std::string& expected) const {
    throw ShapeError(detail::str(where(), ": expected input ", expected, ", got ", input.str("None")));
  }

  /// A new, zeroed parameter of `shape`, counted against limit_parameter_values.
  /// Layers create their parameters (not their gradients or scratch) with it.
  Tensor<T> new_parameter(const Shape& shape) {
    double n = 1;  // in double: a product of absurd dimensions must not wrap around
    for (Index d : shape) n *= static_cast<double>(d);
    if (n > static_cast<double>(max_parameter_values_ - parameter_values_)) {
      throw ConfigError(detail::str(where(), ": its parameters would need more than the ", max_parameter_values_,
                                    " values allowed"));
    }
    parameter_values_ += shape.size();
    return Tensor<T>(shape);
  }

  /// share_parameters_of's checks: `source` as this layer's own type L,
  /// built for the same input, or null (then nothing is shared).
  template <class L>
  const L* share_source(const Layer& source) const {
    const auto* s = dynamic_cast<const L*>(&source);
    if (s == nullptr || !built_ || !s->built() || s->input_shape() != input_shape_) return nullptr;
    return s;
  }
  /// Called by a share_parameters_of that shares: training is refused from now on.
  void shares_parameters() { shares_parameters_ = true; }

  Index batch() const { return batch_; }
  bool skip_softmax_grad() const { return fused_softmax_grad_ && activation() == Activation::Softmax; }

  Tensor<T> empty_;  ///< returned by backward when no input gradient is needed

 private:
  Index count(bool trainable_only) {
    Index n = 0;
    for (const auto& p : parameters()) {
      if (!trainable_only || p.trainable()) n += p.value->size();
    }
    return n;
  }

  std::string name_;
  Shape input_shape_, output_shape_;
  bool built_ = false;
  bool forward_done_ = false;
  Mode last_mode_ = Mode::Inference;
  Index batch_ = 0;
  bool fused_softmax_grad_ = false;
  bool needs_input_grad_ = true;
  bool shares_parameters_ = false;  ///< see share_parameters_of
  const Layer* fused_next_ = nullptr;
  Index max_parameter_values_ = std::numeric_limits<Index>::max();
  Precision precision_ = Precision::Float32;
  Index parameter_values_ = 0;
};

/// A layer whose parameters' gradients another layer's backward computes,
/// one output row of dL/dz at a time as that layer makes them, so that the
/// full dL/dz is never stored (training fusion: Conv2D's direct kernel, for
/// the BatchNormalization after it; layers/fusion.hpp arranges it). The
/// rows are split over prepare_rows() threads by samples, as the layer's
/// own backward splits them, and come to each thread in order, so the sums
/// are the same bits as the layer's own backward.
template <class T>
class RowGradientSink {
 public:
  /// Before the threads start (one thread): sizes the scratch; returns the
  /// number of threads the rows must be split over.
  virtual int prepare_rows() = 0;
  /// In thread t, before its rows.
  virtual void begin_rows(int t) = 0;
  /// In thread t: output row r (image r / ho, row r % ho), its dL/dz at dz.
  virtual void add_row(int t, Index r, const T* dz) = 0;
  /// In every thread, after a barrier that follows the last row: the
  /// gradients completed from the threads' shares.
  virtual void end_rows(int t, int nt) = 0;

 protected:
  ~RowGradientSink() = default;
};

/// A layer whose batch statistics the layer before it sums in its own
/// Mode::Train forward, a band of output rows at a time while the band is
/// still in cache, so that the output is read once less (training fusion:
/// Conv2D's direct kernel, for the BatchNormalization after it; layers/
/// fusion.hpp arranges it). The sink takes the sums only when the rows
/// come to its own threads as its own forward would split them, in order,
/// so the statistics are the same bits.
template <class T>
class RowStatisticsSink {
 public:
  /// Before the threads start (one thread): whether the sink takes the
  /// sums of `output`, `rows` rows to be split over `threads` threads as
  /// detail::split(rows, t, threads); if so, each thread's sums start at 0.
  virtual bool begin_statistics(const T* output, Index rows, int threads) = 0;
  /// In thread t: the next `count` rows of its share, at `rows`.
  virtual void add_statistics_rows(int t, const T* rows, Index count) = 0;

 protected:
  ~RowStatisticsSink() = default;
};

}  // namespace loom
