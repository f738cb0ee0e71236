// The mixed_bfloat16 policy: its GEMM on every layout and tile edge against
// a float64 triple loop on the operands rounded to bfloat16 (rounded here by
// frexp and nearbyint, not by loom's code); each layer with products under
// it against the same layer in float32, within bfloat16's error (and not
// equal: the products did change); the policy of a model saved, loaded and
// resumed bit for bit; and, where this build or CPU has no AVX512_BF16, the
// one-line refusal. loom_tests (-march=native) and loom_tests_avx2 both compile this
// file, so on an AVX512_BF16 machine both paths run.
#include <doctest/doctest.h>

#include <loom/kernels/gemm.hpp>
#include <loom/kernels/int8_gemm.hpp>
#include <loom/layers/conv2d.hpp>
#include <loom/layers/conv2d_transpose.hpp>
#include <loom/layers/dense.hpp>
#include <loom/layers/flatten.hpp>
#include <loom/layers/batch_normalization.hpp>
#include <loom/layers/dropout.hpp>
#include <loom/layers/max_pool2d.hpp>
#include <loom/layers/quantized.hpp>
#include <loom/model/predictor.hpp>
#include <loom/model/quantize.hpp>
#include <loom/model/sequential.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "test_support.hpp"

using loom::Index;
using loom::Precision;
using loom::detail::Gemm;

namespace {

/// x rounded to the nearest bfloat16 (8 significant bits), ties to even,
/// computed in double: frexp gives x = f 2^e with |f| in [0.5, 1), so
/// f * 256 rounded to an integer keeps 8 bits.
double bf16_reference(double x) {
  if (x == 0) return x;
  int e = 0;
  const double f = std::frexp(x, &e);
  return std::ldexp(std::nearbyint(f * 256.0) / 256.0, e);  // the default rounding mode: to nearest even
}

struct Errors {
  double rounded = 0;    ///< against the product of the operands rounded to bfloat16
  double unrounded = 0;  ///< against the float product
};

/// One product through `gemm` on random operands with padded strides; the
/// largest errors relative to sqrt(k) (C's padding must stay unchanged).
Errors product_errors(Gemm<float>& gemm, Index m, Index n, Index k, bool ta, bool tb, bool accumulate, bool bias,
                      std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1, 1);
  const Index lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
  std::vector<float> a(static_cast<std::size_t>((ta ? k : m) * lda)), b(static_cast<std::size_t>((tb ? n : k) * ldb));
  std::vector<float> c(static_cast<std::size_t>(m * ldc)), shift(static_cast<std::size_t>(n));
  for (auto* v : {&a, &b, &c, &shift}) {
    for (float& x : *v) x = u(rng);
  }
  const std::vector<float> before = c;
  gemm(m, n, k, {a.data(), lda, ta}, {b.data(), ldb, tb}, c.data(), ldc, accumulate, {bias ? shift.data() : nullptr});
  Errors e;
  for (Index i = 0; i < m; ++i) {
    for (Index j = 0; j < ldc; ++j) {
      const auto at = static_cast<std::size_t>(i * ldc + j);
      if (j >= n) {
        if (c[at] != before[at]) e.rounded = e.unrounded = 1e30;
        continue;
      }
      double want = accumulate ? double(before[at]) : 0.0, exact = want;
      for (Index p = 0; p < k; ++p) {
        const double x = a[static_cast<std::size_t>(ta ? p * lda + i : i * lda + p)];
        const double y = b[static_cast<std::size_t>(tb ? j * ldb + p : p * ldb + j)];
        want += bf16_reference(x) * bf16_reference(y);
        exact += x * y;
      }
      if (bias) want += shift[static_cast<std::size_t>(j)], exact += shift[static_cast<std::size_t>(j)];
      const double scale = std::sqrt(double(k) + 1);
      e.rounded = std::max(e.rounded, std::abs(want - double(c[at])) / scale);
      e.unrounded = std::max(e.unrounded, std::abs(exact - double(c[at])) / scale);
    }
  }
  return e;
}

}  // namespace

