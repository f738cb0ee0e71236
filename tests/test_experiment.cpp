// The experiment program's pieces: option parsing (CLI11) and the written
// analysis (text, results.json, report.md) from a known confusion matrix.
#include <doctest/doctest.h>

#include <sstream>

#include "analysis_report.hpp"
#include "bn_probe.hpp"
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

TEST_CASE("experiment options: --seeds, --legacy-rmsprop, --bn-probe") {
  ExperimentOptions opt;
  CHECK(parse({}, opt) == -1);
  CHECK(opt.seeds == 1);
  CHECK_FALSE(opt.legacy_rmsprop);
  CHECK_FALSE(opt.bn_probe);
  CHECK(opt.optimizer_description().find("sqrt(a + eps)") != std::string::npos);
  CHECK(opt.seed_for(notebook_models()[1], 0) == 120697);  // run 0: the single-seed run's seed + id
  CHECK(parse({"--seeds", "3", "--legacy-rmsprop", "--bn-probe", "--seed", "10"}, opt) == -1);
  CHECK(opt.seeds == 3);
  CHECK(opt.legacy_rmsprop);
  CHECK(opt.bn_probe);
  CHECK(opt.optimizer_description().find("(sqrt(a) + eps)") != std::string::npos);
  CHECK(opt.seed_for(notebook_models()[3], 2) == 10 + 200 + 4);
  for (const char* bad : {"0", "101", "two"}) {
    ExperimentOptions o;
    CAPTURE(bad);
    CHECK(parse({"--seeds", bad}, o) == 2);
  }
}

TEST_CASE("volatility: the mean absolute change of val_accuracy over the last 10 epochs") {
  CHECK(volatility({}) == 0);
  CHECK(volatility({0.9}) == 0);
  CHECK(volatility({0.80, 0.85, 0.83, 0.86}) == doctest::Approx((0.05 + 0.02 + 0.03) / 3));
  // 13 epochs: only the last 11 values (10 changes) count; the jump from 0.1 is left out.
  std::vector<double> v{0.1, 0.5};
  for (int i = 0; i < 11; ++i) v.push_back(i % 2 ? 0.90 : 0.92);
  CHECK(volatility(v) == doctest::Approx(0.02));
}

TEST_CASE("over seeds: mean, spread, the notebook's place and the best-validation numbers") {
  std::vector<ModelResult> runs;
  for (int k = 0; k < 3; ++k) {
    ModelResult r;
    r.spec = notebook_models()[1];  // notebook: 91.63 %
    r.run = k;
    r.epochs = 3;
    r.test = {0.3, 0.90 + 0.01 * k};         // 90, 91, 92 %
    r.best_epoch_test = {0.3, 0.92 + 0.001 * k};  // 92.0, 92.1, 92.2 %
    r.best_epoch = 2;
    for (double a : {0.88, 0.90 + 0.01 * k, 0.89}) r.history.append("val_accuracy", a);
    runs.push_back(r);
  }
  const auto s = seed_summaries(runs);
  REQUIRE(s.size() == 1);
  CHECK(s[0].runs == 3);
  CHECK(s[0].mean == doctest::Approx(91.0));
  CHECK(s[0].sd == doctest::Approx(1.0));
  CHECK(s[0].min == doctest::Approx(90.0));
  CHECK(s[0].max == doctest::Approx(92.0));
  CHECK(s[0].runs_below_notebook == 2);
  CHECK(s[0].notebook_position() == "above 2 of 3 runs (+0.6 sd from the mean)");
  // volatility per run: (0.02 + 0.01) / 2, (0.03 + 0.02) / 2, (0.04 + 0.03) / 2 -> mean 0.025 = 2.5 points
  CHECK(s[0].volatility == doctest::Approx(2.5));
  CHECK(s[0].best_val_mean == doctest::Approx(92.1));
  ExperimentOptions opt;
  opt.seeds = 3;
  const auto json = results_json(opt, runs, 1, "cmd");
  CHECK(json["summary"][0]["last_epoch_test_accuracy"]["sd"] == doctest::Approx(0.01));
  CHECK(json["summary"][0]["notebook_position"] == "above 2 of 3 runs (+0.6 sd from the mean)");
  CHECK(json["models"][2]["run"] == 2);
  CHECK(json["models"][2]["volatility"] == doctest::Approx(0.035));
  const std::string md = report_markdown(opt, runs, 1, "cmd");
  CHECK(md.find("| 2 | 3 | 91.00 % | 1.00 | 90.00 % | 92.00 % | 91.63 % | above 2 of 3 runs (+0.6 sd from the mean) | "
                "2.50 | 92.10 % (92.00-92.20) |") != std::string::npos);
  CHECK(ExperimentOptions().seeds == 1);
  ModelResult above = runs[0];
  above.test.accuracy = 0.95;
  CHECK(seed_summaries({above})[0].notebook_position() == "below all 1 runs");
}

