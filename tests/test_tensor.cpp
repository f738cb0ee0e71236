// Shape, Tensor, Rng and the threads' WorkQueue.
#include <doctest/doctest.h>

#include <loom/loom.hpp>

#include <algorithm>
#include <set>
#include <vector>

using namespace loom;

TEST_CASE("Shape: size, batch helpers and printing") {
  const Shape s{28, 28, 1};
  CHECK(s.rank() == 3);
  CHECK(s.size() == 784);
  CHECK(s.with_batch(32) == Shape{32, 28, 28, 1});
  CHECK(s.with_batch(32).without_batch() == s);
  CHECK(s.str() == "(28, 28, 1)");
  CHECK(s.str("None") == "(None, 28, 28, 1)");
  CHECK(Shape{400}.str() == "(400,)");
  CHECK(Shape{}.size() == 1);
  CHECK_THROWS_AS(Shape({1, 2, 3, 4, 5, 6, 7}), ShapeError);
  CHECK_THROWS_AS(Shape({2, -1}), ShapeError);
}

TEST_CASE_TEMPLATE("Tensor: row-major NHWC layout and element access", T, float, double) {
  Tensor<T> t(Shape{2, 3, 4, 5});
  CHECK(t.size() == 120);
  for (Index i = 0; i < t.size(); ++i) t[i] = static_cast<T>(i);
  // NHWC, row-major: offset of (n, h, w, c) = ((n * H + h) * W + w) * C + c
  CHECK(t(1, 2, 3, 4) == T(119));
  CHECK(t(1, 0, 2, 1) == T(((1 * 3 + 0) * 4 + 2) * 5 + 1));
  CHECK(t.at(0, 1, 1, 1) == T(((0 * 3 + 1) * 4 + 1) * 5 + 1));
  t(0, 0, 0, 3) = 42;
  CHECK(t[3] == T(42));
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 16 == 0);
}

TEST_CASE("Tensor: at() checks rank and bounds") {
  Tensor<float> t(Shape{2, 3});
  CHECK_THROWS_AS(t.at(2, 0), ShapeError);
  CHECK_THROWS_AS(t.at(0, -1), ShapeError);
  CHECK_THROWS_AS(t.at(0), ShapeError);
  CHECK_THROWS_WITH_AS(t.at(0, 3), "Tensor::at: index 3 out of range [0, 3) in dimension 1 of (2, 3)", ShapeError);
}

TEST_CASE("Tensor: construction from values checks the count") {
  Tensor<float> t(Shape{2, 2}, {1, 2, 3, 4});
  CHECK(t(1, 0) == 3.0f);
  CHECK_THROWS_AS(Tensor<float>(Shape{2, 2}, {1, 2, 3}), ShapeError);
}

TEST_CASE("Tensor: reshape keeps the buffer, resize keeps the capacity") {
  Tensor<float> t(Shape{4, 6});
  const float* before = t.data();
  t.reshape(Shape{2, 3, 4});
  CHECK(t.data() == before);
  CHECK(t.shape() == Shape{2, 3, 4});
  CHECK_THROWS_AS(t.reshape(Shape{5, 5}), ShapeError);
  t.resize(Shape{1, 6});
  t.resize(Shape{4, 6});
  CHECK(t.data() == before);  // shrinking and growing back within capacity does not reallocate
}

