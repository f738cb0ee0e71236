#pragma once
/// \file progress.hpp
/// Keras's progress line for `fit`:
///
///     Epoch 3/20
///     1500/1500 [==============================] - 41s 27ms/step - loss: 0.2601 - accuracy: 0.9046 - val_loss: ...
///
/// verbose 1 redraws the line in place while the epoch runs, when the output
/// is a terminal (elsewhere it prints the finished line once); verbose 2
/// prints only the finished line; verbose 0 prints nothing.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#if __has_include(<unistd.h>)
#include <unistd.h>
#define LOOM_HAVE_ISATTY 1
#endif

namespace loom {

/// True when standard output is a terminal.
inline bool stdout_is_terminal() {
#ifdef LOOM_HAVE_ISATTY
  return isatty(STDOUT_FILENO) != 0;
#else
  return false;
#endif
}

namespace detail {

/// " - loss: 0.2601": Keras's Progbar prints %.4f when |v| > 1e-3 and %.4e
/// otherwise, zero included (a learning rate decayed to 0 is "0.0000e+00").
inline std::string format_metric(const std::string& name, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, std::fabs(v) > 1e-3 ? " - %s: %.4f" : " - %s: %.4e", name.c_str(), v);
  return buf;
}

inline std::string format_per_step(double seconds) {
  char buf[32];
  if (seconds >= 1) {
    std::snprintf(buf, sizeof buf, "%.0fs/step", seconds);
  } else if (seconds >= 1e-3) {
    std::snprintf(buf, sizeof buf, "%.0fms/step", seconds * 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0fus/step", seconds * 1e6);
  }
  return buf;
}

inline std::string format_eta(double s) {
  char buf[32];
  const long t = std::lround(s);
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t % 3600) / 60, t % 60);
  } else if (t >= 60) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lds", t);
  }
  return buf;
}

}  // namespace detail

class Progress {
 public:
  using Metrics = std::vector<std::pair<std::string, double>>;

  Progress(std::ostream* out, int verbose, long steps, bool terminal)
      : out_(out), verbose_(out ? verbose : 0), steps_(steps), terminal_(terminal) {}

  void begin_epoch(int epoch, int epochs) {
    start_ = last_draw_ = Clock::now();
    // Keras's ProgbarLogger names the epoch only when there is more than one.
    if (verbose_ >= 1 && epochs > 1) *out_ << "Epoch " << epoch << "/" << epochs << "\n" << std::flush;
  }

  /// After `step` of `steps`: redraws the running line (verbose 1 on a terminal, at most 10 times a second).
  void update(long step, const Metrics& metrics) {
    if (verbose_ != 1 || !terminal_ || step >= steps_) return;
    const auto now = Clock::now();
    if (step > 1 && seconds(last_draw_, now) < 0.1) return;
    last_draw_ = now;
    const double elapsed = seconds(start_, now);
    std::string line = "\r" + counter(step) + " " + bar(step) + " - ETA: " +
                       detail::format_eta(elapsed / static_cast<double>(step) * static_cast<double>(steps_ - step));
    for (const auto& m : metrics) line += detail::format_metric(m.first, m.second);
    pad_and_write(line);
  }

  /// The finished line, with the epoch's metrics and validation metrics.
  void end_epoch(const Metrics& metrics) {
    if (verbose_ == 0) return;
    const double elapsed = seconds(start_, Clock::now());
    char t[32];
    std::snprintf(t, sizeof t, "%.0fs", elapsed);
    const std::string per_step = detail::format_per_step(elapsed / static_cast<double>(steps_ > 0 ? steps_ : 1));
    std::string line = (verbose_ == 1 && terminal_) ? "\r" : "";
    line += counter(steps_);
    line += verbose_ == 1 ? " " + bar(steps_) + " - " + t + " " + per_step : " - " + std::string(t) + " - " + per_step;
    for (const auto& m : metrics) line += detail::format_metric(m.first, m.second);
    pad_and_write(line);
    *out_ << "\n" << std::flush;
    drawn_ = 0;
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  }

  std::string counter(long step) const {
    const std::string total = std::to_string(steps_), cur = std::to_string(step);
    return std::string(total.size() > cur.size() ? total.size() - cur.size() : 0, ' ') + cur + "/" + total;
  }

  std::string bar(long step) const {
    const int width = 30;
    const int done = steps_ > 0 ? static_cast<int>(width * step / steps_) : width;
    std::string b = "[";
    if (done > 0) b += std::string(static_cast<std::size_t>(done - 1), '=') + (step < steps_ ? '>' : '=');
    return b + std::string(static_cast<std::size_t>(width - done), '.') + "]";
  }

  /// Writes the line, blanking what is left of a longer earlier one.
  void pad_and_write(std::string line) {
    const std::size_t len = line.size();
    if (len < drawn_) line += std::string(drawn_ - len, ' ');
    drawn_ = len;
    *out_ << line << std::flush;
  }

  std::ostream* out_;
  int verbose_;
  long steps_;
  bool terminal_;
  Clock::time_point start_, last_draw_;
  std::size_t drawn_ = 0;
};

}  // namespace loom
