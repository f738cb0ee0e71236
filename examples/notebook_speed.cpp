// The notebook's model (or with --model resnet the residual network of
// examples/resnet_model.hpp) on data of Fashion-MNIST's shape: prints
// summary(), then times training steps and inference with a plain clock, in
// images/s, as the median and best of a few repeats.
//
//   notebook_speed [--model notebook|resnet] [--width W] [--steps N] [--batch-size B] [--threads T] [--repeats R]
//                  [--infer-batches 32,1000] [--infer-images N] [--concurrent] [--json]
//
// The data is random (uniform pixels, random labels): this program measures
// speed, not accuracy. Inference calls predict once per batch, as the
// PyTorch twin calls its model, one request at a time, on a loom::Predictor
// of the trained model (its weights frozen, as ONNX Runtime's session and a
// frozen torch.compile hold theirs). With --concurrent it also times
// requests served at once, as a server with one worker per core does
// (OpenVINO's THROUGHPUT hint, its "streams"): T workers, each with one
// thread, take the batches from one queue and call the one Predictor.
// bench/compare-pytorch and bench/compare-peers run it beside their peers
// and read the JSON line that --json adds at the end.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>
#include <vector>

#include <loom/model/quantize.hpp>

#include "experiment_options.hpp"  // kResNetTranslation
#include "notebook_model.hpp"
#include "resnet_model.hpp"

