#pragma once
/// \file json.hpp
/// Checked JSON access for Keras's configs: `Fields` reads one JSON object
/// with every type error named (the layer, the key, what was expected), and
/// the small pieces of Keras's JSON vocabulary the writers share (shapes,
/// pairs, Keras 3's object references, Keras's snake_case of class names).
/// Needs nlohmann-json (Debian's nlohmann-json3-dev).

#include <nlohmann/json.hpp>

#include <cctype>
#include <cstdio>
#include <string>
#include <utility>

#include "../error.hpp"
#include "../tensor.hpp"

namespace loom::keras {

/// nlohmann's JSON with sorted keys: the configs loom writes list each
/// object's keys in name order whatever order the writers set them in.
using json = nlohmann::json;

/// Checked access to a JSON config: every type error names the layer and key.
/// A mapping's readers (layer_mapping.hpp) receive one.
class Fields {
 public:
  Fields(const json& object, std::string where) : o_(object), where_(std::move(where)) {
    if (!o_.is_object()) throw FormatError(where_ + ": expected a JSON object");
  }
  Fields(const json&&, std::string) = delete;  // it keeps a reference: never to a temporary
  bool has(const char* key) const { return o_.contains(key) && !o_.at(key).is_null(); }
  /// How many keys the object has.
  std::size_t size() const { return o_.size(); }
  const json& at(const char* key) const {
    if (!o_.contains(key)) throw FormatError(where_ + ": no '" + key + "'");
    return o_.at(key);
  }
  std::string text(const char* key) const {
    const json& v = at(key);
    if (!v.is_string()) bad(key, "a string");
    return v.get<std::string>();
  }
  std::string text(const char* key, const std::string& otherwise) const { return has(key) ? text(key) : otherwise; }
  long long integer(const char* key) const {
    const json& v = at(key);
    if (!v.is_number_integer()) bad(key, "an integer");
    return v.get<long long>();
  }
  long long integer(const char* key, long long otherwise) const { return has(key) ? integer(key) : otherwise; }
  double real(const char* key) const {
    const json& v = at(key);
    if (!v.is_number()) bad(key, "a number");
    return v.get<double>();
  }
  double real(const char* key, double otherwise) const { return has(key) ? real(key) : otherwise; }
  bool flag(const char* key, bool otherwise) const {
    if (!has(key)) return otherwise;
    const json& v = at(key);
    if (!v.is_boolean()) bad(key, "true or false");
    return v.get<bool>();
  }
  /// An int n (meaning (n, n)) or a list of two ints, each in [1, 2^20].
  Size2 size2(const char* key) const {
    const json& v = at(key);
    auto one = [&](const json& e) {
      if (!e.is_number_integer() || e.get<long long>() < 1 || e.get<long long>() > (1 << 20)) bad(key, "positive integers");
      return static_cast<Index>(e.get<long long>());
    };
    if (v.is_number_integer()) return Size2{one(v), one(v)};
    if (!v.is_array() || v.size() != 2) bad(key, "an integer or a list of two");
    return Size2{one(v[0]), one(v[1])};
  }
  /// Throws the FormatError for a `key` whose value is not `expected`.
  [[noreturn]] void bad(const char* key, const char* expected) const {
    throw FormatError(where_ + ": '" + key + "' should be " + expected + ", got " + o_.at(key).dump());
  }
  /// Throws the FormatError for a setting loom does not implement.
  [[noreturn]] void refuse(const std::string& what) const {
    throw FormatError(where_ + ": " + what + " is not supported by loom");
  }
  const std::string& where() const { return where_; }

  /// The Keras version that saved the file ("2.4.0", "3.10.0"; empty when
  /// unknown), for the mappings whose rules changed between versions.
  Fields& keras_version(std::string v) {
    version_ = std::move(v);
    return *this;
  }
  const std::string& keras_version() const { return version_; }

 private:
  const json& o_;
  std::string where_;
  std::string version_;
};

/// A layer config's dtype: "float32", or a dtype policy's name (Keras 3:
/// {"class_name": "DTypePolicy", "config": {"name": "float32"}}); empty if none.
inline std::string dtype_name(const Fields& f) {
  if (!f.has("dtype")) return "";
  const json& d = f.at("dtype");
  if (d.is_string()) return d.get<std::string>();
  if (d.is_object() && d.contains("config") && d.at("config").is_object() && d.at("config").contains("name") &&
      d.at("config").at("name").is_string()) {
    return d.at("config").at("name").get<std::string>();
  }
  return "";
}

/// The major version of a Keras version string (0 when empty or unreadable).
inline int keras_major_version(const std::string& version) {
  int major = 0;
  return std::sscanf(version.c_str(), "%d", &major) == 1 ? major : 0;
}

namespace impl {

/// Reads a JSON document, turning every parse error into a FormatError.
inline json parse_json(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(what + ": malformed JSON: " + e.what());
  }
}

/// Keras's snake_case of a class name (keras/src/utils/naming.py): the stem
/// of automatic layer names and of `.keras` weight paths.
inline std::string snake_case(const std::string& name) {
  std::string a;  // "(.)([A-Z][a-z]+)" -> "\1_\2"
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (i > 0 && std::isupper(static_cast<unsigned char>(name[i])) && i + 1 < name.size() &&
        std::islower(static_cast<unsigned char>(name[i + 1]))) {
      a += '_';
    }
    a += name[i];
  }
  std::string b;  // "([a-z])([A-Z])" -> "\1_\2"
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (i > 0 && std::isupper(static_cast<unsigned char>(a[i])) && std::islower(static_cast<unsigned char>(a[i - 1]))) {
      b += '_';
    }
    b += static_cast<char>(std::tolower(static_cast<unsigned char>(a[i])));
  }
  return b;
}

/// A per-sample shape as Keras writes a batch shape: [null, dims...].
inline json shape_json(const Shape& s) {
  json v = json::array({nullptr});
  for (Index d : s) v.push_back(d);
  return v;
}
inline json pair_json(const Size2& s) { return json::array({s[0], s[1]}); }

/// A Keras 3 object reference: {"module", "class_name", "config", "registered_name"}.
inline json keras_object(const char* module, const char* cls, json config) {
  return {{"module", module}, {"class_name", cls}, {"config", std::move(config)}, {"registered_name", nullptr}};
}

}  // namespace impl
}  // namespace loom::keras
