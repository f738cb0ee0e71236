#pragma once
// --bn-probe: the "variance shift" hypothesis of issue 10, measured. The
// notebook puts Dropout(0.2) just before a BatchNormalization, so that
// layer's moving variance is learned on dropped-out, rescaled activations,
// while inference feeds it undropped ones. After every epoch this callback
// runs the validation images through the model in inference, layer by layer,
// and compares each BatchNormalization layer's moving mean and variance with
// the mean and variance its input actually has there. After training, the
// experiment also scores the last epoch's weights with every layer's moving
// statistics set to those its input has in inference on the training images
// (recalibrate_batch_norm): what the test accuracy would be if the moving
// averages had tracked inference exactly.

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include <loom/data/encoding.hpp>
#include <loom/loom.hpp>

#include "experiment_results.hpp"

namespace loom::examples {

/// Per channel, the sum and the sum of squares of the inputs of the
/// BatchNormalization layers `bn` (indices into model.layers(), ascending),
/// over the samples of `x` run through the model in inference, layer by
/// layer, Sequential::kInferenceChunk at a time.
struct ChannelMoments {
  std::vector<double> sum, sq;
  double count = 0;
  double mean(std::size_t c) const { return sum[c] / count; }
  double variance(std::size_t c) const { return std::max(0.0, sq[c] / count - mean(c) * mean(c)); }
};

inline std::vector<ChannelMoments> batch_norm_input_moments(Model<float>& model, const Tensor<float>& x,
                                                            const std::vector<std::size_t>& bn) {
  std::vector<ChannelMoments> out(bn.size());
  if (bn.empty()) return out;
  const auto& layers = model.layers();
  const Index n = x.dim(0), chunk = Sequential<float>::kInferenceChunk;
  Tensor<float> part;
  for (Index from = 0; from < n; from += chunk) {
    part = data::take(x, from, std::min(n, from + chunk));
    const Tensor<float>* h = &part;
    for (std::size_t i = 0, k = 0; i <= bn.back(); ++i) {
      if (k < bn.size() && i == bn[k]) {
        const Index c = h->dim(h->rank() - 1), rows = h->size() / c;
        ChannelMoments& m = out[k];
        m.sum.resize(static_cast<std::size_t>(c), 0.0);
        m.sq.resize(static_cast<std::size_t>(c), 0.0);
        const float* p = h->data();
        for (Index r = 0; r < rows; ++r) {
          for (Index j = 0; j < c; ++j) {
            const double v = p[r * c + j];
            m.sum[static_cast<std::size_t>(j)] += v;
            m.sq[static_cast<std::size_t>(j)] += v * v;
          }
        }
        m.count += static_cast<double>(rows);
        ++k;
      }
      if (i < bn.back()) h = &layers[i]->forward(*h, Mode::Inference);
    }
  }
  return out;
}

/// The indices of the BatchNormalization layers of `model`, in order.
inline std::vector<std::size_t> batch_norm_layers(const Model<float>& model) {
  std::vector<std::size_t> bn;
  const auto& layers = model.layers();
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (dynamic_cast<const BatchNormalization<float>*>(layers[i].get())) bn.push_back(i);
  }
  return bn;
}

/// A BatchNormalization layer's moving mean and variance.
inline std::pair<Tensor<float>*, Tensor<float>*> moving_statistics(Layer<float>& layer) {
  const auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  Tensor<float>* mean = nullptr;
  Tensor<float>* var = nullptr;
  for (const auto& p : layer.parameters()) {
    if (ends_with(p.name, "/moving_mean")) mean = p.value;
    if (ends_with(p.name, "/moving_variance")) var = p.value;
  }
  return {mean, var};
}

/// --bn-probe's counterfactual: sets every BatchNormalization layer's moving
/// mean and variance to the mean and variance its input has in inference on
/// `x` (one layer after the other, each seeing the ones before already
/// set), as if the moving averages had tracked inference exactly.
inline void recalibrate_batch_norm(Sequential<float>& model, const Tensor<float>& x) {
  for (std::size_t i : batch_norm_layers(model)) {
    const ChannelMoments m = batch_norm_input_moments(model, x, {i})[0];
    auto [mean, var] = moving_statistics(*model.layers()[i]);
    if (!mean || !var) continue;
    for (std::size_t c = 0; c < m.sum.size(); ++c) {
      (*mean)[static_cast<Index>(c)] = static_cast<float>(m.mean(c));
      (*var)[static_cast<Index>(c)] = static_cast<float>(m.variance(c));
    }
  }
}

class BnProbe : public Callback<float> {
 public:
  /// `x` is borrowed: it must outlive the fit.
  explicit BnProbe(const Tensor<float>& x) : x_(x) {}

  const std::vector<BnProbeRow>& rows() const { return rows_; }

  void on_epoch_end(Model<float>& model, int epoch, const Logs& /*logs*/) override {
    const std::vector<std::size_t> bn = batch_norm_layers(model);
    const std::vector<ChannelMoments> moments = batch_norm_input_moments(model, x_, bn);
    for (std::size_t k = 0; k < bn.size(); ++k) {
      auto [moving_mean, moving_var] = moving_statistics(*model.layers()[bn[k]]);
      if (!moving_mean || !moving_var) continue;
      BnProbeRow row;
      row.epoch = epoch;
      row.layer = model.layers()[bn[k]]->name();
      std::vector<double> ratios;
      for (std::size_t j = 0; j < moments[k].sum.size(); ++j) {
        const double mean = moments[k].mean(j), var = moments[k].variance(j);
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
  const Tensor<float>& x_;
  std::vector<BnProbeRow> rows_;
};

}  // namespace loom::examples
