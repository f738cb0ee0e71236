#pragma once
// What fashion_mnist_experiment produces, before it is written out: a trained
// model's result (ModelResult), an imported model's (ImportedModel), and the
// summaries over seeds. analysis_report.hpp writes them as text, results.json
// and report.md.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <loom/loom.hpp>

#include "experiment_options.hpp"

namespace loom::examples {

/// One BatchNormalization layer after one epoch (--bn-probe): its moving
/// statistics against those its input has in inference on the validation
/// images, per channel, summarized over the channels.
struct BnProbeRow {
  int epoch = 0;
  std::string layer;
  double variance_ratio_median = 0;  ///< median over channels of moving_variance / actual variance
  double variance_ratio_min = 0;
  double variance_ratio_max = 0;
  double mean_shift = 0;  ///< mean over channels of |moving_mean - actual mean| / actual standard deviation
};

/// Everything one trained model produced.
struct ModelResult {
  ModelSpec spec{};
  int run = 0;  ///< 0 .. --seeds - 1
  int epochs = 0;
  std::uint64_t seed = 0;
  History history;
  Evaluation test;
  ConfusionMatrix confusion{{}, {}, 10};
  double train_seconds = 0;  ///< fit: the epochs with their validation
  double score_seconds = 0;  ///< the test images scored after training (and the best epoch's, when they differ)
  /// The epoch with the best val_accuracy, and the test result of its weights
  /// (kept in memory during training; chosen on validation data only).
  /// 0 and unset when there was no validation split (--refit).
  int best_epoch = 0;
  Evaluation best_epoch_test;
  std::vector<BnProbeRow> bn_probe;  ///< with --bn-probe: every BatchNormalization layer after every epoch
  /// With --bn-probe: the last epoch's weights scored with every BatchNormalization's moving statistics set
  /// to those of its input in inference on the training images (bn_probe.hpp); < 0 when not measured.
  double recalibrated_test_accuracy = -1;
  double recalibrated_val_accuracy = -1;  ///< the same, on the validation images
  /// With --int8: the last epoch's weights quantized to int8 (loom::quantize), scored on the test images; < 0 when not.
  double int8_test_accuracy = -1;
};

/// A model saved by Keras, scored here on the test images (--import).
struct ImportedModel {
  std::string file;         ///< as given to --import
  std::string input_shape;  ///< the model's, without the batch (Shape::str())
  Index parameters = 0;
  bool raw_pixels = false;  ///< --import-raw-pixels: given 0..255, not scaled to [0, 1]
  double test_accuracy = 0;
  double predict_seconds = 0;
  ConfusionMatrix confusion{{}, {}, 10};
  double int8_test_accuracy = -1;  ///< with --int8: the model quantized to int8 (< 0: not measured)
  std::string int8_refused;        ///< with --int8: why quantize refused the model (empty: it did not)

  /// The pixels it was given, as results.json says it.
  std::string pixels() const { return raw_pixels ? "raw 0..255" : "scaled to [0, 1]"; }
};

/// The mean absolute change of val_accuracy between consecutive epochs over
/// the last `last` epochs (all of them when there are fewer): how much the
/// last epoch's result depends on where training happens to stop.
inline double volatility(const std::vector<double>& val_accuracy, std::size_t last = 10) {
  if (val_accuracy.size() < 2) return 0;
  const std::size_t from = val_accuracy.size() > last + 1 ? val_accuracy.size() - (last + 1) : 0;
  double sum = 0;
  for (std::size_t i = from + 1; i < val_accuracy.size(); ++i) sum += std::fabs(val_accuracy[i] - val_accuracy[i - 1]);
  return sum / static_cast<double>(val_accuracy.size() - 1 - from);
}

/// One model over its runs (seeds): the spread of the last epoch's test
/// accuracy (the notebook's recipe) and of the best-validation epoch's.
struct SeedSummary {
  ModelSpec spec{};
  int runs = 0;
  double mean = 0, sd = 0, min = 0, max = 0;  ///< last-epoch test accuracy, in %; sd over runs (n - 1)
  int runs_below_notebook = 0;                 ///< runs whose last-epoch test accuracy is below the notebook's
  double volatility = 0;                       ///< mean over runs, in points of val_accuracy
  int best_val_runs = 0;  ///< runs with a best-validation epoch (none with --refit)
  double best_val_mean = 0, best_val_min = 0, best_val_max = 0;  ///< test accuracy of the best-validation epoch, in %

  /// Where the notebook's number falls in this spread, in words.
  std::string notebook_position() const {
    char b[160];
    if (spec.notebook_test_accuracy < min) {
      std::snprintf(b, sizeof b, "below all %d runs", runs);
    } else if (spec.notebook_test_accuracy > max) {
      std::snprintf(b, sizeof b, "above all %d runs", runs);
    } else {
      std::snprintf(b, sizeof b, "above %d of %d runs (%+.1f sd from the mean)", runs_below_notebook, runs,
                    sd > 0 ? (spec.notebook_test_accuracy - mean) / sd : 0.0);
    }
    return b;
  }
};

inline std::vector<SeedSummary> seed_summaries(const std::vector<ModelResult>& results) {
  std::vector<SeedSummary> out;
  for (const auto& spec : notebook_models()) {
    std::vector<const ModelResult*> runs;
    for (const auto& r : results) {
      if (r.spec.id == spec.id) runs.push_back(&r);
    }
    if (runs.empty()) continue;
    SeedSummary s;
    s.spec = spec;
    s.runs = static_cast<int>(runs.size());
    s.min = s.best_val_min = 1e9;
    s.max = s.best_val_max = -1e9;
    for (const ModelResult* r : runs) {
      const double a = 100 * r->test.accuracy;
      s.mean += a / s.runs;
      s.min = std::min(s.min, a);
      s.max = std::max(s.max, a);
      s.runs_below_notebook += a < spec.notebook_test_accuracy ? 1 : 0;
      if (r->history.has("val_accuracy")) s.volatility += 100 * volatility(r->history["val_accuracy"]) / s.runs;
      if (r->best_epoch > 0) {
        const double b = 100 * r->best_epoch_test.accuracy;
        ++s.best_val_runs;
        s.best_val_mean += b;
        s.best_val_min = std::min(s.best_val_min, b);
        s.best_val_max = std::max(s.best_val_max, b);
      }
    }
    if (s.best_val_runs > 0) s.best_val_mean /= s.best_val_runs;
    for (const ModelResult* r : runs) s.sd += std::pow(100 * r->test.accuracy - s.mean, 2);
    s.sd = s.runs > 1 ? std::sqrt(s.sd / (s.runs - 1)) : 0.0;
    out.push_back(s);
  }
  return out;
}

}  // namespace loom::examples
