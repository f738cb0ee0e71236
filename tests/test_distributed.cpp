// Data-parallel training over MPI (loom/distributed.hpp). ctest runs this
// binary under `mpiexec -np 2` and `-np 3` (3 splits batches unevenly).
//
// Every rank runs every test case in the same order, so that their
// collectives meet. The single-process run a case compares with is computed
// on every rank, from the same seed, without a communicator. Checks that
// could differ between ranks are CHECKs (never REQUIREs), so that no rank
// leaves a case early and strands the others in a collective.
//
// `distributed_tests --fail exception|data|kill` runs one failing job instead
// (tests/distributed_failures.sh checks that it ends, with a readable line).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <loom/distributed.hpp>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>

#include <unistd.h>

#include "notebook_model.hpp"
// After Eigen (its mm_malloc.h declares posix_memalign first). This binary
// counts allocations, so it never runs under a sanitizer.
#include "allocation_counter.hpp"

using namespace loom;

namespace {

std::shared_ptr<mpi::Communicator> comm;

template <class T = float>
Tensor<T> images(Index n, Index side, std::uint64_t seed) {
  Tensor<T> x(Shape{n, side, side, 1});
  Rng rng(seed);
  for (T& v : x) v = static_cast<T>(rng.uniform());
  return x;
}

template <class T = float>
Tensor<T> one_hot_labels(Index n, std::uint64_t seed) {
  Tensor<T> y(Shape{n, 10});
  Rng rng(seed);
  for (Index i = 0; i < n; ++i) y[i * 10 + static_cast<Index>(rng.next_u64() % 10)] = 1;
  return y;
}

/// max |a - b| / max |b|: the tolerance the issue sets is per tensor.
template <class T>
double relative_difference(const Tensor<T>& a, const Tensor<T>& b) {
  double diff = 0, scale = 0;
  for (Index i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

/// Every parameter and buffer of `a` within `tolerance` of `b`'s; returns the largest difference.
template <class T>
double check_close(Sequential<T>& a, Sequential<T>& b, double tolerance) {
  const auto& pa = a.parameters();
  const auto& pb = b.parameters();
  CHECK(pa.size() == pb.size());
  double worst = 0;
  for (std::size_t i = 0; i < std::min(pa.size(), pb.size()); ++i) {
    const double d = relative_difference(*pa[i].value, *pb[i].value);
    CHECK_MESSAGE(d <= tolerance, pa[i].name, " differs by ", d, " (relative)");
    worst = std::max(worst, d);
  }
  return worst;
}

template <class T>
std::string bytes_of(Sequential<T>& m) {
  std::string s;
  for (const auto& p : m.parameters()) {
    s.append(reinterpret_cast<const char*>(p.value->data()), sizeof(T) * static_cast<std::size_t>(p.value->size()));
  }
  return s;
}

/// Whether every rank's parameters and buffers are bit for bit rank 0's.
template <class T>
bool replicas_identical(Sequential<T>& m) {
  const std::string mine = bytes_of(m);
  std::string root = mine;
  comm->broadcast(root);
  double differ = root == mine ? 0 : 1;
  comm->allreduce_sum(&differ, 1);
  return differ == 0;
}

/// A model with neither BatchNormalization nor Dropout: data parallelism is exact for it.
Sequential<float> small_model(std::uint64_t seed) {
  Sequential<float> m(seed);
  m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).activation(Activation::ReLU)), Shape{8, 8, 1});
  m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2})));
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(10).activation(Activation::Softmax)));
  m.compile(CategoricalCrossentropy<float>(), SGD<float>(SGDOptions().learning_rate(0.05).momentum(0.9)), {"accuracy"});
  return m;
}

template <class T = float>
FitOptions<T> quiet(int epochs, Index batch_size) {
  return FitOptions<T>().epochs(epochs).batch_size(batch_size).verbose(0);
}

void check_histories_close(const History& a, const History& b, double tolerance) {
  for (const auto& kv : b.history) {
    const auto it = a.history.find(kv.first);
    CHECK_MESSAGE(it != a.history.end(), kv.first);
    if (it == a.history.end()) continue;
    CHECK(it->second.size() == kv.second.size());
    for (std::size_t e = 0; e < std::min(it->second.size(), kv.second.size()); ++e) {
      CHECK_MESSAGE(std::abs(it->second[e] - kv.second[e]) <= tolerance * std::max(1.0, std::abs(kv.second[e])),
                    kv.first, " epoch ", e + 1, ": ", it->second[e], " against ", kv.second[e]);
    }
  }
}

}  // namespace

