// The notebook's model on data of Fashion-MNIST's shape: prints summary(),
// then times training steps and inference with a plain clock, in images/s.
//
//   notebook_speed [--steps N] [--batch-size B] [--threads T] [--seed S]
//
// The data is random (uniform pixels, random labels): this program measures
// speed, not accuracy. Until the Fashion-MNIST experiment exists, it is what
// the README's main-job command runs.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "notebook_model.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Time the notebook's CNN in loom: training steps and inference, images per second"};
  long steps = 200;
  loom::Index batch = 32;
  int threads = loom::num_threads();
  std::uint64_t seed = 0;
  app.add_option("--steps", steps, "training steps to time (after 5 warm-up steps)")->check(CLI::Range(1L, 1000000L));
  app.add_option("--batch-size", batch, "batch size")->check(CLI::Range(loom::Index(1), loom::Index(4096)));
  app.add_option("--threads", threads, "threads for OpenMP and Eigen")->check(CLI::Range(1, 256));
  app.add_option("--seed", seed, "seed of the model and the data");
  CLI11_PARSE(app, argc, argv);

  try {
    using clock = std::chrono::steady_clock;
    loom::set_num_threads(threads);
    auto model = loom::examples::notebook_model<float>(seed);
    model.summary();
    model.compile("sparse_categorical_crossentropy", {"accuracy"});

    const loom::Index n = 1024;
    loom::Tensor<float> x(loom::Shape{n, 28, 28, 1}), y(loom::Shape{n});
    loom::Rng rng(seed + 1);
    for (float& v : x) v = static_cast<float>(rng.uniform());
    for (float& v : y) v = static_cast<float>(rng.below(10));

    loom::Tensor<float> xb(loom::Shape{batch, 28, 28, 1}), yb(loom::Shape{batch});
    auto batch_at = [&](long step) {
      const loom::Index start = (step * batch) % (n - batch + 1);
      std::copy(x.data() + start * 784, x.data() + (start + batch) * 784, xb.data());
      std::copy(y.data() + start, y.data() + start + batch, yb.data());
    };
    for (long s = 0; s < 5; ++s) {
      batch_at(s);
      model.train_step(xb, yb);
    }
    const auto t0 = clock::now();
    double loss = 0;
    for (long s = 0; s < steps; ++s) {
      batch_at(s);
      loss = model.train_step(xb, yb);
    }
    const double train_s = std::chrono::duration<double>(clock::now() - t0).count();

    model.predict(x, batch);  // warm-up
    const auto t1 = clock::now();
    const loom::Tensor<float> p = model.predict(x, batch);
    const double infer_s = std::chrono::duration<double>(clock::now() - t1).count();

    std::printf("threads %d, batch %ld\n", threads, static_cast<long>(batch));
    std::printf("training:  %ld steps in %.2f s = %.1f ms/step, %.0f images/s (last loss %.4f)\n", steps, train_s,
                1e3 * train_s / static_cast<double>(steps),
                static_cast<double>(steps * batch) / train_s, loss);
    std::printf("inference: %ld images in %.2f s = %.0f images/s\n", static_cast<long>(n), infer_s,
                static_cast<double>(n) / infer_s);
    std::printf("a 48,000-image epoch at this speed: %.0f s\n",
                48000.0 / (static_cast<double>(steps * batch) / train_s));
    return p.size() == n * 10 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "notebook_speed: %s\n", e.what());
    return 1;
  }
}
