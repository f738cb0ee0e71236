#pragma once
/// \file config.hpp
/// `Config`: a layer's, optimizer's or loss's hyperparameters as ordered
/// (key, text) pairs, what the model file and the registry use to describe
/// an object and to make it again (Keras's `get_config()` and
/// `from_config()`).
///
///     Config c;
///     c.set("filters", 32).set("kernel_size", Size2{3, 3}).set("use_bias", true);
///     c.integer("filters");   // 32
///     c.real("momentum", 0.99);  // a default when the key is absent
///
/// Values are stored as text that reads back exactly: integers in decimal,
/// reals with 17 significant digits, flags as "1"/"0", pairs as "3,3".
/// A missing key or a value that does not parse throws ConfigError naming
/// the key and the value; the model loader adds the file and the layer.

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "error.hpp"
#include "tensor.hpp"

namespace loom {

class Config {
 public:
  using Entries = std::vector<std::pair<std::string, std::string>>;

  Config() = default;
  explicit Config(Entries entries) : entries_(std::move(entries)) {}

  /// Sets `key` (replacing an earlier value) to a string, a bool, an integer, a real or a Size2.
  template <class V>
  Config& set(const std::string& key, const V& value) {
    std::string text;
    if constexpr (std::is_same_v<V, bool>) {
      text = value ? "1" : "0";
    } else if constexpr (std::is_integral_v<V>) {
      text = std::to_string(value);
    } else if constexpr (std::is_floating_point_v<V>) {
      text = detail::exact(static_cast<double>(value));
    } else if constexpr (std::is_same_v<V, Size2>) {
      text = std::to_string(value[0]) + "," + std::to_string(value[1]);
    } else {
      text = std::string(value);
    }
    for (auto& kv : entries_) {
      if (kv.first == key) {
        kv.second = std::move(text);
        return *this;
      }
    }
    entries_.emplace_back(key, std::move(text));
    return *this;
  }

  /// Sets `key` to a list of reals, written "0.5,1000" (each exact, as `set` writes one).
  Config& set_reals(const std::string& key, const std::vector<double>& values) {
    std::string text;
    for (std::size_t i = 0; i < values.size(); ++i) text += (i ? "," : "") + detail::exact(values[i]);
    return set(key, text);
  }

  /// Sets `key` to a list of integers, written "2,-1,3".
  Config& set_integers(const std::string& key, const std::vector<Index>& values) {
    std::string text;
    for (std::size_t i = 0; i < values.size(); ++i) text += (i ? "," : "") + std::to_string(values[i]);
    return set(key, text);
  }

  bool has(const std::string& key) const { return find(key) != nullptr; }
  const Entries& entries() const& { return entries_; }
  /// Of a temporary (`layer.config().entries()`), a copy: a range-for over it
  /// would otherwise run over a destroyed Config.
  Entries entries() && { return std::move(entries_); }
  bool empty() const { return entries_.empty(); }
  bool operator==(const Config& o) const { return entries_ == o.entries_; }
  bool operator!=(const Config& o) const { return !(*this == o); }

  const std::string& text(const std::string& key) const {
    const std::string* v = find(key);
    if (!v) throw ConfigError("missing config '" + key + "'");
    return *v;
  }
  std::string text(const std::string& key, const std::string& otherwise) const {
    return has(key) ? text(key) : otherwise;
  }

  /// An integer in [0, 2^31].
  long long integer(const std::string& key) const { return parse_int(text(key), key); }
  long long integer(const std::string& key, long long otherwise) const { return has(key) ? integer(key) : otherwise; }
  /// An integer in [-2^31, 2^31] (an axis counted from the end, say).
  long long signed_integer(const std::string& key) const {
    const std::string& s = text(key);
    const bool negative = !s.empty() && s[0] == '-';
    const long long v = parse_int(negative ? s.substr(1) : s, key);
    return negative ? -v : v;
  }

  std::uint64_t u64(const std::string& key) const {
    const std::string& s = text(key);
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || s[0] == '-' || *end != '\0' || errno == ERANGE) bad(key, s);
    return v;
  }

  double real(const std::string& key) const {
    const std::string& s = text(key);
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0') bad(key, s);
    return v;
  }
  double real(const std::string& key, double otherwise) const { return has(key) ? real(key) : otherwise; }

  bool flag(const std::string& key) const {
    const std::string& s = text(key);
    if (s != "0" && s != "1") bad(key, s);
    return s == "1";
  }
  bool flag(const std::string& key, bool otherwise) const { return has(key) ? flag(key) : otherwise; }

  /// "0.5,1000" -> {0.5, 1000}; "" -> {}.
  std::vector<double> reals(const std::string& key) const {
    const std::string& s = text(key);
    std::vector<double> out;
    std::size_t at = 0;
    while (at < s.size()) {
      std::size_t comma = s.find(',', at);
      if (comma == std::string::npos) comma = s.size();
      const std::string item = s.substr(at, comma - at);
      char* end = nullptr;
      const double v = std::strtod(item.c_str(), &end);
      if (item.empty() || *end != '\0') bad(key, s);
      out.push_back(v);
      at = comma + 1;
      if (comma + 1 == s.size()) bad(key, s);  // a trailing comma
    }
    return out;
  }

  /// "2,-1,3" -> {2, -1, 3}, each in [-2^31, 2^31]; "" -> {}.
  std::vector<Index> integers(const std::string& key) const {
    const std::string& s = text(key);
    std::vector<Index> out;
    std::size_t at = 0;
    while (at < s.size()) {
      std::size_t comma = s.find(',', at);
      if (comma == std::string::npos) comma = s.size();
      const std::string item = s.substr(at, comma - at);
      const bool negative = !item.empty() && item[0] == '-';
      const long long v = parse_int(negative ? item.substr(1) : item, key);
      out.push_back(static_cast<Index>(negative ? -v : v));
      at = comma + 1;
      if (comma + 1 == s.size()) bad(key, s);  // a trailing comma
    }
    return out;
  }

  /// "3,3" -> {3, 3}.
  Size2 size2(const std::string& key) const {
    const std::string& s = text(key);
    const auto comma = s.find(',');
    if (comma == std::string::npos) bad(key, s);
    return {static_cast<Index>(parse_int(s.substr(0, comma), key)),
            static_cast<Index>(parse_int(s.substr(comma + 1), key))};
  }

  /// Throws the ConfigError for a value of `key` that is not one of those allowed.
  [[noreturn]] static void bad(const std::string& key, const std::string& value) {
    throw ConfigError("bad value '" + value + "' for config '" + key + "'");
  }

 private:
  const std::string* find(const std::string& key) const {
    for (const auto& kv : entries_) {
      if (kv.first == key) return &kv.second;
    }
    return nullptr;
  }
  static long long parse_int(const std::string& s, const std::string& key) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno == ERANGE || v < 0 || v > (1LL << 31)) bad(key, s);
    return v;
  }

  Entries entries_;
};

}  // namespace loom
