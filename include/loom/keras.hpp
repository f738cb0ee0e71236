#pragma once
/// \file keras.hpp
/// Keras models in and out: `keras::load_model<T>(path)` reads a model saved
/// by Keras 2.1 to 3.x, in the legacy HDF5 format (`.h5`) or Keras 3's
/// `.keras` zip, chosen by the file's content; `keras::save_model(model,
/// path)` writes a loom model in either format for `keras.models.load_model`.
///
///     #include <loom/keras.hpp>   // link loom::keras
///
///     auto model = loom::keras::load_model<float>("fashion.keras");
///     auto probabilities = model.predict(images);   // (N, 28, 28, 1) in [0, 1]
///     model.fit(x, y, loom::FitOptions<float>().epochs(1));  // compiled as it was in Keras
///     loom::keras::save_model(model, "fine_tuned.keras");
///
/// Needs, beyond Eigen: the HDF5 C library, libzip and nlohmann-json
/// (Debian: libhdf5-dev, libzip-dev, nlohmann-json3-dev). The formats, the
/// layers loom reads, and what it refuses are in docs/keras.md. The HDF5
/// library is not hardened against hostile files: load models you trust.
///
/// A layer (optimizer, loss, schedule) of one's own goes to and from Keras
/// once it has a Keras mapping registered beside its LOOM_REGISTER:
/// `LOOM_KERAS_MAPPING(keras::LayerMapping("ScaleShift").real("scale").real("shift", 0.0))`
/// (keras/layer_mapping.hpp, docs/keras.md).

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "io.hpp"
#include "keras/h5_format.hpp"
#include "keras/keras_format.hpp"
#include "loom.hpp"

namespace loom::keras {

/// The two file formats: Keras 3's zip (`.keras`) and the legacy HDF5 (`.h5`).
enum class Format { Keras, H5 };

class LoadOptions {
 public:
  LoadOptions() = default;
  /// Compile the model with the loss, optimizer and metrics saved with it
  /// (as Keras's `load_model(compile=True)`); off, the model is returned
  /// uncompiled and the compile config is not read at all.
  LOOM_OPTION(bool, compile, true)
};

/// The format of a file's bytes, by content: zip or HDF5 (FormatError otherwise).
inline Format detect_format(const std::vector<unsigned char>& bytes, const std::string& what) {
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), "PK\x03\x04", 4) == 0) return Format::Keras;
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), "\x89HDF\r\n\x1a\n", 8) == 0) return Format::H5;
  throw FormatError(what + ": neither a .keras (zip) nor an .h5 (HDF5) Keras model");
}

/// A Keras model from the bytes of a .keras or .h5 file; `what` names it in errors.
template <class T = float>
Sequential<T> load_model_from_bytes(const std::vector<unsigned char>& bytes, const std::string& what,
                                    const LoadOptions& options = {}) {
  try {
    return detect_format(bytes, what) == Format::Keras ? impl::load_keras<T>(bytes, what, options.compile())
                                                       : impl::load_h5<T>(bytes, what, options.compile());
  } catch (const FormatError& e) {
    const std::string message = e.what();
    if (message.rfind(what, 0) == 0) throw;
    throw FormatError(what + ": " + message);  // errors from the HDF5 layer name only the object
  }
}

/// A Keras model from a .keras or .h5 file, with its weights, compiled as it
/// was saved (unless `options.compile(false)`). FormatError naming the file
/// and the layer for anything loom cannot read.
template <class T = float>
Sequential<T> load_model(const std::string& path, const LoadOptions& options = {}) {
  const auto bytes = loom::detail::read_whole_file<std::vector<unsigned char>>(path, impl::kMaxWeightsBytes + impl::kMaxConfigBytes,
                                                                          "a Keras model");
  return load_model_from_bytes<T>(bytes, path, options);
}

/// The bytes of `model` saved in `format`.
template <class T>
std::vector<unsigned char> save_model_to_bytes(Sequential<T>& model, Format format) {
  return format == Format::Keras ? impl::save_keras(model) : impl::save_h5(model);
}

/// The format a path's extension asks for: .keras, or .h5 / .hdf5.
inline Format format_for_path(const std::string& path) {
  auto ends = [&](const char* e) {
    const std::size_t n = std::strlen(e);
    return path.size() >= n && path.compare(path.size() - n, n, e) == 0;
  };
  if (ends(".keras")) return Format::Keras;
  if (ends(".h5") || ends(".hdf5")) return Format::H5;
  throw ConfigError("keras::save_model: '" + path + "' ends in neither .keras nor .h5: name the format");
}

/// Saves a built `model` for Keras (`keras.models.load_model(path)`), in the
/// format its extension names or `format`. Written to a temporary file and
/// renamed into place. Compiled models carry their loss, optimizer and
/// metrics, and the optimizer's state once it has taken a step.
template <class T>
void save_model(Sequential<T>& model, const std::string& path, std::optional<Format> format = std::nullopt) {
  const auto bytes = save_model_to_bytes(model, format ? *format : format_for_path(path));
  write_file_atomically(path, std::string(bytes.begin(), bytes.end()));
}

}  // namespace loom::keras
