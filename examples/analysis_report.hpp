#pragma once
// The notebook's per-class analysis (mis_cls_stats), done right, and the
// experiment's written outputs: the text tables, results.json (nlohmann/json)
// and report.md. Every file is written with loom::write_file_atomically.
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

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <loom/loom.hpp>

#include "experiment_options.hpp"

namespace loom::examples {

/// Everything one trained model produced.
struct ModelResult {
  ModelSpec spec{};
  int epochs = 0;
  std::uint64_t seed = 0;
  History history;
  Evaluation test;
  ConfusionMatrix confusion{{}, {}, 10};
  double train_seconds = 0;
  /// The epoch with the best val_accuracy, and the test result of its weights
  /// (kept in memory during training; chosen on validation data only).
  int best_epoch = 0;
  Evaluation best_epoch_test;
};

/// What the notebook printed for its first five classes (the rest of its
/// output is cut off in the copy we have): "Label/class X was miss
/// labeled/classified N times" (N = false alarms, see above) per model.
inline const std::vector<std::vector<int>>& notebook_false_alarms() {
  static const std::vector<std::vector<int>> v{
      {89, 15, 113, 75, 104}, {110, 5, 110, 72, 97}, {86, 14, 83, 75, 200}, {186, 14, 155, 69, 172}};
  return v;
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
    models.push_back({{"model", r.spec.id},
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
                      {"best_val_epoch", r.best_epoch},
                      {"best_val_epoch_test_accuracy", r.best_epoch_test.accuracy},
                      {"best_val_epoch_test_loss", r.best_epoch_test.loss},
                      {"notebook_test_accuracy", r.spec.notebook_test_accuracy / 100},
                      {"confusion_matrix", matrix},
                      {"per_class", per_class}});
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
          {"optimizer", "RMSprop (Keras defaults: lr 1e-3, rho 0.9, epsilon 1e-7)"},
          {"wall_seconds", wall_seconds},
          {"models", models}};
}

