#pragma once
/// \file tensor.hpp
/// `Shape` and `Tensor<T>`: loom's one owning, contiguous, row-major buffer.
/// Images are NHWC, as Keras stores them.

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cstddef>
#include <initializer_list>
#include <new>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "error.hpp"

namespace loom {

using Index = std::ptrdiff_t;

/// A (height, width) pair: kernel sizes, strides, pool sizes.
using Size2 = std::array<Index, 2>;

/// A tensor's dimensions, outermost first. Fixed capacity (no heap), so shapes
/// can be copied and compared on the hot path for free.
class Shape {
 public:
  static constexpr int max_rank = 6;

  Shape() = default;
  Shape(std::initializer_list<Index> dims) {
    if (dims.size() > static_cast<std::size_t>(max_rank)) {
      throw ShapeError(detail::str("Shape: rank ", dims.size(), " exceeds the maximum of ", max_rank));
    }
    for (Index d : dims) push_back(d);
  }

  int rank() const { return rank_; }
  Index operator[](int i) const { return dims_[static_cast<std::size_t>(i)]; }
  Index& operator[](int i) { return dims_[static_cast<std::size_t>(i)]; }
  const Index* begin() const { return dims_.data(); }
  const Index* end() const { return dims_.data() + rank_; }
  Index back() const { return dims_[static_cast<std::size_t>(rank_ - 1)]; }

  /// Number of elements: the product of the dimensions (1 for rank 0).
  Index size() const {
    Index n = 1;
    for (Index d : *this) n *= d;
    return n;
  }

  void push_back(Index d) {
    if (rank_ == max_rank) throw ShapeError(detail::str("Shape: rank exceeds the maximum of ", max_rank));
    if (d < 0) throw ShapeError(detail::str("Shape: negative dimension ", d));
    dims_[static_cast<std::size_t>(rank_++)] = d;
  }

  /// This shape with `n` prepended: a per-sample shape becomes a batch shape.
  Shape with_batch(Index n) const {
    Shape s;
    s.push_back(n);
    for (Index d : *this) s.push_back(d);
    return s;
  }

  /// This shape without its first dimension.
  Shape without_batch() const {
    Shape s;
    for (int i = 1; i < rank_; ++i) s.push_back((*this)[i]);
    return s;
  }

  friend bool operator==(const Shape& a, const Shape& b) {
    return a.rank_ == b.rank_ && std::equal(a.begin(), a.end(), b.begin());
  }
  friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

  /// "(32, 28, 28, 1)"; with a `batch` word, "(None, 28, 28, 1)" for a per-sample shape.
  std::string str(const char* batch = nullptr) const {
    std::string s = "(";
    bool first = true;
    if (batch != nullptr) {
      s += batch;
      first = false;
    }
    for (Index d : *this) {
      if (!first) s += ", ";
      s += std::to_string(d);
      first = false;
    }
    if (rank_ == 1 && batch == nullptr) s += ",";
    return s + ")";
  }

 private:
  std::array<Index, max_rank> dims_{};
  int rank_ = 0;
};

inline std::ostream& operator<<(std::ostream& out, const Shape& s) { return out << s.str(); }

/// Row-major Eigen matrix types used for maps over loom's buffers.
template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MatrixMap = Eigen::Map<RowMatrix<T>, Eigen::Aligned16>;
template <class T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>, Eigen::Aligned16>;
template <class T>
using VectorMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>, Eigen::Aligned16>;
template <class T>
using ConstVectorMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>, Eigen::Aligned16>;

namespace detail {

/// Eigen's aligned allocator, except that a vector's resize leaves new
/// elements uninitialized instead of zeroing them (the zeroing is Tensor's
/// choice: see resize and resize_for_overwrite).
template <class T>
struct UninitializedAllocator : Eigen::aligned_allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <class U>
  UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}

  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible<U>::value) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

}  // namespace detail

/// An owning, contiguous, aligned, row-major tensor.
///
/// Memory is one buffer; `resize` keeps its capacity, so a tensor that is
/// resized to a smaller batch and back never reallocates. Copies are deep.
/// `operator()` is unchecked; `at()` checks rank and bounds and throws
/// `ShapeError`.
template <class T>
class Tensor {
  static_assert(std::is_floating_point<T>::value, "loom::Tensor holds float or double");

 public:
  using Scalar = T;

  Tensor() = default;
  /// A zero-filled tensor of `shape`.
  explicit Tensor(const Shape& shape) : shape_(shape), data_(static_cast<std::size_t>(shape.size()), T(0)) {}
  Tensor(const Shape& shape, T value) : shape_(shape), data_(static_cast<std::size_t>(shape.size()), value) {}
  /// A tensor of `shape` holding `values` in row-major order.
  Tensor(const Shape& shape, std::initializer_list<T> values) : shape_(shape), data_(values) {
    if (static_cast<Index>(data_.size()) != shape.size()) {
      throw ShapeError(detail::str("Tensor: shape ", shape, " needs ", shape.size(), " values, got ", data_.size()));
    }
  }

  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  Index dim(int i) const { return shape_[i]; }
  Index size() const { return static_cast<Index>(data_.size()); }
  bool empty() const { return data_.empty(); }

