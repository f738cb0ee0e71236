#pragma once
/// \file io.hpp
/// Writing files so that they survive crashes: `write_file_atomically`
/// writes a temporary file beside the target, flushes it to disk, renames
/// it over the target and flushes the folder, so a reader sees the old file
/// or the new one, never half of one. Used for saved models, checkpoints and results.

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#if __has_include(<unistd.h>)
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#define LOOM_HAVE_POSIX_FILES 1
#endif

#include "error.hpp"

namespace loom {

/// Writes `bytes` to `path` atomically. Throws IOError naming `path` if the
/// temporary file cannot be created, written, flushed or renamed; it is then
/// removed and `path` is left as it was.
inline void write_file_atomically(const std::string& path, const std::string& bytes) {
#ifdef LOOM_HAVE_POSIX_FILES
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = mkstemp(tmp.data());
  if (fd < 0) throw IOError(path + ": cannot create a temporary file beside it: " + std::strerror(errno));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      std::remove(tmp.c_str());
      throw IOError(path + ": write failed: " + why);
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    std::remove(tmp.c_str());
    throw IOError(path + ": could not flush to disk: " + why);
  }
  if (::close(fd) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw IOError(path + ": could not close: " + why);
  }
  ::chmod(tmp.c_str(), 0644);  // mkstemp makes it 0600
#else
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) {
      std::remove(tmp.c_str());
      throw IOError(path + ": write failed");
    }
  }
#endif
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw IOError(path + ": cannot rename the temporary file into place: " + why);
  }
#ifdef LOOM_HAVE_POSIX_FILES
  // The rename itself survives a crash once the folder is flushed too.
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);  // best effort: some file systems cannot sync a folder
    ::close(dfd);
  }
#endif
}

namespace detail {

/// The whole file as `Bytes` (std::string or std::vector<unsigned char>);
/// its real size bounds the allocation. Throws IOError naming `path`, or
/// FormatError when it is larger than `max_bytes` ("... for <what>").
template <class Bytes = std::string>
Bytes read_whole_file(const std::string& path, std::uint64_t max_bytes = UINT64_MAX, const char* what = "a file") {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw IOError(path + ": cannot open: " + std::strerror(errno));
  const std::streamoff size = in.tellg();
  if (size < 0) throw IOError(path + ": cannot read its size");
  if (static_cast<std::uint64_t>(size) > max_bytes) {
    throw FormatError(str(path, ": ", size, " bytes is larger than the limit of ", max_bytes, " bytes for ", what));
  }
  Bytes bytes(static_cast<std::size_t>(size), 0);
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) throw IOError(path + ": read failed");
  return bytes;
}

}  // namespace detail
}  // namespace loom
