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
// evaluates a model saved by Keras (.keras or .h5) or as ONNX (.onnx) on the test images instead,
// with the same per-class analysis: imported_*.png, results.json, report.md.
//
// main() reads as the program's steps: parse the options, join the other
// processes under mpirun, then run_import or run_experiment, which prepares
// the output folders, loads the notebook's split, and trains and scores each
// run of each model (train_run) before writing the outputs. Beside this file:
// experiment_options.hpp (the command line), experiment_data.hpp (the split,
// and each model's view of it), recipe.hpp (compile for --recipe, check a
// --resume checkpoint), notebook_model.hpp (the model), experiment_results.hpp
// (what a run produced), analysis_report.hpp (the analysis, results.json and
// report.md), plots.hpp (the figures), bn_probe.hpp (--bn-probe) and
// interrupt.hpp (Ctrl-C).
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
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
#include <loom/onnx.hpp>
#if defined(LOOM_EXAMPLE_MPI)
#include <loom/distributed.hpp>
#endif

#include "analysis_report.hpp"
#include "bn_probe.hpp"
#include "experiment_data.hpp"
#include "experiment_options.hpp"
#include "experiment_results.hpp"
#include "interrupt.hpp"
#include "notebook_model.hpp"
#include "plots.hpp"
#include "recipe.hpp"

namespace fs = std::filesystem;
using namespace loom;
using loom::examples::ExperimentOptions;
using loom::examples::ImportedModel;
using loom::examples::ModelData;
using loom::examples::ModelResult;
using loom::examples::ModelSpec;
using loom::examples::NotebookSplit;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// ---- the program around the experiment ----

/// The command line as results.json and report.md quote it.
std::string command_line(int argc, char** argv) {
  std::string command = "fashion_mnist_experiment";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  return command;
}

#if defined(LOOM_EXAMPLE_MPI)
/// Under mpirun the processes train one model together (docs/distributed.md):
/// rank 0 prints, saves and analyses; the others only train. Starts MPI in
/// `environment` when launched by mpirun, and with more than one process sets
/// `comm`, opt.processes and (if not given) the threads per process, and
/// sends the stdout of ranks other than 0 to /dev/null. False if that fails.
bool join_processes(int& argc, char**& argv, ExperimentOptions& opt, std::optional<mpi::Environment>& environment,
                    std::shared_ptr<Communicator>& comm) {
  if (!mpi::launched()) return true;
  environment.emplace(argc, argv);
  auto world = mpi::world();
  if (world->size() == 1) return true;
  comm = world;
  opt.processes = world->size();
  if (opt.threads == 0) opt.threads = std::max(1, default_num_threads() / world->processes_on_this_node());
  return world->rank() == 0 || std::freopen("/dev/null", "w", stdout);
}
#endif

bool is_rank0(const std::shared_ptr<Communicator>& comm) { return !comm || comm->rank() == 0; }

/// Uses --threads threads, or when neither it nor join_processes set a number, default_num_threads()
/// (LOOM_NUM_THREADS, else OMP_NUM_THREADS, else one per core).
void use_threads(ExperimentOptions& opt) {
  if (opt.threads == 0) opt.threads = default_num_threads();
  set_num_threads(opt.threads);
}

/// Creates a folder and proves it writable, or throws IOError.
void prepare_output(const std::string& out) {
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw IOError(out + ": cannot create the output folder: " + ec.message());
  const std::string probe = (fs::path(out) / ".loom_write_test").string();
  write_file_atomically(probe, "ok\n");
  fs::remove(probe, ec);
}

/// The error that ends the program, in one line on stderr; returns the exit code, 1. Under mpirun it
/// ends the other processes too.
int fail(const std::exception& e, const std::shared_ptr<Communicator>& comm) {
  std::cerr << "fashion_mnist_experiment: " << (comm ? "rank " + std::to_string(comm->rank()) + ": " : std::string())
            << e.what() << std::endl;
  if (comm) comm->abort(1);  // the other processes would wait for this one forever
  return 1;
}

// ---- analysis and figures ----

