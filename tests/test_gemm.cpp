// detail::Gemm against a plain triple loop in double: every transpose
// combination, accumulate or overwrite, row strides wider than the matrix,
// and shapes on both sides of every tile and block edge of loom's own float
// kernel (MR, NR, KC, MC, NC). And detail::add_column_sums against the plain
// loop it replaces, bit for bit, and Winograd's weights' gradient, whose sums'
// layout follows the kernel's tiles, against a direct sum. This file is
// compiled three times: into
// loom_tests (the build's own target, AVX-512 on such a machine), and into
// gemm_tests_avx2 and gemm_tests_eigen (tests/CMakeLists.txt), so that every
// kernel loom has is checked on the machine that builds it.
#include <doctest/doctest.h>

#include <loom/kernels/column_sums.hpp>
#include <loom/kernels/gemm.hpp>
#include <loom/kernels/winograd.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

using loom::Index;
using loom::detail::Gemm;

namespace {

struct Case {
  Index m, n, k;
  bool ta, tb, accumulate;
  bool bias = false, relu = false;
};

/// Runs one product through `gemm` on random operands stored with padded
/// row strides, and returns the largest error against a double reference,
/// relative to sqrt(k); any change to C's padding columns fails outright.
template <class T>
double gemm_error(Gemm<T>& gemm, const Case& c, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(-1, 1);
  const Index lda = (c.ta ? c.m : c.k) + 3, ldb = (c.tb ? c.k : c.n) + 1, ldc = c.n + 2;
  std::vector<T> a(static_cast<std::size_t>((c.ta ? c.k : c.m) * lda));
  std::vector<T> b(static_cast<std::size_t>((c.tb ? c.n : c.k) * ldb));
  std::vector<T> out(static_cast<std::size_t>(c.m * ldc));
  for (auto* v : {&a, &b, &out}) {
    for (T& x : *v) x = static_cast<T>(u(rng));
  }
  std::vector<T> bias(static_cast<std::size_t>(c.n));
  for (T& x : bias) x = static_cast<T>(u(rng));
  const std::vector<T> before = out;
  gemm(c.m, c.n, c.k, {a.data(), lda, c.ta}, {b.data(), ldb, c.tb}, out.data(), ldc, c.accumulate,
       {c.bias ? bias.data() : nullptr, c.relu});
  double worst = 0;
  for (Index i = 0; i < c.m; ++i) {
    for (Index j = 0; j < ldc; ++j) {
      const std::size_t at = static_cast<std::size_t>(i * ldc + j);
      if (j >= c.n) {
        if (out[at] != before[at]) return 1e30;  // wrote outside C
        continue;
      }
      double want = c.accumulate ? double(before[at]) : 0.0;
      for (Index p = 0; p < c.k; ++p) {
        const double x = a[static_cast<std::size_t>(c.ta ? p * lda + i : i * lda + p)];
        const double y = b[static_cast<std::size_t>(c.tb ? j * ldb + p : p * ldb + j)];
        want += x * y;
      }
      if (c.bias) want += bias[static_cast<std::size_t>(j)];
      if (c.relu) want = std::max(want, 0.0);
      worst = std::max(worst, std::abs(want - double(out[at])) / std::sqrt(double(c.k) + 1));
    }
  }
  return worst;
}

template <class T>
void check_shapes(double tolerance) {
  std::mt19937 rng(42);
  Gemm<T> gemm;  // one object throughout: its buffers grow and shrink in use
  // Edges: 1, tile sizes +-1 (MR up to 24, NR 8 to 32), depth past KC = 256,
  // rows past MC (about 168), columns past NC = 2048; widths a few columns
  // past whole tiles of 16 or 32 (18, 34, 66), as N = 50 is on AVX2. One and
  // two rows take the one-row tile (the last of kTiles, NR 64 or 128): 130 and 300
  // columns end partway through its second and third slivers.
  const Index ms[] = {1, 2, 5, 6, 7, 13, 14, 15, 32, 33, 169, 200};
  const Index ns[] = {1, 7, 8, 9, 16, 17, 18, 25, 32, 33, 34, 50, 66, 75, 130, 300};
  const Index ks[] = {1, 9, 50, 257, 600};
  int cases = 0;
  for (const Index m : ms) {
    for (const Index n : ns) {
      for (const Index k : ks) {
        const int bits = cases++;
        const Case c{m, n, k, (bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0, (bits & 8) != 0, (bits & 16) != 0};
        CAPTURE(m);
        CAPTURE(n);
        CAPTURE(k);
        CAPTURE(c.ta);
        CAPTURE(c.tb);
        CAPTURE(c.accumulate);
        CAPTURE(c.bias);
        CAPTURE(c.relu);
        REQUIRE(gemm_error(gemm, c, rng) < tolerance);
      }
    }
  }
  for (int bits = 0; bits < 8; ++bits) {  // every operand layout on one wide, deep product
    const Case c{37, 2100, 300, (bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0, true, bits % 3 == 0};
    CAPTURE(bits);
    REQUIRE(gemm_error(gemm, c, rng) < tolerance);
  }
  // Tall (so loom's kernel packs even a row-major B) and past NC: a second
  // column block of 2 columns, or of 52 (2100 = 2048 + 52).
  for (const Index n : {2050, 2100}) {
    for (int bits = 0; bits < 8; ++bits) {
      const Case c{200, n, 20, (bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0, true, bits % 2 == 0};
      CAPTURE(n);
      CAPTURE(bits);
      REQUIRE(gemm_error(gemm, c, rng) < tolerance);
    }
  }
}

}  // namespace

TEST_CASE("Gemm<float> matches a double reference on every layout and tile edge") {
  MESSAGE("float kernel: " << std::string(loom::detail::float_gemm_kernel()));
  check_shapes<float>(1e-5);
}

TEST_CASE("Gemm<double> matches a double reference on every layout and tile edge") {
  check_shapes<double>(1e-13);
}

TEST_CASE("Gemm's ReLU epilogue passes NaN through, as the activation layers do") {
  Gemm<float> gemm;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> a{1.0f, nan, -1.0f}, b(16, 1.0f), c(48, 7.0f);  // A is 3 x 1, B 1 x 16
  gemm(3, 16, 1, {a.data(), 1}, {b.data(), 16}, c.data(), 16, false, {nullptr, true});
  CHECK(c[0] == 1.0f);
  CHECK(std::isnan(c[16]));
  CHECK(c[32] == 0.0f);
}

TEST_CASE("Gemm with k = 0 writes zeros, or leaves C when accumulating") {
  Gemm<float> gemm;
  std::vector<float> c(6, 3.0f);
  gemm(2, 3, 0, {nullptr, 0}, {nullptr, 3}, c.data(), 3, /*accumulate=*/true);
  CHECK(c == std::vector<float>(6, 3.0f));
  gemm(2, 3, 0, {nullptr, 0}, {nullptr, 3}, c.data(), 3);
  CHECK(c == std::vector<float>(6, 0.0f));
}

TEST_CASE("add_column_sums gives the plain row-by-row loop's sums bit for bit, on every column group and row block edge") {
  using loom::detail::Second;
  std::mt19937 rng(7);
  // Magnitudes from 1e-20 to 1e20, so that double sums round and a change
  // in the order of the additions shows.
  std::uniform_real_distribution<float> mantissa(-1, 1);
  std::uniform_int_distribution<int> exponent(-20, 20);
  for (const Index cols : {1, 3, 4, 5, 8, 11, 12, 16, 17, 25, 28, 50, 75}) {
    for (const Index rows : {0, 1, 31, 32, 33, 70}) {
      std::vector<float> a(static_cast<std::size_t>(rows * cols)), b(a.size());
      for (auto* v : {&a, &b}) {
        for (float& x : *v) x = mantissa(rng) * std::pow(10.0f, static_cast<float>(exponent(rng)));
      }
      // Sums that start from earlier values, as a thread's partial sums may.
      std::vector<double> start(static_cast<std::size_t>(2 * cols));
      for (double& x : start) x = mantissa(rng) * 1e15;
      std::vector<double> want_sum(start.begin(), start.begin() + cols), want_sq(start.begin() + cols, start.end());
      std::vector<double> want_dot = want_sq;
      for (Index r = 0; r < rows; ++r) {
        for (Index k = 0; k < cols; ++k) {
          const double x = a[static_cast<std::size_t>(r * cols + k)], y = b[static_cast<std::size_t>(r * cols + k)];
          want_sum[static_cast<std::size_t>(k)] += x;
          want_sq[static_cast<std::size_t>(k)] += x * x;
          want_dot[static_cast<std::size_t>(k)] += x * y;
        }
      }
      CAPTURE(cols);
      CAPTURE(rows);
      std::vector<double> sum(start.begin(), start.begin() + cols), dot(start.begin() + cols, start.end());
      loom::detail::add_column_sums<Second::None>(a.data(), static_cast<const float*>(nullptr), rows, cols,
                                                  sum.data(), nullptr);
      CHECK(sum == want_sum);
      sum.assign(start.begin(), start.begin() + cols);
      loom::detail::add_column_sums<Second::Squares>(a.data(), static_cast<const float*>(nullptr), rows, cols,
                                                     sum.data(), dot.data());
      CHECK(sum == want_sum);
      CHECK(dot == want_sq);
      sum.assign(start.begin(), start.begin() + cols);
      dot.assign(start.begin() + cols, start.end());
      loom::detail::add_column_sums<Second::Products>(a.data(), b.data(), rows, cols, sum.data(), dot.data());
      CHECK(sum == want_sum);
      CHECK(dot == want_dot);
    }
  }
}

TEST_CASE("Winograd's weights' gradient matches a direct sum, its sums kept in either layout") {
  // The sums S[xi] are kept transposed where the kernel's tiles pad less so
  // (AVX2: 75 -> 50 and 9 -> 17; AVX-512: 40 -> 16; Eigen: never); two threads' sums,
  // each finished over its own rows, must give the direct sum's dK either way.
  using Winograd = loom::detail::Winograd3x3<float>;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1, 1);
  const Index n = 2, h = 6, w = 7;  // 'same': output h x w, tiles past its edge
  const loom::detail::Winograd2D geo{h, w, h, w, 1, 1};
  for (const auto& [cin, cout] : {std::pair<Index, Index>{75, 50}, {40, 16}, {50, 25}, {9, 17}}) {
    CAPTURE(cin);
    CAPTURE(cout);
    CAPTURE(Winograd::sums_transposed(cin, cout));
    std::vector<float> x(static_cast<std::size_t>(n * h * w * cin)), dz(static_cast<std::size_t>(n * h * w * cout));
    for (auto* v : {&x, &dz}) {
      for (float& e : *v) e = u(rng);
    }
    const Index plane = cin * cout, tiles = n * Winograd::tiles_per_image(geo);
    std::vector<float> s0(static_cast<std::size_t>(Winograd::kPoints * plane)), s1(s0.size());
    Winograd first, second;
    first.weights({x.data()}, dz.data(), geo, cin, cout, 0, tiles / 2, s0.data());
    second.weights({x.data()}, dz.data(), geo, cin, cout, tiles / 2, tiles, s1.data());
    {  // the V a training forward keeps gives the same sums, bit for bit
      std::vector<float> kernel(static_cast<std::size_t>(9 * plane)), u_all(static_cast<std::size_t>(Winograd::u_size(cin, cout, false)));
      for (float& e : kernel) e = u(rng);
      Winograd::transform_kernel(kernel.data(), cin, cout, false, 0, cin, u_all.data(), Winograd::u_stride(cout));
      std::vector<float> kept(static_cast<std::size_t>(tiles * Winograd::kPoints * cin)),
          y(static_cast<std::size_t>(n * h * w * cout));
      Winograd forward;
      forward.run(x.data(), geo, cin, 0, 1, u_all.data(), Winograd::u_stride(cout), cout, y.data(), {}, nullptr, kept.data());
      forward.run(x.data(), geo, cin, 1, tiles, u_all.data(), Winograd::u_stride(cout), cout, y.data(), {}, nullptr, kept.data());
      std::vector<float> k0(s0.size()), k1(s1.size());
      first.weights({nullptr, kept.data()}, dz.data(), geo, cin, cout, 0, tiles / 2, k0.data());
      second.weights({nullptr, kept.data()}, dz.data(), geo, cin, cout, tiles / 2, tiles, k1.data());
      CHECK(std::memcmp(k0.data(), s0.data(), sizeof(float) * s0.size()) == 0);
      CHECK(std::memcmp(k1.data(), s1.data(), sizeof(float) * s1.size()) == 0);
    }
    const float* parts[] = {s0.data(), s1.data()};
    std::vector<float> dk(static_cast<std::size_t>(9 * plane), std::numeric_limits<float>::quiet_NaN());
    const Index rows = Winograd::sum_rows(cin, cout);
    Winograd::finish_weights(parts, 2, cin, cout, 0, rows / 2, dk.data());
    Winograd::finish_weights(parts, 2, cin, cout, rows / 2, rows, dk.data());
    double worst = 0;
    for (Index i = 0; i < 3; ++i) {
      for (Index j = 0; j < 3; ++j) {
        for (Index ci = 0; ci < cin; ++ci) {
          for (Index co = 0; co < cout; ++co) {
            double want = 0;
            for (Index b = 0; b < n; ++b) {
              for (Index oh = 0; oh < h; ++oh) {
                for (Index ow = 0; ow < w; ++ow) {
                  const Index ih = oh + i - 1, iw = ow + j - 1;
                  if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                  want += double(x[static_cast<std::size_t>(((b * h + ih) * w + iw) * cin + ci)]) *
                          double(dz[static_cast<std::size_t>(((b * h + oh) * w + ow) * cout + co)]);
                }
              }
            }
            const double got = dk[static_cast<std::size_t>((i * 3 + j) * plane + ci * cout + co)];
            worst = std::max(worst, std::isnan(got) ? 1e9 : std::fabs(got - want));
          }
        }
      }
    }
    CHECK(worst < 1e-4);  // sums of up to 84 products of magnitude below 1
  }
}
