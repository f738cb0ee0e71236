#pragma once
/// \file zipfile.hpp
/// Zip archives in memory through libzip (Debian's libzip-dev), for Keras 3's
/// `.keras` files: read named entries of an archive held in memory, with a
/// size limit per entry, and build an archive in memory (entries stored
/// uncompressed, as Python's zipfile writes them by default).
/// Needs libzip: link `loom::keras`.

#include <zip.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../error.hpp"

namespace loom::keras::zipfile {

using Bytes = std::vector<unsigned char>;

/// An archive read from bytes in memory (which must outlive it).
class Reader {
 public:
  Reader(const Bytes& bytes, std::string what) : what_(std::move(what)) {
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
    if (!src) fail("cannot read the archive", &error);
    archive_ = zip_open_from_source(src, ZIP_RDONLY, &error);
    if (!archive_) {
      zip_source_free(src);
      fail("not a readable zip archive", &error);
    }
    zip_error_fini(&error);
  }
  ~Reader() {
    if (archive_) zip_discard(archive_);
  }
  Reader(const Bytes&&, std::string) = delete;  // it reads the bytes in place: never a temporary's
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  bool has(const std::string& name) const { return zip_name_locate(archive_, name.c_str(), 0) >= 0; }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    const zip_int64_t n = zip_get_num_entries(archive_, 0);
    for (zip_int64_t i = 0; i < n; ++i) {
      const char* s = zip_get_name(archive_, static_cast<zip_uint64_t>(i), 0);
      if (s) out.emplace_back(s);
    }
    return out;
  }

  /// The bytes of entry `name`, at most `max_bytes` of them (FormatError
  /// otherwise, and for a missing, damaged or encrypted entry).
  Bytes read(const std::string& name, std::uint64_t max_bytes) const {
    const zip_int64_t index = zip_name_locate(archive_, name.c_str(), 0);
    if (index < 0) throw FormatError(what_ + ": the archive has no '" + name + "'");
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive_, static_cast<zip_uint64_t>(index), 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
      throw FormatError(what_ + ": cannot read the size of '" + name + "'");
    }
    if (st.size > max_bytes) {
      throw FormatError(what_ + ": '" + name + "' holds " + std::to_string(st.size) + " bytes, more than the limit of " +
                        std::to_string(max_bytes));
    }
    zip_file_t* file = zip_fopen_index(archive_, static_cast<zip_uint64_t>(index), 0);
    if (!file) throw FormatError(what_ + ": cannot open '" + name + "': " + zip_strerror(archive_));
    std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> owner(file, zip_fclose);
    Bytes out(static_cast<std::size_t>(st.size));
    zip_uint64_t done = 0;
    while (done < st.size) {
      const zip_int64_t n = zip_fread(file, out.data() + done, st.size - done);
      if (n <= 0) throw FormatError(what_ + ": '" + name + "' is damaged: " + zip_file_strerror(file));
      done += static_cast<zip_uint64_t>(n);
    }
    // The checksum is verified when the whole entry has been read.
    unsigned char extra;
    if (zip_fread(file, &extra, 1) != 0) throw FormatError(what_ + ": '" + name + "' is damaged or longer than stated");
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& message, zip_error_t* error) const {
    const std::string detail = zip_error_strerror(error);
    zip_error_fini(error);
    throw FormatError(what_ + ": " + message + " (" + detail + ")");
  }

  std::string what_;
  zip_t* archive_ = nullptr;
};

/// Builds an archive in memory: add entries, then `finish()` gives the bytes.
class Writer {
 public:
  /// Adds an entry (stored, not compressed); the writer keeps its own copy.
  void add(std::string name, Bytes data) { entries_.push_back({std::move(name), std::move(data)}); }
  void add(std::string name, const std::string& text) { add(std::move(name), Bytes(text.begin(), text.end())); }

  Bytes finish() const {
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t* src = zip_source_buffer_create(nullptr, 0, 0, &error);
    if (!src) throw IOError("zip: cannot create an archive in memory");
    std::unique_ptr<zip_source_t, void (*)(zip_source_t*)> src_owner(src, zip_source_free);
    zip_source_keep(src);  // the archive's close would free it otherwise: we still read it after
    zip_t* archive = zip_open_from_source(src, ZIP_TRUNCATE, &error);
    if (!archive) {
      zip_source_free(src);  // undo the keep
      zip_error_fini(&error);
      throw IOError("zip: cannot create an archive in memory");
    }
    zip_error_fini(&error);
    for (const auto& e : entries_) {
      zip_source_t* data = zip_source_buffer(archive, e.data.data(), e.data.size(), 0);
      const zip_int64_t index = data ? zip_file_add(archive, e.name.c_str(), data, ZIP_FL_ENC_UTF_8) : -1;
      if (index < 0) {
        if (data) zip_source_free(data);
        const std::string message = zip_strerror(archive);
        zip_discard(archive);
        throw IOError("zip: cannot add '" + e.name + "': " + message);
      }
      zip_set_file_compression(archive, static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0);
    }
    if (zip_close(archive) != 0) {
      const std::string message = zip_strerror(archive);
      zip_discard(archive);
      throw IOError("zip: cannot finish the archive: " + message);
    }
    return read_all(src);
  }

 private:
  static Bytes read_all(zip_source_t* src) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_source_stat(src, &st) != 0 || !(st.valid & ZIP_STAT_SIZE) || zip_source_open(src) != 0) {
      throw IOError("zip: cannot read back the archive");
    }
    Bytes out(static_cast<std::size_t>(st.size));
    const zip_int64_t n = zip_source_read(src, out.data(), out.size());
    zip_source_close(src);
    if (n < 0 || static_cast<zip_uint64_t>(n) != st.size) throw IOError("zip: cannot read back the archive");
    return out;
  }

  struct Entry {
    std::string name;
    Bytes data;
  };
  std::vector<Entry> entries_;
};

}  // namespace loom::keras::zipfile
