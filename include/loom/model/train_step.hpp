#pragma once
/// \file train_step.hpp
/// `TrainStep<T>`: one training step on a chain of layers, below both the
/// fit loop (trainer.hpp) and the data-parallel replicas (replicas.hpp):
/// the batch gathered from the dataset, the fused forward and backward, the
/// loss and its gradient, and the guard against a loss that is not finite.
/// The optimizer's update is the caller's: a replica sums the gradients
/// across ranks first.
///
/// Everything a step touches is reused from step to step: after the first
/// step at a batch size, a step allocates nothing.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../layers/fusion.hpp"
#include "../layers/layer.hpp"
#include "../losses.hpp"
#include "../tensor.hpp"

namespace loom {

template <class T>
class TrainStep {
 public:
  using Layers = std::vector<std::unique_ptr<Layer<T>>>;

  /// Once per compile or change of layers: the fused softmax gradient when
  /// the last layer's softmax meets a cross-entropy on probabilities, and no
  /// input gradient for the first layer.
  void prepare(const Layers& layers, const Loss<T>& loss) {
    for (const auto& l : layers) l->set_fused_softmax_grad(false);  // layers may have been added since
    Layer<T>& last = *layers.back();
    fused_softmax_ = last.activation() == Activation::Softmax && !loss.from_logits();
    last.set_fused_softmax_grad(fused_softmax_);
    layers.front()->set_needs_input_grad(false);
    outputs_.assign(layers.size(), nullptr);
  }

  /// The batch's inputs and targets: the rows `idx[0..b)` of x and y.
  void gather(const Tensor<T>& x, const Tensor<T>& y, const Index* idx, Index b) {
    gather_rows(x, idx, b, xb_);
    gather_rows(y, idx, b, yb_);
  }
  const Tensor<T>& inputs() const { return xb_; }
  const Tensor<T>& targets() const { return yb_; }

  /// Forward in Mode::Train, the loss and its gradient (times `grad_scale`),
  /// backward: every parameter gradient written; returns the batch's mean
  /// loss. With `guard`, a loss that is not finite throws NumericError naming
  /// the first layer whose output is not finite, before backward runs.
  ///
  /// The layers fuse as the planner arranges for the step (TrainingFusion,
  /// layers/fusion.hpp): a layer that does the next one's work in its own
  /// passes does, both ways, and the next is skipped; a ReLU's derivative
  /// may be applied by a later layer.
  double forward_backward(const Layers& layers, const Loss<T>& loss, const Tensor<T>& x, const Tensor<T>& y,
                          bool guard, T grad_scale) {
    TrainingFusion<T> fusion(layers);  // for the step, also when it throws
    output_ = &train_forward(layers, fusion, x, outputs_.data());
    const double value = loss.gradient(*output_, y, grad_, fused_softmax_);
    if (guard && !std::isfinite(value)) throw NumericError(describe_non_finite(layers, x, value));
    if (grad_scale != T(1)) {
      for (T& g : grad_) g *= grad_scale;
    }
    train_backward(layers, fusion, grad_);
    return value;
  }

  /// The model's output for the last batch.
  const Tensor<T>& output() const { return *output_; }

  /// dst <- the rows `idx[0..b)` of src.
  static void gather_rows(const Tensor<T>& src, const Index* idx, Index b, Tensor<T>& dst) {
    Shape s = src.shape();
    s[0] = b;
    dst.resize_for_overwrite(s);
    const Index row = src.size() / src.dim(0);
    for (Index i = 0; i < b; ++i) {
      std::memcpy(dst.data() + i * row, src.data() + idx[i] * row, sizeof(T) * static_cast<std::size_t>(row));
    }
  }

 private:
  /// Which of the input and the layers' outputs of the last forward first holds a value that is not finite.
  std::string describe_non_finite(const Layers& layers, const Tensor<T>& x, double loss) const {
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

  bool fused_softmax_ = false;
  Tensor<T> xb_, yb_, grad_;
  const Tensor<T>* output_ = nullptr;
  std::vector<const Tensor<T>*> outputs_;  ///< every layer's output of the last forward
};

}  // namespace loom
