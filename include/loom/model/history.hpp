#pragma once
/// \file history.hpp
/// `History`: what `fit` returns, Keras's `history.history`: one list of
/// per-epoch values for each of "loss", "accuracy", "val_loss", "val_accuracy".

#include <map>
#include <string>
#include <vector>

#include "../error.hpp"

namespace loom {

struct History {
  /// Metric name -> one value per epoch, in epoch order.
  std::map<std::string, std::vector<double>> history;

  /// Number of epochs recorded.
  std::size_t epochs() const { return history.empty() ? 0 : history.begin()->second.size(); }

  bool has(const std::string& key) const { return history.count(key) != 0; }

  /// The values of `key`; throws ConfigError naming the keys that exist.
  const std::vector<double>& operator[](const std::string& key) const {
    auto it = history.find(key);
    if (it == history.end()) {
      std::string keys;
      for (const auto& kv : history) keys += (keys.empty() ? "" : ", ") + kv.first;
      throw ConfigError("History has no '" + key + "'; it has: " + keys);
    }
    return it->second;
  }

  void append(const std::string& key, double value) { history[key].push_back(value); }
};

}  // namespace loom