TEST_CASE("--bn-probe: a BatchNormalization's moving statistics against its input's, by hand") {
  // Input -> Dense(identity) -> BatchNormalization -> Dense(1): the BN's
  // input is x. x repeats the rows (1, 10), (3, 14), (5, 12) 40 times (more
  // than one inference chunk): channel means 3 and 12, variances 8/3 and 8/3.
  Sequential<float> model(1);
  model.add(Dense<float>(DenseOptions(2)), Shape{2});
  model.add(BatchNormalization<float>());
  model.add(Dense<float>(DenseOptions(1)));
  model.build(Shape{2});
  auto p = model.layer(0).parameters();
  *p[0].value = Tensor<float>(Shape{2, 2}, {1, 0, 0, 1});
  *p[1].value = Tensor<float>(Shape{2}, {0, 0});
  const float sd = std::sqrt(8.0f / 3);
  for (auto& q : model.layer(1).parameters()) {
    if (q.name.find("moving_mean") != std::string::npos) *q.value = Tensor<float>(Shape{2}, {3, 12 + sd});
    if (q.name.find("moving_variance") != std::string::npos) *q.value = Tensor<float>(Shape{2}, {2 * 8.0f / 3, 0.5f * 8.0f / 3});
  }
  Tensor<float> x(Shape{120, 2});
  const float rows[3][2] = {{1, 10}, {3, 14}, {5, 12}};
  for (Index i = 0; i < 120; ++i) {
    x[2 * i] = rows[i % 3][0];
    x[2 * i + 1] = rows[i % 3][1];
  }
  BnProbe probe(x);
  probe.on_epoch_end(model, 7, Logs{});
  REQUIRE(probe.rows().size() == 1);
  const BnProbeRow& r = probe.rows()[0];
  CHECK(r.epoch == 7);
  CHECK(r.layer == model.layer(1).name());
  CHECK(r.variance_ratio_median == doctest::Approx(1.25).epsilon(1e-5));  // ratios 2 and 0.5
  CHECK(r.variance_ratio_min == doctest::Approx(0.5).epsilon(1e-5));
  CHECK(r.variance_ratio_max == doctest::Approx(2.0).epsilon(1e-5));
  CHECK(r.mean_shift == doctest::Approx(0.5).epsilon(1e-5));  // 0 and 1 standard deviation
  // Its rows survive a checkpoint.
  ByteWriter w;
  probe.save_state(w);
  BnProbe again(x);
  ByteReader in("state", reinterpret_cast<const unsigned char*>(w.bytes.data()), w.bytes.size());
  again.restore_state(in);
  REQUIRE(again.rows().size() == 1);
  CHECK(again.rows()[0].variance_ratio_max == r.variance_ratio_max);
  CHECK(again.rows()[0].layer == r.layer);

  // Recalibrated on x, the moving statistics are x's: the probe then reads ratios of 1 and no shift.
  recalibrate_batch_norm(model, x);
  auto [mean, var] = moving_statistics(model.layer(1));
  REQUIRE(mean != nullptr);
  CHECK((*mean)[0] == doctest::Approx(3));
  CHECK((*mean)[1] == doctest::Approx(12));
  CHECK((*var)[0] == doctest::Approx(8.0 / 3));
  CHECK((*var)[1] == doctest::Approx(8.0 / 3));
  probe.on_epoch_end(model, 8, Logs{});
  REQUIRE(probe.rows().size() == 2);
  CHECK(probe.rows()[1].variance_ratio_max == doctest::Approx(1).epsilon(1e-5));
  CHECK(probe.rows()[1].variance_ratio_min == doctest::Approx(1).epsilon(1e-5));
  CHECK(probe.rows()[1].mean_shift == doctest::Approx(0).epsilon(1e-5));
}

