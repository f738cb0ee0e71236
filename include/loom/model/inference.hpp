#pragma once
/// \file inference.hpp
/// `Inference<T>`: a chain of layers run in inference mode over a dataset,
/// in chunks, on every thread (what Sequential's predict and evaluate use).
///
/// In inference a layer that can absorb the work of the ones after it (a
/// Conv2D, then a BatchNormalization and a MaxPool2D: InferenceFusion in
/// layers/fusion.hpp) does it in its own output pass, and they are skipped:
/// the same function up to rounding, with fewer passes over memory.

#include <algorithm>
#include <exception>
#include <memory>
#include <optional>
#include <vector>

#include "../error.hpp"
#include "../layers/fusion.hpp"
#include "../layers/layer.hpp"
#include "../parallel.hpp"
#include "../random.hpp"
#include "../tensor.hpp"

namespace loom {

template <class T>
class Inference {
 public:
  using Layers = std::vector<std::unique_ptr<Layer<T>>>;

  /// The layers changed: the threads' copies are made again when next needed.
  void invalidate() {
    copies_.clear();
    no_copies_ = false;
  }

  struct Copy;
  /// The layers chunks is given share the weights of `source` (a
  /// Predictor's session, see Copy::share): the threads' copies share them
  /// too, rather than taking the parameters in. `source` must outlive this.
  void share_parameters_of(const Copy& source) { source_ = &source; }

