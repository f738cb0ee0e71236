// What a data-parallel training step of the notebook's model costs, and where
// the time goes: run it alone and under mpirun, and compare.
//
//   distributed_step [--steps N] [--batch-size B] [--threads T] [--repeats R] [--sync-bn]
//   mpirun -np 2 distributed_step --threads 1
//
// Each repeat is one fit epoch of N global batches of B random images (speed
// does not depend on the pixels) with the notebook's RMSprop. A Communicator
// that times its calls wraps MPI's, so the allreduce's share of a step is
// measured inside the real fit, waiting for the slower rank included; a bare
// allreduce of the same buffer, after a barrier, gives the transfer alone.
// Rank 0 prints one JSON line; docs/distributed.md has the numbers.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <loom/data/encoding.hpp>
#include <loom/distributed.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <optional>
#include <vector>

#include "notebook_model.hpp"

using namespace loom;

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// Forwards to another communicator, adding up the time and bytes of its allreduces.
class TimedCommunicator : public Communicator {
 public:
  explicit TimedCommunicator(std::shared_ptr<Communicator> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void allreduce_sum(float* data, Index n) override { timed(data, n); }
  void allreduce_sum(double* data, Index n) override { timed(data, n); }
  void broadcast(void* data, std::size_t bytes, int root) override { inner_->broadcast(data, bytes, root); }
  [[noreturn]] void abort(int code) override { inner_->abort(code); }
  using Communicator::broadcast;

  double seconds = 0, bytes = 0;
  long calls = 0;

 private:
  template <class V>
  void timed(V* data, Index n) {
    const auto t0 = Clock::now();
    inner_->allreduce_sum(data, n);
    seconds += since(t0);
    bytes += static_cast<double>(n) * sizeof(V);
    ++calls;
  }
  std::shared_ptr<Communicator> inner_;
};

}  // namespace

int main(int argc, char** argv) {
  long steps = 300;
  Index batch = 32;
  int threads = 0, repeats = 3;
  bool sync_bn = false;
  CLI::App app{"Times data-parallel training steps of the notebook's model (run under mpirun)"};
  app.add_option("--steps", steps, "global batches per repeat")->check(CLI::Range(1L, 100000L));
  app.add_option("--batch-size", batch, "global batch size")->check(CLI::Range(Index(1), Index(4096)));
  app.add_option("--threads", threads, "threads per process (default: the cores shared among the processes)");
  app.add_option("--repeats", repeats, "repeats; the median is reported")->check(CLI::Range(1, 50));
  app.add_flag("--sync-bn", sync_bn, "synchronized BatchNormalization (statistics of the global batch)");
  CLI11_PARSE(app, argc, argv);

  std::optional<mpi::Environment> environment;
  std::shared_ptr<mpi::Communicator> world;
  if (mpi::launched()) {
    environment.emplace(argc, argv);
    world = mpi::world();
  }
  const int ranks = world ? world->size() : 1, rank = world ? world->rank() : 0;
  if (threads == 0) threads = std::max(1, default_num_threads() / (world ? world->processes_on_this_node() : 1));
  set_num_threads(threads);

  const Index n = static_cast<Index>(steps) * batch;
  Tensor<float> x(Shape{n, 28, 28, 1}), y(Shape{n});
  Rng rng(1);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (float& v : y) v = static_cast<float>(rng.next_u64() % 10);
  examples::NotebookModelOptions variant;
  variant.synchronized_batch_norm = sync_bn;
  auto model = examples::notebook_model<float>(7, 10, variant);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  auto timed = world ? std::make_shared<TimedCommunicator>(world) : nullptr;
  const auto options = FitOptions<float>().batch_size(batch).verbose(0).distributed(timed);

  model.fit(data::take(x, 0, std::min<Index>(n, 10 * batch)), data::take(y, 0, std::min<Index>(n, 10 * batch)),
            options);  // warm-up: buffers sized, pages touched
  std::vector<double> walls, shares;
  double bytes_per_step = 0;
  for (int r = 0; r < repeats; ++r) {
    if (timed) timed->seconds = timed->bytes = 0;
    const auto t0 = Clock::now();
    model.fit(x, y, options);
    walls.push_back(since(t0));
    if (timed) {
      shares.push_back(timed->seconds / walls.back());
      bytes_per_step = timed->bytes / static_cast<double>(steps);
    }
  }
  // The bare transfer: the step's allreduce buffer alone, after a barrier, many times.
  double bare_ms = 0;
  if (world) {
    std::vector<float> buffer(static_cast<std::size_t>(bytes_per_step / sizeof(float)));
    double barrier = 0;
    world->allreduce_sum(&barrier, 1);
    const int loops = 200;
    const auto t0 = Clock::now();
    for (int i = 0; i < loops; ++i) world->allreduce_sum(buffer.data(), static_cast<Index>(buffer.size()));
    bare_ms = 1e3 * since(t0) / loops;
  }
  std::sort(walls.begin(), walls.end());
  std::sort(shares.begin(), shares.end());
  const double wall = walls[walls.size() / 2];
  if (rank != 0) return 0;
  const nlohmann::json out = {
      {"processes", ranks},
      {"threads_per_process", threads},
      {"synchronized_batch_norm", sync_bn},
      {"global_batch", batch},
      {"steps", steps},
      {"images_per_second", static_cast<double>(n) / wall},
      {"ms_per_step", 1e3 * wall / static_cast<double>(steps)},
      {"allreduce_bytes_per_step", bytes_per_step},
      {"allreduce_share_of_step", shares.empty() ? 0.0 : shares[shares.size() / 2]},
      {"bare_allreduce_ms", bare_ms},
      {"trainable_parameters", model.count_trainable_params()}};
  std::cout << out.dump() << "\n";
  return 0;
}