TEST_CASE("the communicator sums and broadcasts across every rank") {
  const int p = comm->size();
  double d[2] = {1.0 + comm->rank(), 1};
  comm->allreduce_sum(d, 2);
  CHECK(d[0] == p * (p + 1) / 2.0);
  CHECK(d[1] == p);
  float f = 0.5f;
  comm->allreduce_sum(&f, 1);
  CHECK(f == 0.5f * static_cast<float>(p));
  std::string s = comm->rank() == 0 ? std::string(100000, 'x') + "end" : "something else";
  comm->broadcast(s);
  CHECK(s.size() == 100003);
  CHECK(s.substr(s.size() - 3) == "end");
}

TEST_CASE("P ranks with global batch B train as one process with batch B (no BatchNormalization or Dropout)") {
  // 37 samples in batches of 16: 16, 16, 5 (three ranks: 6/5/5 and 2/2/1);
  // 33: a last batch of 1, so that some ranks hold no sample in that step.
  for (Index n : {37, 33}) {
    CAPTURE(n);
    const Tensor<float> x = images(n, 8, 1), y = one_hot_labels(n, 2);
    const Tensor<float> xv = images(11, 8, 3), yv = one_hot_labels(11, 4);
    Sequential<float> single = small_model(5), replica = small_model(5);
    const History h1 = single.fit(x, y, quiet(3, 16).validation_data(xv, yv));
    const History hp = replica.fit(x, y, quiet(3, 16).validation_data(xv, yv).distributed(comm));
    check_close(replica, single, 1e-5);
    check_histories_close(hp, h1, 1e-5);
    CHECK(replica.position().epoch == 3);
    CHECK(replica.trainer().optimizer().iterations() == single.trainer().optimizer().iterations());
    CHECK(replicas_identical(replica));
  }
}

TEST_CASE("with weight regularizers, P ranks train as one process: each penalty's gradient added once") {
  // The penalties' gradients join the summed gradients after the allreduce, once, and the loss logged
  // (and val_loss) holds the penalties once. 33 samples in batches of 16: some ranks hold none in the last step.
  const auto make = [] {
    Sequential<float> m(6);
    m.add(Conv2D<float>(Conv2DOptions(4, {3, 3}).activation(Activation::ReLU).kernel_regularizer(L2(0.05)).bias_regularizer(L1(0.01))),
          Shape{8, 8, 1});
    m.add(MaxPool2D<float>(MaxPool2DOptions({2, 2})));
    m.add(Flatten<float>());
    m.add(LayerNormalization<float>(LayerNormalizationOptions().gamma_regularizer(L1L2(0.01, 0.05))));
    m.add(Dense<float>(DenseOptions(10).activation(Activation::Softmax).kernel_regularizer(L1L2(0.001, 0.02))));
    m.compile(CategoricalCrossentropy<float>(), SGD<float>(SGDOptions().learning_rate(0.05).momentum(0.9)), {"accuracy"});
    return m;
  };
  const Tensor<float> x = images(33, 8, 41), y = one_hot_labels(33, 42);
  const Tensor<float> xv = images(9, 8, 43), yv = one_hot_labels(9, 44);
  Sequential<float> single = make(), replica = make();
  const History h1 = single.fit(x, y, quiet(3, 16).validation_data(xv, yv));
  const History hp = replica.fit(x, y, quiet(3, 16).validation_data(xv, yv).distributed(comm));
  check_close(replica, single, 1e-5);
  check_histories_close(hp, h1, 1e-5);
  CHECK(replicas_identical(replica));
}

TEST_CASE("rank 0's weights and optimizer state are where every rank starts") {
  const Tensor<float> x = images(20, 8, 11), y = one_hot_labels(20, 12);
  // Different seeds on every rank: after the fit every replica is rank 0's model trained.
  Sequential<float> replica = small_model(100 + static_cast<std::uint64_t>(comm->rank()));
  Sequential<float> single = small_model(100);
  single.fit(x, y, quiet(1, 10));
  replica.fit(x, y, quiet(1, 10).distributed(comm));
  check_close(replica, single, 1e-5);
  CHECK(replicas_identical(replica));
}