/// report.md: every number beside the notebook's.
inline std::string report_markdown(const ExperimentOptions& opt, const std::vector<ModelResult>& results,
                                   double wall_seconds, const std::string& command) {
  const auto& names = datasets::fashion_mnist::class_names;
  std::ostringstream o;
  char b[512];
  o << "# Fashion-MNIST, the notebook's four models, in loom " << loom::version << "\n\n";
  o << "Command: `" << command << "`  \n";
  if (opt.processes > 1) {
    std::snprintf(b, sizeof b, "Data-parallel over %d MPI processes%s (docs/distributed.md); threads are per process.  \n",
                  opt.processes, opt.sync_bn ? ", synchronized BatchNormalization" : "");
    o << b;
  }
  std::snprintf(b, sizeof b, "Threads %d, batch %ld, seed %llu%s. Wall time %.0f s (%.1f min).\n\n", opt.threads,
                static_cast<long>(opt.batch_size), static_cast<unsigned long long>(opt.seed),
                opt.quick ? ", **quick smoke run (3,000 training and 1,000 validation images): not comparable to the notebook**"
                          : "",
                wall_seconds, wall_seconds / 60);
  o << b;
  o << "## Test accuracy\n\n| model | data, labels, loss | epochs | loom | notebook | difference | training time |\n"
       "|---|---|---|---|---|---|---|\n";
  double sum = 0, nb_sum = 0;
  for (const auto& r : results) {
    std::snprintf(b, sizeof b, "| %d | %s | %d | %.2f %% | %.2f %% | %+.2f | %.0f s |\n", r.spec.id,
                  r.spec.description().c_str(), r.epochs, 100 * r.test.accuracy, r.spec.notebook_test_accuracy,
                  100 * r.test.accuracy - r.spec.notebook_test_accuracy, r.train_seconds);
    o << b;
    sum += 100 * r.test.accuracy;
    nb_sum += r.spec.notebook_test_accuracy;
  }
  if (!results.empty()) {
    const double n = static_cast<double>(results.size());
    std::snprintf(b, sizeof b, "| mean | | | %.2f %% | %.2f %% | %+.2f | |\n\n", sum / n, nb_sum / n, (sum - nb_sum) / n);
    o << b;
    o << "The table above is the notebook's recipe: the weights after the last epoch. Keeping instead the "
         "weights of the epoch with the best validation accuracy (chosen on the validation images, "
         "never on the test set, as Keras's `ModelCheckpoint(save_best_only=True)` would) gives:\n\n"
         "| model | best validation epoch | val_accuracy there | test accuracy of those weights | notebook |\n"
         "|---|---|---|---|---|\n";
    double best_sum = 0;
    for (const auto& r : results) {
      const double val = r.best_epoch > 0 && r.history.has("val_accuracy")
                             ? r.history["val_accuracy"][static_cast<std::size_t>(r.best_epoch - 1)]
                             : 0.0;
      std::snprintf(b, sizeof b, "| %d | %d of %d | %.2f %% | %.2f %% | %.2f %% |\n", r.spec.id, r.best_epoch, r.epochs,
                    100 * val, 100 * r.best_epoch_test.accuracy, r.spec.notebook_test_accuracy);
      o << b;
      best_sum += 100 * r.best_epoch_test.accuracy;
    }
    std::snprintf(b, sizeof b, "| mean | | | %.2f %% | %.2f %% |\n\n", best_sum / n, nb_sum / n);
    o << b;
  }
  for (const auto& r : results) {
    const auto& cm = r.confusion;
    std::snprintf(b, sizeof b, "## Model %d: %s\n\n", r.spec.id, r.spec.description().c_str());
    o << b;
    std::snprintf(b, sizeof b,
                  "Test: %lld correct, %lld wrong: accuracy %.2f %%, error rate %.2f %% (notebook: %.2f %%, %.2f %%). "
                  "Test loss %.4f. Last epoch: loss %.4f, val_loss %.4f, val_accuracy %.4f.\n\n",
                  cm.correct(), cm.total() - cm.correct(), 100 * cm.accuracy(), 100 * (1 - cm.accuracy()),
                  r.spec.notebook_test_accuracy, 100 - r.spec.notebook_test_accuracy, r.test.loss,
                  r.history.has("loss") ? r.history["loss"].back() : 0.0,
                  r.history.has("val_loss") ? r.history["val_loss"].back() : 0.0,
                  r.history.has("val_accuracy") ? r.history["val_accuracy"].back() : 0.0);
    o << b;
    o << "| class | images | missed | recall | false alarms | notebook's \"misclassified\" (= its false alarms) | "
         "precision | F1 | most often mistaken for |\n|---|---|---|---|---|---|---|---|---|\n";
    const auto& nb = notebook_false_alarms()[static_cast<std::size_t>(r.spec.id - 1)];
    for (Index k = 0; k < cm.classes(); ++k) {
      const std::string nbv = k < static_cast<Index>(nb.size()) ? std::to_string(nb[static_cast<std::size_t>(k)]) : "(cut off)";
      std::snprintf(b, sizeof b, "| %s | %lld | %lld | %.2f %% | %lld | %s | %.2f %% | %.2f %% | %s |\n",
                    names[static_cast<std::size_t>(k)].c_str(), cm.support(k), cm.misses(k), 100 * cm.recall(k),
                    cm.false_alarms(k), nbv.c_str(), 100 * cm.precision(k), 100 * cm.f1(k),
                    most_mistaken_for(cm, k).c_str());
      o << b;
    }
    std::snprintf(b, sizeof b,
                  "\n![misclassifications per class](model%d_misclassified.png)\n![per-class examples and confusions]"
                  "(model%d_classes.png)\n\n",
                  r.spec.id, r.spec.id);
    o << b;
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

}  // namespace loom::examples
