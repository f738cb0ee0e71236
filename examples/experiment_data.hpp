#pragma once
// fashion_mnist_experiment's data: the notebook's split of Fashion-MNIST,
// and that split as each of the notebook's models takes it (pixels scaled
// or raw, labels one-hot or integer).

#include <utility>

#include <loom/data/encoding.hpp>
#include <loom/data/fashion_mnist.hpp>
#include <loom/loom.hpp>

#include "experiment_options.hpp"

namespace loom::examples {

/// The notebook's split: (X, Y), (x_test, y_test) = fashion_mnist.load_data(),
/// the first 48,000 training images train and the last 12,000 validate (fewer
/// with --quick); with --refit all 60,000 train and there is no validation
/// split. Images are (N, 28, 28, 1) with raw 0..255 pixels, labels (N,) class
/// indices.
struct NotebookSplit {
  Tensor<float> x_train, y_train;
  Tensor<float> x_valid, y_valid;  ///< empty without a validation split
  Tensor<float> x_test, y_test;
  bool validate = false;  ///< whether there is a validation split
};

/// Loads Fashion-MNIST from opt.data_dir and splits it as `opt` says.
inline NotebookSplit load_notebook_split(const ExperimentOptions& opt) {
  auto data = datasets::fashion_mnist::load<float>(opt.data_dir);
  const Index n_train = opt.train_images(), n_valid = opt.validation_images();
  NotebookSplit s;
  s.validate = n_valid > 0;
  if (s.validate) {
    s.x_valid = data::take(data.x_train, 48000, 48000 + n_valid);
    s.y_valid = data::take(data.y_train, 48000, 48000 + n_valid);
    data::add_channel_axis(s.x_valid);
  }
  // The training images are the first n_train: kept where they were loaded
  // (resize keeps the first elements), not copied (150 MB of new memory).
  s.x_train = std::move(data.x_train);
  s.x_train.resize(Shape{n_train, s.x_train.dim(1), s.x_train.dim(2)});
  s.y_train = std::move(data.y_train);
  s.y_train.resize(Shape{n_train});
  s.x_test = std::move(data.x_test);
  s.y_test = std::move(data.y_test);
  for (Tensor<float>* x : {&s.x_train, &s.x_test}) data::add_channel_axis(*x);
  return s;
}

/// The split as model `spec` takes it: pixels scaled by 1 / 255 when the
/// model is normalized, labels one-hot when its loss is categorical; the
/// split's own tensors, not copies, where the model takes them as they are.
/// Refers to the split, which must outlive it.
class ModelData {
 public:
  ModelData(const NotebookSplit& split, const ModelSpec& spec)
      : x_train_(split.x_train, spec.normalized, scale),
        x_valid_(split.x_valid, spec.normalized && split.validate, scale),
        x_test_(split.x_test, spec.normalized, scale),
        y_train_(split.y_train, spec.one_hot, one_hot),
        y_valid_(split.y_valid, spec.one_hot && split.validate, one_hot),
        y_test_(split.y_test, spec.one_hot, one_hot) {}

  const Tensor<float>& x_train() const { return x_train_.get(); }
  const Tensor<float>& y_train() const { return y_train_.get(); }
  const Tensor<float>& x_valid() const { return x_valid_.get(); }  ///< empty without a validation split
  const Tensor<float>& y_valid() const { return y_valid_.get(); }  ///< empty without a validation split
  const Tensor<float>& x_test() const { return x_test_.get(); }
  const Tensor<float>& y_test() const { return y_test_.get(); }

 private:
  /// A tensor as the model takes it: converted into a copy of its own, or the original itself.
  class Input {
   public:
    Input(const Tensor<float>& original, bool convert, Tensor<float> (*conversion)(const Tensor<float>&))
        : original_(convert ? nullptr : &original) {
      if (convert) copy_ = conversion(original);
    }
    const Tensor<float>& get() const { return original_ ? *original_ : copy_; }

   private:
    const Tensor<float>* original_;
    Tensor<float> copy_;
  };

  static Tensor<float> scale(const Tensor<float>& x) { return data::scaled(x, 1.0 / 255); }
  static Tensor<float> one_hot(const Tensor<float>& y) { return data::to_categorical(y, 10); }

  Input x_train_, x_valid_, x_test_, y_train_, y_valid_, y_test_;
};

}  // namespace loom::examples
