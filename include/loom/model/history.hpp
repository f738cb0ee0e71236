#pragma once
/// \file history.hpp
/// What `fit` records. `History` is Keras's `history.history`: one list of
/// per-epoch values for each of "loss", "accuracy", "val_loss",
/// "val_accuracy". `Logs` is Keras's `logs` dict: the metrics as they stand,
/// given to callbacks after every batch and every epoch.

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"

namespace loom {
namespace detail {

/// The keys of a map or list of pairs, comma-separated: for errors that name what there is.
template <class Range>
std::string join_keys(const Range& entries) {
  std::string keys;
  for (const auto& kv : entries) keys += (keys.empty() ? "" : ", ") + kv.first;
  return keys;
}

}  // namespace detail

struct History {
  /// Metric name -> one value per epoch, in epoch order.
  std::map<std::string, std::vector<double>> history;

  /// Number of epochs recorded.
  std::size_t epochs() const { return history.empty() ? 0 : history.begin()->second.size(); }

  bool has(const std::string& key) const { return history.count(key) != 0; }

  /// The values of `key`; throws ConfigError naming the keys that exist.
  const std::vector<double>& operator[](const std::string& key) const {
    auto it = history.find(key);
    if (it == history.end()) throw ConfigError("History has no '" + key + "'; it has: " + detail::join_keys(history));
    return it->second;
  }

  void append(const std::string& key, double value) { history[key].push_back(value); }
};

/// Metric name -> value, in the order fit computes them. Reused from batch
/// to batch: setting a key that is already there does not allocate.
class Logs {
 public:
  using Entries = std::vector<std::pair<std::string, double>>;

  bool has(const std::string& key) const { return find(key) != nullptr; }
  /// The value of `key`; throws ConfigError naming the keys that exist.
  double operator[](const std::string& key) const {
    const double* v = find(key);
    if (!v) throw ConfigError("the logs have no '" + key + "'; they have: " + detail::join_keys(entries_));
    return *v;
  }
  void set(const std::string& key, double value) {
    for (auto& kv : entries_) {
      if (kv.first == key) {
        kv.second = value;
        return;
      }
    }
    entries_.emplace_back(key, value);
  }
  void clear() { entries_.clear(); }
  const Entries& entries() const { return entries_; }

 private:
  const double* find(const std::string& key) const {
    for (const auto& kv : entries_) {
      if (kv.first == key) return &kv.second;
    }
    return nullptr;
  }
  Entries entries_;
};

}  // namespace loom
