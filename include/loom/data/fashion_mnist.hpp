#pragma once
/// \file data/fashion_mnist.hpp
/// `loom::datasets::fashion_mnist::load()`: Keras's `fashion_mnist.load_data()`
/// from local IDX files. **Needs zlib** (see idx.hpp).
///
/// The directory is, in order: the `dir` argument, the environment variable
/// LOOM_FASHION_MNIST_DIR, or where Debian's `dataset-fashion-mnist` package
/// puts the files (/usr/share/datasets/fashion-mnist). Each of the four files
/// may be gzipped (`train-images-idx3-ubyte.gz`) or plain
/// (`train-images-idx3-ubyte`). Nothing is downloaded.

#include <array>
#include <cstdlib>
#include <fstream>
#include <future>
#include <string>

#include "idx.hpp"

namespace loom::datasets::fashion_mnist {

/// The ten classes, in label order.
inline const std::array<std::string, 10> class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                        "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

inline constexpr const char* debian_dir = "/usr/share/datasets/fashion-mnist";

/// The split as Keras returns it: images (N, 28, 28) with pixel values
/// 0..255, labels (N,) with values 0..9.
template <class T>
struct Data {
  Tensor<T> x_train, y_train, x_test, y_test;
};

/// The directory load() reads when given none.
inline std::string default_dir() {
  const char* env = std::getenv("LOOM_FASHION_MNIST_DIR");
  return env && *env ? env : debian_dir;
}

namespace detail {

inline std::string find_file(const std::string& dir, const std::string& stem) {
  for (const std::string& name : {stem + ".gz", stem}) {
    const std::string path = dir + "/" + name;
    if (std::ifstream(path).good()) return path;
  }
  throw IOError("Fashion-MNIST not found: " + dir + " has no " + stem + "[.gz]; install Debian's package " +
                "(apt-get install dataset-fashion-mnist), or give the directory that holds the four IDX files " +
                "(argument, or LOOM_FASHION_MNIST_DIR)");
}

template <class T>
void load_pair(const std::string& dir, const std::string& images, const std::string& labels, Index expected,
               Tensor<T>& x, Tensor<T>& y) {
  const std::string xp = find_file(dir, images), yp = find_file(dir, labels);
  x = data::read_idx<T>(xp);
  y = data::read_idx<T>(yp);
  if (x.rank() != 3 || x.dim(1) != 28 || x.dim(2) != 28) {
    throw FormatError(loom::detail::str(xp, ": expected images of shape (N, 28, 28), got ", x.shape()));
  }
  if (y.rank() != 1) throw FormatError(loom::detail::str(yp, ": expected labels of shape (N,), got ", y.shape()));
  if (x.dim(0) != y.dim(0)) {
    throw FormatError(loom::detail::str(xp, " holds ", x.dim(0), " images but ", yp, " holds ", y.dim(0), " labels"));
  }
  if (expected > 0 && x.dim(0) != expected) {
    throw FormatError(loom::detail::str(xp, ": expected ", expected, " images, got ", x.dim(0)));
  }
  for (Index i = 0; i < y.size(); ++i) {
    if (!(y[i] >= 0 && y[i] <= 9)) {
      throw FormatError(loom::detail::str(yp, ": label ", y[i], " of sample ", i, " is not in [0, 9]"));
    }
  }
}

}  // namespace detail

/// Loads the 60,000 training and 10,000 test images and labels from `dir`
/// (see default_dir()). Throws IOError if a file is missing (naming the
/// package to install) and FormatError if one is malformed or the counts
/// disagree. With `strict_sizes` false, other sample counts are accepted
/// (for small test copies of the data set).
///
/// The test pair is read on a thread of its own while this one reads the
/// training pair (inflating the training images is most of the time: 0.2 s
/// of 0.3 on the development VM); an error in either is thrown here, the
/// training pair's first.
template <class T>
Data<T> load(const std::string& dir = default_dir(), bool strict_sizes = true) {
  Data<T> d;
  auto test = std::async(std::launch::async, [&] {
    Data<T> t;
    detail::load_pair(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", strict_sizes ? 10000 : 0, t.x_test,
                      t.y_test);
    return t;
  });
  detail::load_pair(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", strict_sizes ? 60000 : 0, d.x_train,
                    d.y_train);  // if it throws, test's destructor waits for the thread first
  Data<T> t = test.get();
  d.x_test = std::move(t.x_test);
  d.y_test = std::move(t.y_test);
  return d;
}

}  // namespace loom::datasets::fashion_mnist