/// Labels (N,) as the class indices a ConfusionMatrix takes.
std::vector<Index> labels_of(const Tensor<float>& y) {
  std::vector<Index> v(static_cast<std::size_t>(y.size()));
  for (Index i = 0; i < y.size(); ++i) v[static_cast<std::size_t>(i)] = static_cast<Index>(y[i]);
  return v;
}

/// The figures of one model, drawn from its confusion matrix: `stem`_misclassified.png and
/// `stem`_classes.png, titled with `name`.
void draw_model_figures(const std::string& out, const ConfusionMatrix& cm, const Tensor<float>& x_test_raw,
                        const Tensor<float>& y_test, const std::string& stem, const std::string& name) {
  namespace plots = examples::plots;
  const auto& names = datasets::fashion_mnist::class_names;
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
  plots::horizontal_bars((fs::path(out) / (stem + "_misclassified.png")).string(),
                         name + ": test images missed per class (total " +
                             std::to_string(cm.total() - cm.correct()) + ")",
                         "test images of the class predicted as another class", labels, misses);
  plots::class_grid((fs::path(out) / (stem + "_classes.png")).string(), name + ": what each class was mistaken for",
                    labels, images, captions, mistaken_for);
}

/// draw_model_figures, or when that fails (a loom::Error) a line on stderr that names the figures as
/// `which` says: figures never end a run.
void try_model_figures(const std::string& out, const ConfusionMatrix& cm, const Tensor<float>& x_test_raw,
                       const Tensor<float>& y_test, const std::string& stem, const std::string& name,
                       const std::string& which) {
  try {
    draw_model_figures(out, cm, x_test_raw, y_test, stem, name);
  } catch (const Error& e) {
    std::cerr << "fashion_mnist_experiment: " << which << " skipped: " << e.what() << "\n";
  }
}

// ---- --import: a Keras model on the test images ----

/// Scores `model` on the 10,000 test images, given as --import-raw-pixels says, and prints its analysis.
ImportedModel score_imported(Sequential<float>& model, const datasets::fashion_mnist::Data<float>& data,
                             const ExperimentOptions& opt) {
  ImportedModel m;
  m.file = opt.import_file;
  m.raw_pixels = opt.import_raw;
  Tensor<float> x = opt.import_raw ? data.x_test : data::scaled(data.x_test, 1.0 / 255);
  const Index n = x.dim(0);
  if (model.input_shape().size() != 784) {
    throw ShapeError(detail::str(opt.import_file, " takes inputs ", model.input_shape(),
                                 ", not Fashion-MNIST's 28 x 28 images"));
  }
  x.reshape(model.input_shape().with_batch(n));  // (28, 28, 1), (28, 28) or (784,): the model's own
  const auto t0 = Clock::now();
  const Tensor<float> p = model.predict(x, opt.batch_size);
  m.predict_seconds = seconds_since(t0);
  if (p.rank() != 2 || p.dim(1) != 10) {
    throw ShapeError(detail::str(opt.import_file, " gives outputs ", p.shape().without_batch(), ", not 10 classes"));
  }
  m.confusion = ConfusionMatrix(labels_of(data.y_test), argmax_rows(p), 10);
  m.test_accuracy = static_cast<double>(m.confusion.correct()) / static_cast<double>(m.confusion.total());
  m.input_shape = model.input_shape().str();
  m.parameters = model.count_params();
  std::cout << "\n" << opt.import_file << " on the 10,000 test images (pixels "
            << (opt.import_raw ? "0..255" : "scaled to [0, 1]") << "): test accuracy "
            << examples::percent(m.test_accuracy) << " (" << m.predict_seconds << " s)\n"
            << examples::analysis_text(m.confusion);
  if (opt.int8) {  // the model in int8, calibrated on the first 512 training images
    Tensor<float> calibration(data.x_train.shape().without_batch().with_batch(512));
    std::copy(data.x_train.data(), data.x_train.data() + calibration.size(), calibration.data());
    if (!opt.import_raw) calibration = data::scaled(calibration, 1.0 / 255);
    calibration.reshape(model.input_shape().with_batch(512));
    try {
      Sequential<float> int8 = quantize(model, calibration);
      const ConfusionMatrix c(labels_of(data.y_test), argmax_rows(int8.predict(x, opt.batch_size)), 10);
      m.int8_test_accuracy = static_cast<double>(c.correct()) / static_cast<double>(c.total());
      std::cout << "Quantized to int8 (--int8): test accuracy " << examples::percent(m.int8_test_accuracy) << "\n";
    } catch (const Error& e) {
      m.int8_refused = e.what();
      std::cout << "Not quantized to int8: " << e.what() << "\n";
    }
  }
  return m;
}

