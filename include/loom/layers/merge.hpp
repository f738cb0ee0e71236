#pragma once
/// \file merge.hpp
/// Keras's merge layers, which take several tensors and give one: `Add`,
/// `Subtract`, `Multiply`, `Average`, `Maximum` (elementwise, on inputs of
/// one shape) and `Concatenate` (along an axis). They are what a graph
/// (model/functional.hpp) joins its branches with: `x + block(x)` is an
/// `Add` of the two.
///
/// A merge layer is a Layer<T> whose build and forward take every input:
///
///     Add<float> add;
///     add.build({Shape{4, 4, 8}, Shape{4, 4, 8}}, rng);
///     const Tensor<float>& y = add.forward({&a, &b}, Mode::Train);
///     add.backward(dy);           // then add.input_grad(0), add.input_grad(1)
///
/// backward returns the gradient of the first input; `input_grad(i)` gives
/// each one. The gradients are Keras's (TensorFlow's): Maximum's goes to the
/// first of the inputs that are largest, as `maximum(maximum(a, b), c)`
/// sends it.

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../parallel.hpp"
#include "layer.hpp"

namespace loom {

template <class T>
class Merge : public Layer<T> {
 public:
  using Layer<T>::build;
  using Layer<T>::forward;

  /// Builds the layer for inputs of these per-sample shapes (at least two);
  /// returns the per-sample output shape. Throws ShapeError, naming the
  /// layer and the shapes, for shapes it cannot merge.
  Shape build(const std::vector<Shape>& inputs, Rng& rng) {
    if (inputs.size() < 2 || (max_inputs_ > 0 && inputs.size() > max_inputs_)) {
      throw ShapeError(detail::str(this->where(), ": takes ", max_inputs_ == 2 ? "exactly 2" : "at least 2",
                                   " inputs, got ", inputs.size()));
    }
    merged_ = merge_shape(inputs);
    input_shapes_ = inputs;
    return Layer<T>::build(inputs[0], rng);
  }
  const std::vector<Shape>& input_shapes() const { return input_shapes_; }
  std::size_t arity() const { return input_shapes_.size(); }

  /// The output for a batch of each input (all with the same batch size).
  const Tensor<T>& forward(const std::vector<const Tensor<T>*>& xs, Mode mode) {
    if (!this->built()) throw ConfigError(this->where() + ": forward() before build()");
    if (xs.size() != input_shapes_.size()) {
      throw ShapeError(detail::str(this->where(), ": expected ", input_shapes_.size(), " inputs, got ", xs.size()));
    }
    for (std::size_t i = 0; i < xs.size(); ++i) {
      if (xs[i]->rank() != input_shapes_[i].rank() + 1 || xs[i]->shape().without_batch() != input_shapes_[i] ||
          xs[i]->dim(0) != xs[0]->dim(0)) {
        throw ShapeError(detail::str(this->where(), ": expected input ", i + 1, " ",
                                     input_shapes_[i].with_batch(xs[0]->dim(0)), ", got ", xs[i]->shape()));
      }
    }
    xs_ = &xs;
    struct Reset {
      const std::vector<const Tensor<T>*>** p;
      ~Reset() { *p = nullptr; }
    } reset{&xs_};
    return Layer<T>::forward(*xs[0], mode);
  }

  /// After backward: dL/d(input i) (empty when the layer needs no input
  /// gradient). Valid until the next call on the layer.
  const Tensor<T>& input_grad(std::size_t i) const { return *grads_.at(i); }

  /// The inputs' shapes, with the batch dimension as Keras prints it.
  std::string shapes_str(const std::vector<Shape>& inputs) const {
    std::string s;
    for (std::size_t i = 0; i < inputs.size(); ++i) s += (i ? " and " : "") + inputs[i].str("None");
    return s;
  }

 protected:
  explicit Merge(std::size_t max_inputs = 0) : max_inputs_(max_inputs) {}

