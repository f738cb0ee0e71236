#pragma once
/// \file onnx.hpp
/// ONNX model files out of loom: `save_onnx(model, path)` writes a
/// loom model's inference as an ONNX graph (opset 17) that ONNX Runtime,
/// OpenVINO and other ONNX runtimes run, taking and giving what the model's
/// predict takes and gives (NHWC images; see onnx/export.hpp for the layout).
///
///     #include <loom/onnx.hpp>   // link loom::onnx
///
///     loom::save_onnx(model, "fashion.onnx");
///
/// Needs, beyond Eigen: Debian's ONNX library and protobuf (libonnx-dev,
/// libprotobuf-dev). Which layers are written, and how, is in docs/onnx.md.

#include <string>

#include "io.hpp"
#include "onnx/export.hpp"

namespace loom {

/// The bytes of the model (built) as an ONNX file; checked by ONNX's own
/// checker before they are returned.
template <class T>
std::string onnx_bytes(const Sequential<T>& model) {
  const ::onnx::ModelProto proto = onnx_format::to_model_proto(model);
  onnx_format::check(proto, "save_onnx");
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) throw Error("save_onnx: protobuf could not serialize the model");
  return bytes;
}

/// Writes the model (built) to `path` as an ONNX file, atomically.
template <class T>
void save_onnx(const Sequential<T>& model, const std::string& path) {
  write_file_atomically(path, onnx_bytes(model));
}

}  // namespace loom