/// --import: a Keras or ONNX model on the 10,000 test images, with the
/// per-class analysis, figures, results.json and report.md. (An ONNX model
/// of NCHW images, PyTorch's, is read as one of NHWC images: load_onnx.)
int run_import(const ExperimentOptions& opt, const std::string& command) {
  prepare_output(opt.out);
  const std::string& file = opt.import_file;
  const auto ends_with = [&](const char* ext) {
    const std::size_t n = std::strlen(ext);
    return file.size() >= n && file.compare(file.size() - n, n, ext) == 0;
  };
  auto model = ends_with(".onnx")   ? load_onnx<float>(file)
               : ends_with(".loom") ? Sequential<float>::load(file)
                                    : keras::load_model<float>(file, keras::LoadOptions().compile(false));
  if (opt.precision_given) model.set_policy(opt.precision);  // else the file's own
  model.summary();
  auto data = datasets::fashion_mnist::load<float>(opt.data_dir);
  const ImportedModel imported = score_imported(model, data, opt);
  Tensor<float> images = data.x_test;
  data::add_channel_axis(images);
  try_model_figures(opt.out, imported.confusion, images, data.y_test, "imported", "imported", "figures");
  const fs::path out(opt.out);
  write_file_atomically((out / "results.json").string(), examples::results_json(imported, command).dump(2) + "\n");
  write_file_atomically((out / "report.md").string(), examples::report_markdown(imported, command));
  std::cout << "Results, figures and report in " << opt.out << "/\n";
  return 0;
}

// ---- training: the notebook's models, each over its runs ----

/// What every run of the experiment shares.
struct Experiment {
  const ExperimentOptions& opt;
  const NotebookSplit& data;
  std::shared_ptr<Communicator> comm;  ///< under mpirun with more than one process; null otherwise

  bool rank0() const { return is_rank0(comm); }
};

/// The output folders of a training run: results, checkpoints, --save-keras's and --save-onnx's.
void prepare_training_outputs(const ExperimentOptions& opt) {
  prepare_output(opt.out);
  prepare_output((fs::path(opt.out) / "checkpoints").string());
  if (!opt.save_keras.empty()) prepare_output(opt.save_keras);
  if (!opt.save_onnx.empty()) prepare_output(opt.save_onnx);
}

/// The data, threads and options of the run, the notebook's model and the optimizer, on stdout.
void print_setup(const Experiment& ex) {
  const ExperimentOptions& opt = ex.opt;
  const NotebookSplit& d = ex.data;
  std::cout << "x_train is now a " << d.x_train.shape() << " shaped array\n"
            << (d.validate ? "x_valid is now a " + d.x_valid.shape().str() + " shaped array\n"
                           : std::string("no validation split (--refit): every training image trains the model\n"))
            << " and x_test is now a " << d.x_test.shape() << " shaped array\n"
            << (ex.comm ? "processes " + std::to_string(opt.processes) +
                              (opt.sync_bn ? " (synchronized BatchNormalization)" : "") + ", "
                        : std::string())
            << "threads " << opt.threads << (ex.comm ? " each" : "") << ", batch size " << opt.batch_size << ", seed "
            << opt.seed << (opt.quick ? ", quick smoke run" : "") << "\n";
  if (opt.quick) {
    std::cout << "Note: a quick run takes about 100 steps per epoch, too few for BatchNormalization's moving\n"
                 "statistics (momentum 0.99) to settle, so test accuracy in inference mode is not meaningful yet,\n"
                 "above all for the normalized models. It checks that everything runs, not how well.\n";
  }
  std::cout << "\n";
  if (opt.resnet()) {
    examples::resnet_model<float>(opt.seed).summary();
  } else {
    examples::notebook_model<float>(opt.seed).summary();
  }
  std::cout << "Optimizer: " << opt.optimizer_description() << "\n";
}