  /// The output shape for these input shapes; by default they must all be equal.
  virtual Shape merge_shape(const std::vector<Shape>& inputs) const {
    for (const Shape& s : inputs) {
      if (s != inputs[0]) {
        throw ShapeError(detail::str(this->where(), ": its inputs must have one shape, got ", shapes_str(inputs)));
      }
    }
    return inputs[0];
  }
  /// y <- the merge of xs (y already has the output's shape).
  virtual void merge(const std::vector<const Tensor<T>*>& xs, Tensor<T>& y) = 0;
  /// Sets grads_[i] to dL/d(input i) for each input, given dy; `xs` are the
  /// inputs of the last forward as the layer kept them (keep_inputs).
  virtual void split(const Tensor<T>& dy) = 0;
  /// Whether backward needs the inputs' values (Multiply, Maximum): then
  /// forward keeps a copy of them in kept_.
  virtual bool keep_inputs() const { return false; }

  Shape build_impl(const Shape&, Rng&) override {
    if (merged_.rank() == 0) {
      throw ConfigError(this->where() + ": a merge layer is built with the shapes of all its inputs");
    }
    return merged_;
  }

  const Tensor<T>& forward_impl(const Tensor<T>& x, Mode mode) override {
    if (xs_ == nullptr) {
      throw ConfigError(detail::str(this->where(), ": takes ", input_shapes_.size(),
                                    " inputs: call forward with all of them"));
    }
    y_.resize_for_overwrite(this->output_shape().with_batch(x.dim(0)));
    merge(*xs_, y_);
    if (mode == Mode::Train && keep_inputs()) {
      kept_.resize(xs_->size());
      for (std::size_t i = 0; i < xs_->size(); ++i) {
        kept_[i].resize_for_overwrite((*xs_)[i]->shape());
        std::copy((*xs_)[i]->begin(), (*xs_)[i]->end(), kept_[i].begin());
      }
    }
    return y_;
  }

  const Tensor<T>& backward_impl(const Tensor<T>& dy) override {
    grads_.assign(input_shapes_.size(), &this->empty_);
    if (!this->needs_input_grad()) return this->empty_;
    split(dy);
    return *grads_[0];
  }

  /// Scratch for input i's gradient, sized like dy's batch of input i.
  Tensor<T>& grad_buffer(std::size_t i, Index batch) {
    if (store_.size() < input_shapes_.size()) store_.resize(input_shapes_.size());
    store_[i].resize_for_overwrite(input_shapes_[i].with_batch(batch));
    grads_[i] = &store_[i];
    return store_[i];
  }

  /// y <- op(...op(op(x0, x1), x2)..., xn), elementwise, in that order.
  template <class Op>
  static void fold(const std::vector<const Tensor<T>*>& xs, Tensor<T>& y, Op op) {
    elementwise(y.size(), [&](Index b, Index e) {
      T* out = y.data();
      std::copy(xs[0]->data() + b, xs[0]->data() + e, out + b);
      for (std::size_t i = 1; i < xs.size(); ++i) {
        const T* xi = xs[i]->data();
        for (Index k = b; k < e; ++k) out[k] = op(out[k], xi[k]);
      }
    });
  }

  /// f(begin, end) over [0, n), split across threads when n is large.
  template <class F>
  static void elementwise(Index n, F&& f) {
    detail::parallel_ranges(n, 65536, std::forward<F>(f));
  }

  std::vector<const Tensor<T>*> grads_;
  std::vector<Tensor<T>> kept_;

 private:
  std::size_t max_inputs_;
  std::vector<Shape> input_shapes_;
  Shape merged_;
  const std::vector<const Tensor<T>*>* xs_ = nullptr;  ///< the inputs, during forward only
  Tensor<T> y_;
  std::vector<Tensor<T>> store_;
};

/// Keras's `Add`: the elementwise sum of its inputs.
template <class T>
class Add : public Merge<T> {
 public:
  static constexpr const char* class_name = "Add";
  static std::unique_ptr<Layer<T>> from_config(const Config&) { return std::make_unique<Add>(); }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "add"; }

 protected:
  void merge(const std::vector<const Tensor<T>*>& xs, Tensor<T>& y) override {
    this->fold(xs, y, [](T a, T b) { return a + b; });
  }
  void split(const Tensor<T>& dy) override {
    for (auto& g : this->grads_) g = &dy;  // the same gradient for each: no copy
  }
};

