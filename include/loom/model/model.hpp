#pragma once
/// \file model.hpp
/// `Model<T>`: what every model is, as Keras's `keras.Model` is the base of
/// `Sequential` and of functional models. A model says what its layers are,
/// how it checks its inputs, how it scores a dataset and how it saves
/// itself (the pure virtual functions below); compile, fit, train_step and
/// evaluate are the same for every model and live here, on the model's
/// Trainer (trainer.hpp), which sees the model only through this interface.
/// Callbacks are given the model as a `Model<T>&`.

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../kernels/bf16_gemm.hpp"
#include "../layers/layer.hpp"
#include "../losses.hpp"
#include "../metrics.hpp"
#include "../optimizers.hpp"
#include "fit_options.hpp"
#include "history.hpp"
#include "trainer.hpp"

namespace loom {

template <class T>
class Model {
 public:
  virtual ~Model() = default;

  // ---- What each kind of model defines ---------------------------------------

  virtual const std::string& name() const = 0;
  /// Every layer once, in the order a forward pass runs them.
  virtual const std::vector<std::unique_ptr<Layer<T>>>& layers() const = 0;
  /// Every parameter and buffer of every layer, in layer order.
  virtual const std::vector<Parameter<T>>& parameters() = 0;
  /// Per-sample shape of the output.
  virtual Shape output_shape() const = 0;
  /// Checks a batch of inputs (ShapeError, ConfigError), building the model
  /// for their shape if it is not built yet. `what` names the caller in errors.
  virtual void check_inputs(const Tensor<T>& x, const char* what) = 0;
  /// What `evaluate` divides, over the samples [begin, end) of checked data:
  /// the loss times the samples, and the correct predictions. With
  /// `predictions`, the outputs it scored go to its rows [begin, end) too.
  virtual std::pair<double, Index> evaluation_sums(const Tensor<T>& x, const Tensor<T>& y, Index begin, Index end,
                                                   Index batch_size, Tensor<T>* predictions) = 0;
  /// Saves the model (with its training state, unless include_optimizer is false) to one file.
  virtual void save(const std::string& path, bool include_optimizer = true) const = 0;
  /// Saves the parameters and buffers only.
  virtual void save_weights(const std::string& path) const = 0;

  // ---- Precision ---------------------------------------------------------------

  /// The model's precision policy, Keras's dtype policy for every layer:
  /// Float32, or MixedBFloat16 (Keras's "mixed_bfloat16": the convolutions'
  /// and Dense layers' products in bfloat16 operands with float32 sums;
  /// weights, optimizer state, BatchNormalization and everything else in
  /// float32). Saved with the model. Refused (ConfigError, one line saying
  /// why) for a double model, and where this build or CPU has no
  /// AVX512_BF16. Layers added later take it too.
  void set_policy(Precision p) {
    if (p == Precision::MixedBFloat16) {
      if (!std::is_same_v<T, float>) throw ConfigError("mixed_bfloat16: a policy for float models, not double ones");
      if (!detail::bf16_supported()) {
        throw ConfigError("mixed_bfloat16 cannot run here: " + detail::bf16_unsupported_reason());
      }
    }
    policy_ = p;
    for (const auto& l : layers()) l->set_precision(p);
  }
  /// set_policy by Keras's name: "float32" or "mixed_bfloat16".
  void set_policy(const std::string& name) { set_policy(precision_from(name)); }
  Precision policy() const { return policy_; }

  // ---- Training, the same for every model ------------------------------------

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

  /// Loss and accuracy over (x, y) in inference mode, with the compiled loss
  /// (plus the weight regularizers' penalties, as Keras's evaluate reports it).
  Evaluation evaluate(const Tensor<T>& x, const Tensor<T>& y, Index batch_size = 32) {
    return evaluate_checked(x, y, batch_size, nullptr);
  }
  /// evaluate, keeping the outputs it scored in `predictions` (resized to
  /// what predict(x, batch_size) returns, and the same bit for bit): the
  /// loss, the accuracy and the predictions of one pass over x, where
  /// Keras's evaluate then predict make two.
  Evaluation evaluate(const Tensor<T>& x, const Tensor<T>& y, Index batch_size, Tensor<T>& predictions) {
    return evaluate_checked(x, y, batch_size, &predictions);
  }

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

 protected:
  /// The training stream starts from the model's seed.
  explicit Model(std::uint64_t seed) : trainer_(seed) {}
  Model(Model&&) noexcept = default;
  Model& operator=(Model&&) noexcept = default;

 private:
  Evaluation evaluate_checked(const Tensor<T>& x, const Tensor<T>& y, Index batch_size, Tensor<T>* predictions) {
    trainer_.check_data(*this, x, y, "evaluate");
    if (batch_size < 1) throw ConfigError(detail::str("evaluate: batch_size must be >= 1, got ", batch_size));
    const Index n = x.dim(0);
    if (predictions) predictions->resize(output_shape().with_batch(n));
    const auto [sum, correct] = evaluation_sums(x, y, 0, n, batch_size, predictions);
    // Keras's test step adds the weight regularizers' penalties to the loss, as its train step does.
    return {sum / static_cast<double>(n) + regularization_penalty(parameters()),
            static_cast<double>(correct) / static_cast<double>(n)};
  }

  Trainer<T> trainer_;
  Precision policy_ = Precision::Float32;
};

}  // namespace loom
