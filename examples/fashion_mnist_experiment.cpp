// The Keras notebook's Fashion-MNIST experiment, reproduced with loom:
// the same split (first 48,000 training images, last 12,000 for validation),
// the same model four times over {normalized, raw} x {one-hot + categorical
// cross-entropy, integer labels + sparse categorical cross-entropy}, Keras's
// default optimizer (RMSprop), 20/20/20/10 epochs at batch 32; then each
// model's test accuracy and per-class analysis, with figures. --recipe improved
// trains the same model better, and (unless --no-refit) on all 60,000 training
// images, with no validation split: its recipe was chosen on the split.
//
//   fashion_mnist_experiment [--out results] [--models 1 2 3 4] [--quick] ... (see --help)
//
// Output folder: model<i>_misclassified.png, model<i>_classes.png,
// training_curves.png, results.json, report.md.
//
//   fashion_mnist_experiment --import model.keras [--import-raw-pixels]
//
// evaluates a model saved by Keras (.keras or .h5) on the test images instead,
// with the same per-class analysis: imported_*.png, results.json, report.md.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <loom/data/encoding.hpp>
#include <loom/data/fashion_mnist.hpp>
#include <loom/keras.hpp>
#include <loom/loom.hpp>
#if defined(LOOM_EXAMPLE_MPI)
#include <loom/distributed.hpp>
#endif

#include "analysis_report.hpp"
#include "bn_probe.hpp"
#include "interrupt.hpp"
#include "experiment_options.hpp"
#include "notebook_model.hpp"
#include "plots.hpp"

namespace fs = std::filesystem;
using namespace loom;
using loom::examples::ImportedModel;
using loom::examples::ModelResult;
using loom::examples::ModelSpec;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// Creates the output folder and proves it writable, or throws IOError.
void prepare_output(const std::string& out) {
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw IOError(out + ": cannot create the output folder: " + ec.message());
  const std::string probe = (fs::path(out) / ".loom_write_test").string();
  write_file_atomically(probe, "ok\n");
  fs::remove(probe, ec);
}

/// The notebook's compile(): its loss, RMSprop with Keras's defaults (and the rule asked for), accuracy.
/// Compiles `model` as the recipe says: the notebook's RMSprop, or the
/// improved recipe's AdamW with a warmup-cosine schedule over `steps`
/// updates per epoch and label smoothing.
void compile_for_recipe(Sequential<float>& model, const ModelSpec& spec, const examples::ExperimentOptions& opt,
                        int epochs, long steps) {
  auto loss = make_loss<float>(spec.loss());
  if (!opt.improved()) {
    model.compile(std::move(loss), std::make_unique<RMSprop<float>>(RMSpropOptions().epsilon_inside_sqrt(!opt.legacy_rmsprop)),
                  {"accuracy"});
    return;
  }
  const examples::ImprovedRecipe& recipe = opt.improved_recipe;
  loss->set_label_smoothing(recipe.label_smoothing);
  const double warmup = static_cast<double>(steps), total = static_cast<double>(steps) * epochs;
  auto schedule = std::make_shared<CosineDecay>(0.0, std::max(1.0, total - warmup), 0.0, recipe.peak_lr, warmup);
  model.compile(std::move(loss),
                std::make_unique<AdamW<float>>(
                    AdamW<float>::defaults().learning_rate(schedule).weight_decay(recipe.weight_decay)),
                {"accuracy"});
}