/// Keras's `Subtract`: its first input minus its second (exactly two).
template <class T>
class Subtract : public Merge<T> {
 public:
  Subtract() : Merge<T>(2) {}
  static constexpr const char* class_name = "Subtract";
  static std::unique_ptr<Layer<T>> from_config(const Config&) { return std::make_unique<Subtract>(); }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "subtract"; }

 protected:
  void merge(const std::vector<const Tensor<T>*>& xs, Tensor<T>& y) override {
    this->elementwise(y.size(), [&](Index b, Index e) {
      const T *a = xs[0]->data(), *c = xs[1]->data();
      for (Index k = b; k < e; ++k) y.data()[k] = a[k] - c[k];
    });
  }
  void split(const Tensor<T>& dy) override {
    this->grads_[0] = &dy;
    Tensor<T>& g = this->grad_buffer(1, dy.dim(0));
    this->elementwise(dy.size(), [&](Index b, Index e) {
      for (Index k = b; k < e; ++k) g.data()[k] = -dy.data()[k];
    });
  }
};

/// Keras's `Multiply`: the elementwise product of its inputs.
template <class T>
class Multiply : public Merge<T> {
 public:
  static constexpr const char* class_name = "Multiply";
  static std::unique_ptr<Layer<T>> from_config(const Config&) { return std::make_unique<Multiply>(); }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "multiply"; }

 protected:
  bool keep_inputs() const override { return true; }
  void merge(const std::vector<const Tensor<T>*>& xs, Tensor<T>& y) override {
    this->fold(xs, y, [](T a, T b) { return a * b; });
  }
  /// dL/dx_i = dy times the product of the other inputs (not a division,
  /// which a zero would break).
  void split(const Tensor<T>& dy) override {
    const std::size_t n = this->kept_.size();
    for (std::size_t i = 0; i < n; ++i) {
      Tensor<T>& g = this->grad_buffer(i, dy.dim(0));
      this->elementwise(dy.size(), [&](Index b, Index e) {
        for (Index k = b; k < e; ++k) g.data()[k] = dy.data()[k];
        for (std::size_t j = 0; j < n; ++j) {
          if (j == i) continue;
          for (Index k = b; k < e; ++k) g.data()[k] *= this->kept_[j].data()[k];
        }
      });
    }
  }
};

/// Keras's `Average`: the elementwise mean of its inputs.
template <class T>
class Average : public Merge<T> {
 public:
  static constexpr const char* class_name = "Average";
  static std::unique_ptr<Layer<T>> from_config(const Config&) { return std::make_unique<Average>(); }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "average"; }

 protected:
  /// Keras sums, then divides by the count (not a multiply by its inverse).
  void merge(const std::vector<const Tensor<T>*>& xs, Tensor<T>& y) override {
    const T count = static_cast<T>(xs.size());
    this->fold(xs, y, [](T a, T b) { return a + b; });
    this->elementwise(y.size(), [&](Index b, Index e) {
      for (Index k = b; k < e; ++k) y.data()[k] /= count;
    });
  }
  void split(const Tensor<T>& dy) override {
    Tensor<T>& g = this->grad_buffer(0, dy.dim(0));
    const T count = static_cast<T>(this->arity());
    this->elementwise(dy.size(), [&](Index b, Index e) {
      for (Index k = b; k < e; ++k) g.data()[k] = dy.data()[k] / count;
    });
    for (auto& p : this->grads_) p = &g;
  }
};

/// Keras's `Maximum`: the elementwise maximum of its inputs.
template <class T>
class Maximum : public Merge<T> {
 public:
  static constexpr const char* class_name = "Maximum";
  static std::unique_ptr<Layer<T>> from_config(const Config&) { return std::make_unique<Maximum>(); }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "maximum"; }

 protected:
  bool keep_inputs() const override { return true; }
  void merge(const std::vector<const Tensor<T>*>& xs, Tensor<T>& y) override {
    this->fold(xs, y, [](T a, T b) { return std::max(a, b); });
  }
  /// Each element's gradient goes to the first input holding the maximum.
  void split(const Tensor<T>& dy) override {
    const std::size_t n = this->kept_.size();
    std::vector<T*>& g = outs_;
    g.resize(n);
    for (std::size_t i = 0; i < n; ++i) g[i] = this->grad_buffer(i, dy.dim(0)).data();
    this->elementwise(dy.size(), [&](Index b, Index e) {
      for (Index k = b; k < e; ++k) {
        std::size_t best = 0;
        for (std::size_t i = 1; i < n; ++i) {
          if (this->kept_[i].data()[k] > this->kept_[best].data()[k]) best = i;
        }
        for (std::size_t i = 0; i < n; ++i) g[i][k] = i == best ? dy.data()[k] : T(0);
      }
    });
  }

 private:
  std::vector<T*> outs_;  ///< the inputs' gradients, during backward
};

