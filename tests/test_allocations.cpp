// A training step allocates nothing once the first batch has run.
//
// This binary replaces the global operator new and delete, and also glibc's
// malloc family (Eigen's aligned allocations and loom's tensors go through
// std::malloc, never through operator new), with versions that count calls
// while a probe is armed and forward to glibc's own implementation. It is a
// binary of its own because the replacement would fight a sanitizer's, and
// scripts/run-sanitized-tests leaves it out.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "notebook_model.hpp"

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace {

std::atomic<bool> armed{false};
std::atomic<long> allocations{0};

/// Where a debugger can stop to see who allocated: `break allocation_seen`.
[[gnu::noinline]] void allocation_seen() { asm volatile(""); }

void count() {
  if (armed.load(std::memory_order_relaxed)) {
    allocations.fetch_add(1, std::memory_order_relaxed);
    allocation_seen();
  }
}

/// Counts the allocations made while it lives.
class AllocationProbe {
 public:
  AllocationProbe() {
    allocations = 0;
    armed = true;
  }
  ~AllocationProbe() { armed = false; }
  long count() const { return allocations.load(); }
};

}  // namespace

extern "C" {
void* malloc(std::size_t n) {
  count();
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t size) {
  count();
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t n) {
  count();
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
void* memalign(std::size_t alignment, std::size_t n) {
  count();
  return __libc_memalign(alignment, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
  count();
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
  count();
  void* p = __libc_memalign(alignment, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}

void* operator new(std::size_t n) {
  count();
  if (void* p = __libc_malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  count();
  if (void* p = __libc_memalign(static_cast<std::size_t>(a), n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { __libc_free(p); }
void operator delete[](void* p) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::size_t) noexcept { __libc_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { __libc_free(p); }

using namespace loom;

namespace {

struct Batch {
  Tensor<float> x{Shape{32, 28, 28, 1}}, y{Shape{32}};
  explicit Batch(std::uint64_t seed) {
    Rng rng(seed);
    for (float& v : x) v = static_cast<float>(rng.uniform());
    for (float& v : y) v = static_cast<float>(rng.below(10));
  }
};

}  // namespace

TEST_CASE("the probe sees allocations through operator new and through malloc") {
  AllocationProbe probe;
  auto* v = new std::vector<int>(1000);
  void* m = std::malloc(64);
  Tensor<float> t(Shape{1000});
  CHECK(probe.count() >= 3);
  std::free(m);
  delete v;
}

TEST_CASE("a training step of the notebook's model allocates nothing after the first batch") {
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    for (const std::string optimizer : {"rmsprop", "adam", "sgd"}) {
      CAPTURE(threads);
      CAPTURE(optimizer);
      set_num_threads(threads);
      auto model = examples::notebook_model<float>(3);
      model.compile("sparse_categorical_crossentropy", {"accuracy"}, optimizer);
      const Batch a(1), b(2);
      model.train_step(a.x, a.y);  // the first batch sizes every buffer
      long counted = 0;
      {
        AllocationProbe probe;
        for (int step = 0; step < 3; ++step) {
          model.train_step(b.x, b.y);
          model.train_step(a.x, a.y);
        }
        counted = probe.count();
      }
      CHECK(counted == 0);
    }
  }
  set_num_threads(saved);
}

TEST_CASE("inference allocates nothing after the first batch of a size") {
  auto model = examples::notebook_model<float>(3);
  model.compile("categorical_crossentropy", {"accuracy"});
  const Batch a(1);
  Tensor<float> onehot(Shape{32, 10});
  for (Index i = 0; i < 32; ++i) onehot.at(i, static_cast<Index>(a.y[i])) = 1;
  model.evaluate(a.x, onehot);
  AllocationProbe probe;
  model.evaluate(a.x, onehot);
  CHECK(probe.count() == 0);
}

TEST_CASE("fit's batches allocate nothing after the first: gather, step, logs and callbacks") {
  auto model = examples::notebook_model<float>(3);
  model.compile("sparse_categorical_crossentropy", {"accuracy"});
  Tensor<float> x(Shape{160, 28, 28, 1}), y(Shape{160});
  Rng rng(4);
  for (float& v : x) v = static_cast<float>(rng.uniform());
  for (float& v : y) v = static_cast<float>(rng.below(10));
  // Counts from the end of batch 2 to the end of batch 5 (of 5): three whole
  // batches of fit's loop, each with on_batch_end and its running logs.
  long counted = -1;
  double seen_loss = 0;
  auto probe = std::make_shared<LambdaCallback<float>>();
  probe->on_batch_end_fn = [&](Sequential<float>&, long batch, const Logs& logs) {
    seen_loss += logs["loss"];
    if (batch == 2) {
      allocations = 0;
      armed = true;
    } else if (batch == 5) {
      armed = false;
      counted = allocations.load();
    }
  };
  model.fit(x, y, FitOptions<float>().epochs(1).batch_size(32).verbose(0).callback(probe));
  CHECK(seen_loss > 0);
  CHECK(counted == 0);
}
