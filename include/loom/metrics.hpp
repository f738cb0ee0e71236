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
