// libFuzzer target for loom's IDX reader (plain and gzipped). Malformed input
// must end in a loom::Error; a crash, any other exception, a sanitizer report,
// a timeout or running out of memory is a finding. Build and run: scripts/run-fuzz.
#include <loom/data/idx.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace {

// Stops the run with a crash (and so an input saved by libFuzzer) when `ok` is false.
void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  loom::data::IdxLimits limits;
  limits.max_payload_bytes = std::uint64_t(1) << 22;  // a legit huge header is an error, not an OOM
  loom::Tensor<float> t;
  try {
    t = loom::data::parse_idx<float>(std::vector<unsigned char>(data, data + size), "fuzz input", limits);
  } catch (const loom::Error&) {
    return 0;  // malformed input, rejected as it should be
  }
  // Accepted: the tensor must be what the header says.
  check(t.rank() >= 1 && t.rank() <= loom::Shape::max_rank);
  check(t.size() == t.shape().size());
  check(static_cast<std::uint64_t>(t.size()) <= limits.max_payload_bytes);
  const bool gzipped = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  if (!gzipped) {
    // A plain file is exactly header + payload.
    const std::size_t element = loom::data::detail::idx_element_size(data[2]);
    check(element != 0);
    check(size == 4 + 4 * static_cast<std::size_t>(t.rank()) + element * static_cast<std::size_t>(t.size()));
    for (int i = 0; i < t.rank(); ++i) {
      check(static_cast<std::uint64_t>(t.dim(i)) == loom::data::detail::big_endian_u32(data + 4 + 4 * i));
    }
    // Bytes (u8, i8) convert to float exactly.
    const std::uint8_t* payload = data + 4 + 4 * t.rank();
    if (data[2] == 0x08) {
      for (loom::Index i = 0; i < t.size(); ++i) check(t[i] == static_cast<float>(payload[i]));
    } else if (data[2] == 0x09) {
      for (loom::Index i = 0; i < t.size(); ++i) check(t[i] == static_cast<float>(static_cast<std::int8_t>(payload[i])));
    }
  }
  return 0;
}
