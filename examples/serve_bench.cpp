// A server's view of loom: one Predictor of the notebook's model answering
// requests of one image from C client threads at once (C = 1, 2, 4, 8 by
// default), each client with loom::set_num_threads(1), as a server's
// workers would call it. Prints, for each C, the images per second and the
// median (p50) and 99th-percentile (p99) latency of a request, in µs.
//
//   serve_bench [--clients 1,2,4,8] [--requests N] [--repeats R] [--model FILE.loom]
//               [--save-onnx FILE.onnx] [--json]
//
// Each repeat runs every client count in turn (so the counts are
// interleaved, not one after the other in blocks); a count's throughput is
// the median of its repeats and its percentiles are over all its requests.
// The clients start together and take requests from one counter until N
// are answered; a request is one predict(image, out, 1) call, timed alone.
// --save-onnx writes the model served, so that bench/compare-serving can run
// ONNX Runtime's concurrent Run on the same model (the same weights) beside it.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>
#include <vector>

#include <loom/onnx.hpp>

#include "notebook_model.hpp"

namespace {

using Clock = std::chrono::steady_clock;

/// One client count's repeats: images/s of each, and every request's latency in µs.
struct Serving {
  int clients = 0;
  std::vector<double> rates;
  std::vector<double> latencies;
};

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

double median(std::vector<double> v) { return percentile(std::move(v), 50); }

/// `requests` requests of one image from `clients` threads at once; adds
/// the rate and the latencies to `s`.
void serve(const loom::Predictor<float>& predictor, const loom::Tensor<float>& images, int clients, long requests,
           Serving& s) {
  const loom::Index pixels = images.size() / images.dim(0);
  std::vector<std::vector<double>> latencies(static_cast<std::size_t>(clients));
  for (auto& l : latencies) l.reserve(static_cast<std::size_t>(requests));
  std::atomic<int> ready{0};
  std::atomic<long> next{0};
  Clock::time_point start;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      loom::set_num_threads(1);
      loom::Tensor<float> image(images.shape().without_batch().with_batch(1)), out;
      // A first call of its own, untimed: the pool makes a session per client.
      std::copy(images.data(), images.data() + pixels, image.data());
      predictor.predict(image, out, 1);
      if (++ready == clients) start = Clock::now();
      while (ready.load() < clients) std::this_thread::yield();
      auto& mine = latencies[static_cast<std::size_t>(c)];
      for (long i = next++; i < requests; i = next++) {
        const loom::Index k = i % images.dim(0);
        std::copy(images.data() + k * pixels, images.data() + (k + 1) * pixels, image.data());
        const auto t0 = Clock::now();
        predictor.predict(image, out, 1);
        mine.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  s.rates.push_back(static_cast<double>(requests) / seconds);
  for (const auto& l : latencies) s.latencies.insert(s.latencies.end(), l.begin(), l.end());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Serve the notebook's CNN from one loom::Predictor to C client threads at once: images/s, p50, p99"};
  std::vector<int> client_counts{1, 2, 4, 8};
  long requests = 20000;
  int repeats = 3;
  std::string model_file, onnx_file;
  std::uint64_t seed = 0;
  bool json = false;
  app.add_option("--clients", client_counts, "client thread counts, e.g. 1,2,4,8")->delimiter(',')->check(CLI::Range(1, 256));
  app.add_option("--requests", requests, "requests per client count and repeat")->check(CLI::Range(1L, 100000000L));
  app.add_option("--repeats", repeats, "rounds over the client counts")->check(CLI::Range(1, 100));
  app.add_option("--model", model_file, "a model saved by loom (default: the notebook's model, seeded)");
  app.add_option("--save-onnx", onnx_file, "write the model served as ONNX too (loom::save_onnx)");
  app.add_option("--seed", seed, "seed of the notebook's model and of the images");
  app.add_flag("--json", json, "print a JSON line with every figure at the end");
  CLI11_PARSE(app, argc, argv);

  try {
    auto model = model_file.empty() ? loom::examples::notebook_model<float>(seed) : loom::Sequential<float>::load(model_file);
    if (model_file.empty()) {
      // A step on random data: moving statistics and weights off their starting values.
      model.compile("sparse_categorical_crossentropy", {"accuracy"});
      loom::Tensor<float> x(loom::Shape{32, 28, 28, 1}), y(loom::Shape{32});
      loom::Rng rng(seed + 1);
      for (float& v : x) v = static_cast<float>(rng.uniform());
      for (float& v : y) v = static_cast<float>(rng.below(10));
      model.train_step(x, y);
    }
    if (!onnx_file.empty()) loom::save_onnx(model, onnx_file);
    const loom::Predictor<float> predictor(model);
    loom::Tensor<float> images(predictor.input_shape().with_batch(256));
    loom::Rng rng(seed + 2);
    for (float& v : images) v = static_cast<float>(rng.uniform());

    std::vector<Serving> results(client_counts.size());
    for (std::size_t i = 0; i < client_counts.size(); ++i) results[i].clients = client_counts[i];
    for (int r = 0; r < repeats; ++r) {
      for (auto& s : results) serve(predictor, images, s.clients, requests, s);
    }
    std::printf("| clients | images/s | p50 latency (µs) | p99 latency (µs) |\n|---:|---:|---:|---:|\n");
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& s : results) {
      const double rate = median(s.rates), p50 = percentile(s.latencies, 50), p99 = percentile(s.latencies, 99);
      std::printf("| %d | %.0f | %.1f | %.1f |\n", s.clients, rate, p50, p99);
      rows.push_back({{"clients", s.clients}, {"images_per_s", rate}, {"rates", s.rates}, {"p50_us", p50},
                      {"p99_us", p99}, {"requests", requests}, {"repeats", repeats}});
    }
    std::printf("sessions made: %zu (the most requests at once)\n", predictor.sessions());
    if (json) {
      std::cout << "JSON: " << nlohmann::json{{"framework", "loom"}, {"rows", rows}}.dump() << std::endl;
    }
  } catch (const std::exception& e) {
    std::cerr << "serve_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
