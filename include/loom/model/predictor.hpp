#pragma once
/// \file predictor.hpp
/// `Predictor<T>`: a trained model frozen for serving, safe to call from any
/// number of threads at once. It copies the model's layers and weights when
/// it is made, as ONNX Runtime's session holds its own weights and
/// `torch.jit.freeze` fixes a module's: training the model afterwards, or
/// editing its weights, does not reach it (make a new Predictor for that).
///
/// How it is shared: the Predictor keeps one sealed copy of the weights,
/// with what inference derives from them (Conv2D's Winograd transforms, in
/// both layouts), made when it is made and never written again. A call
/// runs on a session: a copy of the layers that reads those weights
/// (Layer::share_parameters_of) and holds only its own work buffers. The
/// sessions wait in a pool; a call takes an idle one or, when every one is
/// busy, makes another, so the pool grows to the number of callers that
/// were ever at once and then allocates nothing. A layer type that does not
/// share (a user's) gets its session a copy of its weights instead.
///
/// Why a copy: a Predictor never hands its parameters out, so nothing can
/// change them, and what inference derives from them is made once. The
/// model's own predict must check, call after call, that each Conv2D's
/// kernel is still the one whose Winograd transform it keeps (a copy
/// compared bit for bit); at batch 1 that comparison is a tenth of the
/// image's time, and it pushes the next image's weights out of the core's
/// L2. The outputs are the model's predict's, bit for bit.
///
/// Each call splits its work across the calling thread's loom threads
/// (loom::set_num_threads, per thread): a server whose workers each answer
/// one request at a time sets 1 on each worker, as examples/serve_bench.cpp
/// does.

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../tensor.hpp"
#include "inference.hpp"
#include "sequential.hpp"

namespace loom {

template <class T>
class Predictor {
  using Copy = typename Inference<T>::Copy;

 public:
  /// A copy of `model` (built) with its weights and buffers as they are now.
  /// Throws ConfigError when a layer cannot be copied (a user's layer type
  /// that nobody registered, see Layer::inference_copy).
  explicit Predictor(const Sequential<T>& model) : name_(model.name()), pool_(std::make_unique<Pool>()) {
    model.require_built("Predictor");
    // parameters() caches views of the layers' tensors; it changes no value.
    const auto& params = const_cast<Sequential<T>&>(model).parameters();
    std::optional<Copy> copy = Inference<T>::make_copy(model.layers(), params);
    if (!copy) {
      throw ConfigError(detail::str("Predictor: model '", name_,
                                    "' has a layer that cannot be copied: every layer's type must be registered "
                                    "(Layer::inference_copy)"));
    }
    copy->take_parameters(params, model.layers());
    copy->seal();
    weights_ = std::make_unique<Copy>(std::move(*copy));
  }

  Predictor(Predictor&&) noexcept = default;
  Predictor& operator=(Predictor&&) noexcept = default;

  const std::string& name() const { return name_; }
  /// Per-sample shapes of the input and output, the model's.
  const Shape& input_shape() const { return weights_->layers.front()->input_shape(); }
  const Shape& output_shape() const { return weights_->layers.back()->output_shape(); }

  /// The outputs for x, as the model's predict(x, batch_size) gave them when
  /// this Predictor was made, bit for bit: in chunks of at most
  /// Sequential::kInferenceChunk samples, on the calling thread's loom
  /// threads. Safe to call from several threads at once.
  Tensor<T> predict(const Tensor<T>& x, Index batch_size = 32) const {
    Tensor<T> y;
    predict(x, y, batch_size);
    return y;
  }
  /// The same into `y` (resized): once the pool has a session for every
  /// caller and y and the sessions have held a batch this large, a call
  /// allocates nothing. On several threads a session runs a call's chunks on
  /// a copy of the layers per thread, each thread taking chunks as it comes
  /// free, so a thread may take none of a call's chunks while another is
  /// faster: its copy meets the size, and allocates once, on a later call.
  /// A server that must never allocate warms each size with a few calls.
  void predict(const Tensor<T>& x, Tensor<T>& y, Index batch_size = 32) const {
    if (x.rank() < 1 || x.dim(0) == 0) throw ShapeError(detail::str("predict: empty dataset, x has shape ", x.shape()));
    if (x.shape().without_batch() != input_shape()) {
      throw ShapeError(detail::str("predict: model '", name_, "' expects inputs ", input_shape().str("N"), ", got ",
                                   x.shape().without_batch().str("N")));
    }
    Lease session(*this);
    session->inference.outputs(session->copy.layers, session->copy.params, x, batch_size,
                               Sequential<T>::kInferenceChunk, y);
  }

  /// The sessions made so far: the most calls that were ever running at once.
  std::size_t sessions() const {
    std::lock_guard<std::mutex> lock(pool_->mutex);
    return pool_->made;
  }

 private:
  /// One call's layers (reading weights_) and its threads' copies (likewise).
  struct Session {
    Copy copy;
    Inference<T> inference;
  };
  struct Pool {
    std::mutex mutex;
    std::vector<std::unique_ptr<Session>> idle;  ///< capacity for every session made: giving back never allocates
    std::size_t made = 0;
  };

  /// A session taken from the pool (or made) for one call, given back after it.
  class Lease {
   public:
    explicit Lease(const Predictor& owner) : pool_(*owner.pool_) {
      {
        std::lock_guard<std::mutex> lock(pool_.mutex);
        if (!pool_.idle.empty()) {
          session_ = std::move(pool_.idle.back());
          pool_.idle.pop_back();
          return;
        }
        pool_.idle.reserve(pool_.made + 1);
        ++pool_.made;
      }
      try {  // made outside the lock: the other callers go on
        session_ = owner.make_session();
      } catch (...) {
        std::lock_guard<std::mutex> lock(pool_.mutex);
        --pool_.made;
        throw;
      }
    }
    ~Lease() {
      std::lock_guard<std::mutex> lock(pool_.mutex);
      pool_.idle.push_back(std::move(session_));
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Session* operator->() const { return session_.get(); }

   private:
    Pool& pool_;
    std::unique_ptr<Session> session_;
  };

  std::unique_ptr<Session> make_session() const {
    std::optional<Copy> copy = Inference<T>::make_copy(weights_->layers, weights_->params);
    if (!copy) throw Error(detail::str("Predictor: model '", name_, "': its layers could not be copied again"));
    auto session = std::make_unique<Session>();
    session->copy = std::move(*copy);
    session->copy.share(*weights_);
    session->inference.share_parameters_of(*weights_);
    return session;
  }

  std::string name_;
  std::unique_ptr<Copy> weights_;  ///< sealed, never run: the layers every session reads
  std::unique_ptr<Pool> pool_;     ///< the idle sessions
};

}  // namespace loom