  /// Runs `layers` on a batch in `mode`; returns the last layer's output.
  /// (`layers`: a vector of owning pointers, unique or shared.)
  template <class Chain>
  static const Tensor<T>& run(const Chain& layers, const Tensor<T>& x, Mode mode) {
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
  /// `params` are the parameters of `layers`, in order.
  ///
  /// With several threads and at least two chunks for each, every thread
  /// runs whole chunks on its own copy of the layers (Copy), one thread to a
  /// chunk: no barrier between the layers, and a thread whose core runs
  /// faster takes more chunks (detail::WorkQueue). Otherwise the model's own
  /// layers run the chunks in turn, each splitting its work across the
  /// threads. A chunk's output is the same either way (see
  /// Sequential::kInferenceChunk). `done` runs once per chunk, maybe on
  /// another thread than the caller's, so it must write only what belongs to
  /// its chunk.
  template <class Done>
  void chunks(const Layers& layers, const std::vector<Parameter<T>>& params, const Tensor<T>& x, Index begin,
              Index end, Index step, Done&& done) {
    const Index chunks = (end - begin + step - 1) / step;
    const int threads = num_threads();
    if (threads < 2 || chunks < 2 * Index(threads) || !prepare_copies(layers, params, threads)) {
      for (Index c = 0; c < chunks; ++c) {
        const Index start = begin + c * step;
        slice(x, start, std::min(step, end - start), xb_);
        done(c, start, run(layers, xb_, Mode::Inference), yb_);
      }
      return;
    }
    queue_.reset(chunks, 1, threads);
    std::exception_ptr error;
    detail::parallel(threads, [&](int t, int /*nt*/) {
      try {
        set_num_threads(1);  // this thread's own: its layers' work is not split again
        Copy& copy = copies_[static_cast<std::size_t>(t)];
        if (source_ != nullptr) {
          if (!copy.sealed) copy.share(*source_);
        } else {
          copy.take_parameters(params, layers);
        }
        for (detail::Range c = queue_.take(t); c.size() > 0; c = queue_.take(t)) {
          const Index start = begin + c.begin * step;
          slice(x, start, std::min(step, end - start), copy.xb);
          done(c.begin, start, run(copy.layers, copy.xb, Mode::Inference), copy.yb);
        }
      } catch (...) {
#pragma omp critical(loom_inference_error)
        if (!error) error = std::current_exception();
      }
    });
    if (error) std::rethrow_exception(error);
  }

  /// The outputs of `layers` (parameters `params`) for every sample of x,
  /// `step` at a time (chunks): what predict returns. batch_size >= 1, else
  /// ConfigError.
  Tensor<T> outputs(const Layers& layers, const std::vector<Parameter<T>>& params, const Tensor<T>& x,
                    Index batch_size, Index max_step) {
    Tensor<T> result;
    outputs(layers, params, x, batch_size, max_step, result);
    return result;
  }
  /// The same into `result` (resized; it allocates only when it grows).
  void outputs(const Layers& layers, const std::vector<Parameter<T>>& params, const Tensor<T>& x, Index batch_size,
               Index max_step, Tensor<T>& result) {
    if (batch_size < 1) throw ConfigError(detail::str("predict: batch_size must be >= 1, got ", batch_size));
    const Index n = x.dim(0);
    result.resize_for_overwrite(layers.back()->output_shape().with_batch(n));
    const Index width = result.size() / std::max<Index>(n, 1);
    chunks(layers, params, x, 0, n, std::min(batch_size, max_step),
           [&](Index /*chunk*/, Index start, const Tensor<T>& p, Tensor<T>& /*scratch*/) {
             std::copy(p.begin(), p.end(), result.data() + start * width);
           });
  }

  /// dst <- rows [start, start + b) of src.
  static void slice(const Tensor<T>& src, Index start, Index b, Tensor<T>& dst) {
    Shape s = src.shape();
    s[0] = b;
    dst.resize_for_overwrite(s);
    const Index row = src.size() / src.dim(0);
    std::copy(src.data() + start * row, src.data() + (start + b) * row, dst.data());
  }

  /// A copy of a model's layers, with its own batch buffers: a thread's
  /// (its layers hold their own outputs and scratch; the parameters are the
  /// model's, copied in before each use, about 1 MB for the notebook's model
  /// against 2 ms for a chunk of 32 images), or a Predictor's: its weights,
  /// sealed, and its sessions, which share them.
  struct Copy {
    Layers layers;
    std::vector<Parameter<T>> params;
    Tensor<T> xb, yb;
    bool sealed = false;  ///< its parameters taken (or shared) for good: seal, share

    /// Tells its layers that their parameters will not change again.
    void seal() {
      for (auto& layer : layers) layer->seal_parameters();
      sealed = true;
    }

    void take_parameters(const std::vector<Parameter<T>>& from, const Layers& model) {
      if (sealed) throw Error("Inference::Copy: the parameters of a sealed copy cannot be taken again");
      for (std::size_t i = 0; i < params.size(); ++i) {
        std::copy(from[i].value->begin(), from[i].value->end(), params[i].value->begin());
      }
      for (std::size_t i = 0; i < layers.size(); ++i) model[i]->copy_settings_to(*layers[i]);
    }

    /// Makes this copy (made by make_copy from the same layers as `source`,
    /// which is sealed) read the weights of `source`: each layer that can
    /// shares its parameters (Layer::share_parameters_of) and frees its
    /// own; one that cannot takes a copy of them. Then sealed.
    void share(const Copy& source) {
      std::size_t first = 0;  // the layer's first parameter in params
      for (std::size_t i = 0; i < layers.size(); ++i) {
        Layer<T>& layer = *layers[i];
        const Layer<T>& from = *source.layers[i];
        const std::size_t count = layer.parameters().size();
        from.copy_settings_to(layer);
        if (count > 0 && !layer.share_parameters_of(from)) {
          for (std::size_t p = first; p < first + count; ++p) {
            std::copy(source.params[p].value->begin(), source.params[p].value->end(), params[p].value->begin());
          }
        }
        first += count;
      }
      seal();
    }
  };

  /// A copy of `layers` (whose parameters are `mine`), built, its parameters
  /// not yet taken; nullopt when a layer has no inference_copy, cannot be
  /// made again from its config (a user's class whose from_config throws),
  /// or its copy's parameters do not match its own.
  static std::optional<Copy> make_copy(const Layers& layers, const std::vector<Parameter<T>>& mine) {
    Copy copy;
    Rng rng;  // the copy's initial weights are overwritten before use
    try {
      for (const auto& layer : layers) {
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

 private:
  /// Makes `threads` copies of the layers, if not made yet. False when
  /// make_copy cannot: then the model runs its own layers, as it can.
  bool prepare_copies(const Layers& layers, const std::vector<Parameter<T>>& params, int threads) {
    if (no_copies_) return false;
    while (copies_.size() < static_cast<std::size_t>(threads)) {
      // (A session's layers hold no parameters of their own: their copies are made from the source's.)
      std::optional<Copy> copy = source_ != nullptr ? make_copy(source_->layers, source_->params) : make_copy(layers, params);
      if (!copy) {
        no_copies_ = true;
        copies_.clear();
        return false;
      }
      copies_.push_back(std::move(*copy));
    }
    return true;
  }

  Tensor<T> xb_, yb_;    ///< the batch when the model's own layers run the chunks
  std::vector<Copy> copies_;  ///< the threads' layers, made when first needed
  bool no_copies_ = false;    ///< a layer cannot be copied
  const Copy* source_ = nullptr;   ///< see share_parameters_of
  detail::WorkQueue queue_;
};

}  // namespace loom
