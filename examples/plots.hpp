#pragma once
// The PNG figures of the Fashion-MNIST experiment, drawn by gnuplot
// (Debian's gnuplot-nox, terminal pngcairo); the process plumbing (pipe,
// stderr, error line) is in gnuplot.hpp.
//
//   plots::horizontal_bars("results/accuracy.png", "Test accuracy", "accuracy", names, accuracies);
//   plots::class_grid("results/model1_misclassified.png", "Model 1", class_names, images, captions, confusion);
//   plots::training_curves("results/curves.png", "Training", {{"model 1", loss, val_loss, acc, val_acc}, ...});
//
// gnuplot draws each figure into "<png>.tmp.png" in the same folder; only
// when it succeeded is the image published with loom::write_file_atomically
// (temporary file, fsync, rename), so a failure never leaves a half-written
// figure behind, and the temporary file is removed either way. Data goes to
// gnuplot inline as datablocks; every label is passed as a single-quoted
// gnuplot string and drawn with `noenhanced`, so '/', '_', '^' or quotes in
// class names are shown as is.
//
// Errors: loom::ConfigError for bad arguments (sizes that disagree, ...),
// loom::IOError when gnuplot is missing or fails, or the file cannot be written.

#include <loom/error.hpp>
#include <loom/io.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gnuplot.hpp"

namespace loom::examples::plots {

/// Training history of one model, one entry per epoch. The four series may
/// have different lengths (e.g. empty validation series); non-finite values
/// (a diverged loss) are left out of the lines.
struct Curves {
  std::string name;
  std::vector<double> loss, val_loss, accuracy, val_accuracy;
};

namespace detail {

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

/// One PNG being drawn: checks that gnuplot exists and that the temporary
/// file "<png>.tmp.png" can be created beside the PNG, starts gnuplot with
/// the pngcairo terminal writing there, and on finish() publishes the image
/// with loom::write_file_atomically. The temporary file is always removed
/// on destruction, whether finish() succeeded or not.
class Figure {
 public:
  Figure(const std::string& png_path, int width, int height) : png_path_(png_path), tmp_path_(png_path + ".tmp.png") {
    if (!gnuplot::available()) throw IOError(png_path_ + ": gnuplot not found: install Debian's gnuplot-nox");
    std::FILE* probe = std::fopen(tmp_path_.c_str(), "wb");
    if (probe == nullptr) {
      throw IOError(loom::detail::str(png_path_, ": cannot create ", tmp_path_, ": ", std::strerror(errno)));
    }
    std::fclose(probe);
    tmp_created_ = true;
    try {
      process_ = std::make_unique<gnuplot::Process>();
      *process_ << "set encoding utf8\n"
                << "set terminal pngcairo noenhanced size " << width << ',' << height << " font 'DejaVu Sans,10'\n"
                << "set output " << gnuplot::quoted(tmp_path_) << "\n"
                << "set datafile missing 'NaN'\n";
    } catch (...) {  // no destructor runs for a constructor that throws
      std::remove(tmp_path_.c_str());
      throw;
    }
  }

  ~Figure() {
    process_.reset();  // gnuplot ends before its output file is removed
    if (tmp_created_) std::remove(tmp_path_.c_str());
  }

  Figure(const Figure&) = delete;
  Figure& operator=(const Figure&) = delete;

  /// The gnuplot script of the figure, after the terminal and output settings.
  gnuplot::Process& process() { return *process_; }

  /// Runs the script and publishes the image at the PNG path; throws IOError naming it.
  void finish() {
    *process_ << "unset multiplot\nunset output\n";
    write_file_atomically(png_path_, gnuplot::close_and_read_image(*process_, tmp_path_, png_path_));
  }

 private:
  std::string png_path_, tmp_path_;
  bool tmp_created_ = false;
  std::unique_ptr<gnuplot::Process> process_;
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
  gnuplot::Process& gp = figure.process();
  gp << "$bars << EOD\n";
  for (long i = 0; i < n; ++i) gp << (n - 1 - i) << ' ' << gnuplot::number(values[i]) << '\n';  // y = n-1 .. 0
  gp << "EOD\n";
  gp << "set title " << gnuplot::quoted(title) << " font ',13'\n"
     << "set xlabel " << gnuplot::quoted(value_axis_label) << "\n"
     << "unset key\n"
     << "set border 3\n"
     << "set grid xtics\n"
     << "set xtics nomirror\n"
     << "set xrange [" << gnuplot::number(x_min) << ':' << gnuplot::number(x_max) << "]\n"
     << "set yrange [-0.6:" << n - 0.4 << "]\n"
     << "set ytics nomirror scale 0 (";
  for (long i = 0; i < n; ++i) gp << (i > 0 ? ", " : "") << gnuplot::quoted(labels[i]) << ' ' << (n - 1 - i);
  gp << ")\n";
  for (long i = 0; i < n; ++i) {
    const bool negative = values[i] < 0;
    gp << "set label " << gnuplot::quoted(detail::bar_value(values[i])) << " at " << gnuplot::number(values[i]) << ','
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
  gnuplot::Process& gp = figure.process();
  for (std::size_t k = 0; k < n; ++k) {
    gp << "$image" << k << " << EOD\n";  // matrix: row r of the block = image row r
    for (std::size_t r = 0; r < side; ++r) {
      for (std::size_t c = 0; c < side; ++c) gp << (c > 0 ? " " : "") << gnuplot::number(images[k][r * side + c]);
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
     << "set multiplot layout " << rows << ",4 title " << gnuplot::quoted(title) << " font ',14'\n";
  for (std::size_t k = 0; k < n; ++k) {
    // Image: row 0 at the top (reversed y range), square pixels, no axes.
    gp << "set title " << gnuplot::quoted(captions[k]) << "\n"
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
    gp << "set title " << gnuplot::quoted(class_names[k] + ": predicted as") << "\n"
       << "set size noratio\n"
       << "set border 3\n"
       << "set ylabel 'count'\n"
       << "set xrange [-0.6:" << n - 1.4 << "]\n"
       << "set yrange [0:" << (most > 0 ? "*" : "1") << "]\n"
       << "set ytics nomirror " << (most < 5 ? "1" : "autofreq") << "\n"
       << "set xtics nomirror rotate by 60 right scale 0 (";
    for (std::size_t j = 0, x = 0; j < n; ++j) {
      if (j == k) continue;
      gp << (x > 0 ? ", " : "") << gnuplot::quoted(class_names[j]) << ' ' << x;
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
  gnuplot::Process& gp = figure.process();
  for (std::size_t m = 0; m < models.size(); ++m) {
    const Curves& c = models[m];
    const std::size_t epochs = std::max({c.loss.size(), c.val_loss.size(), c.accuracy.size(), c.val_accuracy.size()});
    gp << "$model" << m << " << EOD\n";  // epoch loss val_loss accuracy val_accuracy; NaN = no value
    for (std::size_t e = 0; e < epochs; ++e) {
      gp << e + 1;
      for (const auto& panel : panels) {
        const std::vector<double>& series = c.*panel.series;
        gp << ' ' << gnuplot::number(e < series.size() ? series[e] : NAN);
      }
      gp << '\n';
    }
    gp << "EOD\n";
  }

  gp << "set multiplot layout 2,2 title " << gnuplot::quoted(title) << " font ',14'\n"
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
                                " title ", gnuplot::quoted(models[m].name));
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
