#pragma once
/// \file data/idx.hpp
/// Reads IDX files (the MNIST family's format), plain or gzipped.
/// **Needs zlib** (link `loom::data`, or ZLIB::ZLIB): not part of loom.hpp.
///
/// An IDX file is a big-endian header and a payload:
///
///     bytes 0-1  0x00 0x00
///     byte  2    element type: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64
///     byte  3    number of dimensions d
///     4 * d      each dimension, u32 big-endian
///     payload    prod(dims) elements, big-endian, row-major
///
/// Compression is detected from the content (gzip's 1f 8b), not the name.
/// Everything the header claims is checked against what the file really
/// holds before it is trusted: the payload must be exactly prod(dims)
/// elements, and memory grows only with data actually read (up to a limit),
/// so a lying header or a gzip bomb is an error, not an allocation.

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../io.hpp"
#include "../parallel.hpp"
#include "../tensor.hpp"

namespace loom::data {

/// Limits on what read_idx accepts.
struct IdxLimits {
  /// Largest payload accepted, in bytes (Fashion-MNIST's training images are 47 MB).
  std::uint64_t max_payload_bytes = std::uint64_t(1) << 30;
};

/// An IDX file's header: element type code and dimensions.
struct IdxHeader {
  std::uint8_t type = 0;
  std::vector<std::uint32_t> dims;
  std::size_t header_bytes() const { return 4 + 4 * dims.size(); }
};

namespace detail {

inline std::size_t idx_element_size(std::uint8_t type) {
  switch (type) {
    case 0x08:
    case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C:
    case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
  }
}

inline std::string hex_byte(unsigned v) {
  static const char* digits = "0123456789abcdef";
  return std::string("0x") + digits[(v >> 4) & 15] + digits[v & 15];
}

/// Inflates a gzip stream (one or more members). Output grows with the data
/// actually inflated; more than `max_bytes` is an error.
inline std::vector<unsigned char> gunzip(const std::string& path, const std::vector<unsigned char>& in,
                                         std::uint64_t max_bytes) {
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) throw FormatError(path + ": zlib could not start");
  std::vector<unsigned char> out;
  if (in.size() >= 18) {
    // The last member's trailer ends with its size mod 2^32: a hint, trusted
    // up to 64 times the compressed size (and max_bytes), so that a lying
    // trailer cannot make a large allocation.
    const unsigned char* t = in.data() + in.size() - 4;
    const std::uint64_t hint = std::uint32_t(t[0]) | std::uint32_t(t[1]) << 8 | std::uint32_t(t[2]) << 16 |
                               std::uint32_t(t[3]) << 24;
    out.reserve(static_cast<std::size_t>(std::min({hint, max_bytes, std::uint64_t(64) * in.size()})));
  }
  z.next_in = const_cast<Bytef*>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  unsigned char chunk[1 << 16];
  int rc = Z_OK;
  for (;;) {
    z.next_out = chunk;
    z.avail_out = sizeof chunk;
    rc = inflate(&z, Z_NO_FLUSH);
    const std::size_t got = sizeof chunk - z.avail_out;
    if (rc != Z_OK && rc != Z_STREAM_END && !(rc == Z_BUF_ERROR && got > 0)) break;
    if (out.size() + got > max_bytes) {
      inflateEnd(&z);
      throw FormatError(loom::detail::str(path, ": inflates to more than the limit of ", max_bytes, " bytes"));
    }
    out.insert(out.end(), chunk, chunk + got);
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      inflateReset(&z);  // another gzip member follows
      continue;
    }
    if (z.avail_in == 0 && got == 0) {  // input ran out before the stream ended
      rc = Z_BUF_ERROR;
      break;
    }
  }
  const std::string msg = z.msg ? z.msg : "";
  inflateEnd(&z);
  if (rc != Z_STREAM_END) {
    throw FormatError(path + ": corrupt or truncated gzip stream" + (msg.empty() ? "" : " (" + msg + ")"));
  }
  return out;
}

inline std::uint32_t big_endian_u32(const unsigned char* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
}

/// Element `i` of a big-endian payload of `type`, as double.
inline double idx_element(const unsigned char* p, std::uint8_t type) {
  switch (type) {
    case 0x08: return p[0];
    case 0x09: return static_cast<std::int8_t>(p[0]);
    case 0x0B: return static_cast<std::int16_t>((p[0] << 8) | p[1]);
    case 0x0C: return static_cast<std::int32_t>(big_endian_u32(p));
    case 0x0D: {
      const std::uint32_t u = big_endian_u32(p);
      float f;
      std::memcpy(&f, &u, 4);
      return f;
    }
    default: {
      const std::uint64_t u = (std::uint64_t(big_endian_u32(p)) << 32) | big_endian_u32(p + 4);
      double d;
      std::memcpy(&d, &u, 8);
      return d;
    }
  }
}