  T* data() { return data_.data(); }
  const T* data() const { return data_.data(); }
  T* begin() { return data_.data(); }
  T* end() { return data_.data() + data_.size(); }
  const T* begin() const { return data_.data(); }
  const T* end() const { return data_.data() + data_.size(); }

  T& operator[](Index i) { return data_[static_cast<std::size_t>(i)]; }
  T operator[](Index i) const { return data_[static_cast<std::size_t>(i)]; }

  /// Unchecked element access by one index per dimension.
  template <class... I>
  T& operator()(I... idx) {
    return data_[static_cast<std::size_t>(offset(idx...))];
  }
  template <class... I>
  T operator()(I... idx) const {
    return data_[static_cast<std::size_t>(offset(idx...))];
  }

  /// Checked element access: throws ShapeError on a wrong rank or an index out of range.
  template <class... I>
  T& at(I... idx) {
    check_index({static_cast<Index>(idx)...});
    return (*this)(idx...);
  }
  template <class... I>
  T at(I... idx) const {
    check_index({static_cast<Index>(idx)...});
    return (*this)(idx...);
  }

  /// Gives the same elements a new shape of the same size, without copying.
  Tensor& reshape(const Shape& shape) {
    if (shape.size() != size()) {
      throw ShapeError(detail::str("Tensor::reshape: cannot view ", shape_, " (", size(), " elements) as ", shape,
                                   " (", shape.size(), " elements)"));
    }
    shape_ = shape;
    return *this;
  }

  /// Sets a new shape. Keeps the capacity: shrinking and growing back within it
  /// never allocates. New elements are zero; kept ones are left as they were.
  void resize(const Shape& shape) {
    const std::size_t kept = data_.size();
    data_.resize(static_cast<std::size_t>(shape.size()));
    if (data_.size() > kept) std::fill(data_.begin() + static_cast<std::ptrdiff_t>(kept), data_.end(), T(0));
    shape_ = shape;
  }

  /// resize() for a caller that writes every element next: new elements are
  /// left unspecified rather than zeroed (a layer's output at a batch size
  /// larger than the last one, say, costs no pass over memory).
  void resize_for_overwrite(const Shape& shape) {
    data_.resize(static_cast<std::size_t>(shape.size()));
    shape_ = shape;
  }

  void fill(T value) { std::fill(data_.begin(), data_.end(), value); }

  /// The tensor as a [dim(0), size/dim(0)] row-major matrix (a vector is one column).
  MatrixMap<T> matrix() { return as_matrix(rows(), cols()); }
  ConstMatrixMap<T> matrix() const { return as_matrix(rows(), cols()); }

  /// The tensor as a [rows, cols] row-major matrix; rows * cols must equal size().
  MatrixMap<T> as_matrix(Index rows, Index cols) {
    check_matrix(rows, cols);
    return MatrixMap<T>(data(), rows, cols);
  }
  ConstMatrixMap<T> as_matrix(Index rows, Index cols) const {
    check_matrix(rows, cols);
    return ConstMatrixMap<T>(data(), rows, cols);
  }

  /// All elements as one column vector.
  VectorMap<T> flat() { return VectorMap<T>(data(), size()); }
  ConstVectorMap<T> flat() const { return ConstVectorMap<T>(data(), size()); }

 private:
  Index rows() const { return rank() == 0 ? 1 : dim(0); }
  Index cols() const { return rank() == 0 ? 1 : (dim(0) == 0 ? 0 : size() / dim(0)); }

  void check_matrix(Index rows, Index cols) const {
    if (rows * cols != size()) {
      throw ShapeError(detail::str("Tensor: cannot view ", shape_, " as a ", rows, "x", cols, " matrix"));
    }
  }

  template <class... I>
  Index offset(I... idx) const {
    Index off = 0;
    int d = 0;
    ((off = off * shape_[d++] + static_cast<Index>(idx)), ...);
    return off;
  }

  void check_index(std::initializer_list<Index> idx) const {
    if (static_cast<int>(idx.size()) != rank()) {
      throw ShapeError(detail::str("Tensor::at: ", idx.size(), " indices for a tensor of rank ", rank(), " ", shape_));
    }
    int d = 0;
    for (Index i : idx) {
      if (i < 0 || i >= shape_[d]) {
        throw ShapeError(detail::str("Tensor::at: index ", i, " out of range [0, ", shape_[d], ") in dimension ", d,
                                     " of ", shape_));
      }
      ++d;
    }
  }

  Shape shape_;
  std::vector<T, detail::UninitializedAllocator<T>> data_;
};

}  // namespace loom