TEST_CASE("with synchronized BatchNormalization the notebook's model (Dropout 0) trains as one process") {
  // In double: in float, any change of summation order (two threads instead
  // of one does it too) flips ReLU and max-pooling decisions of this model
  // within a few steps, and the runs part by more than rounding; in double
  // they do not, so the comparison sees the algorithm alone.
  // 70 images in batches of 32: 32, 32, 6, split 16/16/3 by two ranks, 11/11/10 and 2/2/2 by three.
  using T = double;
  const examples::NotebookModelOptions sync{0.0, 0.0, true};
  const Tensor<T> x = images<T>(70, 28, 21), y = one_hot_labels<T>(70, 22);
  const auto make = [&] {
    Sequential<T> m = examples::notebook_model<T>(9, 10, sync);
    m.compile(CategoricalCrossentropy<T>(), SGD<T>(SGDOptions().learning_rate(0.02).momentum(0.9)), {"accuracy"});
    return m;
  };
  Sequential<T> single = make(), replica = make();
  const History h1 = single.fit(x, y, quiet<T>(2, 32));
  const History hp = replica.fit(x, y, quiet<T>(2, 32).distributed(comm));
  const double worst = check_close(replica, single, 1e-5);  // the moving statistics included
  MESSAGE("largest relative difference from one process: ", worst);
  check_histories_close(hp, h1, 1e-5);
  CHECK(replicas_identical(replica));
}

TEST_CASE("local BatchNormalization: moving statistics averaged across ranks, validation over every sample") {
  const Tensor<float> x = images(64, 28, 31), y = one_hot_labels(64, 32);
  const Tensor<float> xv = images(23, 28, 33), yv = one_hot_labels(23, 34);
  Sequential<float> replica = examples::notebook_model<float>(3);
  replica.compile(CategoricalCrossentropy<float>(), RMSprop<float>(), {"accuracy"});
  const History h = replica.fit(x, y, quiet(1, 16).validation_data(xv, yv).distributed(comm));
  CHECK(replicas_identical(replica));  // buffers included
  const Evaluation v = replica.evaluate(xv, yv, 16);
  CHECK(h.history.at("val_loss")[0] == doctest::Approx(v.loss).epsilon(1e-6));
  CHECK(h.history.at("val_accuracy")[0] == doctest::Approx(v.accuracy).epsilon(1e-12));
}

TEST_CASE("a distributed fit resumed from rank 0's checkpoint ends as one that never stopped") {
  namespace fs = std::filesystem;
  std::string dir;
  if (comm->rank() == 0) {
    dir = (fs::temp_directory_path() / ("loom_distributed_" + std::to_string(::getpid()))).string();
    fs::create_directories(dir);
  }
  comm->broadcast(dir);
  const Tensor<float> x = images(50, 28, 41), y = one_hot_labels(50, 42);
  const Tensor<float> xv = images(10, 28, 43), yv = one_hot_labels(10, 44);
  const auto options = [&] { return quiet(2, 16).validation_data(xv, yv).distributed(comm); };

  Sequential<float> whole = examples::notebook_model<float>(17);  // Dropout on, local BatchNormalization
  whole.compile(CategoricalCrossentropy<float>(), RMSprop<float>(), {"accuracy"});
  whole.fit(x, y, options().callback(std::make_shared<ModelCheckpoint<float>>(dir + "/epoch{epoch}.loom")));
  // Every rank reads the file rank 0 wrote after epoch 1 (it exists: rank 0
  // wrote it before the collectives of epoch 2 that every rank has passed).
  Sequential<float> resumed = Sequential<float>::load(dir + "/epoch1.loom");
  CHECK(resumed.position().epoch == 1);
  resumed.fit(x, y, options().resume(true));
  CHECK(bytes_of(resumed) == bytes_of(whole));
  CHECK(resumed.history().history == whole.history().history);
  CHECK(replicas_identical(resumed));
  double barrier = 0;  // every rank has read the file before rank 0 removes it
  comm->allreduce_sum(&barrier, 1);
  if (comm->rank() == 0) fs::remove_all(dir);
}

TEST_CASE("a stop on any rank stops every rank at the same place") {
  const Tensor<float> x = images(64, 8, 51), y = one_hot_labels(64, 52);
  SUBCASE("a stop_flag set on the last rank: every rank stops after the same batch") {
    std::atomic<bool> stop{comm->rank() == comm->size() - 1};
    Sequential<float> m = small_model(1);
    m.fit(x, y, quiet(2, 16).stop_flag(&stop).distributed(comm));
    CHECK(m.interrupted());
    CHECK(m.position().epoch == 0);
    CHECK(m.position().step == 1);
  }
  SUBCASE("stop_training from a callback on rank 0 only: every rank ends after that epoch") {
    auto cb = std::make_shared<LambdaCallback<float>>([](Model<float>& m, int epoch, const Logs&) {
      if (comm->rank() == 0 && epoch == 1) m.trainer().stop_training();
    });
    Sequential<float> m = small_model(1);
    const History h = m.fit(x, y, quiet(3, 16).callback(cb).distributed(comm));
    CHECK(h.history.at("loss").size() == 1);
    CHECK(m.position().epoch == 1);
  }
}