/// Parses and checks the header of `bytes` against their real length.
inline IdxHeader parse_idx_header(const std::string& path, const std::vector<unsigned char>& bytes,
                                  const IdxLimits& limits) {
  if (bytes.size() < 4) {
    throw FormatError(loom::detail::str(path, ": truncated: ", bytes.size(), " bytes, too short for an IDX header"));
  }
  IdxHeader h;
  h.type = bytes[2];
  const unsigned rank = bytes[3];
  if (bytes[0] != 0 || bytes[1] != 0 || idx_element_size(h.type) == 0) {
    throw FormatError(path + ": not an IDX file: magic " + hex_byte(bytes[0]) + " " + hex_byte(bytes[1]) + " " +
                      hex_byte(bytes[2]) + " " + hex_byte(bytes[3]) +
                      ", expected 0x00 0x00, a type (0x08 0x09 0x0b 0x0c 0x0d 0x0e) and a rank");
  }
  if (rank < 1 || rank > static_cast<unsigned>(Shape::max_rank)) {
    throw FormatError(loom::detail::str(path, ": IDX rank ", rank, " is not in [1, ", Shape::max_rank, "]"));
  }
  if (bytes.size() < 4 + 4 * std::size_t(rank)) {
    throw FormatError(loom::detail::str(path, ": truncated: the header needs ", 4 + 4 * rank, " bytes, the data has ",
                                        bytes.size()));
  }
  std::uint64_t count = 1;
  std::string dims;
  for (unsigned i = 0; i < rank; ++i) {
    const std::uint32_t d = big_endian_u32(bytes.data() + 4 + 4 * i);
    h.dims.push_back(d);
    dims += (i ? "x" : "") + std::to_string(d);
    // Checked before multiplying, so that no limit makes the product wrap.
    if (d != 0 && count > limits.max_payload_bytes / idx_element_size(h.type) / d) {
      throw FormatError(loom::detail::str(path, ": dimensions ", dims, "... need more than the limit of ",
                                          limits.max_payload_bytes, " bytes"));
    }
    count *= d;
  }
  const std::uint64_t payload = count * idx_element_size(h.type);
  const std::uint64_t have = bytes.size() - h.header_bytes();
  if (have != payload) {
    throw FormatError(loom::detail::str(path, ": ", have < payload ? "truncated" : "too long", ": the header says ",
                                        dims, " (", payload, " bytes of data), the file holds ", have));
  }
  return h;
}

/// `bytes` compressed into a gzip stream (what gunzip reads back).
inline std::string gzip(const std::vector<unsigned char>& bytes, const std::string& path) {
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    throw IOError(path + ": cannot start gzip compression");
  }
  std::string out(deflateBound(&z, static_cast<uLong>(bytes.size())), '\0');
  z.next_in = const_cast<Bytef*>(bytes.data());
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  const std::size_t written = z.total_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw IOError(path + ": gzip compression failed");
  out.resize(written);
  return out;
}

}  // namespace detail

/// Parses the bytes of an IDX file (plain or gzip) into a Tensor of its
/// dimensions, converting elements to T. `source` names the bytes in errors
/// (a path). Throws FormatError if they are not a well-formed IDX file.
template <class T>
Tensor<T> parse_idx(std::vector<unsigned char> bytes, const std::string& source, const IdxLimits& limits = {}) {
  if (bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) {
    bytes = detail::gunzip(source, bytes, limits.max_payload_bytes + 4 + 4 * Shape::max_rank);
  }
  const IdxHeader h = detail::parse_idx_header(source, bytes, limits);
  Shape shape;
  for (std::uint32_t d : h.dims) shape.push_back(static_cast<Index>(d));
  Tensor<T> t;
  t.resize_for_overwrite(shape);  // every element is converted next
  const std::size_t size = detail::idx_element_size(h.type);
  const unsigned char* p = bytes.data() + h.header_bytes();
  if (h.type == 0x08) {  // on the threads: Fashion-MNIST's training images are 188 MB of new memory as floats
    loom::detail::parallel_ranges(t.size(), Index(1) << 20, [&](Index begin, Index end) {
      for (Index i = begin; i < end; ++i) t[i] = static_cast<T>(p[i]);
    });
  } else {
    for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<T>(detail::idx_element(p + i * size, h.type));
  }
  return t;
}

/// Reads an IDX file (plain or gzip) into a Tensor of the file's dimensions,
/// converting elements to T. Throws IOError if it cannot be read and
/// FormatError, naming the path, if it is not a well-formed IDX file.
template <class T>
Tensor<T> read_idx(const std::string& path, const IdxLimits& limits = {}) {
  // A plain file is at most header + payload; a gzip file of such data is smaller still.
  const std::uint64_t max_bytes = limits.max_payload_bytes + 4 + 4 * Shape::max_rank;
  return parse_idx<T>(loom::detail::read_whole_file<std::vector<unsigned char>>(path, max_bytes, "an IDX file"), path,
                      limits);
}

/// Writes `t` as an IDX file of unsigned bytes (values must be integers in
/// [0, 255]), gzipped when `gzip` is true, atomically (write_file_atomically).
template <class T>
void write_idx_u8(const std::string& path, const Tensor<T>& t, bool gzip) {
  std::vector<unsigned char> bytes{0, 0, 0x08, static_cast<unsigned char>(t.rank())};
  for (Index d : t.shape()) {
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<unsigned char>((static_cast<std::uint64_t>(d) >> s) & 0xff));
  }
  for (T v : t) {
    if (!(v >= 0 && v <= 255) || v != static_cast<T>(static_cast<int>(v))) {
      throw FormatError(loom::detail::str(path, ": value ", v, " is not a byte"));
    }
    bytes.push_back(static_cast<unsigned char>(v));
  }
  const std::string out = gzip ? detail::gzip(bytes, path) : std::string(bytes.begin(), bytes.end());
  write_file_atomically(path, out);
}

}  // namespace loom::data