TEST_CASE("experiment options: --recipe improved trains 20 epochs, and refuses the old RMSprop rule") {
  ExperimentOptions opt;
  CHECK(parse({}, opt) == -1);
  CHECK(opt.recipe == "notebook");
  CHECK(opt.epochs_for(notebook_models()[3]) == 10);
  CHECK(parse({"--recipe", "improved"}, opt) == -1);
  CHECK(opt.improved());
  for (const auto& spec : notebook_models()) CHECK(opt.epochs_for(spec) == 20);
  CHECK(opt.optimizer_description().find("AdamW") != std::string::npos);
  ExperimentOptions both;
  std::string err;
  CHECK(parse({"--recipe", "improved", "--legacy-rmsprop"}, both, &err) == 2);
  CHECK(err.find("--legacy-rmsprop is for the notebook's recipe") != std::string::npos);
  ExperimentOptions bad;
  CHECK(parse({"--recipe", "fancy"}, bad) == 2);
}

TEST_CASE("experiment options: --model resnet trains model 2 for 20 epochs with translation, unless told otherwise") {
  ExperimentOptions opt;
  CHECK(parse({"--model", "resnet"}, opt) == -1);
  CHECK(opt.improved());
  CHECK(opt.models == std::vector<int>{2});
  CHECK(opt.epochs_for(notebook_models()[1]) == 20);
  CHECK(opt.improved_recipe.translation == 0.1);
  CHECK(opt.optimizer_description().find("RandomTranslation(0.1, 0.1)") != std::string::npos);
  ExperimentOptions told;
  CHECK(parse({"--model", "resnet", "--epochs", "3", "--translation", "0"}, told) == -1);
  CHECK(told.epochs_for(notebook_models()[1]) == 3);
  CHECK(told.improved_recipe.translation == 0);
  ExperimentOptions notebook;
  CHECK(parse({"--recipe", "improved"}, notebook) == -1);
  CHECK(notebook.improved_recipe.translation == 0);
  CHECK(notebook.epochs_for(notebook_models()[1]) == 20);
}

TEST_CASE("experiment options: the improved recipe's knobs change it, and only it") {
  ExperimentOptions opt;
  CHECK(parse({"--recipe", "improved", "--translation", "0", "--peak-lr", "1e-3", "--weight-decay", "0.01",
               "--label-smoothing", "0"},
              opt) == -1);
  CHECK(opt.improved_recipe.translation == 0);
  CHECK(opt.improved_recipe.peak_lr == 1e-3);
  CHECK(opt.improved_recipe.weight_decay == 0.01);
  CHECK(opt.improved_recipe.label_smoothing == 0);
  const std::string d = opt.optimizer_description();
  CHECK(d.find("weight_decay 0.01") != std::string::npos);
  CHECK(d.find("warmup to 0.001") != std::string::npos);
  CHECK(d.find("RandomTranslation") == std::string::npos);
  for (const char* knob : {"--translation", "--peak-lr", "--weight-decay", "--label-smoothing", "--erasing"}) {
    ExperimentOptions plain;
    std::string err;
    CHECK(parse({knob, "0.1"}, plain, &err) == 2);
    CHECK(err == std::string("fashion_mnist_experiment: ") + knob + " is for --recipe improved\n");
  }
  ExperimentOptions out_of_range;
  CHECK(parse({"--recipe", "improved", "--translation", "0.9"}, out_of_range) == 2);
}