/// A checkpoint must belong to the model it resumes: same seed, loss, recipe, split, RMSprop rule and no more epochs than asked for.
void check_checkpoint(const Sequential<float>& model, const ModelSpec& spec, const ModelResult& r,
                      const examples::ExperimentOptions& opt, long steps, const std::string& path) {
  const bool legacy_rmsprop = opt.legacy_rmsprop;
  if (!model.compiled() || model.seed() != r.seed || model.loss().type() != make_loss<float>(spec.loss())->type() ||
      model.position().epoch > r.epochs) {
    throw FormatError(path + ": this checkpoint is not of model " + std::to_string(spec.id) +
                      " with these options (seed, loss or epochs differ); remove it or drop --resume");
  }
  if ((model.optimizer().type() == "AdamW") != opt.improved()) {
    throw FormatError(path + ": this checkpoint was trained with the " + (opt.improved() ? "notebook's" : "improved") +
                      " recipe; give --recipe " + (opt.improved() ? "notebook" : "improved") + " to resume it, or remove it");
  }
  // A finished epoch records val_accuracy exactly when there was a validation split.
  if (model.position().epoch > 0 && model.history().has("val_accuracy") == opt.refit) {
    throw FormatError(path + ": this checkpoint was trained " +
                      (opt.refit ? "on the notebook's split (--no-refit)" : "on every training image (--refit)") +
                      "; give the same to resume it, or remove it");
  }
  const Config c = model.optimizer().config();
  if (opt.improved()) {
    const examples::ImprovedRecipe& recipe = opt.improved_recipe;
    bool translates = false, erases = false;
    for (const auto& layer : model.layers()) {
      translates = translates || layer->type() == "RandomTranslation";
      erases = erases || layer->type() == "RandomErasing";
    }
    if (c.real("learning_rate_schedule.warmup_steps", 0) != static_cast<double>(steps)) {
      throw FormatError(path + ": this checkpoint's schedule was set for another number of steps per epoch "
                               "(other --batch-size, --quick or --refit); give the same ones to resume it, or remove it");
    }
    if (c.real("weight_decay", 0) != recipe.weight_decay ||
        c.real("learning_rate_schedule.warmup_target", 0) != recipe.peak_lr ||
        model.loss().config().real("label_smoothing", 0) != recipe.label_smoothing ||
        translates != (recipe.translation > 0) || erases != (recipe.erasing > 0)) {
      throw FormatError(path + ": this checkpoint was trained with other --translation, --peak-lr, --weight-decay, "
                               "--label-smoothing or --erasing; give the same ones to resume it, or remove it");
    }
    return;
  }
  if (model.optimizer().type() != "RMSprop" || c.flag("epsilon_inside_sqrt", true) == legacy_rmsprop) {
    throw FormatError(path + ": this checkpoint was trained with " +
                      (legacy_rmsprop ? "today's RMSprop rule; drop --legacy-rmsprop"
                                      : "TensorFlow 2.0-2.10's RMSprop rule; add --legacy-rmsprop") +
                      " to resume it, or remove it");
  }
}

std::vector<Index> labels_of(const Tensor<float>& y) {
  std::vector<Index> v(static_cast<std::size_t>(y.size()));
  for (Index i = 0; i < y.size(); ++i) v[static_cast<std::size_t>(i)] = static_cast<Index>(y[i]);
  return v;
}

/// The figures of one model, drawn from its own predictions.
void draw_model_figures(const std::string& out, const ModelResult& r, const Tensor<float>& x_test_raw,
                        const Tensor<float>& y_test, std::string id = "") {
  namespace plots = examples::plots;
  const auto& names = datasets::fashion_mnist::class_names;
  const ConfusionMatrix& cm = r.confusion;
  std::vector<std::string> labels(names.begin(), names.end());
  std::vector<double> misses;
  std::vector<std::vector<float>> images;
  std::vector<std::string> captions;
  std::vector<std::vector<long long>> mistaken_for;
  for (Index k = 0; k < cm.classes(); ++k) {
    misses.push_back(static_cast<double>(cm.misses(k)));
    // The first test image of the class, as the notebook shows.
    Index first = 0;
    while (first < y_test.size() && static_cast<Index>(y_test[first]) != k) ++first;
    const float* img = x_test_raw.data() + std::min(first, y_test.size() - 1) * 784;
    images.emplace_back(img, img + 784);
    char cap[96];
    std::snprintf(cap, sizeof cap, "%s, recall %.2f%%", names[static_cast<std::size_t>(k)].c_str(), 100 * cm.recall(k));
    captions.emplace_back(cap);
    std::vector<long long> row;
    for (Index p = 0; p < cm.classes(); ++p) row.push_back(cm.count(k, p));
    mistaken_for.push_back(row);
  }
  // "model3" for the experiment's models, or the name given (an imported model's).
  const std::string stem = id.empty() ? "model" + std::to_string(r.spec.id) : id;
  if (id.empty()) id = "Model " + std::to_string(r.spec.id);
  plots::horizontal_bars((fs::path(out) / (stem + "_misclassified.png")).string(),
                         id + ": test images missed per class (total " +
                             std::to_string(cm.total() - cm.correct()) + ")",
                         "test images of the class predicted as another class", labels, misses);
  plots::class_grid((fs::path(out) / (stem + "_classes.png")).string(), id + ": what each class was mistaken for", labels, images, captions, mistaken_for);
}

