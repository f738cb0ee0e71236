#pragma once
/// \file error.hpp
/// loom's exceptions. Every check at a public boundary throws one of these,
/// with a message that says what was expected and what was given.

#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace loom {

/// Base of every error loom throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// A tensor had the wrong shape for where it was used.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// A layer, loss, optimizer or model was configured with an impossible value,
/// or used in the wrong order (e.g. `fit` before `compile`).
class ConfigError : public Error {
 public:
  using Error::Error;
};

/// A file could not be opened, read or written.
class IOError : public Error {
 public:
  using Error::Error;
};

/// A file or a value was readable but not what it claimed to be.
class FormatError : public Error {
 public:
  using Error::Error;
};

/// Training produced a value that is not finite (NaN or infinity).
class NumericError : public Error {
 public:
  using Error::Error;
};

namespace detail {

/// Concatenates its arguments with operator<<, for error messages.
template <class... Args>
std::string str(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

/// A double as text that reads back to the same value ("%.17g").
inline std::string exact(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace detail
}  // namespace loom
