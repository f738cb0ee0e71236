#pragma once
/// \file training_state.hpp
/// `TrainingState<T>`: everything a resumed fit needs to continue exactly,
/// as one value, with one serializer. The model file (model_file.hpp) saves
/// it and reads it back; a distributed fit sends rank 0's to every rank
/// (replicas.hpp). A field added here is saved, loaded and shared by both.
///
/// What it holds: the training random stream (shuffling, the layers'
/// reseeding), where training stands (epochs done, batches into the next,
/// the unfinished epoch's running sums), the sample order of the current
/// epoch, the optimizer's step count and slots, the History, a callback's
/// stop request, and each callback's saved state. The model's parameters
/// are not in it: they are the model's.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../io/bytes.hpp"
#include "../optimizers.hpp"
#include "../random.hpp"
#include "history.hpp"

namespace loom {

/// Where training stands: epochs finished, and batches done in the next.
struct TrainingPosition {
  int epoch = 0;
  long step = 0;
  double loss_sum = 0;  ///< running sums of the unfinished epoch
  Index correct = 0, seen = 0;
};

template <class T>
struct TrainingState {
  Rng::State stream{};  ///< the training random stream
  TrainingPosition position;
  std::vector<Index> order;  ///< the current epoch's sample order
  long long optimizer_steps = 0;
  std::vector<typename Optimizer<T>::Slot> optimizer_slots;
  History history;
  bool stop_requested = false;
  /// (state_key, bytes) of each callback that keeps state, in calling order.
  std::vector<std::pair<std::string, std::string>> callback_states;

  /// Writes every field but `stream`, in the order of the model file's
  /// training section (docs/file-format.md). The stream sits in the file's
  /// model part, where format 1 put it (a file saved without its training
  /// state still holds it), so each caller writes it where its format keeps it.
  void write(ByteWriter& w) const {
    w.i64(optimizer_steps);
    w.u32(static_cast<std::uint32_t>(optimizer_slots.size()));
    for (const auto& s : optimizer_slots) {
      w.str(s.name);
      w.shape(s.shape);
      w.u32(static_cast<std::uint32_t>(s.state.size()));
      for (const auto& v : s.state) w.values(v);
    }
    w.i64(position.epoch);
    w.i64(position.step);
    w.f64(position.loss_sum);
    w.i64(position.correct);
    w.i64(position.seen);
    w.u64(order.size());
    for (Index i : order) w.i64(i);
    w.u32(static_cast<std::uint32_t>(history.history.size()));
    for (const auto& kv : history.history) {
      w.str(kv.first);
      w.u64(kv.second.size());
      for (double v : kv.second) w.f64(v);
    }
    w.u8(stop_requested ? 1 : 0);
    w.u32(static_cast<std::uint32_t>(callback_states.size()));
    for (const auto& s : callback_states) {
      w.str(s.first);
      w.str(s.second);
    }
  }

  /// Reads what write() wrote, checking every count against the bytes left
  /// and the position and sample order for consistency (FormatError from
  /// `r`). Model files of format 1 end after the History: `version` 1 reads
  /// no stop request and no callback states.
  void read(ByteReader& r, std::uint32_t version = 2) {
    optimizer_steps = r.i64("optimizer step count");
    const std::uint32_t n_slots = r.u32("optimizer slot count");
    optimizer_slots.clear();
    for (std::uint32_t i = 0; i < n_slots; ++i) {
      typename Optimizer<T>::Slot s;
      s.name = r.str("slot name");
      // A slot may hold no state (plain SGD's): its shape is checked against
      // the bytes left only when it has values there.
      s.shape = r.shape("slot shape", 0);
      const std::uint32_t n_state = r.u32("slot state count");
      if (n_state > 4) r.fail(ByteReader::str_of("slot '", s.name, "' has ", n_state, " state tensors, at most 4"));
      if (n_state > 0) {
        std::uint64_t count = 1;
        for (Index d : s.shape) {
          count *= static_cast<std::uint64_t>(d);
          if (count > r.remaining() / sizeof(T)) r.fail("slot shape claims more values than the file holds (truncated?)");
        }
      }
      for (std::uint32_t j = 0; j < n_state; ++j) {
        Tensor<T> v(s.shape);
        r.values(v, "slot values");
        s.state.push_back(std::move(v));
      }
      optimizer_slots.push_back(std::move(s));
    }
    if (optimizer_slots.empty() && optimizer_steps != 0) r.fail("the optimizer has taken steps but holds no state");
    TrainingPosition& at = position;
    at.epoch = static_cast<int>(r.i64("epoch"));
    at.step = static_cast<long>(r.i64("batch"));
    at.loss_sum = r.f64("running loss");
    at.correct = static_cast<Index>(r.i64("running correct count"));
    at.seen = static_cast<Index>(r.i64("running sample count"));
    if (at.epoch < 0 || at.step < 0 || at.correct < 0 || at.seen < at.correct) r.fail("the training position is inconsistent");
    const std::uint64_t n = r.count("sample order", 8);
    std::vector<char> used(static_cast<std::size_t>(n), 0);
    order.assign(static_cast<std::size_t>(n), 0);
    for (auto& i : order) {
      const std::int64_t v = r.i64("sample order");
      if (v < 0 || static_cast<std::uint64_t>(v) >= n || used[static_cast<std::size_t>(v)]) {
        r.fail("the sample order is not a permutation");
      }
      used[static_cast<std::size_t>(v)] = 1;
      i = static_cast<Index>(v);
    }
    const std::uint32_t n_keys = r.u32("history size");
    if (n_keys > 64) r.fail(ByteReader::str_of("history has ", n_keys, " metrics, at most 64 expected"));
    history = {};
    for (std::uint32_t k = 0; k < n_keys; ++k) {
      const std::string key = r.str("history key");
      const std::uint64_t len = r.count("history length", 8);
      auto& values = history.history[key];
      for (std::uint64_t i = 0; i < len; ++i) values.push_back(r.f64("history value"));
    }
    stop_requested = false;
    callback_states.clear();
    if (version < 2) return;
    stop_requested = r.u8("stop request") != 0;
    const std::uint32_t n_states = r.u32("callback state count");
    if (n_states > 256) r.fail(ByteReader::str_of(n_states, " callback states, at most 256 expected"));
    for (std::uint32_t i = 0; i < n_states; ++i) {
      std::string key = r.str("callback state key");
      callback_states.emplace_back(std::move(key), r.str("callback state"));
    }
  }
};

}  // namespace loom
