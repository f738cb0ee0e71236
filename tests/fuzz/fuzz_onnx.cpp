// libFuzzer target for loom's ONNX reader (load_onnx_from_bytes). Malformed
// input must end in a loom::Error; a crash, any other exception, a sanitizer
// report, a timeout or running out of memory is a finding. A model that
// loads, and whose inputs and layer outputs are small, also predicts one
// sample, so that whatever the reader let through is run once.
// Build and run: scripts/run-fuzz. Seeds: corpus/onnx/ (see its README.md).
#include <loom/onnx.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    auto model = loom::load_onnx_from_bytes<float>(std::string(reinterpret_cast<const char*>(data), size), "fuzz.onnx");
    // Predicts when no layer's output is large (the reader allows up to 2^28 values a sample).
    bool small = model.layers().front()->input_shape().size() <= 4096;
    for (const auto& layer : model.layers()) small = small && layer->output_shape().size() <= (1 << 16);
    if (small) {
      const loom::Shape in = model.layers().front()->input_shape();
      loom::Tensor<float> x(in.with_batch(1), 0.5f);
      model.predict(x);
    }
  } catch (const loom::Error&) {
  }
  return 0;
}