/// Every (model, run) to train, every run of a model before the next model.
std::vector<std::pair<int, int>> training_jobs(const ExperimentOptions& opt) {
  std::vector<std::pair<int, int>> jobs;
  for (int id : opt.models) {
    for (int run = 0; run < opt.seeds; ++run) jobs.emplace_back(id, run);
  }
  return jobs;
}

/// Where one run keeps its files. Run 0 keeps the names of a single-seed run: --seeds K --resume continues one.
struct RunFiles {
  std::string stem;          ///< model<i>, or model<i>_run<r> for runs after the first
  std::string checkpoint;    ///< the whole model with its training state, after every epoch (and at Ctrl-C)
  std::string best_weights;  ///< with a validation split: the weights of the epoch with the best val_accuracy

  RunFiles(const ExperimentOptions& opt, int id, int run)
      : stem("model" + std::to_string(id) + (run > 0 ? "_run" + std::to_string(run + 1) : "")),
        checkpoint((fs::path(opt.out) / "checkpoints" / (stem + ".loom")).string()),
        best_weights((fs::path(opt.out) / "checkpoints" / (stem + "_best.weights")).string()) {}
};

/// Run `run` of model `spec` before training: its epochs and seed, announced on stdout.
ModelResult start_run(const ExperimentOptions& opt, const ModelSpec& spec, int run) {
  ModelResult r;
  r.spec = spec;
  r.run = run;
  r.epochs = opt.epochs_for(spec);
  r.seed = opt.seed_for(spec, run);
  std::cout << "\nModel " << spec.id << ": " << spec.description() << ", " << r.epochs << " epochs";
  if (opt.seeds > 1) std::cout << ", run " << run + 1 << " of " << opt.seeds << " (seed " << r.seed << ")";
  std::cout << "\n";
  return r;
}

/// The run's model: its checkpoint when resuming (checked against the options), else the notebook's
/// model compiled for the recipe, with `steps` batches per epoch.
Sequential<float> model_for_run(const ExperimentOptions& opt, const ModelResult& r, const RunFiles& files,
                                bool resuming, long steps) {
  Sequential<float> model = resuming ? Sequential<float>::load(files.checkpoint) : examples::model_for(opt, r.seed);
  if (resuming) {
    examples::check_checkpoint(model, r.spec, r.seed, r.epochs, opt, steps, files.checkpoint);
    std::cout << "Resuming from " << files.checkpoint << " after epoch " << model.position().epoch
              << (model.position().step > 0 ? " and batch " + std::to_string(model.position().step) : std::string())
              << "\n";
  } else {
    model.set_policy(opt.precision);
    examples::compile_for_recipe(model, r.spec, opt, r.epochs, steps);
  }
  return model;
}

/// The callbacks of a run that it reads back after training.
struct RunCallbacks {
  /// With a validation split: keeps the weights of the epoch with the best val_accuracy (on --resume
  /// its best so far comes back with the checkpoint).
  std::shared_ptr<ModelCheckpoint<float>> keep_best;
  std::shared_ptr<examples::BnProbe> probe;  ///< with --bn-probe
};