void write_outputs(const examples::ExperimentOptions& opt, const std::vector<ModelResult>& results, double wall,
                   const std::string& command) {
  const fs::path out(opt.out);
  write_file_atomically((out / "results.json").string(),
                                  examples::results_json(opt, results, wall, command).dump(2) + "\n");
  write_file_atomically((out / "report.md").string(), examples::report_markdown(opt, results, wall, command));
}

/// --import: a Keras model on the 10,000 test images, with the per-class
/// analysis, figures, results.json and report.md.
int run_import(const examples::ExperimentOptions& opt, const std::string& command) {
  auto model = keras::load_model<float>(opt.import_file, keras::LoadOptions().compile(false));
  model.summary();
  auto data = datasets::fashion_mnist::load<float>(opt.data_dir);
  Tensor<float> x = opt.import_raw ? data.x_test : data::scaled(data.x_test, 1.0 / 255);
  const Index n = x.dim(0);
  if (model.input_shape().size() != 784) {
    throw ShapeError(detail::str(opt.import_file, " takes inputs ", model.input_shape(),
                                 ", not Fashion-MNIST's 28 x 28 images"));
  }
  x.reshape(model.input_shape().with_batch(n));  // (28, 28, 1), (28, 28) or (784,): the model's own
  const auto t0 = Clock::now();
  const Tensor<float> p = model.predict(x, opt.batch_size);
  const double seconds = seconds_since(t0);
  if (p.rank() != 2 || p.dim(1) != 10) {
    throw ShapeError(detail::str(opt.import_file, " gives outputs ", p.shape().without_batch(), ", not 10 classes"));
  }
  ImportedModel m;
  m.file = opt.import_file;
  m.input_shape = model.input_shape().str();
  m.parameters = model.count_params();
  m.raw_pixels = opt.import_raw;
  m.predict_seconds = seconds;
  m.confusion = ConfusionMatrix(labels_of(data.y_test), argmax_rows(p), 10);
  m.test_accuracy = static_cast<double>(m.confusion.correct()) / static_cast<double>(m.confusion.total());
  std::cout << "\n" << opt.import_file << " on the 10,000 test images (pixels "
            << (opt.import_raw ? "0..255" : "scaled to [0, 1]") << "): test accuracy " << examples::percent(m.test_accuracy)
            << " (" << seconds << " s)\n"
            << examples::analysis_text(m.confusion);
  Tensor<float> images = data.x_test;
  data::add_channel_axis(images);
  try {
    ModelResult r;
    r.confusion = m.confusion;
    draw_model_figures(opt.out, r, images, data.y_test, "imported");
  } catch (const Error& e) {
    std::cerr << "fashion_mnist_experiment: figures skipped: " << e.what() << "\n";
  }
  const fs::path out(opt.out);
  write_file_atomically((out / "results.json").string(), examples::results_json(m, command).dump(2) + "\n");
  write_file_atomically((out / "report.md").string(), examples::report_markdown(m, command));
  std::cout << "Results, figures and report in " << opt.out << "/\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  examples::ExperimentOptions opt;
  const int rc = examples::parse_options(argc, argv, opt, std::cout, std::cerr);
  if (rc >= 0) return rc;
  std::string command = "fashion_mnist_experiment";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];

  // Under mpirun the processes train one model together (docs/distributed.md):
  // rank 0 prints, saves and analyses; the others only train.
  std::shared_ptr<Communicator> comm;
#if defined(LOOM_EXAMPLE_MPI)
  std::optional<mpi::Environment> mpi_environment;
  if (mpi::launched()) {
    mpi_environment.emplace(argc, argv);
    auto world = mpi::world();
    if (world->size() > 1) {
      comm = world;
      opt.processes = world->size();
      if (opt.threads == 0) opt.threads = std::max(1, default_num_threads() / world->processes_on_this_node());
      if (world->rank() != 0 && !std::freopen("/dev/null", "w", stdout)) return 1;
    }
  }