TEST_CASE("bfloat16 rounding: to nearest, ties to even, NaN kept") {
  using loom::detail::round_bf16;
  CHECK(round_bf16(1.0f) == 1.0f);
  CHECK(round_bf16(1.0f + 1.0f / 512) == 1.0f);                  // a tie: to the even neighbour, 1
  CHECK(round_bf16(1.0f + 3.0f / 512) == 1.0f + 4.0f / 512);     // a tie: to the even neighbour, up
  CHECK(round_bf16(1.0f + 1.0f / 256 + 1.0f / 4096) == 1.0f + 1.0f / 128);  // above the tie: up
  CHECK(round_bf16(-3.0f) == -3.0f);
  CHECK(std::isnan(round_bf16(std::nanf(""))));
  CHECK(std::isinf(round_bf16(3.4e38f)));  // past bfloat16's largest finite value (about 3.39e38)
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-100, 100);
  for (int i = 0; i < 10000; ++i) {
    const float x = u(rng);
    REQUIRE(double(round_bf16(x)) == bf16_reference(x));
  }
}

TEST_CASE("Gemm<float> under mixed_bfloat16: bfloat16 operands, float32 sums, on every layout and tile edge") {
  Gemm<float> gemm;
  if (!loom::detail::bf16_supported()) {
    MESSAGE("no bfloat16 kernel here: " << loom::detail::bf16_unsupported_reason());
    CHECK_THROWS_AS(gemm.set_precision(Precision::MixedBFloat16), loom::ConfigError);
    CHECK(gemm.precision() == Precision::Float32);
    return;
  }
  gemm.set_precision(Precision::MixedBFloat16);
  std::mt19937 rng(42);
  const Index ms[] = {1, 2, 5, 13, 14, 15, 33, 169, 200};
  const Index ns[] = {1, 7, 16, 17, 25, 32, 50, 75, 130};
  const Index ks[] = {1, 2, 9, 50, 257, 600};
  int cases = 0;
  double worst_unrounded = 0;
  for (const Index m : ms) {
    for (const Index n : ns) {
      for (const Index k : ks) {
        const int bits = cases++;
        const bool ta = (bits & 1) != 0, tb = (bits & 2) != 0, acc = (bits & 4) != 0, bias = (bits & 8) != 0;
        CAPTURE(m);
        CAPTURE(n);
        CAPTURE(k);
        CAPTURE(ta);
        CAPTURE(tb);
        const Errors e = product_errors(gemm, m, n, k, ta, tb, acc, bias, rng);
        REQUIRE(e.rounded < 1e-5);  // float32's sums of exact products
        worst_unrounded = std::max(worst_unrounded, e.unrounded);
      }
    }
  }
  // The operands were rounded: against the float product the error is
  // bfloat16's (2^-9 relative per operand), far above float32's.
  CHECK(worst_unrounded > 1e-4);
  CHECK(worst_unrounded < 2e-2);
  for (int bits = 0; bits < 4; ++bits) {  // a second column block (NC = 2048)
    const Errors e = product_errors(gemm, 40, 2100, 30, (bits & 1) != 0, (bits & 2) != 0, true, true, rng);
    REQUIRE(e.rounded < 1e-5);
  }
  gemm.set_precision(Precision::Float32);  // and back: float's kernel again
  const Errors e = product_errors(gemm, 33, 50, 257, false, false, false, false, rng);
  CHECK(e.unrounded < 1e-5);
}

