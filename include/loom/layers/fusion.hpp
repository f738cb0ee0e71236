#pragma once
/// \file fusion.hpp
/// The fusion planner: the one place that decides which adjacent layers
/// fuse, in training and in inference. It reads what a layer declares of
/// itself (Layer::fusion_traits) and applies rules between the concrete
/// layers it knows; the layers keep the fused kernels and are told what to
/// do through setters of their own (Conv2D::absorb, BatchNormalization::
/// fuse_pool, Conv2D::set_relu_grad_left, BatchNormalization::
/// set_input_relu_grad). A layer it does not know is never fused.
///
/// - Inference (InferenceFusion, around each layer's forward): a Conv2D
///   without softmax takes, in this order, the layers after it that are
///   identity_in_inference, one BatchNormalization (applied in its
///   epilogue) and a MaxPool2D it can pool (Conv2D::can_pool), stepping
///   over identities between them; the model skips the layers taken. A
///   QuantizedConv2D (whose BatchNormalization loom::quantize folded in
///   already) takes identities and then a MaxPool2D it can pool
///   (QuantizedConv2D::can_pool).
/// - Training (TrainingFusion, around each step): a BatchNormalization on
///   images takes the MaxPool2D right after it when its windows tile the
///   image; then each Conv2D ending in a ReLU, not itself taken, leaves its
///   derivative to the first layer after it past layers that
///   scales_elementwise, when that layer runs its own backward and is a
///   BatchNormalization that computes its input gradient. A Conv2D
///   leaves its weights' gradients to such a BatchNormalization fused with
///   its pooling (fusion::leave_weights_grad), and a Conv2D running its
///   direct kernel sums the batch statistics of a BatchNormalization right
///   after it (fusion::sum_statistics).
///
/// Every arrangement lasts one forward (inference) or one step (training)
/// and is undone when the planner object goes, also by an exception.

#include <cstddef>
#include <memory>
#include <vector>

#include "batch_normalization.hpp"
#include "conv2d.hpp"
#include "layer.hpp"
#include "max_pool2d.hpp"
#include "quantized.hpp"

