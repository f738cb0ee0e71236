#pragma once
/// \file predictor.hpp
/// `Predictor<T>`: a trained model frozen for serving. It copies the
/// model's layers and weights when it is made, as ONNX Runtime's session
/// holds its own weights and `torch.jit.freeze` fixes a module's: training
/// the model afterwards, or editing its weights, does not reach it (make a
/// new Predictor for that).
///
/// Why a copy: a Predictor never hands its parameters out, so nothing can
/// change them, and what inference derives from them is made once. The
/// model's own predict must check, call after call, that each Conv2D's
/// kernel is still the one whose Winograd transform it keeps (a copy
/// compared bit for bit); at batch 1 that comparison is a tenth of the
/// image's time, and it pushes the next image's weights out of the core's
/// L2. The outputs are the model's predict's, bit for bit.
///
/// One Predictor serves one caller at a time (its layers keep their work
/// buffers, as the model's do); a server with several workers makes one per
/// worker, each with loom::set_num_threads(1) on its own thread, as
/// examples/notebook_speed.cpp --concurrent does.

#include <string>
#include <utility>

#include "../error.hpp"
#include "../tensor.hpp"
#include "inference.hpp"
#include "sequential.hpp"

namespace loom {

template <class T>
class Predictor {
 public:
  /// A copy of `model` (built) with its weights and buffers as they are now.
  /// Throws ConfigError when a layer cannot be copied (a user's layer type
  /// that nobody registered, see Layer::inference_copy).
  explicit Predictor(const Sequential<T>& model)
      : name_(model.name()) {
    model.require_built("Predictor");
    // parameters() caches views of the layers' tensors; it changes no value.
    const auto& params = const_cast<Sequential<T>&>(model).parameters();
    std::optional<typename Inference<T>::Copy> copy = Inference<T>::make_copy(model.layers(), params);
    if (!copy) {
      throw ConfigError(detail::str("Predictor: model '", name_,
                                    "' has a layer that cannot be copied: every layer's type must be registered "
                                    "(Layer::inference_copy)"));
    }
    copy->take_parameters(params, model.layers());
    copy->seal();
    copy_ = std::move(*copy);
    inference_.set_parameters_fixed();
  }

  Predictor(Predictor&&) noexcept = default;
  Predictor& operator=(Predictor&&) noexcept = default;

  const std::string& name() const { return name_; }
  /// Per-sample shapes of the input and output, the model's.
  const Shape& input_shape() const { return copy_.layers.front()->input_shape(); }
  const Shape& output_shape() const { return copy_.layers.back()->output_shape(); }

  /// The outputs for x, as the model's predict(x, batch_size) gave them when
  /// this Predictor was made, bit for bit: in chunks of at most
  /// Sequential::kInferenceChunk samples, on loom's threads.
  Tensor<T> predict(const Tensor<T>& x, Index batch_size = 32) {
    if (x.rank() < 1 || x.dim(0) == 0) throw ShapeError(detail::str("predict: empty dataset, x has shape ", x.shape()));
    if (x.shape().without_batch() != input_shape()) {
      throw ShapeError(detail::str("predict: model '", name_, "' expects inputs ", input_shape().str("N"), ", got ",
                                   x.shape().without_batch().str("N")));
    }
    return inference_.outputs(copy_.layers, copy_.params, x, batch_size, Sequential<T>::kInferenceChunk);
  }

 private:
  std::string name_;
  typename Inference<T>::Copy copy_;  ///< the sealed layers and views of their parameters
  Inference<T> inference_;            ///< the threads' copies (sealed too), when a call has chunks enough
};

}  // namespace loom
