// libFuzzer target for loom's model loader (Sequential<float>::load_bytes).
// Malformed input must end in a loom::Error; a crash, any other exception, a
// sanitizer report, a timeout or running out of memory is a finding.
//
// The first byte picks how the rest goes in: 0, as a whole file (the header
// and checksum checks); 1 or 2, as a payload framed with a valid header and
// checksum of today's format (flags 0 or "has training state"); 3 or 4, the
// same in format 1; so that mutations reach the payload parser instead of
// dying at the checksum.
// Build and run: scripts/run-fuzz. Seeds: corpus/model/ (see its README.md).
#include <loom/loom.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace {

/// A payload framed as format 1 (loom before the model-layer redesign).
std::string framed_v1(const std::string& payload, std::uint32_t flags) {
  loom::ByteWriter w;
  w.bytes.append("LOOMMODL", 8);
  w.u32(1);
  w.u32(flags);
  w.u8(sizeof(float));
  w.u64(payload.size());
  w.bytes += payload;
  w.u32(loom::crc32(reinterpret_cast<const unsigned char*>(payload.data()), payload.size()));
  return w.bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  // data[0]: 0 unframed; 1-2 version 2, 3-4 version 1, 5-6 version 3 (even: with training).
  const std::uint32_t flags = (data[0] != 0 && data[0] % 2 == 0) ? loom::detail::kHasTraining : 0;
  const std::string bytes = data[0] == 0   ? rest
                            : data[0] <= 2 ? loom::detail::frame(rest, flags, sizeof(float), 2)
                            : data[0] <= 4 ? framed_v1(rest, flags)
                                           : loom::detail::frame(rest, flags, sizeof(float), 3);
  try {
    loom::Sequential<float> m = loom::Sequential<float>::load_bytes(bytes, "fuzz input");
    (void)m.count_params();
    // A model that loaded must also run; only small inputs, to keep runs fast.
    if (m.built() && m.input_shape().size() <= 4096) {
      try {
        const loom::Tensor<float> x(m.input_shape().with_batch(1));
        (void)m.predict(x);
      } catch (const loom::Error&) {
        // A loaded model may still refuse to run (e.g. a shape it cannot take).
      }
    }
  } catch (const loom::Error&) {
    // malformed input, rejected as it should be
  }
  return 0;
}