TEST_CASE("only rank 0 prints progress and runs the callbacks that save the model") {
  const Tensor<float> x = images(32, 8, 61), y = one_hot_labels(32, 62);
  std::ostringstream out;
  struct Saver : Callback<float> {
    int calls = 0;
    bool saves_model() const override { return true; }
    void on_epoch_end(Model<float>&, int, const Logs&) override { ++calls; }
  };
  auto saver = std::make_shared<Saver>();
  Sequential<float> m = small_model(1);
  m.fit(x, y, quiet(2, 16).verbose(2).output(&out).callback(saver).distributed(comm));
  CHECK(saver->calls == (comm->rank() == 0 ? 2 : 0));
  CHECK((out.str().find("Epoch 2/2") != std::string::npos) == (comm->rank() == 0));
}

namespace {

/// Forwards to another communicator without counting the allocations made
/// inside it: Open MPI's allreduce mallocs its own temporaries on every call
/// (ompi_coll_base_allreduce_intra_redscat_allgather: three per call), which
/// no caller can avoid; what is loom's is counted.
class UncountedCommunicator : public Communicator {
 public:
  explicit UncountedCommunicator(std::shared_ptr<Communicator> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void allreduce_sum(float* data, Index n) override {
    AllocationPause pause;
    inner_->allreduce_sum(data, n);
  }
  void allreduce_sum(double* data, Index n) override {
    AllocationPause pause;
    inner_->allreduce_sum(data, n);
  }
  void broadcast(void* data, std::size_t bytes, int root) override {
    AllocationPause pause;
    inner_->broadcast(data, bytes, root);
  }
  [[noreturn]] void abort(int code) override {
    inner_->abort(code);
    std::abort();  // not reached (the inner communicator's abort does not return either)
  }
  using Communicator::broadcast;

 private:
  std::shared_ptr<Communicator> inner_;
};

}  // namespace

TEST_CASE("a distributed training step allocates nothing once the first batches have run") {
  // Counted between the ends of batches 3 and 13 of a fit: every step in
  // between (gather, forward, backward, packing, the optimizer step, the
  // running metrics; not MPI's own temporaries, see UncountedCommunicator),
  // on every rank, with and without synchronized BatchNormalization, uneven
  // splits on three ranks included.
  const auto uncounted = std::make_shared<UncountedCommunicator>(comm);
  for (const bool sync : {false, true}) {
    CAPTURE(sync);
    const Tensor<float> x = images(20 * 32, 28, 81), y = one_hot_labels(20 * 32, 82);
    Sequential<float> m = examples::notebook_model<float>(5, 10, {0.2, 0.3, sync});
    m.compile(CategoricalCrossentropy<float>(), RMSprop<float>(), {"accuracy"});
    long counted = -1;
    std::optional<AllocationProbe> probe;
    auto cb = std::make_shared<LambdaCallback<float>>();
    cb->on_batch_end_fn = [&](Model<float>&, long batch, const Logs&) {
      if (batch == 3) probe.emplace();
      if (batch == 13) {
        counted = probe->count();
        probe.reset();
      }
    };
    m.fit(x, y, quiet(1, 32).callback(cb).distributed(uncounted));
    CHECK(counted == 0);
  }
}

namespace {

/// One job that fails on rank 1 (tests/distributed_failures.sh runs it and
/// checks that every rank ends, with the failing rank's line on stderr).
int run_failure(const std::string& how) {
  const Tensor<float> x = images(64, 8, 71);
  Tensor<float> y = one_hot_labels(64, 72);
  if (how == "data" && comm->rank() == 1) y[0] = 1 - y[0];
  auto cb = std::make_shared<LambdaCallback<float>>();
  cb->on_batch_end_fn = [&](Model<float>&, long batch, const Logs&) {
    if (comm->rank() != 1 || batch != 2) return;
    if (how == "exception") throw Error("an injected failure in batch 2");
    if (how == "kill") std::raise(SIGKILL);
  };
  Sequential<float> m = small_model(1);
  m.fit(x, y, quiet(50, 4).callback(cb).distributed(comm));
  return 0;  // not reached on a failing job: fit aborts it
}

}  // namespace

int main(int argc, char** argv) {
  mpi::Environment environment(argc, argv);
  comm = mpi::world();
  set_num_threads(1);
  if (argc == 3 && std::strcmp(argv[1], "--fail") == 0) return run_failure(argv[2]);
  doctest::Context context(argc, argv);
  if (comm->rank() != 0) context.setOption("minimal", true);  // other ranks print their failures only
  const int rc = context.run();
  double failed = rc != 0 ? 1 : 0;
  comm->allreduce_sum(&failed, 1);
  comm.reset();
  return failed > 0 ? 1 : 0;
}
