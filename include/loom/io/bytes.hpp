#pragma once
/// \file io/bytes.hpp
/// Little-endian bytes: `ByteWriter` appends values to a string, `ByteReader`
/// reads them back and checks every length against the bytes that are really
/// there, so a lying or truncated input raises a FormatError naming its source
/// and what was being read, never reads past the end and never allocates more
/// than it holds. Also CRC-32, the checksum of loom's model files.
///
/// Used by the model file (model/model_file.hpp) and by anything that saves
/// its own state into one: optimizers, the trainer, callbacks.

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../random.hpp"
#include "../tensor.hpp"

namespace loom {

/// CRC-32 (IEEE 802.3, the one zlib and gzip use).
inline std::uint32_t crc32(const unsigned char* data, std::size_t n) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/// Appends little-endian values to `bytes`.
class ByteWriter {
 public:
  void u8(std::uint8_t v) { bytes.push_back(static_cast<char>(v)); }
  void u32(std::uint32_t v) { le(v, 4); }
  void u64(std::uint64_t v) { le(v, 8); }
  void i64(std::int64_t v) { le(static_cast<std::uint64_t>(v), 8); }
  void f64(double v) {
    std::uint64_t u;
    std::memcpy(&u, &v, 8);
    u64(u);
  }
  /// u32 length, then the characters.
  void str(const std::string& s) {
    u32(static_cast<std::uint32_t>(s.size()));
    bytes += s;
  }
  /// u8 rank, then each dimension as i64.
  void shape(const Shape& s) {
    u8(static_cast<std::uint8_t>(s.rank()));
    for (Index d : s) i64(d);
  }
  /// The values of `t` (its shape is written separately): float as 4 bytes, double as 8.
  template <class T>
  void values(const Tensor<T>& t) {
    for (T v : t) {
      if constexpr (sizeof(T) == 4) {
        std::uint32_t u;
        std::memcpy(&u, &v, 4);
        u32(u);
      } else {
        f64(static_cast<double>(v));
      }
    }
  }
  /// Shape, then values.
  template <class T>
  void tensor(const Tensor<T>& t) {
    shape(t.shape());
    values(t);
  }
  /// u32 count, then (key, value) strings.
  void pairs(const std::vector<std::pair<std::string, std::string>>& c) {
    u32(static_cast<std::uint32_t>(c.size()));
    for (const auto& kv : c) {
      str(kv.first);
      str(kv.second);
    }
  }
  void rng(const Rng::State& s) {
    for (auto v : s) u64(v);
  }

  std::string bytes;

 private:
  void le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  }
};

/// Reads what ByteWriter wrote. Every read names what it reads (`what`), and
/// the first that fails throws FormatError("<source>: ...").
class ByteReader {
 public:
  ByteReader(std::string source, const unsigned char* data, std::size_t size)
      : source_(std::move(source)), p_(data), n_(size) {}

  [[noreturn]] void fail(const std::string& what) const { throw FormatError(source_ + ": " + what); }
  const std::string& source() const { return source_; }
  std::size_t remaining() const { return n_ - at_; }
  std::size_t offset() const { return at_; }

  std::uint8_t u8(const char* what) { return static_cast<std::uint8_t>(le(1, what)); }
  std::uint32_t u32(const char* what) { return static_cast<std::uint32_t>(le(4, what)); }
  std::uint64_t u64(const char* what) { return le(8, what); }
  std::int64_t i64(const char* what) { return static_cast<std::int64_t>(le(8, what)); }
  double f64(const char* what) {
    const std::uint64_t u = le(8, what);
    double v;
    std::memcpy(&v, &u, 8);
    return v;
  }
  std::string str(const char* what) {
    const std::uint32_t len = u32(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + at_), len);
    at_ += len;
    return s;
  }
  /// A shape whose elements (of `elem` bytes each; 0: not checked) must fit in what is left.
  Shape shape(const char* what, std::size_t elem) {
    const unsigned rank = u8(what);
    if (rank > static_cast<unsigned>(Shape::max_rank)) fail(str_of("rank ", rank, " of ", what, " exceeds ", Shape::max_rank));
    Shape s;
    std::uint64_t count = 1;
    for (unsigned i = 0; i < rank; ++i) {
      const std::int64_t d = i64(what);
      if (d < 0 || d > (std::int64_t(1) << 40)) fail(str_of("dimension ", d, " of ", what, " is out of range"));
      count *= static_cast<std::uint64_t>(d);
      if (elem > 0 && count > remaining() / elem + 1) {
        fail(str_of(what, " claims more values than the file holds (truncated?)"));
      }
      s.push_back(static_cast<Index>(d));
    }
    return s;
  }
  template <class T>
  void values(Tensor<T>& t, const char* what) {
    need(static_cast<std::uint64_t>(t.size()) * sizeof(T), what);
    for (T& v : t) {
      if constexpr (sizeof(T) == 4) {
        const std::uint32_t u = static_cast<std::uint32_t>(le(4, what));
        std::memcpy(&v, &u, 4);
      } else {
        v = static_cast<T>(f64(what));
      }
    }
  }
  /// What ByteWriter::tensor wrote.
  template <class T>
  Tensor<T> tensor(const char* what) {
    Tensor<T> t(shape(what, sizeof(T)));
    values(t, what);
    return t;
  }
  std::vector<std::pair<std::string, std::string>> pairs(const char* what) {
    const std::uint32_t n = u32(what);
    if (n > 64) fail(str_of(what, ": ", n, " entries, at most 64 expected"));
    std::vector<std::pair<std::string, std::string>> c;
    for (std::uint32_t i = 0; i < n; ++i) {
      std::string k = str(what);
      c.emplace_back(std::move(k), str(what));
    }
    return c;
  }
  Rng::State rng(const char* what) {
    Rng::State s;
    for (auto& v : s) v = u64(what);
    return s;
  }
  /// A count (u64) of items each at least `min_bytes` long: must fit in what is left.
  std::uint64_t count(const char* what, std::uint64_t min_bytes) {
    const std::uint64_t n = u64(what);
    if (min_bytes > 0 && n > remaining() / min_bytes) fail(str_of(what, ": count ", n, " exceeds what the file holds"));
    return n;
  }
  /// The next `n` bytes as a reader of their own (for a nested, length-prefixed block).
  ByteReader block(std::uint64_t n, const char* what) {
    need(n, what);
    ByteReader r(source_, p_ + at_, static_cast<std::size_t>(n));
    at_ += static_cast<std::size_t>(n);
    return r;
  }

  template <class... A>
  static std::string str_of(A&&... a) {
    return loom::detail::str(std::forward<A>(a)...);
  }

 private:
  void need(std::uint64_t bytes, const char* what) const {
    if (bytes > remaining()) {
      fail(str_of("truncated: ", what, " needs ", bytes, " bytes at offset ", at_, ", ", remaining(), " left"));
    }
  }
  std::uint64_t le(int n, const char* what) {
    need(static_cast<std::uint64_t>(n), what);
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= std::uint64_t(p_[at_ + static_cast<std::size_t>(i)]) << (8 * i);
    at_ += static_cast<std::size_t>(n);
    return v;
  }

  std::string source_;
  const unsigned char* p_;
  std::size_t n_, at_ = 0;
};

}  // namespace loom