TEST_CASE("experiment options: the improved recipe refits on every training image unless --no-refit") {
  struct Case {
    std::vector<const char*> args;
    bool refit;
    Index train, valid;
  };
  const Case cases[] = {{{}, false, 48000, 12000},
                        {{"--quick"}, false, 3000, 1000},
                        {{"--refit"}, true, 60000, 0},
                        {{"--recipe", "improved"}, true, 60000, 0},
                        {{"--recipe", "improved", "--quick"}, true, 4000, 0},
                        {{"--recipe", "improved", "--no-refit"}, false, 48000, 12000},
                        {{"--recipe", "improved", "--no-refit", "--bn-probe"}, false, 48000, 12000}};
  for (const Case& c : cases) {
    ExperimentOptions opt;
    CAPTURE(c.args.size());
    CHECK(parse(c.args, opt) == -1);
    CHECK(opt.refit == c.refit);
    CHECK(opt.train_images() == c.train);
    CHECK(opt.validation_images() == c.valid);
  }
  std::string err;
  ExperimentOptions probe;
  CHECK(parse({"--recipe", "improved", "--bn-probe"}, probe, &err) == 2);
  CHECK(err == "fashion_mnist_experiment: --bn-probe needs the validation images, which --refit trains on (the "
               "improved recipe's default; add --no-refit)\n");
  ExperimentOptions both;
  CHECK(parse({"--refit", "--no-refit"}, both, &err) == 2);
  CHECK(err.find("--refit excludes --no-refit") != std::string::npos);
}

TEST_CASE("without a validation split, results.json and report.md say so instead of best-validation numbers") {
  ExperimentOptions opt;
  CHECK(parse({"--recipe", "improved", "--seeds", "2"}, opt) == -1);
  std::vector<ModelResult> runs;
  for (int k = 0; k < 2; ++k) {
    ModelResult r;
    r.spec = notebook_models()[0];
    r.run = k;
    r.epochs = 20;
    r.confusion = known_matrix();
    r.test = {0.3, 0.93 + 0.01 * k};  // 93, 94 %
    r.history.append("loss", 0.5);
    r.history.append("accuracy", 0.8);
    runs.push_back(r);
  }
  const auto s = seed_summaries(runs);
  REQUIRE(s.size() == 1);
  CHECK(s[0].mean == doctest::Approx(93.5));
  CHECK(s[0].best_val_runs == 0);
  CHECK(s[0].volatility == 0);
  const auto json = results_json(opt, runs, 1, "cmd");
  CHECK(json["train_images"] == 60000);
  CHECK(json["validation_images"] == 0);
  CHECK(json["models"][1]["best_val_epoch"].is_null());
  CHECK(json["models"][1]["best_val_epoch_test_accuracy"].is_null());
  CHECK(json["summary"][0]["best_val_epoch_test_accuracy"].is_null());
  CHECK(json["summary"][0]["last_epoch_test_accuracy"]["mean"] == doctest::Approx(0.935));
  const std::string md = report_markdown(opt, runs, 1, "cmd");
  CHECK(md.find("Refit (--refit): trained on all 60000 training images, with no validation split") != std::string::npos);
  CHECK(md.find("| 1 | 2 | 93.50 % | 0.71 | 93.00 % | 94.00 % | 92.05 % | below all 2 runs | - | - (no validation "
                "split) |") != std::string::npos);
  CHECK(md.find("| 1 | 2 (seed 0) | normalized pixels, one-hot labels, categorical cross-entropy | 20 | 94.00 % | "
                "92.05 % | +1.95 | - |") != std::string::npos);
  CHECK(md.find("best validation epoch |") == std::string::npos);  // no table of best-validation weights
  CHECK(md.find("Last epoch: loss 0.5000, accuracy 0.8000 (no validation split).") != std::string::npos);
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
  CHECK(md.find("| 2 | 1 (seed 0) | normalized pixels, integer labels, sparse categorical cross-entropy | 20 | 55.00 % | "
                "91.63 % | -36.63 | 0.00 |") != std::string::npos);
  CHECK(md.find("over 1 seeds") == std::string::npos);  // the spread table needs --seeds
  CHECK(md.find("| Coat | 10 | 4 | 60.00 % | 3 | 97 |") != std::string::npos);  // notebook's model 2 printed 97 for Coat

  const std::string dir = "/tmp/loom_report_test";
  std::filesystem::create_directories(dir);
  write_file_atomically(dir + "/r.md", md);
  CHECK(std::filesystem::file_size(dir + "/r.md") == md.size());
  CHECK_FALSE(std::filesystem::exists(dir + "/r.md.tmp"));
  CHECK_THROWS_AS(write_file_atomically(dir + "/missing/r.md", md), IOError);
  std::filesystem::remove_all(dir);
}
