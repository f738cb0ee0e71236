#pragma once
/// \file io.hpp
/// Writing files so that they survive crashes: `write_file_atomically`
/// writes a temporary file beside the target, flushes it to disk and renames
/// it over the target, so a reader sees the old file or the new one, never
/// half of one. Used for saved models, checkpoints and results.

#include <cerrno>
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
}

namespace detail {

/// The whole file, bounded by its real size. Throws IOError naming `path`.
inline std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw IOError(path + ": cannot open: " + std::strerror(errno));
  const std::streamoff size = in.tellg();
  if (size < 0) throw IOError(path + ": cannot read its size");
  std::string bytes(static_cast<std::size_t>(size), '\0');
  in.seekg(0);
  if (size > 0 && !in.read(bytes.data(), size)) throw IOError(path + ": read failed");
  return bytes;
}

}  // namespace detail
}  // namespace loom
