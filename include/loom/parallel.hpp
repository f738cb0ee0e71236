#pragma once
/// \file parallel.hpp
/// Threads. loom's layers split their own work across an OpenMP team, once
/// per layer call (by samples of the batch, or by output columns); each
/// thread runs its matrix products on one core (kernels/gemm.hpp), so parallel
/// regions never nest. Without OpenMP everything runs on one thread.

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>

#include "error.hpp"
#include "tensor.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace loom {

/// Sets the threads loom's kernels use (n >= 1).
inline void set_num_threads(int n) {
#if defined(_OPENMP)
  omp_set_num_threads(n < 1 ? 1 : n);
#else
  (void)n;
#endif
}

/// The threads loom's kernels will use.
inline int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// The thread count a program should start with: LOOM_NUM_THREADS if set,
/// else OpenMP's own default (OMP_NUM_THREADS, or one per core).
inline int default_num_threads() {
  const char* v = std::getenv("LOOM_NUM_THREADS");
  if (v == nullptr || *v == '\0') return num_threads();
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < 1 || n > 1024) {
    throw ConfigError(std::string("LOOM_NUM_THREADS must be a whole number from 1 to 1024, got '") + v + "'");
  }
  return static_cast<int>(n);
}

namespace detail {

/// A half-open range of indices.
struct Range {
  Index begin = 0, end = 0;
  Index size() const { return end - begin; }
};

/// Part `part` of `parts` near-equal contiguous parts of [0, n).
inline Range split(Index n, int part, int parts) {
  const Index q = n / parts, r = n % parts, p = part;
  const Index begin = p * q + (p < r ? p : r);
  return {begin, begin + q + (p < r ? 1 : 0)};
}

/// Hands out the pieces [0, piece), [piece, 2 piece), ... of [0, n) to the
/// threads of a region. Each thread has a home: the pieces a static split
/// would give it (so data a thread made in the layer before is still in its
/// cache). It takes its own pieces in order, then helps the others with
/// theirs: a core that runs faster (or is not shared with another guest)
/// does more. Each piece's result must not depend on the thread that
/// computes it; then the results are the same whatever the scheduling.
class WorkQueue {
 public:
  WorkQueue() = default;
  WorkQueue(const WorkQueue& /*other*/) {}  // a copy starts empty (std::atomic is neither copied nor moved)
  WorkQueue& operator=(const WorkQueue& /*other*/) { return *this; }

  /// Sets the work of the next region of `threads` threads; before it,
  /// outside it. Allocates only when `threads` exceeds every earlier call's.
  void reset(Index n, Index piece, int threads) {
    n_ = n;
    piece_ = piece < 1 ? 1 : piece;
    threads_ = threads < 1 ? 1 : threads;
    if (threads_ > capacity_) {
      next_ = std::make_unique<Counter[]>(static_cast<std::size_t>(threads_));
      capacity_ = threads_;
    }
    for (int t = 0; t < threads_; ++t) next_[static_cast<std::size_t>(t)].taken.store(0, std::memory_order_relaxed);
  }

  /// Thread t's next piece: its own first, then the others', or an empty
  /// range when none is left.
  Range take(int t) {
    const Index pieces = (n_ + piece_ - 1) / piece_;
    for (int k = 0; k < threads_; ++k) {
      const int u = (t + k) % threads_;
      const Range home = split(pieces, u, threads_);
      Counter& c = next_[static_cast<std::size_t>(u)];
      if (c.taken.load(std::memory_order_relaxed) >= home.size()) continue;
      const Index i = c.taken.fetch_add(1, std::memory_order_relaxed);
      if (i < home.size()) {
        const Index begin = (home.begin + i) * piece_;
        return {begin, std::min(begin + piece_, n_)};
      }
    }
    return {n_, n_};
  }

 private:
  struct alignas(64) Counter {  // one cache line each: the threads bump their own
    std::atomic<Index> taken{0};
  };
  std::unique_ptr<Counter[]> next_;
  int capacity_ = 0, threads_ = 1;
  Index n_ = 0, piece_ = 1;
};

/// Runs body(t, nt) on `threads` threads, t = 0..nt-1. One thread runs the
/// body directly: libgomp allocates (and frees) a team for every one-thread
/// parallel region, and a training step must not allocate. So the body
/// synchronises with barrier(nt) below and picks one thread with t == 0,
/// never with `#pragma omp barrier`, `master` or `single`: run directly
/// inside another region (a thread's copy of the layers in predict), those
/// would bind to that region's team.
template <class Body>
void parallel(int threads, Body&& body) {
#if defined(_OPENMP)
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    body(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  (void)threads;
  body(0, 1);
}

/// A barrier among the nt threads of parallel's body. With nt == 1 nothing:
/// the body ran directly, maybe on one thread of an enclosing region (each
/// thread of predict's runs its own copy of the layers), and an orphaned
/// `#pragma omp barrier` there would wait for that region's other threads,
/// which may never reach one.
inline void barrier([[maybe_unused]] int nt) {
#if defined(_OPENMP)
  if (nt > 1) {
#pragma omp barrier
  }
#endif
}

/// Threads worth starting for `units` independent pieces of work.
inline int threads_for(Index units) {
  const int t = num_threads();
  return units < t ? static_cast<int>(units < 1 ? 1 : units) : t;
}

/// Elementwise work on [0, n): f(begin, end) on each thread's near-equal
/// part, with a thread for every `per_thread` elements (one at least).
template <class F>
void parallel_ranges(Index n, Index per_thread, F&& f) {
  parallel(threads_for(n / per_thread), [&](int t, int nt) {
    const Range mine = split(n, t, nt);
    f(mine.begin, mine.end);
  });
}

}  // namespace detail
}  // namespace loom