/// fit's options for a run: epochs, batch, Ctrl-C, processes, validation data and the callbacks,
/// the checkpoint after every epoch last.
FitOptions<float> fit_options_for(const Experiment& ex, const ModelResult& r, const ModelData& data,
                                  const RunFiles& files, bool resuming, RunCallbacks& callbacks) {
  const ExperimentOptions& opt = ex.opt;
  FitOptions<float> fit_options = FitOptions<float>()
                                     .epochs(r.epochs)
                                     .batch_size(opt.batch_size)
                                     .verbose(opt.verbose)
                                     .resume(resuming)
                                     .stop_flag(&examples::interrupted)
                                     .distributed(ex.comm);
  if (ex.data.validate) {
    fit_options.validation_data(data.x_valid(), data.y_valid());
    callbacks.keep_best = std::make_shared<ModelCheckpoint<float>>(
        files.best_weights,
        ModelCheckpointOptions().monitor("val_accuracy").save_best_only(true).save_weights_only(true));
  }
  if (opt.bn_probe) {
    callbacks.probe = std::make_shared<examples::BnProbe>(data.x_valid());
    fit_options.callback(callbacks.probe);
  }
  // keep_best before the checkpoint: a checkpoint never names a best file not yet written.
  if (callbacks.keep_best) fit_options.callback(callbacks.keep_best);
  fit_options.callback(std::make_shared<ModelCheckpoint<float>>(files.checkpoint));
  return fit_options;
}

/// After Ctrl-C: the checkpoint as training stopped, and how to go on.
void save_interrupted(Sequential<float>& model, const RunFiles& files, int id) {
  model.save(files.checkpoint);
  std::cerr << "fashion_mnist_experiment: interrupted in epoch " << model.position().epoch + 1 << " of model " << id
            << "; checkpoint written to " << files.checkpoint
            << "; rerun with the same options and --resume to continue\n";
}

/// --save-keras: the last epoch's weights, compiled as trained.
void save_for_keras(Sequential<float>& model, const ExperimentOptions& opt, const RunFiles& files) {
  const std::string path = (fs::path(opt.save_keras) / (files.stem + ".keras")).string();
  keras::save_model(model, path);
  std::cout << "Saved for Keras: " << path << "\n";
}

/// --save-onnx: the last epoch's weights, as an ONNX graph of the model's inference.
void save_for_onnx(const Sequential<float>& model, const ExperimentOptions& opt, const RunFiles& files) {
  const std::string path = (fs::path(opt.save_onnx) / (files.stem + ".onnx")).string();
  save_onnx(model, path);
  std::cout << "Saved as ONNX: " << path << "\n";
}

/// Every parameter and buffer of the model, in order.
std::vector<float> parameter_values(Sequential<float>& model) {
  std::vector<float> values;
  for (const auto& p : model.parameters()) values.insert(values.end(), p.value->begin(), p.value->end());
  return values;
}