namespace {

struct Rate {
  double median = 0, best = 0;  // images per second
};

/// Median and best of images/s over repeated timings of `run`.
template <class F>
Rate time_repeats(int repeats, double images, F&& run) {
  std::vector<double> rates;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(images / s);
  }
  std::sort(rates.begin(), rates.end());
  const std::size_t n = rates.size();
  return {n % 2 ? rates[n / 2] : 0.5 * (rates[n / 2 - 1] + rates[n / 2]), rates.back()};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Time the notebook's CNN in loom: training steps and inference, images per second"};
  long steps = 200;
  loom::Index batch = 32, infer_images = 4096;
  int threads = 0, repeats = 3;
  std::vector<loom::Index> infer_batches{32, 1000};
  std::uint64_t seed = 0;
  bool json = false, concurrent = false, int8 = false;
  std::string architecture = "notebook", precision = "float32";
  loom::Index width = loom::examples::ResNetOptions().width;
  app.add_option("--steps", steps, "training steps per repeat (after 10 warm-up steps)")
      ->check(CLI::Range(1L, 1000000L));
  app.add_option("--batch-size", batch, "training batch size")->check(CLI::Range(loom::Index(1), loom::Index(4096)));
  app.add_option("--threads", threads,
                 "threads (default: LOOM_NUM_THREADS, else OMP_NUM_THREADS, else one per core)")
      ->check(CLI::Range(1, 256));
  app.add_option("--repeats", repeats, "repeats of each timing; the median and the best are printed")
      ->check(CLI::Range(1, 100));
  app.add_option("--infer-batches", infer_batches, "inference batch sizes, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(loom::Index(1), loom::Index(65536)));
  app.add_option("--infer-images", infer_images, "images per inference timing")
      ->check(CLI::Range(loom::Index(1), loom::Index(1000000)));
  app.add_option("--seed", seed, "seed of the model and the data");
  app.add_option("--model", architecture,
                 "the network: notebook (its CNN, compiled as the notebook does) or resnet (examples/resnet_model.hpp "
                 "with the flips and translations of the experiment's --model resnet, compiled with AdamW)")
      ->check(CLI::IsMember({"notebook", "resnet"}))
      ->capture_default_str();
  app.add_option("--width", width, "with --model resnet: the first stage's channels")
      ->check(CLI::Range(loom::Index(1), loom::Index(1024)))
      ->capture_default_str();
  app.add_flag("--concurrent", concurrent,
               "also time inference with one request per thread at once, each worker on its own copy of the model "
               "with one thread");
  app.add_option("--precision", precision,
                 "the model's precision policy: float32, or mixed_bfloat16 (bfloat16 products, float32 sums; needs "
                 "AVX512_BF16)")
      ->check(CLI::IsMember({"float32", "mixed_bfloat16"}))
      ->capture_default_str();
  app.add_flag("--int8", int8,
               "also time inference of the model quantized to int8 (loom::quantize, calibrated on 256 of the "
               "training images; needs VNNI), interleaved with the float32 model's, repeat by repeat");
  app.add_flag("--json", json, "end with one line of JSON holding the results");
  CLI11_PARSE(app, argc, argv);

  try {
    if (threads == 0) threads = loom::default_num_threads();
    loom::set_num_threads(threads);
    loom::examples::ResNetOptions resnet;
    resnet.width = width;
    resnet.translation = loom::examples::kResNetTranslation;  // as the experiment's --model resnet
    loom::Sequential<float> model = architecture == "resnet" ? loom::examples::resnet_model<float>(seed, 10, resnet)
                                                             : loom::examples::notebook_model<float>(seed);
    model.set_policy(precision);
    model.summary();
    if (architecture == "resnet") {
      model.compile(std::make_unique<loom::SparseCategoricalCrossentropy<float>>(),
                    std::make_unique<loom::AdamW<float>>(), {"accuracy"});
    } else {
      model.compile("sparse_categorical_crossentropy", {"accuracy"});
    }

    const loom::Index n = 1024;
    loom::Tensor<float> x(loom::Shape{n, 28, 28, 1}), y(loom::Shape{n});
    loom::Rng rng(seed + 1);
    for (float& v : x) v = static_cast<float>(rng.uniform());
    for (float& v : y) v = static_cast<float>(rng.below(10));

    loom::Tensor<float> xb(loom::Shape{batch, 28, 28, 1}), yb(loom::Shape{batch});
    long step = 0;
    double loss = 0;
    auto train = [&](long count) {
      for (long s = 0; s < count; ++s, ++step) {
        const loom::Index start = (step * batch) % (n - batch + 1);
        std::copy(x.data() + start * 784, x.data() + (start + batch) * 784, xb.data());
        std::copy(y.data() + start, y.data() + start + batch, yb.data());
        loss = model.train_step(xb, yb);
      }
    };
    train(10);  // warm-up: buffers sized, caches and threads up
    const Rate training = time_repeats(repeats, static_cast<double>(steps * batch), [&] { train(steps); });
    std::printf("threads %d, training batch %ld, %d repeats\n", threads, static_cast<long>(batch), repeats);
    std::printf("training:  %.0f images/s median, %.0f best (%.1f ms/step; last loss %.4f)\n", training.median,
                training.best, 1e3 * static_cast<double>(batch) / training.median, loss);
    std::printf("           a 48,000-image epoch at the median: %.1f s\n", 48000.0 / training.median);

    loom::Tensor<float> xi(loom::Shape{infer_images, 28, 28, 1});
    for (float& v : xi) v = static_cast<float>(rng.uniform());
    // The inference images cut into batches of b.
    const auto batches_of = [&](loom::Index b) {
      std::vector<loom::Tensor<float>> batches;
      for (loom::Index start = 0; start < infer_images; start += b) {
        const loom::Index n = std::min(b, infer_images - start);
        batches.emplace_back(loom::Shape{n, 28, 28, 1});
        std::copy(xi.data() + start * 784, xi.data() + (start + n) * 784, batches.back().data());
      }
      return batches;
    };
    nlohmann::json infer = nlohmann::json::object();
    loom::Predictor<float> predictor(model);
    for (const loom::Index b : infer_batches) {
      // One predict call per batch of b images, as bench/pytorch_notebook.py
      // calls its model: at batch 1 each call is one image's latency (its
      // work split across the threads), at batch 1000 a call's 32-image
      // chunks go to the threads whole. (One predict of all the images at
      // batch_size b would run even batch 1 a chunk per thread.)
      const std::vector<loom::Tensor<float>> batches = batches_of(b);
      const auto predict_all = [&] {
        for (const auto& x : batches) predictor.predict(x, b);
      };
      predict_all();  // warm-up
      const Rate r = time_repeats(repeats, static_cast<double>(infer_images), predict_all);
      std::printf("inference, batch %ld: %.0f images/s median, %.0f best (%ld images)\n", static_cast<long>(b),
                  r.median, r.best, static_cast<long>(infer_images));
      infer[std::to_string(b)] = {{"median", r.median}, {"best", r.best}};
    }
    nlohmann::json infer_int8 = nlohmann::json::object();
    if (int8) {
      loom::Tensor<float> calibration(loom::Shape{256, 28, 28, 1});
      std::copy(x.data(), x.data() + calibration.size(), calibration.data());
      const loom::Sequential<float> quantized = loom::quantize(model, calibration);
      loom::Predictor<float> int8_predictor(quantized);
      for (const loom::Index b : infer_batches) {
        const std::vector<loom::Tensor<float>> batches = batches_of(b);
        const auto run = [&](const loom::Predictor<float>& p) {
          return [&] {
            for (const auto& xb : batches) p.predict(xb, b);
          };
        };
        run(predictor)();  // warm-up
        run(int8_predictor)();
        std::vector<double> f32, i8;  // one timing of each per repeat, alternating
        for (int r = 0; r < repeats; ++r) {
          f32.push_back(time_repeats(1, static_cast<double>(infer_images), run(predictor)).median);
          i8.push_back(time_repeats(1, static_cast<double>(infer_images), run(int8_predictor)).median);
        }
        std::sort(f32.begin(), f32.end());
        std::sort(i8.begin(), i8.end());
        const double mf = f32[f32.size() / 2], mi = i8[i8.size() / 2];
        std::printf("int8 inference, batch %ld: %.0f images/s median; float32 in the same run %.0f: %.2fx\n",
                    static_cast<long>(b), mi, mf, mi / mf);
        infer_int8[std::to_string(b)] = {{"median", mi}, {"float32_median", mf}};
      }
    }
    nlohmann::json infer_concurrent = nlohmann::json::object();
    if (concurrent) {
      // The workers share the one Predictor, each call on its caller's
      // thread alone: loom::set_num_threads is the calling thread's own setting.
      for (const loom::Index b : infer_batches) {
        const std::vector<loom::Tensor<float>> batches = batches_of(b);
        const auto serve_all = [&] {
          std::atomic<std::size_t> next{0};
          std::vector<std::thread> workers;
          for (int w = 0; w < threads; ++w) {
            workers.emplace_back([&] {
              loom::set_num_threads(1);
              for (std::size_t i = next++; i < batches.size(); i = next++) predictor.predict(batches[i], b);
            });
          }
          for (auto& worker : workers) worker.join();
        };
        serve_all();  // warm-up
        const Rate r = time_repeats(repeats, static_cast<double>(infer_images), serve_all);
        std::printf("inference, batch %ld, %d requests at once (1 thread each): %.0f images/s median, %.0f best\n",
                    static_cast<long>(b), threads, r.median, r.best);
        infer_concurrent[std::to_string(b)] = {{"median", r.median}, {"best", r.best}};
      }
    }
    if (json) {
      const nlohmann::json j = {{"framework", "loom"},
                                {"version", loom::version},
                                {"model", architecture},
                                {"threads", threads},
                                {"train_batch", batch},
                                {"train_steps", steps},
                                {"repeats", repeats},
                                {"train_images_per_s_median", training.median},
                                {"train_images_per_s_best", training.best},
                                {"infer_images", infer_images},
                                {"infer", infer},
                                {"infer_int8", infer_int8},
                                {"infer_concurrent", infer_concurrent}};
      std::cout << j.dump() << std::endl;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "notebook_speed: %s\n", e.what());
    return 1;
  }
}
