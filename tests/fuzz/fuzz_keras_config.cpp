// libFuzzer target for the Keras importer's untrusted-text side: the zip
// archive of a .keras file (libzip, through loom::keras::zip) and the JSON
// model and compile configs (through loom::keras::model_from_config). Input
// starting "PK\3\4" is read as a .keras archive (config.json, and the weights
// entry read whole); anything else as the JSON config itself. Malformed input
// must end in a loom::Error; a crash, any other exception (a JSON type error
// escaping, say), a sanitizer report, a timeout or running out of memory is a
// finding. The weights' HDF5 parsing is not fuzzed: that library is not
// hardened against hostile files (docs/keras.md says so).
// Build and run: scripts/run-fuzz. Seeds: corpus/keras/.
#include <loom/keras/compile_config.hpp>
#include <loom/keras/model_config.hpp>
#include <loom/keras/zipfile.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace loom::keras;
  const std::vector<unsigned char> bytes(data, data + size);
  try {
    std::string text;
    if (size >= 4 && std::memcmp(data, "PK\x03\x04", 4) == 0) {
      const zipfile::Reader archive(bytes, "fuzz.keras");
      const auto config = archive.read("config.json", 1 << 20);
      text.assign(config.begin(), config.end());
      if (archive.has("model.weights.h5")) archive.read("model.weights.h5", 1 << 20);
    } else {
      text.assign(bytes.begin(), bytes.end());
    }
    const json config = impl::parse_json(text, "fuzz");
    // A layer may hold at most 2^16 values, as a loader allows for a small file.
    auto model = model_from_config<float>(config, "fuzz", 1 << 16);
    if (config.is_object() && config.contains("compile_config") && config["compile_config"].is_object()) {
      const json& c = config["compile_config"];
      if (c.contains("loss")) {
        compile_from_keras(model, impl::single_loss(c["loss"], "fuzz"), c.contains("optimizer") ? &c["optimizer"] : nullptr,
                           c.contains("metrics") ? &c["metrics"] : nullptr, "fuzz");
      }
    }
    (void)model_to_config(model, true).dump();  // and what loom would write back
  } catch (const loom::Error&) {
  }
  return 0;
}
