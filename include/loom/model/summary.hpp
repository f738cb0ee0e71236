#pragma once
/// \file summary.hpp
/// Keras's `model.summary()` table for a sequential model (line length 65,
/// columns at 45 % and 85 %, fields cut to fit as Keras cuts them).

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "../layers/layer.hpp"

namespace loom {
namespace detail {

/// 256867 -> "256,867".
inline std::string thousands(long long n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

/// Keras's print_row: each field is cut at its column's end (`positions`,
/// one per field; by default a sequential model's three), and the last
/// character before the next field becomes a space.
inline std::string summary_row(const std::vector<std::string>& fields,
                               const std::vector<std::size_t>& positions = {29, 55, 65}) {
  std::string line;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) line = line.substr(0, line.size() - 1) + " ";
    line += fields[i];
    line = line.substr(0, positions[i]);
    line += std::string(positions[i] - line.size(), ' ');
  }
  return line;
}

}  // namespace detail

/// Writes the summary of `layers` (all built) under the title `Model: "name"`.
template <class T>
void write_summary(std::ostream& out, const std::string& name, const std::vector<std::unique_ptr<Layer<T>>>& layers) {
  const std::string rule(65, '_'), double_rule(65, '=');
  out << "Model: \"" << name << "\"\n" << rule << "\n";
  out << detail::summary_row({"Layer (type)", "Output Shape", "Param #"}) << "\n" << double_rule << "\n";
  long long total = 0, trainable = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    Layer<T>& l = *layers[i];
    const Index params = l.count_params();
    total += params;
    trainable += l.count_trainable_params();
    out << detail::summary_row({l.name() + " (" + l.type() + ")", l.output_shape().str("None"),
                                std::to_string(params)})
        << "\n"
        << (i + 1 == layers.size() ? double_rule : rule) << "\n";
  }
  out << "Total params: " << detail::thousands(total) << "\n"
      << "Trainable params: " << detail::thousands(trainable) << "\n"
      << "Non-trainable params: " << detail::thousands(total - trainable) << "\n"
      << rule << "\n";
}

}  // namespace loom
