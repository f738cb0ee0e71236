#pragma once
// The PNG figures of the Fashion-MNIST experiment, drawn by gnuplot
// (Debian's gnuplot-nox, terminal pngcairo) driven through a pipe.
//
//   plots::horizontal_bars("results/accuracy.png", "Test accuracy", "accuracy", names, accuracies);
//   plots::class_grid("results/model1_misclassified.png", "Model 1", class_names, images, captions, confusion);
//   plots::training_curves("results/curves.png", "Training", {{"model 1", loss, val_loss, acc, val_acc}, ...});
//
// Each figure is written to "<png>.tmp.png" in the same folder and renamed
// into place only when gnuplot succeeded, so a failure never leaves a
// half-written figure behind. Data goes to gnuplot inline as datablocks;
// every label is passed as a single-quoted gnuplot string and drawn with
// `noenhanced`, so '/', '_', '^' or quotes in class names are shown as is.
//
// Errors: loom::ConfigError for bad arguments (sizes that disagree, ...),
// loom::IOError when gnuplot is missing or fails, or the file cannot be written.

#include <loom/error.hpp>

#include <signal.h>    // pthread_sigmask, sigtimedwait (POSIX)
#include <stdlib.h>    // mkstemp (POSIX)
#include <sys/wait.h>  // WIFEXITED, WEXITSTATUS (POSIX)
#include <unistd.h>    // close (POSIX)

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <locale>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace loom::examples::plots {

/// Training history of one model, one entry per epoch. The four series may
/// have different lengths (e.g. empty validation series); non-finite values
/// (a diverged loss) are left out of the lines.
struct Curves {
  std::string name;
  std::vector<double> loss, val_loss, accuracy, val_accuracy;
};

namespace detail {

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

/// `text` as a POSIX shell single-quoted word.
inline std::string shell_quoted(const std::string& text) {
  std::string out = "'";
  for (const char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// A number for a datablock or a command: "NaN" when not finite (declared
/// missing with `set datafile missing`), else the shortest exact-enough
/// decimal form, independent of the global locale.
inline std::string number(double value) {
  if (!std::isfinite(value)) return "NaN";
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out.precision(10);
  out << value;
  return out.str();
}

/// A value as printed at the end of a bar: integers as integers, else 4
/// significant digits (2 decimals from 100 on, no exponent below 1e6).
inline std::string bar_value(double value) {
  char text[64];
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    std::snprintf(text, sizeof text, "%.0f", value);
  } else if (std::fabs(value) >= 100 && std::fabs(value) < 1e6) {
    std::snprintf(text, sizeof text, "%.2f", value);
  } else {
    std::snprintf(text, sizeof text, "%.4g", value);
  }
  std::string out = text;
  std::replace(out.begin(), out.end(), ',', '.');  // a C library locale with decimal commas
  return out;
}

inline std::string trim(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = text.find_last_not_of(" \t\r\n");
  return text.substr(first, last - first + 1);
}

/// Runs of blanks collapsed to one space.
inline std::string squeezed(const std::string& text) {
  std::string out;
  for (const char c : trim(text)) {
    if ((c == ' ' || c == '\t') && !out.empty() && out.back() == ' ') continue;
    out += c == '\t' ? ' ' : c;
  }
  return out;
}

/// The useful part of what gnuplot printed on an error, in one line. gnuplot
/// echoes the offending command ("gnuplot> set output ..."), a caret line,
/// then "line 0: <message>" and sometimes "system error: <strerror>".
inline std::string error_summary(const std::string& log) {
  std::vector<std::string> lines;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) lines.push_back(trim(line));
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    const auto colon = line.find(':');
    if (line.rfind("line ", 0) != 0 || colon == std::string::npos) continue;
    std::string message = squeezed(line.substr(colon + 1));
    if (i + 1 < lines.size() && lines[i + 1].rfind("system error:", 0) == 0) message += "; " + lines[i + 1];
    for (std::size_t j = i; j-- > 0;) {
      if (lines[j].rfind("gnuplot>", 0) != 0) continue;
      std::string command = squeezed(lines[j].substr(8));
      if (command.size() > 80) command = command.substr(0, 77) + "...";
      message += " [in: " + command + "]";
      break;
    }
    return message;
  }
  for (const std::string& line : lines) {
    if (!line.empty() && line.rfind("gnuplot>", 0) != 0 && line.find_first_not_of("^ ") != std::string::npos) {
      return squeezed(line);
    }
  }
  return "no message";
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

/// A gnuplot process reading commands from a pipe. Commands written with <<
/// are collected and sent in one piece by close(), which waits for gnuplot
/// and returns its exit status; what gnuplot printed on stderr is then in
/// messages(). Destroying an unclosed Gnuplot ends it without sending anything.
class Gnuplot {
 public:
  /// Whether a `gnuplot` command is on the PATH.
  static bool available() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

  Gnuplot() {
    script_.imbue(std::locale::classic());
    script_.precision(10);
    // gnuplot's stderr goes to a log file (read back by close()); its stdout
    // to /dev/null, so that nothing it prints can end up in our output.
    const char* tmpdir = std::getenv("TMPDIR");
    std::string log_template = std::string(tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp") + "/loom-gnuplot-XXXXXX";
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

  ~Gnuplot() {
    if (pipe_ != nullptr) pclose(pipe_);
    remove_log();
  }

  Gnuplot(const Gnuplot&) = delete;
  Gnuplot& operator=(const Gnuplot&) = delete;

  /// Appends to the script (numbers in the "C" locale).
  template <class T>
  Gnuplot& operator<<(const T& value) {
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

namespace detail {

/// One PNG being drawn: checks that gnuplot exists and that the temporary
/// file "<png>.tmp.png" can be created, starts gnuplot with the pngcairo
/// terminal writing there, and on finish() renames it into place. Destroyed
/// without a successful finish(), it removes the temporary file.
class Figure {
 public:
  Figure(const std::string& png_path, int width, int height) : png_path_(png_path), tmp_path_(png_path + ".tmp.png") {
    if (!Gnuplot::available()) throw IOError(png_path_ + ": gnuplot not found: install Debian's gnuplot-nox");
    std::FILE* probe = std::fopen(tmp_path_.c_str(), "wb");
    if (probe == nullptr) {
      throw IOError(loom::detail::str(png_path_, ": cannot create ", tmp_path_, ": ", std::strerror(errno)));
    }
    std::fclose(probe);
    tmp_created_ = true;
    gnuplot_ = std::make_unique<Gnuplot>();
    *gnuplot_ << "set encoding utf8\n"
              << "set terminal pngcairo noenhanced size " << width << ',' << height << " font 'DejaVu Sans,10'\n"
              << "set output " << quoted(tmp_path_) << "\n"
              << "set datafile missing 'NaN'\n";
  }

  ~Figure() {
    gnuplot_.reset();  // gnuplot ends before its output file is removed
    if (tmp_created_) std::remove(tmp_path_.c_str());
  }

  Figure(const Figure&) = delete;
  Figure& operator=(const Figure&) = delete;

  Gnuplot& gnuplot() { return *gnuplot_; }

  void finish() {
    *gnuplot_ << "unset multiplot\nunset output\n";
    const int status = gnuplot_->close();
    if (status != 0) {
      throw IOError(loom::detail::str(png_path_, ": gnuplot failed (exit ", status,
                                      "): ", error_summary(gnuplot_->messages())));
    }
    std::ifstream image(tmp_path_, std::ios::binary | std::ios::ate);
    if (!image || image.tellg() <= 0) {
      throw IOError(png_path_ + ": gnuplot exited normally but wrote no image to " + tmp_path_ + ": " +
                    error_summary(gnuplot_->messages()));
    }
    image.close();
    if (std::rename(tmp_path_.c_str(), png_path_.c_str()) != 0) {
      throw IOError(loom::detail::str(png_path_, ": cannot rename ", tmp_path_, " into place: ", std::strerror(errno)));
    }
    tmp_created_ = false;
  }

 private:
  std::string png_path_, tmp_path_;
  bool tmp_created_ = false;
  std::unique_ptr<Gnuplot> gnuplot_;
};

constexpr const char* bar_color = "'#4C72B0'";

}  // namespace detail

/// Horizontal bar chart: one bar per label (top to bottom in the given order), value at the bar's end.
inline void horizontal_bars(const std::string& png_path, const std::string& title, const std::string& value_axis_label,
                            const std::vector<std::string>& labels, const std::vector<double>& values) {
  if (labels.empty() || labels.size() != values.size()) {
    throw ConfigError(loom::detail::str("plots::horizontal_bars: need as many labels as values, at least one; got ",
                                        labels.size(), " labels and ", values.size(), " values"));
  }
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      throw ConfigError(loom::detail::str("plots::horizontal_bars: value ", i, " (", labels[i], ") is not finite"));
    }
  }
  const auto n = static_cast<long>(values.size());
  const double low = std::min(0.0, *std::min_element(values.begin(), values.end()));
  const double high = std::max(0.0, *std::max_element(values.begin(), values.end()));
  const double span = high > low ? high - low : 1.0;
  // Room beyond the longest bars for the value labels.
  const double x_min = low < 0 ? low - 0.18 * span : 0.0;
  const double x_max = high > 0 || low == 0 ? high + 0.18 * span : 0.0;

  detail::Figure figure(png_path, 900, std::max(600, static_cast<int>(100 + 30 * n)));
  Gnuplot& gp = figure.gnuplot();
  gp << "$bars << EOD\n";
  for (long i = 0; i < n; ++i) gp << (n - 1 - i) << ' ' << detail::number(values[i]) << '\n';  // y = n-1 .. 0
  gp << "EOD\n";
  gp << "set title " << detail::quoted(title) << " font ',13'\n"
     << "set xlabel " << detail::quoted(value_axis_label) << "\n"
     << "unset key\n"
     << "set border 3\n"
     << "set grid xtics\n"
     << "set xtics nomirror\n"
     << "set xrange [" << detail::number(x_min) << ':' << detail::number(x_max) << "]\n"
     << "set yrange [-0.6:" << n - 0.4 << "]\n"
     << "set ytics nomirror scale 0 (";
  for (long i = 0; i < n; ++i) gp << (i > 0 ? ", " : "") << detail::quoted(labels[i]) << ' ' << (n - 1 - i);
  gp << ")\n";
  for (long i = 0; i < n; ++i) {
    const bool negative = values[i] < 0;
    gp << "set label " << detail::quoted(detail::bar_value(values[i])) << " at " << detail::number(values[i]) << ','
       << (n - 1 - i) << (negative ? " right offset char -0.5,0" : " left offset char 0.5,0") << " front\n";
  }
  gp << "set style fill solid 0.85 border -1\n"
     << "plot $bars using ($2 < 0 ? $2 : 0):1:($2 < 0 ? $2 : 0):($2 < 0 ? 0 : $2):($1 - 0.35):($1 + 0.35)"
     << " with boxxyerror lc rgb " << detail::bar_color << " notitle\n";
  figure.finish();
}

/// The notebook's per-class grid: for each class k (10 classes, laid out 2 classes per row = 4 panels per row,
/// 5 rows), panel 1 shows `images[k]` (a 28x28 grayscale image, row-major, values 0..255, drawn with the top row
/// at the top, gray palette, no axes) with caption `captions[k]` (e.g. "Coat, recall 89.60%"), and panel 2 is a
/// vertical bar chart of `mistaken_for[k]` (size = number of classes; entry j = how many test images of class k
/// were predicted as class j; the entry j == k is ignored), x tick labels = class_names rotated ~60 degrees,
/// title "<class>: predicted as", y label "count".
inline void class_grid(const std::string& png_path, const std::string& title,
                       const std::vector<std::string>& class_names, const std::vector<std::vector<float>>& images,
                       const std::vector<std::string>& captions,
                       const std::vector<std::vector<long long>>& mistaken_for) {
  constexpr std::size_t side = 28;
  const std::size_t n = class_names.size();
  if (n < 2 || images.size() != n || captions.size() != n || mistaken_for.size() != n) {
    throw ConfigError(loom::detail::str("plots::class_grid: need one image, caption and count row per class, at least "
                                        "2 classes; got ", n, " class names, ", images.size(), " images, ",
                                        captions.size(), " captions, ", mistaken_for.size(), " count rows"));
  }
  for (std::size_t k = 0; k < n; ++k) {
    if (images[k].size() != side * side) {
      throw ConfigError(loom::detail::str("plots::class_grid: image ", k, " (", class_names[k], ") has ",
                                          images[k].size(), " pixels, expected 28*28 = ", side * side));
    }
    for (const float pixel : images[k]) {
      if (!std::isfinite(pixel)) {
        throw ConfigError(loom::detail::str("plots::class_grid: image ", k, " (", class_names[k],
                                            ") has a non-finite pixel"));
      }
    }
    if (mistaken_for[k].size() != n) {
      throw ConfigError(loom::detail::str("plots::class_grid: count row ", k, " (", class_names[k], ") has ",
                                          mistaken_for[k].size(), " entries, expected one per class (", n, ")"));
    }
    for (const long long count : mistaken_for[k]) {
      if (count < 0) {
        throw ConfigError(loom::detail::str("plots::class_grid: count row ", k, " (", class_names[k],
                                            ") has a negative count (", count, ")"));
      }
    }
  }

  const std::size_t rows = (n + 1) / 2;
  detail::Figure figure(png_path, 1400, static_cast<int>(60 + 348 * rows));
  Gnuplot& gp = figure.gnuplot();
  for (std::size_t k = 0; k < n; ++k) {
    gp << "$image" << k << " << EOD\n";  // matrix: row r of the block = image row r
    for (std::size_t r = 0; r < side; ++r) {
      for (std::size_t c = 0; c < side; ++c) gp << (c > 0 ? " " : "") << detail::number(images[k][r * side + c]);
      gp << '\n';
    }
    gp << "EOD\n";
    gp << "$counts" << k << " << EOD\n";  // x position, count; the class itself is left out
    for (std::size_t j = 0, x = 0; j < n; ++j) {
      if (j == k) continue;
      gp << x << ' ' << mistaken_for[k][j] << '\n';
      ++x;
    }
    gp << "EOD\n";
  }

  gp << "set palette gray\n"
     << "set cbrange [0:255]\n"
     << "unset colorbox\n"
     << "unset key\n"
     << "set style fill solid 0.85 border -1\n"
     << "set boxwidth 0.7\n"
     << "set multiplot layout " << rows << ",4 title " << detail::quoted(title) << " font ',14'\n";
  for (std::size_t k = 0; k < n; ++k) {
    // Image: row 0 at the top (reversed y range), square pixels, no axes.
    gp << "set title " << detail::quoted(captions[k]) << "\n"
       << "unset border\nunset xtics\nunset ytics\nunset xlabel\nunset ylabel\n"
       << "set size ratio -1\n"
       << "set xrange [-0.5:" << side - 0.5 << "]\n"
       << "set yrange [" << side - 0.5 << ":-0.5]\n"
       << "plot $image" << k << " matrix with image\n";

    // Bars: which classes the images of class k were mistaken for.
    long long most = 0;
    for (std::size_t j = 0; j < n; ++j) {
      if (j != k) most = std::max(most, mistaken_for[k][j]);
    }
    gp << "set title " << detail::quoted(class_names[k] + ": predicted as") << "\n"
       << "set size noratio\n"
       << "set border 3\n"
       << "set ylabel 'count'\n"
       << "set xrange [-0.6:" << n - 1.4 << "]\n"
       << "set yrange [0:" << (most > 0 ? "*" : "1") << "]\n"
       << "set ytics nomirror " << (most < 5 ? "1" : "autofreq") << "\n"
       << "set xtics nomirror rotate by 60 right scale 0 (";
    for (std::size_t j = 0, x = 0; j < n; ++j) {
      if (j == k) continue;
      gp << (x > 0 ? ", " : "") << detail::quoted(class_names[j]) << ' ' << x;
      ++x;
    }
    gp << ")\n"
       << "plot $counts" << k << " using 1:2 with boxes lc rgb " << detail::bar_color << "\n";
  }
  figure.finish();
}

/// Training curves of several models: a 2x2 multiplot (train loss, validation loss, train accuracy,
/// validation accuracy vs epoch 1..n), one line per model with its name in the key. Models can have
/// different numbers of epochs (e.g. 20, 20, 20, 10).
inline void training_curves(const std::string& png_path, const std::string& title, const std::vector<Curves>& models) {
  if (models.empty()) throw ConfigError("plots::training_curves: no models given");
  std::size_t max_epochs = 0;
  for (std::size_t m = 0; m < models.size(); ++m) {
    const Curves& c = models[m];
    const std::size_t epochs =
        std::max({c.loss.size(), c.val_loss.size(), c.accuracy.size(), c.val_accuracy.size()});
    if (epochs == 0) {
      throw ConfigError(loom::detail::str("plots::training_curves: model ", m, " (", c.name,
                                          ") has no values in any of its 4 series"));
    }
    max_epochs = std::max(max_epochs, epochs);
  }

  struct Panel {
    const char* title;
    const char* ylabel;
    const char* key;
    std::vector<double> Curves::*series;
    int column;  // in the model's datablock: 1 = epoch
  };
  const Panel panels[] = {{"training loss", "loss", "top right", &Curves::loss, 2},
                          {"validation loss", "loss", "top right", &Curves::val_loss, 3},
                          {"training accuracy", "accuracy", "bottom right", &Curves::accuracy, 4},
                          {"validation accuracy", "accuracy", "bottom right", &Curves::val_accuracy, 5}};
  const auto has_points = [](const std::vector<double>& series) {
    return std::any_of(series.begin(), series.end(), [](double v) { return std::isfinite(v); });
  };

  detail::Figure figure(png_path, 1200, 900);
  Gnuplot& gp = figure.gnuplot();
  for (std::size_t m = 0; m < models.size(); ++m) {
    const Curves& c = models[m];
    const std::size_t epochs = std::max({c.loss.size(), c.val_loss.size(), c.accuracy.size(), c.val_accuracy.size()});
    gp << "$model" << m << " << EOD\n";  // epoch loss val_loss accuracy val_accuracy; NaN = no value
    for (std::size_t e = 0; e < epochs; ++e) {
      gp << e + 1;
      for (const auto& panel : panels) {
        const std::vector<double>& series = c.*panel.series;
        gp << ' ' << detail::number(e < series.size() ? series[e] : NAN);
      }
      gp << '\n';
    }
    gp << "EOD\n";
  }

  gp << "set multiplot layout 2,2 title " << detail::quoted(title) << " font ',14'\n"
     << "set xlabel 'epoch'\n"
     << "set border 3\n"
     << "set grid\n"
     << "set ytics nomirror\n"
     << "set xtics nomirror" << (max_epochs <= 10 ? " 1" : "") << "\n"
     << "set xrange [0.5:" << max_epochs + 0.5 << "]\n";
  for (const auto& panel : panels) {
    gp << "set title '" << panel.title << "'\n"
       << "set ylabel '" << panel.ylabel << "'\n"
       << "set key " << panel.key << " box opaque\n";
    std::string plot;
    for (std::size_t m = 0; m < models.size(); ++m) {
      if (!has_points(models[m].*panel.series)) continue;
      plot += loom::detail::str(plot.empty() ? "plot " : ", ", "$model", m, " using 1:", panel.column,
                                " with linespoints lw 1.5 pt 7 ps 0.6 lc ", m + 1,
                                " title ", detail::quoted(models[m].name));
    }
    if (plot.empty()) {  // no model has this series: an empty panel that says so
      gp << "unset key\n"
         << "set label 1 'no data' at graph 0.5,0.5 center\n"
         << "set yrange [0:1]\n"
         << "plot 2 notitle\n"
         << "unset label 1\n"
         << "set autoscale y\n";
    } else {
      gp << plot << "\n";
    }
  }
  figure.finish();
}

}  // namespace loom::examples::plots
