#pragma once
/// \file metrics.hpp
/// Metrics that `compile` accepts ("accuracy": argmax agreement, with one-hot
/// or integer targets as the loss reads them), and the helpers behind them.

#include <algorithm>
#include <string>
#include <vector>

#include "error.hpp"
#include "losses.hpp"
#include "tensor.hpp"

namespace loom {

/// Loss and metrics from `evaluate`.
struct Evaluation {
  double loss = 0;
  double accuracy = 0;
};

/// Index of the largest of `row[0..k)` (the first one on ties).
template <class T>
Index argmax(const T* row, Index k) {
  return std::max_element(row, row + k) - row;
}

/// Number of samples of the batch `p` (N, K) whose argmax is the class of `y`
/// as `loss` reads it.
template <class T>
Index count_correct(const Tensor<T>& p, const Tensor<T>& y, const Loss<T>& loss) {
  const Index n = p.dim(0), k = p.size() / n;
  Index correct = 0;
  for (Index i = 0; i < n; ++i) correct += argmax(p.data() + i * k, k) == loss.label(y, i);
  return correct;
}

/// The argmax of every row of `p` (N, K): predicted classes.
template <class T>
std::vector<Index> argmax_rows(const Tensor<T>& p) {
  const Index n = p.rank() ? p.dim(0) : 0, k = n ? p.size() / n : 0;
  std::vector<Index> out(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = argmax(p.data() + i * k, k);
  return out;
}

/// A K x K confusion matrix: `count(t, p)` test samples of true class t were
/// predicted as class p. Rows are true classes, columns predictions.
class ConfusionMatrix {
 public:
  /// Counts (truth[i], predicted[i]) pairs; throws ShapeError if the lengths
  /// differ and FormatError for a class outside [0, classes).
  ConfusionMatrix(const std::vector<Index>& truth, const std::vector<Index>& predicted, Index classes)
      : k_(classes), counts_(static_cast<std::size_t>(classes * classes), 0) {
    if (classes < 1) throw ConfigError(detail::str("ConfusionMatrix: classes must be >= 1, got ", classes));
    if (truth.size() != predicted.size()) {
      throw ShapeError(detail::str("ConfusionMatrix: ", truth.size(), " true labels but ", predicted.size(),
                                   " predictions"));
    }
    for (std::size_t i = 0; i < truth.size(); ++i) {
      const Index t = truth[i], p = predicted[i];
      if (t < 0 || t >= k_ || p < 0 || p >= k_) {
        throw FormatError(detail::str("ConfusionMatrix: sample ", i, " has true class ", t, " and prediction ", p,
                                      ", outside [0, ", k_, ")"));
      }
      ++counts_[static_cast<std::size_t>(t * k_ + p)];
    }
  }

  Index classes() const { return k_; }
  long long count(Index truth, Index predicted) const { return counts_[static_cast<std::size_t>(truth * k_ + predicted)]; }
  long long total() const { return sum_if([](Index, Index) { return true; }); }
  long long correct() const { return sum_if([](Index t, Index p) { return t == p; }); }
  double accuracy() const { return ratio(correct(), total()); }

  /// Samples whose true class is k (the row sum) and samples predicted as k (the column sum).
  long long support(Index k) const { return sum_if([k](Index t, Index) { return t == k; }); }
  long long predicted(Index k) const { return sum_if([k](Index, Index p) { return p == k; }); }
  /// Samples of class k predicted as something else (misses), and samples of
  /// other classes predicted as k (false alarms).
  long long misses(Index k) const { return support(k) - count(k, k); }
  long long false_alarms(Index k) const { return predicted(k) - count(k, k); }

  /// Of the samples predicted as k, the share that are k (0 when none are predicted as k).
  double precision(Index k) const { return ratio(count(k, k), predicted(k)); }
  /// Of the samples of class k, the share predicted as k (0 when there are none).
  double recall(Index k) const { return ratio(count(k, k), support(k)); }
  double f1(Index k) const {
    const double p = precision(k), r = recall(k);
    return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
  }

 private:
  template <class F>
  long long sum_if(F f) const {
    long long s = 0;
    for (Index t = 0; t < k_; ++t) {
      for (Index p = 0; p < k_; ++p) {
        if (f(t, p)) s += count(t, p);
      }
    }
    return s;
  }
  static double ratio(long long a, long long b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : 0.0; }

  Index k_;
  std::vector<long long> counts_;
};

/// Checks metric names for `compile`; "acc" is Keras's alias of "accuracy".
inline std::vector<std::string> checked_metrics(const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const auto& m : names) {
    if (m != "accuracy" && m != "acc") throw ConfigError("unknown metric '" + m + "': loom supports 'accuracy'");
    out.push_back("accuracy");
  }
  return out;
}

}  // namespace loom