namespace loom {
namespace fusion {

/// `Layer<T>` in a parameter that must not take part in deducing T (so
/// that nullptr can be passed for it).
template <class T>
struct NotDeduced {
  using type = T;
};
template <class T>
using LayerArg = typename NotDeduced<Layer<T>>::type;

// ---- Inference --------------------------------------------------------------

/// Offers `layer` the next layer after those it has taken, for its next
/// Mode::Inference forward; returns whether it took it (and so whether the
/// one after may be offered). nullptr ends the offer and undoes it. Only a
/// Conv2D whose activation is in its epilogue (none, ReLU) takes anything: layers identity in inference, a
/// BatchNormalization (before any pooling, once) and then a MaxPool2D it
/// can pool, after which it takes nothing more.
template <class T>
bool absorb_next_in_inference(Layer<T>& layer, LayerArg<T>* next) {
  if (auto* q = dynamic_cast<QuantizedConv2D<T>*>(&layer)) {  // identities, then a MaxPool2D it can pool
    if (!next) {
      q->absorb_pool(nullptr);
      return false;
    }
    if (q->pooled()) return false;
    if (next->fusion_traits().identity_in_inference) return true;
    auto* pool = dynamic_cast<MaxPool2D<T>*>(next);
    if (!pool || !q->can_pool(*pool)) return false;
    q->absorb_pool(pool);
    return true;
  }
  auto* conv = dynamic_cast<Conv2D<T>*>(&layer);
  if (!conv) return false;
  if (!next) {
    conv->absorb(nullptr, nullptr);
    return false;
  }
  if (conv->pooled() || !conv->activation_in_epilogue()) return false;
  if (next->fusion_traits().identity_in_inference) return true;
  if (auto* bn = dynamic_cast<BatchNormalization<T>*>(next); bn && !conv->absorbed()) {
    conv->absorb(bn, nullptr);
    return true;
  }
  auto* pool = dynamic_cast<MaxPool2D<T>*>(next);
  if (!pool || !conv->can_pool(*pool)) return false;
  conv->absorb(conv->absorbed(), pool);
  return true;
}

// ---- Training ---------------------------------------------------------------

/// Offers `layer` the layer right after it, for its Mode::Train passes
/// (nullptr undoes); returns whether it took it (Layer::fused_next). A
/// BatchNormalization on images takes a MaxPool2D whose windows tile them.
template <class T>
bool fuse_next_in_training(Layer<T>& layer, LayerArg<T>* next) {
  auto* bn = dynamic_cast<BatchNormalization<T>*>(&layer);
  if (!bn) return false;
  auto* pool = dynamic_cast<MaxPool2D<T>*>(next);
  if (pool && !(bn->input_shape().rank() == 3 && pool->windows_tile())) pool = nullptr;
  bn->fuse_pool(pool);
  return pool != nullptr;
}

/// The ReLU's derivative of `layer`, left to a later layer (on) or taken
/// back (off); returns whether it is left. Only a Conv2D whose activation
/// is ReLU can leave it (Conv2D::set_relu_grad_left).
template <class T>
bool leave_relu_grad(Layer<T>& layer, bool on) {
  auto* conv = dynamic_cast<Conv2D<T>*>(&layer);
  if (!conv) return false;
  conv->set_relu_grad_left(on && conv->activation() == Activation::ReLU);
  return conv->relu_grad_left();
}
template <class T>
bool relu_grad_left(const Layer<T>& layer) {
  const auto* conv = dynamic_cast<const Conv2D<T>*>(&layer);
  return conv && conv->relu_grad_left();
}

/// Whether `layer` multiplies its input gradient by (input > 0), applying
/// an earlier layer's ReLU derivative (on), or no longer (off); returns
/// whether it does. Only a BatchNormalization that computes its input
/// gradient can (BatchNormalization::set_input_relu_grad).
template <class T>
bool take_input_relu_grad(Layer<T>& layer, bool on) {
  auto* bn = dynamic_cast<BatchNormalization<T>*>(&layer);
  if (!bn) return false;
  bn->set_input_relu_grad(on && bn->needs_input_grad());
  return bn->takes_input_relu_grad();
}
template <class T>
bool takes_input_relu_grad(const Layer<T>& layer) {
  const auto* bn = dynamic_cast<const BatchNormalization<T>*>(&layer);
  return bn && bn->takes_input_relu_grad();
}

/// Whether `layer`'s gradients are left to the next layer, `next` (on), or
/// no longer (off); returns whether they are. Only a Conv2D that
/// can_leave_weights_grad (its ReLU's derivative already left to `next`)
/// leaves them, and only to a BatchNormalization fused with its MaxPool2D
/// that applies that derivative (BatchNormalization::take_weights_grad).
template <class T>
bool leave_weights_grad(Layer<T>& layer, LayerArg<T>* next, bool on) {
  auto* conv = dynamic_cast<Conv2D<T>*>(&layer);
  if (!conv) return false;
  auto* bn = dynamic_cast<BatchNormalization<T>*>(next);
  const bool fits = on && bn && bn->fused_pool() && bn->takes_input_relu_grad() && conv->can_leave_weights_grad();
  conv->set_weights_grad_left(fits);
  if (bn) bn->take_weights_grad(fits ? conv : nullptr);
  return fits;
}
template <class T>
bool weights_grad_left(const Layer<T>& layer) {
  const auto* conv = dynamic_cast<const Conv2D<T>*>(&layer);
  return conv && conv->weights_grad_left();
}

/// Whether `layer` sums the batch statistics of `next` as it writes its
/// output (on), or no longer (off); returns whether it does. Only a Conv2D
/// that can_sum_statistics (its direct kernel) does, and only for a
/// BatchNormalization right after it (RowStatisticsSink); off also drops
/// sums that `next` was given and did not use.
template <class T>
bool sum_statistics(Layer<T>& layer, LayerArg<T>* next, bool on) {
  auto* conv = dynamic_cast<Conv2D<T>*>(&layer);
  if (!conv) return false;
  auto* bn = dynamic_cast<BatchNormalization<T>*>(next);
  conv->set_statistics_to(on ? bn : nullptr);
  if (bn && !conv->statistics_to()) bn->begin_statistics(nullptr, 0, 0);
  return conv->statistics_to() != nullptr;
}

}  // namespace fusion

/// The inference fusion of one layer of a model for one forward: made
/// before `layers[i]`'s forward, it offers that layer the ones after it
/// (fusion::absorb_next_in_inference) while it takes them, in Mode::Inference only;
/// the forward then does their work too, the caller skips the `taken()`
/// layers after it, and the destructor ends the offer.
///
///     InferenceFusion<T> fusion(layers, i, mode);
///     out = &layers[i]->forward(*out, mode);
///     i += fusion.taken();
template <class T>
class InferenceFusion {
 public:
  /// `layers`: a vector of owning pointers to layers (unique or shared).
  template <class Layers>
  InferenceFusion(const Layers& layers, std::size_t i, Mode mode)
      : layer_(layers[i].get()) {
    if (mode != Mode::Inference) return;
    const std::size_t n = layers.size();
    while (i + taken_ + 1 < n && fusion::absorb_next_in_inference(*layer_, layers[i + taken_ + 1].get())) ++taken_;
  }
  ~InferenceFusion() {
    if (taken_ > 0) fusion::absorb_next_in_inference(*layer_, nullptr);
  }
  InferenceFusion(const InferenceFusion&) = delete;
  InferenceFusion& operator=(const InferenceFusion&) = delete;

  /// How many layers after layers[i] its forward does.
  std::size_t taken() const { return taken_; }

