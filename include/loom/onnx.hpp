#pragma once
/// \file onnx.hpp
/// ONNX model files in and out of loom. `save_onnx(model, path)` writes a
/// loom model's inference as an ONNX graph (opset 17) that ONNX Runtime,
/// OpenVINO and other ONNX runtimes run, taking and giving what the model's
/// predict takes and gives (NHWC images; see onnx/export.hpp for the layout).
/// `load_onnx<T>(path)` reads the graphs that PyTorch's torch.onnx.export and
/// save_onnx write for loom's layers, for inference and fine-tuning
/// (onnx/import.hpp: what it reads, and the layout of its input).
///
///     #include <loom/onnx.hpp>   // link loom::onnx
///
///     loom::save_onnx(model, "fashion.onnx");
///     loom::OnnxInfo info;
///     auto from_pytorch = loom::load_onnx<float>("exported.onnx", &info);  // info.input_layout: "NCHW"
///
/// Needs, beyond Eigen: Debian's ONNX library and protobuf (libonnx-dev,
/// libprotobuf-dev). Which layers are written, and how, is in docs/onnx.md.

#include <string>

#include "io.hpp"
#include "onnx/export.hpp"
#include "onnx/import.hpp"

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

/// A model from the bytes of an ONNX file; `what` names it in errors.
/// FormatError for a file that is not ONNX or holds what loom does not read.
template <class T = float>
Sequential<T> load_onnx_from_bytes(const std::string& bytes, const std::string& what, OnnxInfo* info = nullptr) {
  ::onnx::ModelProto proto;
  if (bytes.empty() || !proto.ParseFromString(bytes)) throw FormatError(what + ": not an ONNX model (protobuf cannot parse it)");
  return onnx_format::from_model_proto<T>(proto, what, info);
}

/// A model from an ONNX file (see onnx/import.hpp); `info`, if given, says
/// what the file's input and output are called and its images' layout.
template <class T = float>
Sequential<T> load_onnx(const std::string& path, OnnxInfo* info = nullptr) {
  // protobuf's own limit on a message: 2 GiB.
  const std::string bytes = detail::read_whole_file<std::string>(path, (std::uint64_t(1) << 31) - 1, "an ONNX model");
  return load_onnx_from_bytes<T>(bytes, path, info);
}

}  // namespace loom
