#pragma once
// Running gnuplot (Debian's gnuplot-nox) from a program: a script is collected,
// sent through a pipe in one piece, and gnuplot's exit status and stderr are
// turned into one readable error line. Nothing here knows about figures; the
// figure builders are in plots.hpp.
//
//   gnuplot::Process gp;
//   gp << "set terminal pngcairo\nset output " << gnuplot::quoted(tmp) << "\nplot x\nunset output\n";
//   const std::string png = gnuplot::close_and_read_image(gp, tmp, "results/x.png");
//
// Errors: loom::IOError when gnuplot cannot be started, fails, or writes no image.

#include <loom/error.hpp>

#include <signal.h>    // pthread_sigmask, sigtimedwait (POSIX)
#include <stdlib.h>    // mkstemp (POSIX)
#include <sys/wait.h>  // WIFEXITED, WEXITSTATUS (POSIX)
#include <unistd.h>    // close (POSIX)

#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <locale>
#include <sstream>
#include <string>
#include <vector>

namespace loom::examples::gnuplot {

/// `text` as a gnuplot single-quoted string: ' doubled, line breaks and other
/// control characters turned into spaces (a quoted string cannot span lines).
inline std::string quoted(const std::string& text) {
  std::string out = "'";
  for (const char c : text) {
    if (c == '\'') {
      out += "''";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out + "'";
}

/// A number for a datablock or a command: "NaN" when not finite (to be
/// declared missing with `set datafile missing 'NaN'`), else the shortest
/// exact-enough decimal form, independent of the global locale.
inline std::string number(double value) {
  if (!std::isfinite(value)) return "NaN";
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out.precision(10);
  out << value;
  return out.str();
}

namespace detail {

/// `text` as a POSIX shell single-quoted word.
inline std::string shell_quoted(const std::string& text) {
  std::string out = "'";
  for (const char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// `text` without leading and trailing blanks and line ends.
inline std::string trim(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = text.find_last_not_of(" \t\r\n");
  return text.substr(first, last - first + 1);
}

/// `text` trimmed, runs of blanks collapsed to one space.
inline std::string squeezed(const std::string& text) {
  std::string out;
  for (const char c : trim(text)) {
    if ((c == ' ' || c == '\t') && !out.empty() && out.back() == ' ') continue;
    out += c == '\t' ? ' ' : c;
  }
  return out;
}

/// Blocks SIGPIPE in the calling thread while alive, so that writing to a
/// gnuplot that already stopped fails with EPIPE instead of killing the
/// program; a SIGPIPE raised meanwhile is discarded on destruction.
class SigpipeBlocker {
 public:
  SigpipeBlocker() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    blocked_ = pthread_sigmask(SIG_BLOCK, &pipe_, &old_) == 0;
  }
  ~SigpipeBlocker() {
    if (!blocked_) return;
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    if (!was_pending_ && sigismember(&pending, SIGPIPE) == 1) {
      const timespec no_wait{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &no_wait) == -1 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlocker(const SigpipeBlocker&) = delete;
  SigpipeBlocker& operator=(const SigpipeBlocker&) = delete;

 private:
  sigset_t pipe_{}, old_{};
  bool was_pending_ = false, blocked_ = false;
};

}  // namespace detail

/// The useful part of what gnuplot printed on an error, in one line. gnuplot
/// echoes the offending command ("gnuplot> set output ..."), a caret line,
/// then "line 0: <message>" and sometimes "system error: <strerror>".
inline std::string error_summary(const std::string& log) {
  std::vector<std::string> lines;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) lines.push_back(detail::trim(line));
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    const auto colon = line.find(':');
    if (line.rfind("line ", 0) != 0 || colon == std::string::npos) continue;
    std::string message = detail::squeezed(line.substr(colon + 1));
    if (i + 1 < lines.size() && lines[i + 1].rfind("system error:", 0) == 0) message += "; " + lines[i + 1];
    for (std::size_t j = i; j-- > 0;) {
      if (lines[j].rfind("gnuplot>", 0) != 0) continue;
      std::string command = detail::squeezed(lines[j].substr(8));
      if (command.size() > 80) command = command.substr(0, 77) + "...";
      message += " [in: " + command + "]";
      break;
    }
    return message;
  }
  for (const std::string& line : lines) {
    if (!line.empty() && line.rfind("gnuplot>", 0) != 0 && line.find_first_not_of("^ ") != std::string::npos) {
      return detail::squeezed(line);
    }
  }
  return "no message";
}

/// Whether a `gnuplot` command is on the PATH.
inline bool available() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

/// A gnuplot process reading commands from a pipe. Commands written with <<
/// are collected and sent in one piece by close(), which waits for gnuplot
/// and returns its exit status; what gnuplot printed on stderr is then in
/// messages(). Destroying an unclosed Process ends it without sending anything.
class Process {
 public:
  /// Starts gnuplot; throws IOError if it cannot be started.
  Process() {
    script_.imbue(std::locale::classic());
    script_.precision(10);
    // gnuplot's stderr goes to a log file (read back by close()); its stdout
    // to /dev/null, so that nothing it prints can end up in our output.
    const char* tmpdir = std::getenv("TMPDIR");
    std::string log_template =
        std::string(tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp") + "/loom-gnuplot-XXXXXX";
    std::string command = "exec gnuplot >/dev/null";
    const int fd = mkstemp(log_template.data());
    if (fd >= 0) {
      ::close(fd);
      log_path_ = log_template;
      command += " 2>" + detail::shell_quoted(log_path_);
    }
    pipe_ = popen(command.c_str(), "w");
    if (pipe_ == nullptr) {
      const int error = errno;
      remove_log();
      throw IOError(loom::detail::str("cannot start gnuplot: ", std::strerror(error)));
    }
  }

  ~Process() {
    if (pipe_ != nullptr) pclose(pipe_);
    remove_log();
  }

  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  /// Appends to the script (numbers in the "C" locale).
  template <class T>
  Process& operator<<(const T& value) {
    script_ << value;
    return *this;
  }

  /// Sends the script, waits for gnuplot to end and returns its exit status
  /// (0 = success; 128 + n if it was killed by signal n; -1 if it could not be
  /// waited for). Calling close() again returns the same status.
  int close() {
    if (pipe_ == nullptr) return status_;
    {
      const detail::SigpipeBlocker blocker;
      const std::string script = script_.str();
      std::fwrite(script.data(), 1, script.size(), pipe_);  // a short write shows in the exit status
      std::fflush(pipe_);
    }
    const int wait_status = pclose(pipe_);
    pipe_ = nullptr;
    if (wait_status == -1) {
      status_ = -1;
    } else if (WIFEXITED(wait_status)) {
      status_ = WEXITSTATUS(wait_status);
    } else if (WIFSIGNALED(wait_status)) {
      status_ = 128 + WTERMSIG(wait_status);
    } else {
      status_ = -1;
    }
    if (!log_path_.empty()) {
      std::ifstream log(log_path_, std::ios::binary);
      std::ostringstream text;
      text << log.rdbuf();
      messages_ = text.str();
    }
    remove_log();
    return status_;
  }

  /// What gnuplot wrote on stderr (errors, warnings); filled by close().
  const std::string& messages() const { return messages_; }

 private:
  void remove_log() {
    if (!log_path_.empty()) std::remove(log_path_.c_str());
    log_path_.clear();
  }

  std::FILE* pipe_ = nullptr;
  std::ostringstream script_;
  std::string log_path_, messages_;
  int status_ = -1;
};

/// Closes `gp` (sending its script), checks that gnuplot succeeded and wrote
/// a non-empty image to `image_path`, and returns that image's bytes. Throws
/// IOError starting with `target` (the file the image is meant for), with
/// gnuplot's error in one line. Does not remove `image_path`.
inline std::string close_and_read_image(Process& gp, const std::string& image_path, const std::string& target) {
  const int status = gp.close();
  if (status != 0) {
    throw IOError(loom::detail::str(target, ": gnuplot failed (exit ", status, "): ", error_summary(gp.messages())));
  }
  std::ifstream image(image_path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(image)), std::istreambuf_iterator<char>());
  if (!image || bytes.empty()) {
    throw IOError(target + ": gnuplot exited normally but wrote no image to " + image_path + ": " +
                  error_summary(gp.messages()));
  }
  return bytes;
}

}  // namespace loom::examples::gnuplot