namespace {

bool policy_same_bits(const loom::Tensor<float>& a, const loom::Tensor<float>& b) {
  return a.shape() == b.shape() && std::equal(a.begin(), a.end(), b.begin(), [](float p, float q) {
           return std::memcmp(&p, &q, sizeof p) == 0;
         });
}

/// The largest difference between a and b, relative to b's largest value.
double policy_relative_error(const loom::Tensor<float>& a, const loom::Tensor<float>& b) {
  REQUIRE(a.shape() == b.shape());
  double diff = 0, scale = 0;
  for (Index i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return diff / scale;
}

/// A layer made twice from the same seed, one in float32 and one under
/// mixed_bfloat16: forward in training, backward, and each output, input
/// gradient and parameter gradient within bfloat16's error of float32's.
/// `changes` says whether the policy changes the layer's numbers at all
/// (the direct convolution keeps float32 products).
template <class L>
void check_layer_against_float32(const std::function<L()>& make, const loom::Shape& input, bool changes = true) {
  L plain = make(), mixed = make();
  loom::Rng r1(9), r2(9), data(11);
  plain.build(input, r1);
  mixed.build(input, r2);
  mixed.set_precision(Precision::MixedBFloat16);
  loom::Tensor<float> x(input.with_batch(6));
  for (float& v : x) v = static_cast<float>(data.uniform() * 2 - 1);
  const loom::Tensor<float>& y0 = plain.forward(x, loom::Mode::Train);
  const loom::Tensor<float>& y1 = mixed.forward(x, loom::Mode::Train);
  loom::Tensor<float> dy(y0.shape());
  for (float& v : dy) v = static_cast<float>(data.uniform() * 2 - 1);
  const double ey = policy_relative_error(y1, y0);
  const double edx = policy_relative_error(mixed.backward(dy), plain.backward(dy));
  CAPTURE(ey);
  CAPTURE(edx);
  // bfloat16 keeps 8 significant bits: each product is off by up to about
  // 2^-8 relative, and sums of many such products by much less than that.
  CHECK(ey < 1e-2);
  CHECK(edx < 1e-2);
  auto pp = plain.parameters(), mp = mixed.parameters();
  REQUIRE(pp.size() == mp.size());
  for (std::size_t i = 0; i < pp.size(); ++i) {
    if (!pp[i].trainable()) continue;
    const double e = policy_relative_error(*mp[i].grad, *pp[i].grad);
    CAPTURE(pp[i].name);
    CHECK(e < 1e-2);
    if (changes && pp[i].name.find("bias") == std::string::npos) CHECK(e > 1e-5);
  }
  if (changes) {
    CHECK(ey > 1e-5);
    CHECK(edx > 1e-5);
  } else {
    CHECK(ey == 0);
  }
}

}  // namespace

TEST_CASE("under mixed_bfloat16 each layer's products are bfloat16's: within its error of float32, and not equal") {
  using namespace loom;
  if (!detail::bf16_supported()) {
    MESSAGE("skipped: " << detail::bf16_unsupported_reason());
    return;
  }
  const auto conv = [](ConvAlgorithm a, Conv2DOptions o) {
    return [a, o] {
      Conv2D<float> c(o);
      c.set_algorithm(a);
      return c;
    };
  };
  SUBCASE("Conv2D by Winograd keeps float32 products: its transforms would magnify bfloat16's rounding") {
    check_layer_against_float32<Conv2D<float>>(
        conv(ConvAlgorithm::Winograd, Conv2DOptions(24, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)),
        Shape{10, 10, 16}, false);
  }
  SUBCASE("Conv2D by im2col, strided, grouped") {
    check_layer_against_float32<Conv2D<float>>(conv(ConvAlgorithm::Im2col, Conv2DOptions(12, {3, 3}).strides({2, 2})),
                                               Shape{9, 9, 5});
    check_layer_against_float32<Conv2D<float>>(conv(ConvAlgorithm::Im2col, Conv2DOptions(12, {3, 3}).groups(3)),
                                               Shape{8, 8, 6});
  }
  SUBCASE("Conv2D's direct kernel keeps float32 products") {
    check_layer_against_float32<Conv2D<float>>(conv(ConvAlgorithm::Direct, Conv2DOptions(20, {3, 3})), Shape{12, 12, 1},
                                               false);
  }
  SUBCASE("Dense") {
    check_layer_against_float32<Dense<float>>([] { return Dense<float>(DenseOptions(40)); }, Shape{70});
  }
  SUBCASE("Conv2DTranspose") {
    check_layer_against_float32<Conv2DTranspose<float>>(
        [] { return Conv2DTranspose<float>(Conv2DOptions(7, {3, 3}).strides({2, 2})); }, Shape{5, 5, 6});
  }
}

TEST_CASE("a model's policy: set, saved as format 3, loaded, resumed bit for bit; float32 files stay format 2") {
  using namespace loom;
  using namespace loom::testing;
  const auto make = [](std::uint64_t seed) {
    Sequential<float> m(seed);
    m.add(Conv2D<float>(Conv2DOptions(8, {3, 3}).activation(Activation::ReLU)), Shape{8, 8, 1});
    m.add(Conv2D<float>(Conv2DOptions(12, {3, 3}).padding(Padding::Same)));
    m.add(Flatten<float>());
    m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
    return m;
  };
  TempDir dir;
  Tensor<float> x, y;
  loom::testing::random_data(64, x, y);
  auto plain = make(5);
  CHECK(plain.policy() == Precision::Float32);
  plain.compile("sparse_categorical_crossentropy", {"accuracy"}, "adam");
  plain.save(dir.file("f32.loom"));
  {
    const std::string bytes = detail::read_whole_file(dir.file("f32.loom"));
    CHECK(static_cast<unsigned char>(bytes[8]) == 2);  // the format version, little-endian
  }
  CHECK_THROWS_AS(plain.set_policy("mixed_float16"), ConfigError);
  Sequential<double> twice;
  CHECK_THROWS_AS(twice.set_policy(Precision::MixedBFloat16), ConfigError);
  if (!detail::bf16_supported()) {
    const std::string why = error_of([&] { plain.set_policy(Precision::MixedBFloat16); });
    CHECK(why == "mixed_bfloat16 cannot run here: " + detail::bf16_unsupported_reason());
    CHECK(plain.policy() == Precision::Float32);
    return;
  }
  const auto opts = FitOptions<float>().epochs(2).batch_size(16).verbose(0);
  auto straight = make(5);
  straight.set_policy("mixed_bfloat16");
  straight.compile("sparse_categorical_crossentropy", {"accuracy"}, "adam");
  straight.fit(x, y, opts);
  plain.fit(x, y, opts);
  CHECK(weights_of(straight) != weights_of(plain));  // the policy changed the products

  auto first = make(5);
  first.compile("sparse_categorical_crossentropy", {"accuracy"}, "adam");
  first.set_policy(Precision::MixedBFloat16);  // after compile too; layers added later take it as well
  first.fit(x, y, FitOptions<float>(opts).epochs(1));
  first.save(dir.file("mixed.loom"));
  {
    const std::string bytes = detail::read_whole_file(dir.file("mixed.loom"));
    CHECK(static_cast<unsigned char>(bytes[8]) == 3);
  }
  auto resumed = Sequential<float>::load(dir.file("mixed.loom"));
  CHECK(resumed.policy() == Precision::MixedBFloat16);
  for (const auto& l : resumed.layers()) CHECK(l->precision() == Precision::MixedBFloat16);
  resumed.fit(x, y, FitOptions<float>(opts).resume(true));
  CHECK(weights_of(resumed) == weights_of(straight));
  CHECK(resumed.to_bytes() == straight.to_bytes());
  // predict runs the layers' copies on the threads, a Predictor its sessions: they take the policy too.
  CHECK(policy_same_bits(resumed.predict(x), straight.predict(x)));
  const Predictor<float> served(resumed);
  CHECK(policy_same_bits(served.predict(x), straight.predict(x)));
  resumed.set_policy(Precision::Float32);
  CHECK_FALSE(policy_same_bits(resumed.predict(x), straight.predict(x)));
}

TEST_CASE("the int8 GEMM: exact integer sums of u8 x s8, mapped per column, on every tile edge") {
  using namespace loom::detail;
  std::vector<std::uint8_t> edge;
  if (!int8_supported()) {
    MESSAGE("no int8 kernel here: " << int8_unsupported_reason());
    const std::int8_t b[4] = {1, 2, 3, 4};
    const std::uint8_t a[4] = {1, 1, 1, 1};
    const float one = 1;
    float c = 0;
    const Int8PackedB packed = int8_pack_b(b, 1, 4, 1, 1);
    CHECK_THROWS_AS(int8_gemm(1, a, 4, packed, &c, 1, {&one}, edge), loom::ConfigError);
    return;
  }
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> u8(0, 255), s8(-128, 127);
  std::uniform_real_distribution<float> real(-1, 1);
  int cases = 0;
  for (const Index m : {1, 2, 5, 13, 14, 15, 33, 169, 200}) {
    for (const Index n : {1, 7, 16, 17, 25, 32, 50, 75, 130}) {
      for (const Index k : {1, 3, 4, 5, 9, 50, 257, 675}) {
        const bool relu = (cases++ & 1) != 0;
        const Index lda = int8_row_bytes(k) + 4 * (cases % 3), ldb = n + 2, ldc = n + 3;
        std::vector<std::uint8_t> a(static_cast<std::size_t>(m * lda));
        std::vector<std::int8_t> b(static_cast<std::size_t>(k * ldb));
        for (auto& v : a) v = static_cast<std::uint8_t>(u8(rng));  // padding too: it must not count
        for (auto& v : b) v = static_cast<std::int8_t>(s8(rng));
        std::vector<float> scale(static_cast<std::size_t>(n)), shift(scale.size()), c(static_cast<std::size_t>(m * ldc));
        for (auto& v : scale) v = real(rng) * 1e-4f;
        for (auto& v : shift) v = real(rng);
        for (auto& v : c) v = real(rng);
        const std::vector<float> before = c;
        const Int8PackedB packed = int8_pack_b(b.data(), ldb, k, n, m);
        int8_gemm(m, a.data(), lda, packed, c.data(), ldc, {scale.data(), shift.data(), relu}, edge);
        CAPTURE(m);
        CAPTURE(n);
        CAPTURE(k);
        double worst = 0;
        bool outside = false;
        for (Index i = 0; i < m; ++i) {
          for (Index j = 0; j < ldc; ++j) {
            const auto at = static_cast<std::size_t>(i * ldc + j);
            if (j >= n) {
              outside = outside || c[at] != before[at];
              continue;
            }
            long long sum = 0;
            for (Index p = 0; p < k; ++p) {
              sum += static_cast<long long>(a[static_cast<std::size_t>(i * lda + p)]) * b[static_cast<std::size_t>(p * ldb + j)];
            }
            double want = double(sum) * scale[static_cast<std::size_t>(j)] + shift[static_cast<std::size_t>(j)];
            if (relu) want = std::max(want, 0.0);
            worst = std::max(worst, std::abs(want - double(c[at])) / (1 + std::abs(want)));
          }
        }
        REQUIRE_FALSE(outside);
        REQUIRE(worst < 1e-6);  // the exact sum, then one float multiply-add
      }
    }
  }
}

TEST_CASE("int8_quantize: round half to even, clamped to bytes, as the scalar formula, on every vector tail") {
  using namespace loom::detail;
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> real(-400, 400);
  for (const int zp : {0, 1, 85, 128, 255}) {
    for (const Index n : {1, 7, 8, 15, 16, 17, 31, 33, 100}) {
      std::vector<float> x(static_cast<std::size_t>(n));
      for (auto& v : x) v = real(rng);
      // Ties both ways, the clamp's edges, huge values and NaN among them.
      const float special[] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 127.5f, -float(zp) - 0.5f, 255.5f - float(zp),
                               3e9f, -3e9f, std::numeric_limits<float>::quiet_NaN()};
      for (std::size_t i = 0; i < x.size() && i < std::size(special); ++i) x[(i * 7) % x.size()] = special[i];
      std::vector<std::uint8_t> q(x.size() + 1, 0xAB);
      int8_quantize(x.data(), n, 0.5f, zp, q.data());
      CAPTURE(zp);
      CAPTURE(n);
      for (Index i = 0; i < n; ++i) {
        const double v = double(x[static_cast<std::size_t>(i)]) * 0.5;
        double r = std::isnan(v) ? 0 : std::nearbyint(v) + zp;  // the current (default) mode: half to even
        r = std::min(std::max(r, 0.0), 255.0);
        CAPTURE(x[static_cast<std::size_t>(i)]);
        REQUIRE(int(q[static_cast<std::size_t>(i)]) == int(r));
      }
      CHECK(q.back() == 0xAB);  // nothing written past n
    }
  }
}