/// Scores the trained model on the test images as the notebook did (the weights after the last epoch),
/// with --bn-probe also with recalibrated BatchNormalization statistics, and with a validation split
/// also with the weights of the best epoch (which it leaves loaded); prints each.
void score_run(Sequential<float>& model, ModelResult& r, const Experiment& ex, const ModelData& data,
               const RunFiles& files, const RunCallbacks& callbacks) {
  const ExperimentOptions& opt = ex.opt;
  r.history = model.history();
  if (callbacks.probe) r.bn_probe = callbacks.probe->rows();
  Tensor<float> predictions;  // evaluate and predict in one pass
  r.test = model.evaluate(data.x_test(), data.y_test(), opt.batch_size, predictions);
  r.confusion = ConfusionMatrix(labels_of(ex.data.y_test), argmax_rows(predictions), 10);
  if (opt.int8) {  // the same weights in int8, calibrated on the first 512 training images
    const Index n = std::min<Index>(512, data.x_train().dim(0)), per = data.x_train().size() / data.x_train().dim(0);
    Tensor<float> calibration(data.x_train().shape().without_batch().with_batch(n));
    std::copy(data.x_train().data(), data.x_train().data() + n * per, calibration.data());
    Sequential<float> int8 = quantize(model, calibration);
    int8.compile(make_loss<float>(r.spec.loss()), std::make_unique<SGD<float>>(), {"accuracy"});
    r.int8_test_accuracy = int8.evaluate(data.x_test(), data.y_test(), opt.batch_size).accuracy;
    std::printf("Quantized to int8 (--int8): test accuracy %.2f %% (float32 %.2f %%)\n", 100 * r.int8_test_accuracy,
                100 * r.test.accuracy);
  }
  // The weights r.test scored, to tell whether the best epoch's are the same ones.
  const std::vector<float> scored = callbacks.keep_best ? parameter_values(model) : std::vector<float>();
  if (opt.bn_probe) {  // the same weights with exact BatchNormalization statistics (the best weights reload them all)
    examples::recalibrate_batch_norm(model, data.x_train());
    r.recalibrated_test_accuracy = model.evaluate(data.x_test(), data.y_test(), opt.batch_size).accuracy;
    r.recalibrated_val_accuracy = model.evaluate(data.x_valid(), data.y_valid(), opt.batch_size).accuracy;
    std::printf("With BatchNormalization's statistics recalibrated on the training images: val_accuracy %.4f, "
                "test accuracy %.2f %%\n",
                r.recalibrated_val_accuracy, 100 * r.recalibrated_test_accuracy);
  }
  std::cout << "\nModel " << r.spec.id << " on the 10,000 test images (notebook: " << r.spec.notebook_test_accuracy
            << " %), weights after the last epoch\n"
            << examples::analysis_text(r.confusion);
  if (callbacks.keep_best) {
    r.best_epoch = callbacks.keep_best->best_epoch();
    model.load_weights(files.best_weights);
    // When the best epoch is the last, the same weights: inference depends on them alone.
    r.best_epoch_test = parameter_values(model) == scored ? r.test
                                                          : model.evaluate(data.x_test(), data.y_test(), opt.batch_size);
    std::printf("With the weights of epoch %d (best val_accuracy %.4f): test accuracy %.2f %%\n", r.best_epoch,
                callbacks.keep_best->best(), 100 * r.best_epoch_test.accuracy);
  }
}

/// How a run ended on this process.
enum class RunEnd {
  scored,       ///< trained and scored (rank 0)
  other_rank,   ///< trained; rank 0 scores it
  interrupted,  ///< stopped by Ctrl-C (rank 0 saved the checkpoint)
};

/// Trains run `run` of model `spec` (resuming its checkpoint with --resume) and, on rank 0, scores it into `r`.
RunEnd train_run(const Experiment& ex, const ModelSpec& spec, int run, ModelResult& r) {
  const ExperimentOptions& opt = ex.opt;
  r = start_run(opt, spec, run);
  const ModelData data(ex.data, spec);
  const RunFiles files(opt, spec.id, run);
  const bool resuming = opt.resume && fs::exists(files.checkpoint);
  const long steps = static_cast<long>((data.x_train().dim(0) + opt.batch_size - 1) / opt.batch_size);
  Sequential<float> model = model_for_run(opt, r, files, resuming, steps);
  RunCallbacks callbacks;
  const FitOptions<float> fit_options = fit_options_for(ex, r, data, files, resuming, callbacks);
  const auto t0 = Clock::now();
  model.fit(data.x_train(), data.y_train(), fit_options);
  r.train_seconds = seconds_since(t0);
  if (model.interrupted()) {
    if (ex.rank0()) save_interrupted(model, files, spec.id);
    return RunEnd::interrupted;
  }
  if (!ex.rank0()) return RunEnd::other_rank;  // the others go on to train the next model with rank 0
  if (!opt.save_keras.empty()) save_for_keras(model, opt, files);
  if (!opt.save_onnx.empty()) save_for_onnx(model, opt, files);
  const auto t1 = Clock::now();
  score_run(model, r, ex, data, files, callbacks);
  r.score_seconds = seconds_since(t1);
  return RunEnd::scored;
}

/// A run's training curves, for training_curves.png.
examples::plots::Curves curves_of(const ModelResult& r) {
  const auto series = [&](const char* key) { return r.history.has(key) ? r.history[key] : std::vector<double>(); };
  return {"model " + std::to_string(r.spec.id), series("loss"), series("val_loss"), series("accuracy"),
          series("val_accuracy")};
}