#endif
  const bool rank0 = !comm || comm->rank() == 0;

  try {
    const auto start = Clock::now();
    if (opt.threads == 0) opt.threads = default_num_threads();
    set_num_threads(opt.threads);
    if (!opt.import_file.empty()) {  // one process is enough
      if (!rank0) return 0;
      prepare_output(opt.out);
      return run_import(opt, command);
    }
    if (rank0) {  // only rank 0 writes
      prepare_output(opt.out);
      prepare_output((fs::path(opt.out) / "checkpoints").string());
      if (!opt.save_keras.empty()) prepare_output(opt.save_keras);
    }
    std::signal(SIGINT, examples::on_sigint);

    // The notebook: (X, Y), (x_test, y_test) = fashion_mnist.load_data(); first 48,000 train, last 12,000 valid.
    // With --refit all 60,000 train and there is no validation split.
    auto data = datasets::fashion_mnist::load<float>(opt.data_dir);
    const Index n_train = opt.train_images(), n_valid = opt.validation_images();
    const bool validate = n_valid > 0;
    Tensor<float> x_train = data::take(data.x_train, 0, n_train), y_train = data::take(data.y_train, 0, n_train);
    Tensor<float> x_valid, y_valid;
    if (validate) {
      x_valid = data::take(data.x_train, 48000, 48000 + n_valid);
      y_valid = data::take(data.y_train, 48000, 48000 + n_valid);
      data::add_channel_axis(x_valid);
    }
    data.x_train = Tensor<float>();  // the split copies are all that is needed from here on
    data.y_train = Tensor<float>();
    for (Tensor<float>* x : {&x_train, &data.x_test}) data::add_channel_axis(*x);
    const Tensor<float>& x_test = data.x_test;
    const Tensor<float>& y_test = data.y_test;
    std::cout << "x_train is now a " << x_train.shape() << " shaped array\n"
              << (validate ? "x_valid is now a " + x_valid.shape().str() + " shaped array\n"
                           : std::string("no validation split (--refit): every training image trains the model\n"))
              << " and x_test is now a " << x_test.shape() << " shaped array\n"
              << (comm ? "processes " + std::to_string(opt.processes) + (opt.sync_bn ? " (synchronized BatchNormalization)" : "") + ", " : std::string())
              << "threads " << opt.threads << (comm ? " each" : "") << ", batch size " << opt.batch_size << ", seed " << opt.seed
              << (opt.quick ? ", quick smoke run" : "") << "\n";
    if (opt.quick) {
      std::cout << "Note: a quick run takes about 100 steps per epoch, too few for BatchNormalization's moving\n"
                   "statistics (momentum 0.99) to settle, so test accuracy in inference mode is not meaningful yet,\n"
                   "above all for the normalized models. It checks that everything runs, not how well.\n";
    }
    std::cout << "\n";

    examples::notebook_model<float>(opt.seed).summary();

    std::vector<ModelResult> results;
    std::vector<examples::plots::Curves> curves;
    std::cout << "Optimizer: " << opt.optimizer_description() << "\n";
    std::vector<std::pair<int, int>> jobs;  // (model, run): every run of a model before the next model
    for (int id : opt.models) {
      for (int run = 0; run < opt.seeds; ++run) jobs.emplace_back(id, run);
    }
    for (const auto& [id, run] : jobs) {
      const ModelSpec& spec = examples::notebook_models()[static_cast<std::size_t>(id - 1)];
      ModelResult r;
      r.spec = spec;
      r.run = run;
      r.epochs = opt.epochs_for(spec);
      r.seed = opt.seed_for(spec, run);
      // Run 0 keeps the names of a single-seed run: --seeds K --resume continues one.
      const std::string stem = "model" + std::to_string(id) + (run > 0 ? "_run" + std::to_string(run + 1) : "");
      std::cout << "\nModel " << id << ": " << spec.description() << ", " << r.epochs << " epochs";
      if (opt.seeds > 1) std::cout << ", run " << run + 1 << " of " << opt.seeds << " (seed " << r.seed << ")";
      std::cout << "\n";

      // Inputs as the model wants them: normalized copies, or the raw tensors themselves.
      Tensor<float> xt_n, xv_n, xs_n;
      if (spec.normalized) {
        xt_n = data::scaled(x_train, 1.0 / 255);
        if (validate) xv_n = data::scaled(x_valid, 1.0 / 255);
        xs_n = data::scaled(x_test, 1.0 / 255);
      }
      const Tensor<float>& xt = spec.normalized ? xt_n : x_train;
      const Tensor<float>& xv = spec.normalized ? xv_n : x_valid;
      const Tensor<float>& xs = spec.normalized ? xs_n : x_test;
      Tensor<float> yt_1h, yv_1h, ys_1h;
      if (spec.one_hot) {
        yt_1h = data::to_categorical(y_train, 10);
        if (validate) yv_1h = data::to_categorical(y_valid, 10);
        ys_1h = data::to_categorical(y_test, 10);
      }
      const Tensor<float>& yt = spec.one_hot ? yt_1h : y_train;
      const Tensor<float>& yv = spec.one_hot ? yv_1h : y_valid;
      const Tensor<float>& ys = spec.one_hot ? ys_1h : y_test;

      // Checkpoints: the whole model with its training state after every epoch (and at Ctrl-C), and (with a
      // validation split) the weights of the epoch with the best val_accuracy. Both are written atomically.
      const std::string ckpt = (fs::path(opt.out) / "checkpoints" / (stem + ".loom")).string();
      const std::string best_path = (fs::path(opt.out) / "checkpoints" / (stem + "_best.weights")).string();
      const bool resuming = opt.resume && fs::exists(ckpt);
      examples::NotebookModelOptions variant;
      variant.synchronized_batch_norm = opt.sync_bn;
      variant.augment = opt.improved();
      variant.translation = opt.improved_recipe.translation;
      variant.erasing = opt.improved_recipe.erasing;
      Sequential<float> model =
          resuming ? Sequential<float>::load(ckpt) : examples::notebook_model<float>(r.seed, 10, variant);
      const long steps = static_cast<long>((xt.dim(0) + opt.batch_size - 1) / opt.batch_size);
      if (resuming) {
        check_checkpoint(model, spec, r, opt, steps, ckpt);
        std::cout << "Resuming from " << ckpt << " after epoch " << model.position().epoch
                  << (model.position().step > 0 ? " and batch " + std::to_string(model.position().step) : std::string())
                  << "\n";
      } else {
        compile_for_recipe(model, spec, opt, r.epochs, steps);
      }
      FitOptions<float> fit_options = FitOptions<float>()
                                         .epochs(r.epochs)
                                         .batch_size(opt.batch_size)
                                         .verbose(opt.verbose)
                                         .resume(resuming)
                                         .stop_flag(&examples::interrupted)
                                         .distributed(comm);
      // The weights of the epoch with the best val_accuracy; on --resume its best so far comes back
      // with the checkpoint.
      std::shared_ptr<ModelCheckpoint<float>> keep_best;
      if (validate) {
        fit_options.validation_data(xv, yv);
        keep_best = std::make_shared<ModelCheckpoint<float>>(
            best_path, ModelCheckpointOptions().monitor("val_accuracy").save_best_only(true).save_weights_only(true));
      }
      std::shared_ptr<examples::BnProbe> probe;
      if (opt.bn_probe) {
        probe = std::make_shared<examples::BnProbe>(xv);
        fit_options.callback(probe);
      }
      // keep_best before the checkpoint: a checkpoint never names a best file not yet written.
      if (keep_best) fit_options.callback(keep_best);
      fit_options.callback(std::make_shared<ModelCheckpoint<float>>(ckpt));
      const auto t0 = Clock::now();
      model.fit(xt, yt, fit_options);
      r.train_seconds = seconds_since(t0);
      if (model.interrupted() && !rank0) return 130;
      if (!rank0) continue;  // the others go on to train the next model with rank 0
      if (model.interrupted()) {
        model.save(ckpt);
        std::cerr << "fashion_mnist_experiment: interrupted in epoch " << model.position().epoch + 1 << " of model "
                  << id << "; checkpoint written to " << ckpt << "; rerun with the same options and --resume to continue\n";
        return 130;
      }
      if (!opt.save_keras.empty()) {  // the last epoch's weights, compiled as trained
        const std::string path = (fs::path(opt.save_keras) / (stem + ".keras")).string();
        keras::save_model(model, path);
        std::cout << "Saved for Keras: " << path << "\n";
      }
      r.history = model.history();
      if (probe) r.bn_probe = probe->rows();
      // The notebook's numbers: the weights after the last epoch.
      r.test = model.evaluate(xs, ys, opt.batch_size);
      r.confusion = ConfusionMatrix(labels_of(y_test), argmax_rows(model.predict(xs, opt.batch_size)), 10);
      if (opt.bn_probe) {  // the same weights with exact BatchNormalization statistics (the best weights reload them all)
        examples::recalibrate_batch_norm(model, xt);
        r.recalibrated_test_accuracy = model.evaluate(xs, ys, opt.batch_size).accuracy;
        r.recalibrated_val_accuracy = model.evaluate(xv, yv, opt.batch_size).accuracy;
        std::printf("With BatchNormalization's statistics recalibrated on the training images: val_accuracy %.4f, "
                    "test accuracy %.2f %%\n",
                    r.recalibrated_val_accuracy, 100 * r.recalibrated_test_accuracy);
      }
      std::cout << "\nModel " << id << " on the 10,000 test images (notebook: " << spec.notebook_test_accuracy
                << " %), weights after the last epoch\n"
                << examples::analysis_text(r.confusion);
      if (keep_best) {
        r.best_epoch = keep_best->best_epoch();
        model.load_weights(best_path);
        r.best_epoch_test = model.evaluate(xs, ys, opt.batch_size);
        std::printf("With the weights of epoch %d (best val_accuracy %.4f): test accuracy %.2f %%\n", r.best_epoch,
                    keep_best->best(), 100 * r.best_epoch_test.accuracy);
      }
      if (run == 0) {  // figures and curves of each model's first run
        try {
          draw_model_figures(opt.out, r, x_test, y_test);
        } catch (const Error& e) {
          std::cerr << "fashion_mnist_experiment: figures of model " << id << " skipped: " << e.what() << "\n";
        }
        const auto series = [&](const char* key) { return r.history.has(key) ? r.history[key] : std::vector<double>(); };
        curves.push_back({"model " + std::to_string(id), series("loss"), series("val_loss"), series("accuracy"),
                          series("val_accuracy")});
      }
      results.push_back(std::move(r));
      write_outputs(opt, results, seconds_since(start), command);  // a crash later keeps what is done
    }
    if (!rank0) return 0;
    try {
      examples::plots::training_curves((fs::path(opt.out) / "training_curves.png").string(),
                                       "Training curves of the notebook's models in loom", curves);
    } catch (const Error& e) {
      std::cerr << "fashion_mnist_experiment: training curves skipped: " << e.what() << "\n";
    }
    const double wall = seconds_since(start);
    write_outputs(opt, results, wall, command);
    std::printf("\nTest accuracy, weights after the last epoch%s (notebook):\n",
                validate ? " / of the best validation epoch" : "");
    for (const auto& r : results) {
      const std::string best = validate ? " / " + examples::percent(r.best_epoch_test.accuracy) : "";
      std::printf("  model %d%s: %.2f %%%s (%.2f %%)\n", r.spec.id,
                  opt.seeds > 1 ? (", run " + std::to_string(r.run + 1)).c_str() : "", 100 * r.test.accuracy,
                  best.c_str(), r.spec.notebook_test_accuracy);
    }
    if (opt.seeds > 1) {
      std::printf("\nOver %d seeds, test accuracy after the last epoch (the notebook's recipe)%s:\n", opt.seeds,
                  validate ? ", and volatility" : "");
      for (const auto& m : examples::seed_summaries(results)) {
        std::printf("  model %d: mean %.2f %%, sd %.2f, min %.2f %%, max %.2f %%; notebook's %.2f %% is %s", m.spec.id,
                    m.mean, m.sd, m.min, m.max, m.spec.notebook_test_accuracy, m.notebook_position().c_str());
        if (m.best_val_runs > 0) {
          std::printf("; volatility %.2f points; best-validation epoch's weights: mean %.2f %%", m.volatility,
                      m.best_val_mean);
        }
        std::printf("\n");
      }
    }
    std::printf("Wall time %.0f s. Results, figures and report in %s/\n", wall, opt.out.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fashion_mnist_experiment: " << (comm ? "rank " + std::to_string(comm->rank()) + ": " : std::string())
              << e.what() << std::endl;
    if (comm) comm->abort(1);  // the other processes would wait for this one forever
    return 1;
  }
}