TEST_CASE("Tensor: resize zeroes new elements and keeps old ones; resize_for_overwrite keeps old ones") {
  Tensor<float> t(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  t.resize(Shape{1, 3});
  t.data()[0] = 7;
  t.resize(Shape{3, 3});  // grows back past the old size: elements 3..8 are new
  const std::vector<float> zeroed(t.begin(), t.end());
  CHECK(zeroed == std::vector<float>{7, 2, 3, 0, 0, 0, 0, 0, 0});
  t.resize_for_overwrite(Shape{1, 2});
  t.resize_for_overwrite(Shape{2, 4});
  CHECK(t.shape() == Shape{2, 4});
  CHECK(t.data()[0] == 7);
  CHECK(t.data()[1] == 2);
}

TEST_CASE("Tensor: Eigen maps view the same memory, row-major") {
  Tensor<double> t(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  auto m = t.matrix();
  CHECK(m.rows() == 2);
  CHECK(m.cols() == 3);
  CHECK(m(1, 0) == 4.0);
  m(0, 2) = 9;
  CHECK(t(0, 2) == 9.0);
  Tensor<double> img(Shape{2, 2, 2, 3});
  CHECK(img.matrix().cols() == 12);
  CHECK_THROWS_AS(t.as_matrix(4, 2), ShapeError);
  CHECK(t.flat().sum() == doctest::Approx(1 + 2 + 9 + 4 + 5 + 6));
}

TEST_CASE("Rng: the same seed gives the same stream, and shuffle is a permutation") {
  Rng a(7), b(7), c(8);
  for (int i = 0; i < 10; ++i) CHECK(a.next_u64() == b.next_u64());
  CHECK(a.next_u64() != c.next_u64());
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const double u = a.uniform();
    CHECK((u >= 0 && u < 1));
    sum += u;
  }
  CHECK(sum / 10000 == doctest::Approx(0.5).epsilon(0.02));
  std::vector<int> v(100);
  for (int i = 0; i < 100; ++i) v[static_cast<std::size_t>(i)] = i;
  a.shuffle(v.begin(), v.end());
  CHECK(std::set<int>(v.begin(), v.end()).size() == 100);
  int fixed = 0;
  for (int i = 0; i < 100; ++i) fixed += v[static_cast<std::size_t>(i)] == i;
  CHECK(fixed < 10);
}

TEST_CASE("glorot_uniform stays within Keras's limit") {
  Tensor<double> w(Shape{3, 3, 1, 75});
  Rng rng(3);
  glorot_uniform(w, 9, 675, rng);
  const double limit = std::sqrt(6.0 / (9 + 675));
  CHECK(w.flat().maxCoeff() <= limit);
  CHECK(w.flat().minCoeff() >= -limit);
  CHECK(w.flat().maxCoeff() > 0.9 * limit);
  CHECK(std::fabs(w.flat().mean()) < 0.1 * limit);
}

TEST_CASE("WorkQueue: every piece once, each thread's own first, then the others'") {
  detail::WorkQueue q;
  SUBCASE("one thread asking for all of two threads' pieces") {
    q.reset(50, 8, 2);  // pieces 0-7, 8-15, ..., 48-49: home of thread 0 pieces 0-3, of thread 1 pieces 4-6
    std::vector<Index> begins;
    for (detail::Range r = q.take(1); r.size() > 0; r = q.take(1)) {
      CHECK(r.end == std::min<Index>(r.begin + 8, 50));
      begins.push_back(r.begin);
    }
    CHECK(begins == std::vector<Index>{32, 40, 48, 0, 8, 16, 24});
  }
  SUBCASE("two threads in a region, however the pieces fall") {
    for (int round = 0; round < 20; ++round) {
      q.reset(1000, 7, 2);
      std::vector<int> owner(1000, -1);
      detail::parallel(2, [&](int t, int /*nt*/) {
        for (detail::Range r = q.take(t); r.size() > 0; r = q.take(t)) {
          for (Index i = r.begin; i < r.end; ++i) {
            int& o = owner[static_cast<std::size_t>(i)];
            o = o == -1 ? t : 9;
          }
        }
      });
      CHECK(std::count(owner.begin(), owner.end(), -1) == 0);  // every index handed out
      CHECK(std::count(owner.begin(), owner.end(), 9) == 0);   // and none twice
    }
  }
  SUBCASE("a copy starts empty, and a team smaller than asked for still does everything") {
    q.reset(10, 3, 4);
    detail::WorkQueue copy = q;
    copy.reset(10, 3, 4);
    Index done = 0;
    for (detail::Range r = copy.take(0); r.size() > 0; r = copy.take(0)) done += r.size();
    CHECK(done == 10);
  }
}
