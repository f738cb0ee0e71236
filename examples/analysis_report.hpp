#pragma once
// The notebook's per-class analysis (mis_cls_stats), done right, and the
// experiment's written outputs: the text tables, results.json (nlohmann/json)
// and report.md, for the models trained here and for a model imported from
// Keras (--import) alike: report.md's per-class section is the same code for
// both. Every file is written with loom::write_file_atomically.
//
// What the notebook's mis_cls_stats printed, and what this prints instead:
// - its first line swaps the words: "an error rate of 0.9205 and an accuracy
//   rate of 0.0795". Here: accuracy and error rate, each by its name.
// - "class X was misclassified N times" counted wrong *predictions of* X
//   (false alarms: images of other classes called X), and its "accuracy for
//   X" was 1 - false alarms / images of X, which is neither recall nor
//   precision. Here both views are named: per true class, misses and recall;
//   per predicted class, false alarms and precision; and F1.
// - every model's "what was it mistaken for" chart used model 1's
//   predictions. Here each model's charts use its own.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include <loom/loom.hpp>

#include "experiment_options.hpp"
#include "experiment_results.hpp"

namespace loom::examples {

/// What the notebook printed for its first five classes (the rest of its
/// output is cut off in the copy we have): "Label/class X was miss
/// labeled/classified N times" (N = false alarms, see above) per model.
inline const std::vector<std::vector<int>>& notebook_false_alarms() {
  static const std::vector<std::vector<int>> v{
      {89, 15, 113, 75, 104}, {110, 5, 110, 72, 97}, {86, 14, 83, 75, 200}, {186, 14, 155, 69, 172}};
  return v;
}

inline std::string fixed2(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

inline std::string percent(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f %%", 100 * v);
  return b;
}

/// The class most often predicted for images of class k, other than k ("-" if none).
inline std::string most_mistaken_for(const ConfusionMatrix& cm, Index k) {
  Index best = -1;
  for (Index p = 0; p < cm.classes(); ++p) {
    if (p != k && cm.count(k, p) > 0 && (best < 0 || cm.count(k, p) > cm.count(k, best))) best = p;
  }
  if (best < 0) return "-";
  return datasets::fashion_mnist::class_names[static_cast<std::size_t>(best)] + " (" +
         std::to_string(cm.count(k, best)) + ")";
}

/// The per-class analysis as text: summary line, one table with both views, the confusion matrix.
inline std::string analysis_text(const ConfusionMatrix& cm) {
  const auto& names = datasets::fashion_mnist::class_names;
  std::ostringstream o;
  char line[256];
  std::snprintf(line, sizeof line, "%lld correct and %lld wrong predictions of %lld test images: accuracy %s, error rate %s\n\n",
                cm.correct(), cm.total() - cm.correct(), cm.total(), percent(cm.accuracy()).c_str(),
                percent(1 - cm.accuracy()).c_str());
  o << line;
  o << "Per class. 'missed': images of the class predicted as another class (recall = 1 - missed / images).\n"
       "'false alarms': images of other classes predicted as this class (precision = 1 - false alarms / predicted).\n\n";
  const char* row = "%-12s %6s %6s %8s %9s %6s %9s %8s   %s\n";
  std::snprintf(line, sizeof line, row, "class", "images", "missed", "recall", "predicted", "false", "precision", "F1",
                "most often mistaken for");
  o << line;
  std::snprintf(line, sizeof line, row, "", "", "", "", "as it", "alarms", "", "", "");
  o << line;
  const auto pct = [](double v) {
    char b[16];
    std::snprintf(b, sizeof b, "%.2f%%", 100 * v);
    return std::string(b);
  };
  for (Index k = 0; k < cm.classes(); ++k) {
    std::snprintf(line, sizeof line, row, names[static_cast<std::size_t>(k)].c_str(), std::to_string(cm.support(k)).c_str(),
                  std::to_string(cm.misses(k)).c_str(), pct(cm.recall(k)).c_str(), std::to_string(cm.predicted(k)).c_str(),
                  std::to_string(cm.false_alarms(k)).c_str(), pct(cm.precision(k)).c_str(), pct(cm.f1(k)).c_str(),
                  most_mistaken_for(cm, k).c_str());
    o << line;
  }
  o << "\nConfusion matrix (rows: true class, columns: predicted class)\n";
  std::snprintf(line, sizeof line, "%-12s", "");
  o << line;
  for (Index p = 0; p < cm.classes(); ++p) {
    std::snprintf(line, sizeof line, " %6.6s", names[static_cast<std::size_t>(p)].c_str());
    o << line;
  }
  o << "\n";
  for (Index t = 0; t < cm.classes(); ++t) {
    std::snprintf(line, sizeof line, "%-12s", names[static_cast<std::size_t>(t)].c_str());
    o << line;
    for (Index p = 0; p < cm.classes(); ++p) {
      std::snprintf(line, sizeof line, " %6lld", cm.count(t, p));
      o << line;
    }
    o << "\n";
  }
  return o.str();
}

/// The confusion matrix as rows of counts (true class) by column (predicted).
inline nlohmann::json confusion_json(const ConfusionMatrix& cm) {
  nlohmann::json matrix = nlohmann::json::array();
  for (Index t = 0; t < cm.classes(); ++t) {
    nlohmann::json row = nlohmann::json::array();
    for (Index p = 0; p < cm.classes(); ++p) row.push_back(cm.count(t, p));
    matrix.push_back(row);
  }
  return matrix;
}

/// Per class: images, misses, predictions, false alarms, recall, precision, F1.
inline nlohmann::json per_class_json(const ConfusionMatrix& cm) {
  nlohmann::json per_class = nlohmann::json::array();
  for (Index t = 0; t < cm.classes(); ++t) {
    per_class.push_back({{"class", datasets::fashion_mnist::class_names[static_cast<std::size_t>(t)]},
                         {"images", cm.support(t)},
                         {"missed", cm.misses(t)},
                         {"predicted", cm.predicted(t)},
                         {"false_alarms", cm.false_alarms(t)},
                         {"recall", cm.recall(t)},
                         {"precision", cm.precision(t)},
                         {"f1", cm.f1(t)}});
  }
  return per_class;
}

/// results.json: options, every model's history, test results, confusion matrix and per-class metrics.
inline nlohmann::json results_json(const ExperimentOptions& opt, const std::vector<ModelResult>& results,
                                   double wall_seconds, const std::string& command) {
  using nlohmann::json;
  json models = json::array();
  for (const auto& r : results) {
    json history = json::object();
    for (const auto& kv : r.history.history) history[kv.first] = kv.second;
    const json matrix = confusion_json(r.confusion), per_class = per_class_json(r.confusion);
    json probe = json::array();
    for (const auto& row : r.bn_probe) {
      probe.push_back({{"epoch", row.epoch},
                       {"layer", row.layer},
                       {"variance_ratio_median", row.variance_ratio_median},
                       {"variance_ratio_min", row.variance_ratio_min},
                       {"variance_ratio_max", row.variance_ratio_max},
                       {"mean_shift", row.mean_shift}});
    }
    models.push_back({{"model", r.spec.id},
                      {"run", r.run},
                      {"description", r.spec.description()},
                      {"loss_function", r.spec.loss()},
                      {"normalized", r.spec.normalized},
                      {"one_hot", r.spec.one_hot},
                      {"epochs", r.epochs},
                      {"seed", r.seed},
                      {"train_seconds", r.train_seconds},
                      {"history", history},
                      {"test_loss", r.test.loss},
                      {"test_accuracy", r.test.accuracy},
                      {"volatility", r.history.has("val_accuracy") ? volatility(r.history["val_accuracy"]) : 0.0},
                      {"best_val_epoch", r.best_epoch > 0 ? json(r.best_epoch) : json(nullptr)},
                      {"best_val_epoch_test_accuracy", r.best_epoch > 0 ? json(r.best_epoch_test.accuracy) : json(nullptr)},
                      {"best_val_epoch_test_loss", r.best_epoch > 0 ? json(r.best_epoch_test.loss) : json(nullptr)},
                      {"notebook_test_accuracy", r.spec.notebook_test_accuracy / 100},
                      {"confusion_matrix", matrix},
                      {"per_class", per_class},
                      {"bn_probe", probe},
                      {"recalibrated_bn_test_accuracy",
                       r.recalibrated_test_accuracy >= 0 ? json(r.recalibrated_test_accuracy) : json(nullptr)},
                      {"recalibrated_bn_val_accuracy",
                       r.recalibrated_val_accuracy >= 0 ? json(r.recalibrated_val_accuracy) : json(nullptr)},
                      {"int8_test_accuracy", r.int8_test_accuracy >= 0 ? json(r.int8_test_accuracy) : json(nullptr)}});
  }
  json summaries = json::array();
  for (const auto& m : seed_summaries(results)) {
    summaries.push_back({{"model", m.spec.id},
                         {"runs", m.runs},
                         {"last_epoch_test_accuracy", {{"mean", m.mean / 100}, {"sd", m.sd / 100},
                                                       {"min", m.min / 100}, {"max", m.max / 100}}},
                         {"notebook_test_accuracy", m.spec.notebook_test_accuracy / 100},
                         {"notebook_position", m.notebook_position()},
                         {"volatility", m.volatility / 100},
                         {"best_val_epoch_test_accuracy",
                          m.best_val_runs > 0 ? json{{"mean", m.best_val_mean / 100},
                                                     {"min", m.best_val_min / 100},
                                                     {"max", m.best_val_max / 100}}
                                              : json(nullptr)}});
  }
  return {{"loom_version", loom::version},
          {"command", command},
          {"data_dir", opt.data_dir},
          {"seed", opt.seed},
          {"threads", opt.threads},
          {"processes", opt.processes},
          {"synchronized_batch_norm", opt.sync_bn},
          {"batch_size", opt.batch_size},
          {"quick", opt.quick},
          {"train_images", opt.train_images()},
          {"validation_images", opt.validation_images()},
          {"seeds", opt.seeds},
          {"recipe", opt.recipe},
          {"precision_policy", opt.precision},
          {"model", opt.architecture},
          {"optimizer", opt.optimizer_description()},
          {"wall_seconds", wall_seconds},
          {"summary", summaries},
          {"models", models}};
}

/// results.json of --import: the model, its test accuracy, confusion matrix and per-class metrics.
inline nlohmann::json results_json(const ImportedModel& m, const std::string& command) {
  return {{"loom_version", loom::version},
          {"command", command},
          {"imported_model", m.file},
          {"input_shape", m.input_shape},
          {"parameters", m.parameters},
          {"pixels", m.pixels()},
          {"test_accuracy", m.test_accuracy},
          {"predict_seconds", m.predict_seconds},
          {"int8_test_accuracy", m.int8_test_accuracy >= 0 ? nlohmann::json(m.int8_test_accuracy) : nlohmann::json(nullptr)},
          {"int8_refused", m.int8_refused.empty() ? nlohmann::json(nullptr) : nlohmann::json(m.int8_refused)},
          {"confusion_matrix", confusion_json(m.confusion)},
          {"per_class", per_class_json(m.confusion)}};
}

/// report.md's title and command line (the caller ends the line).
inline void report_heading(std::ostream& o, const std::string& title, const std::string& command) {
  o << "# " << title << "\n\nCommand: `" << command << "`";
}

/// One model's per-class section of report.md, trained here or imported: per
/// true class its images, misses and recall, false alarms, precision, F1 and
/// what it was most often mistaken for, beside the notebook's "misclassified"
/// counts when `notebook` is given (notebook_false_alarms()); then the model's
/// two figures, `stem`_misclassified.png and `stem`_classes.png.
inline void class_section_markdown(std::ostream& o, const ConfusionMatrix& cm, const std::vector<int>* notebook,
                                   const std::string& stem) {
  const auto& names = datasets::fashion_mnist::class_names;
  char b[512];
  o << "| class | images | missed | recall | false alarms | "
    << (notebook ? "notebook's \"misclassified\" (= its false alarms) | " : "")
    << "precision | F1 | most often mistaken for |\n|---|---|---|---|---|" << (notebook ? "---|" : "")
    << "---|---|---|\n";
  for (Index k = 0; k < cm.classes(); ++k) {
    std::snprintf(b, sizeof b, "| %s | %lld | %lld | %.2f %% | %lld | ", names[static_cast<std::size_t>(k)].c_str(),
                  cm.support(k), cm.misses(k), 100 * cm.recall(k), cm.false_alarms(k));
    o << b;
    if (notebook) {
      o << (k < static_cast<Index>(notebook->size()) ? std::to_string((*notebook)[static_cast<std::size_t>(k)])
                                                     : std::string("(cut off)"))
        << " | ";
    }
    std::snprintf(b, sizeof b, "%.2f %% | %.2f %% | %s |\n", 100 * cm.precision(k), 100 * cm.f1(k),
                  most_mistaken_for(cm, k).c_str());
    o << b;
  }
  o << "\n![misclassifications per class](" << stem << "_misclassified.png)\n![per-class examples and confusions]("
    << stem << "_classes.png)\n\n";
}

/// report.md of the models trained here: every number beside the notebook's.
inline std::string report_markdown(const ExperimentOptions& opt, const std::vector<ModelResult>& results,
                                   double wall_seconds, const std::string& command) {
  std::ostringstream o;
  char b[512];
  report_heading(o, std::string("Fashion-MNIST, the notebook's four models, in loom ") + loom::version, command);
  o << "  \n";
  if (opt.processes > 1) {
    std::snprintf(b, sizeof b, "Data-parallel over %d MPI processes%s (docs/distributed.md); threads are per process.  \n",
                  opt.processes, opt.sync_bn ? ", synchronized BatchNormalization" : "");
    o << b;
  }
  if (opt.resnet()) o << "Model: the residual network of examples/resnet_model.hpp (--model resnet), not the notebook's.  \n";
  if (opt.improved()) o << "Recipe: improved (issue 12): " << (opt.resnet() ? "the" : "the notebook's") << " model, trained differently.  \n";
  o << "Optimizer: " << opt.optimizer_description() << ".  \n";
  if (opt.precision != "float32") {
    o << "Precision policy: " << opt.precision
      << " (--precision): the Dense and im2col convolutions' products in bfloat16, everything else float32.  \n";
  }
  if (opt.refit) {
    o << "Refit (--refit): trained on all " << opt.train_images()
      << " training images, with no validation split; the test images were never used to choose anything.  \n";
  }
  std::snprintf(b, sizeof b, "Threads %d, batch %ld, seed %llu, %d run%s per model%s. Wall time %.0f s (%.1f min).\n\n",
                opt.threads, static_cast<long>(opt.batch_size), static_cast<unsigned long long>(opt.seed), opt.seeds,
                opt.seeds == 1 ? "" : "s (run r seeds model i with seed + 100 r + i)",
                opt.quick ? ", **quick smoke run (a few thousand images, one epoch): not comparable to the notebook**"
                          : "",
                wall_seconds, wall_seconds / 60);
  o << b;
  const auto summaries = seed_summaries(results);
  if (opt.seeds > 1) {
    o << "## The notebook's recipe over " << opt.seeds << " seeds\n\n"
      << "Test accuracy of the weights after the last epoch, per model over its runs (sd over runs), where the "
         "notebook's number falls among them, and the volatility: the mean absolute change of val_accuracy "
         "between consecutive epochs over the last 10 epochs, in points.\n\n"
         "| model | runs | mean | sd | min | max | notebook | notebook's place | volatility | best-validation epoch's "
         "test accuracy, mean (min-max) |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& m : summaries) {
      std::snprintf(b, sizeof b, "| %d | %d | %.2f %% | %.2f | %.2f %% | %.2f %% | %.2f %% | %s | ", m.spec.id, m.runs,
                    m.mean, m.sd, m.min, m.max, m.spec.notebook_test_accuracy, m.notebook_position().c_str());
      o << b;
      if (m.best_val_runs > 0) {
        std::snprintf(b, sizeof b, "%.2f | %.2f %% (%.2f-%.2f) |\n", m.volatility, m.best_val_mean, m.best_val_min,
                      m.best_val_max);
        o << b;
      } else {
        o << "- | - (no validation split) |\n";
      }
    }
    o << "\n";
  }
  o << "## Test accuracy\n\n| model | run | data, labels, loss | epochs | loom | notebook | difference | volatility | "
       "training time |\n|---|---|---|---|---|---|---|---|---|\n";
  double sum = 0, nb_sum = 0;
  for (const auto& r : results) {
    const std::string vol = r.history.has("val_accuracy") ? fixed2(100 * volatility(r.history["val_accuracy"])) : "-";
    std::snprintf(b, sizeof b, "| %d | %d (seed %llu) | %s | %d | %.2f %% | %.2f %% | %+.2f | %s | %.0f s |\n",
                  r.spec.id, r.run + 1, static_cast<unsigned long long>(r.seed), r.spec.description().c_str(), r.epochs,
                  100 * r.test.accuracy, r.spec.notebook_test_accuracy,
                  100 * r.test.accuracy - r.spec.notebook_test_accuracy, vol.c_str(), r.train_seconds);
    o << b;
    sum += 100 * r.test.accuracy;
    nb_sum += r.spec.notebook_test_accuracy;
  }
  const bool best_epochs =
      std::any_of(results.begin(), results.end(), [](const ModelResult& r) { return r.best_epoch > 0; });
  if (!results.empty()) {
    const double n = static_cast<double>(results.size());
    std::snprintf(b, sizeof b, "| mean | | | | %.2f %% | %.2f %% | %+.2f | | |\n\n", sum / n, nb_sum / n, (sum - nb_sum) / n);
    o << b;
  }
  if (best_epochs) {
    const double n = static_cast<double>(results.size());
    o << "The table above is the notebook's recipe: the weights after the last epoch. Keeping instead the "
         "weights of the epoch with the best validation accuracy (chosen on the validation images, "
         "never on the test set, as Keras's `ModelCheckpoint(save_best_only=True)` would) gives:\n\n"
         "| model | run | best validation epoch | val_accuracy there | test accuracy of those weights | notebook |\n"
         "|---|---|---|---|---|---|\n";
    double best_sum = 0;
    for (const auto& r : results) {
      const double val = r.best_epoch > 0 && r.history.has("val_accuracy")
                             ? r.history["val_accuracy"][static_cast<std::size_t>(r.best_epoch - 1)]
                             : 0.0;
      std::snprintf(b, sizeof b, "| %d | %d | %d of %d | %.2f %% | %.2f %% | %.2f %% |\n", r.spec.id, r.run + 1, r.best_epoch, r.epochs,
                    100 * val, 100 * r.best_epoch_test.accuracy, r.spec.notebook_test_accuracy);
      o << b;
      best_sum += 100 * r.best_epoch_test.accuracy;
    }
    std::snprintf(b, sizeof b, "| mean | | | | %.2f %% | %.2f %% |\n\n", best_sum / n, nb_sum / n);
    o << b;
  }
  bool probed = false, recalibrated = false;
  for (const auto& r : results) {
    probed = probed || !r.bn_probe.empty();
    recalibrated = recalibrated || r.recalibrated_test_accuracy >= 0;
  }
  if (recalibrated) {
    o << "## The last epoch's weights with exact BatchNormalization statistics (--bn-probe)\n\n"
         "Test accuracy of the weights after the last epoch as trained, and with every BatchNormalization "
         "layer's moving mean and variance replaced by those its input has in inference on the training images "
         "(layer after layer): what the moving averages cost.\n\n"
         "| model | run | as trained | recalibrated | difference |\n|---|---|---|---|---|\n";
    for (const auto& r : results) {
      if (r.recalibrated_test_accuracy < 0) continue;
      std::snprintf(b, sizeof b, "| %d | %d | %.2f %% | %.2f %% | %+.2f |\n", r.spec.id, r.run + 1,
                    100 * r.test.accuracy, 100 * r.recalibrated_test_accuracy,
                    100 * (r.recalibrated_test_accuracy - r.test.accuracy));
      o << b;
    }
    o << "\n";
  }
  if (probed) {
    o << "## BatchNormalization's moving statistics against its inputs in inference (--bn-probe)\n\n"
         "After every epoch, each BatchNormalization layer's moving variance divided by the variance its input "
         "actually has in inference on the validation images (per channel; median, min and max over channels), and "
         "the mean distance of the moving mean from the actual mean, in actual standard deviations. A ratio "
         "above 1 means the layer divides by more than it should in inference.\n\n"
         "| model | run | epoch | layer | variance ratio, median (min-max) | mean shift |\n|---|---|---|---|---|---|\n";
    for (const auto& r : results) {
      for (const auto& row : r.bn_probe) {
        std::snprintf(b, sizeof b, "| %d | %d | %d | %s | %.3f (%.3f-%.3f) | %.3f |\n", r.spec.id, r.run + 1, row.epoch,
                      row.layer.c_str(), row.variance_ratio_median, row.variance_ratio_min, row.variance_ratio_max,
                      row.mean_shift);
        o << b;
      }
    }
    o << "\n";
  }
  for (const auto& r : results) {
    if (r.run != 0) continue;  // the per-class analysis of each model's first run
    const auto& cm = r.confusion;
    std::snprintf(b, sizeof b, "## Model %d: %s%s\n\n", r.spec.id, r.spec.description().c_str(),
                  opt.seeds > 1 ? " (run 1)" : "");
    o << b;
    std::snprintf(b, sizeof b,
                  "Test: %lld correct, %lld wrong: accuracy %.2f %%, error rate %.2f %% (notebook: %.2f %%, %.2f %%). "
                  "Test loss %.4f. Last epoch: loss %.4f",
                  cm.correct(), cm.total() - cm.correct(), 100 * cm.accuracy(), 100 * (1 - cm.accuracy()),
                  r.spec.notebook_test_accuracy, 100 - r.spec.notebook_test_accuracy, r.test.loss,
                  r.history.has("loss") ? r.history["loss"].back() : 0.0);
    o << b;
    const bool validated = r.history.has("val_accuracy");
    for (const char* key : {validated ? "val_loss" : "accuracy", validated ? "val_accuracy" : ""}) {
      if (!r.history.has(key) || r.history[key].empty()) continue;
      std::snprintf(b, sizeof b, ", %s %.4f", key, r.history[key].back());
      o << b;
    }
    o << (validated ? ".\n\n" : " (no validation split).\n\n");
    class_section_markdown(o, cm, &notebook_false_alarms()[static_cast<std::size_t>(r.spec.id - 1)],
                           "model" + std::to_string(r.spec.id));
  }
  o << "## Training curves\n\n![training curves](training_curves.png)\n\n";
  o << "## What differs from the notebook\n\n"
       "- Its `mis_cls_stats` printed \"an error rate of 0.9205 and an accuracy rate of 0.0795\": the words are "
       "swapped. Here each number has its own name.\n"
       "- What it called \"class X was misclassified N times\" counted wrong *predictions of* X (false alarms), "
       "and its per-class \"accuracy\" was 1 - false alarms / images of X. Here the two views are separate and "
       "named: misses and recall per true class, false alarms and precision per predicted class, and F1.\n"
       "- Every model's \"what was it mistaken for\" chart was drawn from model 1's predictions (`preds1`). Here "
       "each model's figures use its own predictions.\n"
       "- The notebook's copy shows only the first five classes of each printout; the rest is cut off, so the "
       "notebook column is incomplete.\n";
  return o.str();
}

/// report.md of --import: the model's test accuracy and its per-class section, as a trained model's.
inline std::string report_markdown(const ImportedModel& m, const std::string& command) {
  std::ostringstream o;
  report_heading(o, m.file + " on Fashion-MNIST's test images", command);
  o << "\n\nTest accuracy " << percent(m.test_accuracy) << " (" << m.confusion.correct() << " of "
    << m.confusion.total() << "), pixels " << (m.raw_pixels ? "0..255" : "scaled to [0, 1]") << ", input shape "
    << m.input_shape << ", " << m.parameters << " parameters.\n\n";
  class_section_markdown(o, m.confusion, nullptr, "imported");
  return o.str();
}

}  // namespace loom::examples
