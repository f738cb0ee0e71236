// libFuzzer target for loom's ONNX reader (load_onnx_from_bytes). Malformed
// input must end in a loom::Error; a crash, any other exception, a sanitizer
// report, a timeout or running out of memory is a finding. A model that
// loads and takes small inputs also predicts one sample, so that whatever
// the reader let through is run once.
// Build and run: scripts/run-fuzz. Seeds: corpus/onnx/ (see its README.md).
#include <loom/onnx.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    auto model = loom::load_onnx_from_bytes<float>(std::string(reinterpret_cast<const char*>(data), size), "fuzz.onnx");
    const loom::Shape in = model.layers().front()->input_shape();
    if (in.size() <= 4096) {
      loom::Tensor<float> x(in.with_batch(1), 0.5f);
      model.predict(x);
    }
  } catch (const loom::Error&) {
  }
  return 0;
}