/// Keras's `Concatenate(axis=-1)`: its inputs joined along `axis`, counted
/// as Keras counts it, with the batch as axis 0 (so -1 is the channels of
/// an image); every other dimension must agree.
template <class T>
class Concatenate : public Merge<T> {
 public:
  explicit Concatenate(int axis = -1) : axis_(axis) {
    if (axis == 0) throw ConfigError("Concatenate: axis 0 is the batch; give a later axis (-1 for the last)");
  }
  static constexpr const char* class_name = "Concatenate";
  static std::unique_ptr<Layer<T>> from_config(const Config& c) {
    return std::make_unique<Concatenate>(static_cast<int>(c.signed_integer("axis")));
  }
  std::string type() const override { return class_name; }
  std::string base_name() const override { return "concatenate"; }
  Config config() const override {
    Config c;
    c.set("axis", axis_);
    return c;
  }
  int axis() const { return axis_; }

 protected:
  Shape merge_shape(const std::vector<Shape>& inputs) const override {
    const int rank = static_cast<int>(inputs[0].rank());
    const int a = axis_ < 0 ? axis_ + rank + 1 : axis_;  // with the batch
    if (a < 1 || a > rank) {
      throw ShapeError(detail::str(this->where(), ": axis ", axis_, " is not an axis of inputs ",
                                   inputs[0].str("None")));
    }
    Shape out = inputs[0];
    out[a - 1] = 0;
    for (const Shape& s : inputs) {
      bool same = s.rank() == inputs[0].rank();
      for (int d = 0; same && d < s.rank(); ++d) same = d == a - 1 || s[d] == inputs[0][d];
      if (!same) {
        throw ShapeError(detail::str(this->where(), ": its inputs must agree but on axis ", axis_, ", got ",
                                     this->shapes_str(inputs)));
      }
      out[a - 1] += s[a - 1];
    }
    axis0_ = a - 1;
    return out;
  }

  void merge(const std::vector<const Tensor<T>*>& xs, Tensor<T>& y) override {
    const Index outer = y.size() / row(this->output_shape());
    Index at = 0;  // this input's offset within an output row
    const Index out_row = row(this->output_shape());
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const Index r = row(this->input_shapes()[i]);
      const T* src = xs[i]->data();
      for (Index o = 0; o < outer; ++o) std::copy(src + o * r, src + (o + 1) * r, y.data() + o * out_row + at);
      at += r;
    }
  }
  void split(const Tensor<T>& dy) override {
    const Index out_row = row(this->output_shape()), outer = dy.size() / out_row;
    Index at = 0;
    for (std::size_t i = 0; i < this->arity(); ++i) {
      const Index r = row(this->input_shapes()[i]);
      T* dst = this->grad_buffer(i, dy.dim(0)).data();
      for (Index o = 0; o < outer; ++o) std::copy(dy.data() + o * out_row + at, dy.data() + o * out_row + at + r, dst + o * r);
      at += r;
    }
  }

 private:
  /// The values of one "row": the axis and everything after it.
  Index row(const Shape& s) const {
    Index n = 1;
    for (int d = axis0_; d < s.rank(); ++d) n *= s[d];
    return n;
  }

  int axis_;
  mutable int axis0_ = 0;  ///< the axis within a sample's shape, set by merge_shape
};

LOOM_REGISTER(Add)
LOOM_REGISTER(Subtract)
LOOM_REGISTER(Multiply)
LOOM_REGISTER(Average)
LOOM_REGISTER(Maximum)
LOOM_REGISTER(Concatenate)

}  // namespace loom