 private:
  Layer<T>* layer_;
  std::size_t taken_ = 0;
};

/// The training fusions of a model's layers for one step: arranged when
/// made, undone when destroyed (also by an exception). First each layer is
/// offered the next (fusion::fuse_next_in_training; a layer taken is not
/// offered its own next); then each layer not taking its next that can
/// leave its ReLU's derivative (fusion::leave_relu_grad) offers it to the
/// first layer after it past those that scale elementwise
/// (FusionTraits::scales_elementwise), if that layer runs its own backward
/// (is not taken) and can apply it (fusion::take_input_relu_grad).
///
///     TrainingFusion<T> fusion(layers);
///     forward:  fused = fusion.fused(i); out = forward(i); if (fused) skip i + 1
///     backward: if (fusion.skips(i) || fusion.backward_taken(i)) continue;
///
/// It allocates nothing. `Layers` is a vector of owning pointers to the
/// layers: a Sequential's, or a segment of a graph's (model/functional.hpp).
template <class T, class Layers = std::vector<std::unique_ptr<Layer<T>>>>
class TrainingFusion {
 public:

  explicit TrainingFusion(const Layers& layers) : layers_(layers) {
    try {
      arrange();
    } catch (...) {
      undo();
      throw;
    }
  }
  ~TrainingFusion() { undo(); }
  TrainingFusion(const TrainingFusion&) = delete;
  TrainingFusion& operator=(const TrainingFusion&) = delete;

  /// Whether layers[i] does layers[i + 1]'s work too: its Mode::Train
  /// forward returns layers[i + 1]'s output, and its backward takes that
  /// output's gradient.
  bool fused(std::size_t i) const { return layers_[i]->fused_next() != nullptr; }
  /// Whether layers[i] is done by layers[i - 1] (see fused): skipped both
  /// ways.
  bool skips(std::size_t i) const { return i > 0 && layers_[i - 1]->fused_next() == layers_[i].get(); }
  /// Whether layers[i]'s backward is done by layers[i + 1]'s
  /// (fusion::leave_weights_grad): skipped in backward.
  bool backward_taken(std::size_t i) const { return fusion::weights_grad_left(*layers_[i]); }

 private:
  void arrange() {
    const std::size_t n = layers_.size();
    for (std::size_t i = 0; i + 1 < n; ++i) {
      if (fusion::fuse_next_in_training(*layers_[i], layers_[i + 1].get())) ++i;
    }
    for (std::size_t i = 0; i + 1 < n; ++i) {
      if (fused(i) || !fusion::leave_relu_grad(*layers_[i], true)) continue;
      std::size_t j = i + 1;
      while (j < n && layers_[j]->fusion_traits().scales_elementwise && !skips(j)) ++j;
      const bool runs_backward = j < n && !skips(j);
      if (!(runs_backward && fusion::take_input_relu_grad(*layers_[j], true))) {
        fusion::leave_relu_grad(*layers_[i], false);
      }
    }
    for (std::size_t i = 0; i + 1 < n; ++i) {
      fusion::leave_weights_grad(*layers_[i], layers_[i + 1].get(), true);
      fusion::sum_statistics(*layers_[i], layers_[i + 1].get(), true);
    }
  }
  void undo() {
    const std::size_t n = layers_.size();
    for (std::size_t i = 0; i < n; ++i) {
      fusion::leave_weights_grad(*layers_[i], i + 1 < n ? layers_[i + 1].get() : nullptr, false);
      fusion::sum_statistics(*layers_[i], i + 1 < n ? layers_[i + 1].get() : nullptr, false);
    }
    for (const auto& l : layers_) {
      fusion::fuse_next_in_training(*l, nullptr);
      fusion::leave_relu_grad(*l, false);
      fusion::take_input_relu_grad(*l, false);
    }
  }

  const Layers& layers_;
};

/// The forward of a training step along a chain of layers, fused as
/// `fusion` arranged them: returns the last layer's output. With `outputs`,
/// outputs[i] is set to layer i's output (a layer taken by the one before
/// it gets the same as that one).
template <class T, class Layers>
const Tensor<T>& train_forward(const Layers& layers, const TrainingFusion<T, Layers>& fusion, const Tensor<T>& x,
                               const Tensor<T>** outputs = nullptr) {
  const Tensor<T>* out = &x;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const bool fused = fusion.fused(i);
    out = &layers[i]->forward(*out, Mode::Train);
    if (outputs) outputs[i] = out;
    if (fused && ++i < layers.size() && outputs) outputs[i] = out;
  }
  return *out;
}

/// The backward of a training step along the same chain, from dL/d(output):
/// returns dL/d(input) (empty when the first layer computes none).
template <class T, class Layers>
const Tensor<T>& train_backward(const Layers& layers, const TrainingFusion<T, Layers>& fusion, const Tensor<T>& dy) {
  const Tensor<T>* g = &dy;
  for (std::size_t i = layers.size(); i-- > 0;) {
    if (fusion.skips(i) || fusion.backward_taken(i)) continue;  // done by layers[i - 1] or layers[i + 1]
    g = &layers[i]->backward(*g);
  }
  return *g;
}

}  // namespace loom