TEST_CASE("QuantizedConv2D: exactly the integer sums of its byte windows, on strides, dilations and padding") {
  using namespace loom;
  if (!detail::int8_supported()) return;  // (the refusal: the next test case)
  Rng rng(11), data(12);
  int cases = 0;
  for (const Padding padding : {Padding::Valid, Padding::Same}) {
    for (const Size2 strides : {Size2{1, 1}, Size2{2, 1}, Size2{1, 2}}) {
      for (const Size2 dilation : {Size2{1, 1}, Size2{1, 2}, Size2{2, 1}}) {
        if ((strides[0] > 1 || strides[1] > 1) && (dilation[0] > 1 || dilation[1] > 1)) continue;  // as Keras
        const Index channels[] = {1, 5, 8, 11};  // runs of 3, 15, 24, 33 bytes rounded up to quads
        const Index c = channels[cases++ % 4], f = 9;
        const detail::Int8Input in{0.02f, 40};
        QuantizedConv2D<float> q(f, {3, 3}, strides, padding, dilation, Activation::None, in, false);
        q.build(Shape{9, 11, c}, rng);
        const auto p = q.parameters();
        Tensor<float>& kernel = *p[0].value;
        Tensor<float>& kscale = *p[1].value;
        Tensor<float>& bias = *p[2].value;
        for (float& v : kernel) v = static_cast<float>(data.below(255)) - 127;
        for (float& v : kscale) v = static_cast<float>(1e-3 * (1 + data.uniform()));
        for (float& v : bias) v = static_cast<float>(data.uniform() - 0.5);
        Tensor<float> x(Shape{3, 9, 11, c});
        for (float& v : x) v = static_cast<float>(data.uniform() * 4 - 1);
        const Tensor<float>& y = q.forward(x, Mode::Inference);
        const Index ho = y.dim(1), wo = y.dim(2);
        // Keras's "same": the total padding max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0), half on top.
        const auto pad = [&](Index out, Index s, Index d, Index size) {
          return padding == Padding::Same ? std::max<Index>((out - 1) * s + 2 * d + 1 - size, 0) / 2 : 0;
        };
        const Index pt = pad(ho, strides[0], dilation[0], 9), pl = pad(wo, strides[1], dilation[1], 11);
        CAPTURE(cases);
        double worst = 0;
        for (Index n = 0; n < 3; ++n) {
          for (Index oh = 0; oh < ho; ++oh) {
            for (Index ow = 0; ow < wo; ++ow) {
              for (Index j = 0; j < f; ++j) {
                long long sum = 0;
                for (Index a = 0; a < 3; ++a) {
                  for (Index b = 0; b < 3; ++b) {
                    const Index ih = oh * strides[0] - pt + a * dilation[0], iw = ow * strides[1] - pl + b * dilation[1];
                    for (Index k = 0; k < c; ++k) {
                      long long u = 40;  // padding: the zero point
                      if (ih >= 0 && ih < 9 && iw >= 0 && iw < 11) {
                        const double v = std::nearbyint(double(x(n, ih, iw, k)) / 0.02f) + 40;
                        u = static_cast<long long>(std::min(std::max(v, 0.0), 255.0));
                      }
                      sum += (u - 40) * static_cast<long long>(kernel(a, b, k, j));
                    }
                  }
                }
                const double want = double(sum) * 0.02f * kscale[j] + bias[j];
                worst = std::max(worst, std::abs(want - double(y(n, oh, ow, j))) / (1 + std::abs(want)));
              }
            }
          }
        }
        CHECK(worst < 1e-5);
      }
    }
  }
}

