// The experiment program's pieces: option parsing (CLI11) and the written
// analysis (text, results.json, report.md) from a known confusion matrix.
#include <doctest/doctest.h>

#include <sstream>

#include "analysis_report.hpp"
#include "experiment_options.hpp"

using namespace loom;
using namespace loom::examples;

namespace {

int parse(std::vector<const char*> args, ExperimentOptions& opt, std::string* err_text = nullptr) {
  args.insert(args.begin(), "fashion_mnist_experiment");
  std::ostringstream out, err;
  const int rc = parse_options(static_cast<int>(args.size()), args.data(), opt, out, err);
  if (err_text) *err_text = err.str();
  return rc;
}

/// 10 images per class; class k gets k of them wrong, all predicted as class (k + 1) % 10.
ConfusionMatrix known_matrix() {
  std::vector<Index> truth, pred;
  for (Index k = 0; k < 10; ++k) {
    for (Index i = 0; i < 10; ++i) {
      truth.push_back(k);
      pred.push_back(i < k ? (k + 1) % 10 : k);
    }
  }
  return ConfusionMatrix(truth, pred, 10);
}

}  // namespace

TEST_CASE("experiment options: defaults are the notebook's") {
  ExperimentOptions opt;
  CHECK(parse({}, opt) == -1);
  CHECK(opt.models == std::vector<int>{1, 2, 3, 4});
  CHECK(opt.batch_size == 32);
  CHECK(opt.out == "results");
  CHECK_FALSE(opt.quick);
  const auto& specs = notebook_models();
  CHECK(opt.epochs_for(specs[0]) == 20);
  CHECK(opt.epochs_for(specs[3]) == 10);
  CHECK(specs[0].loss() == "categorical_crossentropy");
  CHECK(specs[3].loss() == "sparse_categorical_crossentropy");
  CHECK_FALSE(specs[2].normalized);
}

TEST_CASE("experiment options: values, --quick and --epochs") {
  ExperimentOptions opt;
  CHECK(parse({"--models", "3", "1", "--epochs", "2", "--batch-size", "64", "--threads", "1", "--seed", "9", "--out",
               "/tmp/x", "--data-dir", "/data"},
              opt) == -1);
  CHECK(opt.models == std::vector<int>{1, 3});
  CHECK(opt.epochs_for(notebook_models()[0]) == 2);
  CHECK(opt.batch_size == 64);
  CHECK(opt.threads == 1);
  CHECK(opt.seed == 9);
  CHECK(opt.out == "/tmp/x");
  CHECK(opt.data_dir == "/data");
  ExperimentOptions quick;
  CHECK(parse({"--quick"}, quick) == -1);
  CHECK(quick.epochs_for(notebook_models()[0]) == 1);
}

TEST_CASE("experiment options: nonsense gives exit code 2 and one line") {
  for (const auto& args : std::vector<std::vector<const char*>>{{"--models", "0"},
                                                               {"--models", "1", "1"},
                                                               {"--epochs", "0"},
                                                               {"--batch-size", "-3"},
                                                               {"--threads", "x"},
                                                               {"--verbose", "3"},
                                                               {"--out", ""},
                                                               {"--bogus"}}) {
    ExperimentOptions opt;
    std::string err;
    CAPTURE(args[0]);
    CHECK(parse(args, opt, &err) == 2);
    CHECK(err.rfind("fashion_mnist_experiment: ", 0) == 0);
    CHECK(std::count(err.begin(), err.end(), '\n') == 1);
  }
  ExperimentOptions opt;
  CHECK(parse({"--help"}, opt) == 0);
}

TEST_CASE("analysis text names both views, with the right numbers") {
  const ConfusionMatrix cm = known_matrix();
  const std::string text = analysis_text(cm);
  CHECK(text.rfind("55 correct and 45 wrong predictions of 100 test images: accuracy 55.00 %, error rate 45.00 %", 0) == 0);
  // Coat (class 4): 4 of 10 missed, recall 60 %; predicted 9 times (its 6 + 3 from Dress),
  // so 3 false alarms, precision 66.67 %, F1 2 * 0.6667 * 0.6 / 1.2667 = 63.16 %.
  CHECK(text.find("Coat             10      4   60.00%         9      3    66.67%   63.16%   Sandal (4)") !=
        std::string::npos);
  CHECK(most_mistaken_for(cm, 0) == "-");
}

TEST_CASE("results.json and report.md carry every number beside the notebook's") {
  ExperimentOptions opt;
  ModelResult r;
  r.spec = notebook_models()[1];
  r.epochs = 20;
  r.confusion = known_matrix();
  r.test = {0.3, 0.55};
  r.history.append("loss", 0.5);
  r.history.append("val_loss", 0.4);
  r.history.append("accuracy", 0.8);
  r.history.append("val_accuracy", 0.85);
  const auto json = results_json(opt, {r}, 12.5, "cmd");
  CHECK(json["models"][0]["model"] == 2);
  CHECK(json["models"][0]["confusion_matrix"][4][5] == 4);
  CHECK(json["models"][0]["per_class"][4]["recall"] == doctest::Approx(0.6));
  CHECK(json["models"][0]["notebook_test_accuracy"] == doctest::Approx(0.9163));
  CHECK(json["models"][0]["history"]["val_accuracy"][0] == doctest::Approx(0.85));
  CHECK(json["loom_version"] == loom::version);
  const std::string md = report_markdown(opt, {r}, 12.5, "cmd");
  CHECK(md.find("| 2 | normalized pixels, integer labels, sparse categorical cross-entropy | 20 | 55.00 % | 91.63 % | -36.63 |") !=
        std::string::npos);
  CHECK(md.find("| Coat | 10 | 4 | 60.00 % | 3 | 97 |") != std::string::npos);  // notebook's model 2 printed 97 for Coat

  const std::string dir = "/tmp/loom_report_test";
  std::filesystem::create_directories(dir);
  write_file_atomically(dir + "/r.md", md);
  CHECK(std::filesystem::file_size(dir + "/r.md") == md.size());
  CHECK_FALSE(std::filesystem::exists(dir + "/r.md.tmp"));
  CHECK_THROWS_AS(write_file_atomically(dir + "/missing/r.md", md), IOError);
  std::filesystem::remove_all(dir);
}
