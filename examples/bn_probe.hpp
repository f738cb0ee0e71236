#pragma once
// --bn-probe: the "variance shift" hypothesis of issue 10, measured. The
// notebook puts Dropout(0.2) just before a BatchNormalization, so that
// layer's moving variance is learned on dropped-out, rescaled activations,
// while inference feeds it undropped ones. After every epoch this callback
// runs the validation images through the model in inference, layer by layer,
// and compares each BatchNormalization layer's moving mean and variance with
// the mean and variance its input actually has there.

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <loom/data/encoding.hpp>
#include <loom/loom.hpp>

#include "analysis_report.hpp"

namespace loom::examples {

class BnProbe : public Callback<float> {
 public:
  /// `x` is borrowed: it must outlive the fit.
  explicit BnProbe(const Tensor<float>& x) : x_(x) {}

  const std::vector<BnProbeRow>& rows() const { return rows_; }

  void on_epoch_end(Sequential<float>& model, int epoch, const Logs& /*logs*/) override {
    const auto& layers = model.layers();
    std::vector<std::size_t> bn;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      if (dynamic_cast<BatchNormalization<float>*>(layers[i].get())) bn.push_back(i);
    }
    if (bn.empty()) return;
    std::vector<std::vector<double>> sum(bn.size()), sq(bn.size());
    std::vector<double> count(bn.size(), 0);
    const Index n = x_.dim(0), chunk = Sequential<float>::kInferenceChunk;
    for (Index from = 0; from < n; from += chunk) {
      chunk_ = data::take(x_, from, std::min(n, from + chunk));
      const Tensor<float>* h = &chunk_;
      for (std::size_t i = 0, k = 0; i <= bn.back(); ++i) {
        if (k < bn.size() && i == bn[k]) {  // accumulate the input of BatchNormalization k, per channel
          const Index c = h->dim(h->rank() - 1), rows = h->size() / c;
          sum[k].resize(static_cast<std::size_t>(c), 0.0);
          sq[k].resize(static_cast<std::size_t>(c), 0.0);
          const float* p = h->data();
          for (Index r = 0; r < rows; ++r) {
            for (Index j = 0; j < c; ++j) {
              const double v = p[r * c + j];
              sum[k][static_cast<std::size_t>(j)] += v;
              sq[k][static_cast<std::size_t>(j)] += v * v;
            }
          }
          count[k] += static_cast<double>(rows);
          ++k;
        }
        h = &layers[i]->forward(*h, Mode::Inference);
      }
    }
    for (std::size_t k = 0; k < bn.size(); ++k) {
      const Tensor<float>* moving_mean = nullptr;
      const Tensor<float>* moving_var = nullptr;
      for (const auto& p : layers[bn[k]]->parameters()) {
        if (ends_with(p.name, "/moving_mean")) moving_mean = p.value;
        if (ends_with(p.name, "/moving_variance")) moving_var = p.value;
      }
      if (!moving_mean || !moving_var) continue;
      BnProbeRow row;
      row.epoch = epoch;
      row.layer = layers[bn[k]]->name();
      std::vector<double> ratios;
      for (std::size_t j = 0; j < sum[k].size(); ++j) {
        const double mean = sum[k][j] / count[k];
        const double var = std::max(0.0, sq[k][j] / count[k] - mean * mean);
        if (var <= 0) continue;  // a channel that is constant (a dead ReLU) on every image
        ratios.push_back((*moving_var)[static_cast<Index>(j)] / var);
        row.mean_shift += std::fabs((*moving_mean)[static_cast<Index>(j)] - mean) / std::sqrt(var);
      }
      if (ratios.empty()) continue;
      // The median: a channel nearly dead in inference has a tiny variance and a huge ratio.
      std::sort(ratios.begin(), ratios.end());
      const std::size_t m = ratios.size();
      row.variance_ratio_median = m % 2 ? ratios[m / 2] : (ratios[m / 2 - 1] + ratios[m / 2]) / 2;
      row.variance_ratio_min = ratios.front();
      row.variance_ratio_max = ratios.back();
      row.mean_shift /= static_cast<double>(m);
      rows_.push_back(row);
    }
  }

  // The rows so far survive a checkpoint and --resume.
  std::string state_key() const override { return "bn_probe"; }
  void save_state(ByteWriter& out) const override {
    out.u32(static_cast<std::uint32_t>(rows_.size()));
    for (const auto& r : rows_) {
      out.i64(r.epoch);
      out.str(r.layer);
      out.f64(r.variance_ratio_median);
      out.f64(r.variance_ratio_min);
      out.f64(r.variance_ratio_max);
      out.f64(r.mean_shift);
    }
  }
  void restore_state(ByteReader& in) override {
    const std::uint32_t n = in.u32("bn_probe row count");
    if (n > 100000) in.fail("bn_probe: too many rows");
    rows_.clear();
    for (std::uint32_t i = 0; i < n; ++i) {
      BnProbeRow r;
      r.epoch = static_cast<int>(in.i64("bn_probe epoch"));
      r.layer = in.str("bn_probe layer");
      r.variance_ratio_median = in.f64("bn_probe ratio");
      r.variance_ratio_min = in.f64("bn_probe ratio");
      r.variance_ratio_max = in.f64("bn_probe ratio");
      r.mean_shift = in.f64("bn_probe shift");
      rows_.push_back(std::move(r));
    }
  }

 private:
  static bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  }

  const Tensor<float>& x_;
  Tensor<float> chunk_;
  std::vector<BnProbeRow> rows_;
};

}  // namespace loom::examples