TEST_CASE("int8 layers against their float layers: within the quantization's error, padding at the zero point") {
  using namespace loom;
  if (!detail::int8_supported()) {
    MESSAGE("skipped: " << detail::int8_unsupported_reason());
    Sequential<float> m;
    m.add(Dense<float>(DenseOptions(4)), Shape{8});
    Tensor<float> x(Shape{4, 8});
    CHECK(testing::error_of([&] { quantize(m, x); }) ==
          "quantize: int8 inference cannot run here: " + detail::int8_unsupported_reason());
    return;
  }
  Rng rng(3), data(4);
  for (const Padding padding : {Padding::Valid, Padding::Same}) {
    CAPTURE(padding == Padding::Same);
    Conv2D<float> conv(Conv2DOptions(20, {3, 3}).padding(padding).activation(Activation::ReLU).strides({1, 2}));
    conv.build(Shape{9, 10, 12}, rng);
    Tensor<float> x(Shape{5, 9, 10, 12});
    for (float& v : x) v = static_cast<float>(data.uniform() * 3 - 1);  // [-1, 2): a zero point inside
    const detail::Int8Input in = detail::int8_input_for(-1, 2);
    CHECK(in.zero_point == 85);
    QuantizedConv2D<float> q(20, {3, 3}, {1, 2}, padding, {1, 1}, Activation::ReLU, in, false);
    q.build(Shape{9, 10, 12}, rng);
    const auto p = conv.parameters();
    q.set_weights(p[0].value->data(), p[1].value->data(), nullptr, nullptr);
    const Tensor<float>& want = conv.forward(x, Mode::Inference);
    const Tensor<float>& got = q.forward(x, Mode::Inference);
    const double e = policy_relative_error(got, want);
    CAPTURE(e);
    CHECK(e < 2e-2);  // 8 bits each side: about 1/255 of each operand's range, averaged over 108 products
    CHECK(e > 1e-5);
    CHECK_THROWS_AS(q.forward(x, Mode::Train), ConfigError);
  }
}