/// training_curves.png, or when that fails (a loom::Error) a line on stderr.
void try_training_curves(const ExperimentOptions& opt, const std::vector<examples::plots::Curves>& curves) {
  try {
    examples::plots::training_curves((fs::path(opt.out) / "training_curves.png").string(),
                                     "Training curves of the notebook's models in loom", curves);
  } catch (const Error& e) {
    std::cerr << "fashion_mnist_experiment: training curves skipped: " << e.what() << "\n";
  }
}

/// results.json and report.md of the runs done so far.
void write_outputs(const ExperimentOptions& opt, const std::vector<ModelResult>& results, double wall,
                   const std::string& command) {
  const fs::path out(opt.out);
  write_file_atomically((out / "results.json").string(),
                        examples::results_json(opt, results, wall, command).dump(2) + "\n");
  write_file_atomically((out / "report.md").string(), examples::report_markdown(opt, results, wall, command));
}

/// Every run's test accuracy beside the notebook's, and over several seeds each model's spread, on stdout.
void print_summary(const ExperimentOptions& opt, const std::vector<ModelResult>& results, bool validate, double wall,
                   double load_seconds) {
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
  double train = 0, score = 0;
  for (const auto& r : results) {
    train += r.train_seconds;
    score += r.score_seconds;
  }
  std::printf("Wall time %.1f s: loading the data %.2f s, training with validation %.2f s, scoring the test images "
              "%.2f s, the rest (setup, analysis, figures, report) %.2f s. Results, figures and report in %s/\n",
              wall, load_seconds, train, score, wall - load_seconds - train - score, opt.out.c_str());
}

/// The experiment: every run of every model asked for, each model's figures and curves from its first
/// run, results.json and report.md rewritten after every run (a crash later keeps what is done).
/// Returns the exit code: 130 after Ctrl-C.
int run_experiment(const ExperimentOptions& opt, const std::shared_ptr<Communicator>& comm, const std::string& command,
                   Clock::time_point start) {
  if (is_rank0(comm)) prepare_training_outputs(opt);  // only rank 0 writes
  std::signal(SIGINT, examples::on_sigint);
  const auto t0 = Clock::now();
  const NotebookSplit data = examples::load_notebook_split(opt);
  const double load_seconds = seconds_since(t0);
  const Experiment ex{opt, data, comm};
  print_setup(ex);
  std::vector<ModelResult> results;
  std::vector<examples::plots::Curves> curves;
  for (const auto& [id, run] : training_jobs(opt)) {
    ModelResult r;
    const RunEnd end = train_run(ex, examples::notebook_models()[static_cast<std::size_t>(id - 1)], run, r);
    if (end == RunEnd::interrupted) return 130;
    if (end == RunEnd::other_rank) continue;
    if (run == 0) {  // figures and curves of each model's first run
      try_model_figures(opt.out, r.confusion, data.x_test, data.y_test, "model" + std::to_string(id),
                        "Model " + std::to_string(id), "figures of model " + std::to_string(id));
      curves.push_back(curves_of(r));
    }
    results.push_back(std::move(r));
    write_outputs(opt, results, seconds_since(start), command);
  }
  if (!ex.rank0()) return 0;
  try_training_curves(opt, curves);
  const double wall = seconds_since(start);
  write_outputs(opt, results, wall, command);
  print_summary(opt, results, data.validate, wall, load_seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ExperimentOptions opt;
  const int rc = examples::parse_options(argc, argv, opt, std::cout, std::cerr);
  if (rc >= 0) return rc;
  const std::string command = command_line(argc, argv);
  std::shared_ptr<Communicator> comm;
#if defined(LOOM_EXAMPLE_MPI)
  std::optional<mpi::Environment> mpi_environment;  // MPI lives until main returns
  if (!join_processes(argc, argv, opt, mpi_environment, comm)) return 1;
#endif
  try {
    const auto start = Clock::now();
    use_threads(opt);
    if (!opt.import_file.empty()) return is_rank0(comm) ? run_import(opt, command) : 0;  // one process is enough
    return run_experiment(opt, comm, command, start);
  } catch (const std::exception& e) {
    return fail(e, comm);
  }
}
