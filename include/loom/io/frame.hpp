#pragma once
/// \file io/frame.hpp
/// The frame around every loom model file (docs/file-format.md has the whole
/// format): a fixed header, the payload, and the payload's CRC-32.
///
///     offset  size  field
///     0       8     magic "LOOMMODL"
///     8       4     format version (1 to 3; see kFormatVersion)
///     12      4     flags: 1 = holds the training state, 2 = weights only
///     16      1     scalar size in bytes (4 float, 8 double)
///     17      8     payload length P
///     25      P     payload
///     25+P    4     CRC-32 (IEEE) of the payload
///
/// `unframe` checks all of it before the payload is read: magic, version,
/// flags, scalar size, the length against the real size, and the checksum.

#include <cstdint>
#include <cstring>
#include <string>

#include "bytes.hpp"

namespace loom::detail {

inline constexpr char kModelMagic[8] = {'L', 'O', 'O', 'M', 'M', 'O', 'D', 'L'};
/// The newest version save() writes. Version 3 adds the precision policy;
/// a float32 model is written as version 2, which is version 3 without it,
/// so that older loom reads it. Version 1 (loom until the model-layer
/// redesign) is version 2 without the callback states. All three load.
inline constexpr std::uint32_t kFormatVersion = 3;
inline constexpr std::uint32_t kOldestFormatVersion = 1;
inline constexpr std::uint32_t kHasTraining = 1, kWeightsOnly = 2;
inline constexpr std::size_t kFrameHeaderBytes = 8 + 4 + 4 + 1 + 8;

/// What unframe found in the header.
struct FrameInfo {
  std::uint32_t version = kFormatVersion;
  std::uint32_t flags = 0;
};

/// Header + payload + checksum, for scalars of `scalar_bytes` bytes, as
/// format `version` (the payload must be that version's).
inline std::string frame(const std::string& payload, std::uint32_t flags, std::size_t scalar_bytes,
                         std::uint32_t version) {
  ByteWriter w;
  w.bytes.append(kModelMagic, 8);
  w.u32(version);
  w.u32(flags);
  w.u8(static_cast<std::uint8_t>(scalar_bytes));
  w.u64(payload.size());
  w.bytes += payload;
  w.u32(crc32(reinterpret_cast<const unsigned char*>(payload.data()), payload.size()));
  return w.bytes;
}

/// Checks the frame of `bytes` (named `source` in errors) and returns a
/// reader of its payload; `info` receives the version and flags. The reader
/// points into `bytes`, which must outlive it.
inline ByteReader unframe(const std::string& bytes, const std::string& source, std::size_t scalar_bytes,
                          FrameInfo& info) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  ByteReader h(source, p, bytes.size());
  if (bytes.size() < 8 || std::memcmp(p, kModelMagic, 8) != 0) h.fail("not a loom model file (bad magic number)");
  if (bytes.size() < kFrameHeaderBytes + 4) {
    h.fail(ByteReader::str_of("truncated: ", bytes.size(), " bytes, too short for a model file"));
  }
  for (int i = 0; i < 8; ++i) h.u8("magic");
  info.version = h.u32("format version");
  if (info.version < kOldestFormatVersion || info.version > kFormatVersion) {
    h.fail(ByteReader::str_of("format version ", info.version, ", this loom reads versions ", kOldestFormatVersion,
                              " to ", kFormatVersion));
  }
  info.flags = h.u32("flags");
  if (info.flags & ~(kHasTraining | kWeightsOnly)) h.fail(ByteReader::str_of("unknown flags ", info.flags));
  const unsigned scalar = h.u8("scalar size");
  if (scalar != scalar_bytes) {
    const auto name = [](std::size_t s) { return s == 4 ? "float" : s == 8 ? "double" : "an unknown scalar"; };
    h.fail(ByteReader::str_of("saved with ", name(scalar), " parameters, loading as ", name(scalar_bytes)));
  }
  const std::uint64_t len = h.u64("payload length");
  if (h.remaining() < 4 || len != h.remaining() - 4) {
    h.fail(ByteReader::str_of(h.remaining() < len + 4 ? "truncated" : "too long", ": the header says ", len,
                              " bytes of data and a checksum, the file holds ", h.remaining()));
  }
  const unsigned char* payload = p + kFrameHeaderBytes;
  std::uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) stored |= std::uint32_t(payload[len + static_cast<std::size_t>(i)]) << (8 * i);
  if (crc32(payload, static_cast<std::size_t>(len)) != stored) h.fail("checksum mismatch: the file is corrupt");
  return ByteReader(source, payload, static_cast<std::size_t>(len));
}

}  // namespace loom::detail