TEST_CASE("quantize: a trained model in int8, BatchNormalization folded (past Dropout), pooled in the product, saved and "
          "loaded, predicting as the float one") {
  using namespace loom;
  using namespace loom::testing;
  if (!detail::int8_supported()) return;  // (the refusal: the test case above)
  Sequential<float> m(7);
  m.add(BatchNormalization<float>(), Shape{8, 8, 1});  // after no product: stays float, its values copied
  m.add(Conv2D<float>(Conv2DOptions(8, {3, 3}).activation(Activation::ReLU)));  // 1 channel: runs of 3 bytes
  m.add(Conv2D<float>(Conv2DOptions(16, {3, 3}).padding(Padding::Same).activation(Activation::ReLU)));
  m.add(Dropout<float>(0.3));  // as the notebook's conv2: the BatchNormalization after it folds all the same
  m.add(BatchNormalization<float>());
  m.add(MaxPool2D<float>());
  m.add(Flatten<float>());
  m.add(Dense<float>(DenseOptions(32).activation(Activation::ReLU)));
  m.add(Dropout<float>(0.2));
  m.add(Dense<float>(DenseOptions(3).activation(Activation::Softmax)));
  m.compile("sparse_categorical_crossentropy", {"accuracy"}, "adam");
  Tensor<float> x, y;
  loom::testing::random_data(256, x, y);
  m.fit(x, y, FitOptions<float>().epochs(3).batch_size(16).verbose(0));
  Sequential<float> q = quantize(m, x);
  std::vector<std::string> types;
  for (const auto& l : q.layers()) types.push_back(l->type());
  CHECK(types == std::vector<std::string>{"BatchNormalization", "QuantizedConv2D", "QuantizedConv2D", "Dropout",
                                          "MaxPooling2D", "Flatten", "QuantizedDense", "Dropout", "QuantizedDense"});
  const Tensor<float> pf = m.predict(x), pq = q.predict(x);
  // predict fuses (the pooling in QuantizedConv2D's product, Conv2D's too): the layers one by one, unfused,
  // give the same bits.
  {
    const auto& qc = dynamic_cast<const QuantizedConv2D<float>&>(*q.layers()[2]);
    const auto& pool = dynamic_cast<const MaxPool2D<float>&>(*q.layers()[4]);
    CHECK(qc.can_pool(pool));
    const Tensor<float>* out = &x;
    for (const auto& l : q.layers()) out = &l->forward(*out, Mode::Inference);
    CHECK(policy_same_bits(*out, pq));
  }
  CHECK(policy_relative_error(pq, pf) < 3e-2);
  Index agree = 0;
  for (Index i = 0; i < x.dim(0); ++i) {
    const float* a = pf.data() + i * 3;
    const float* b = pq.data() + i * 3;
    agree += std::max_element(a, a + 3) - a == std::max_element(b, b + 3) - b;
  }
  CHECK(agree >= x.dim(0) * 95 / 100);
  TempDir dir;
  q.save(dir.file("int8.loom"));
  auto back = Sequential<float>::load(dir.file("int8.loom"));
  CHECK(policy_same_bits(back.predict(x), pq));
  back.compile("sparse_categorical_crossentropy", {"accuracy"});
  CHECK_THROWS_AS(back.fit(x, y, FitOptions<float>().epochs(1).verbose(0)), ConfigError);
  Sequential<double> twice;
  Tensor<double> xd;
  CHECK_THROWS_AS(quantize(twice, xd), ConfigError);
}
