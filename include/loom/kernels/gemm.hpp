#pragma once
/// \file kernels/gemm.hpp
/// `Gemm<T>`: one thread's matrix product C = op(A) * op(B) (or C += ...) on
/// raw row-major buffers, with the packing buffers kept from call to call.
/// Float on x86 with AVX2/FMA or AVX-512 runs loom's own kernel
/// (kernels/sgemm.hpp); double, other ISAs, and builds that define
/// LOOM_EIGEN_GEMM run Eigen's.
///
/// Why not `c.noalias() = a * b` on maps: that expression builds its blocking
/// space (two packing buffers, up to a few hundred KiB) on every call and
/// frees it at the end, and it splits the product across threads itself.
/// loom's layers split their work across threads once, at the level of the
/// batch or the output columns, and each thread keeps one `Gemm` per product
/// it runs. So after the first batch a training step allocates nothing and no
/// parallel regions nest. On Eigen's path the kernel, packing and blocking sizes are Eigen's
/// (Eigen 3.4's `general_matrix_matrix_product`, the routine behind its
/// product expressions); older Eigen gets the plain expression.

#include <Eigen/Core>
#include <algorithm>
#include <memory>
#include <type_traits>

#include "../tensor.hpp"
#include "../enums.hpp"
#include "bf16_gemm.hpp"
#include "sgemm.hpp"

namespace loom::detail {

/// The kernel `Gemm<float>` runs: "AVX-512", "AVX2" or "Eigen".
inline const char* float_gemm_kernel() {
#ifdef LOOM_OWN_SGEMM
  return sgemm::Isa::name;
#else
  return "Eigen";
#endif
}

template <class T>
class Gemm {
 public:
  Gemm() = default;
  // The packing buffers are scratch: a copy starts without them.
  Gemm(const Gemm& o) : precision_(o.precision_) {}
  Gemm& operator=(const Gemm& o) {
    precision_ = o.precision_;
    return *this;
  }
  Gemm(Gemm&&) noexcept = default;
  Gemm& operator=(Gemm&&) noexcept = default;
  ~Gemm() = default;

  /// The precision of this GEMM's products: Float32, or MixedBFloat16
  /// (operands rounded to bfloat16, sums in float32), which only a float
  /// GEMM in a build with the bfloat16 kernel takes (ConfigError else; the
  /// model refuses the policy earlier, with the reason).
  void set_precision(Precision p) {
    if (p == Precision::MixedBFloat16) {
      if (!std::is_same_v<T, float> || !bf16_supported()) {
        throw ConfigError("mixed_bfloat16 products cannot run here: " +
                          (std::is_same_v<T, float> ? bf16_unsupported_reason() : std::string("they are float's")));
      }
    }
    precision_ = p;
  }
  Precision precision() const { return precision_; }

  /// Makes every buffer a product of at most m x n x k needs, so that no
  /// such call allocates afterwards. (Calls grow them as they go; a caller
  /// whose shapes vary from step to step reserves the largest first.)
  void reserve_for(Index m, Index n, Index k) {
    if (m <= 0 || n <= 0 || k <= 0) return;
#ifdef LOOM_OWN_SGEMM
    if constexpr (std::is_same_v<T, float>) {
#ifdef LOOM_BF16_GEMM
      if (precision_ == Precision::MixedBFloat16) return bf16::reserve(n, k, pairs_);
#endif
      return sgemm::reserve(n, k, bpack_);
    }
#endif
#if EIGEN_VERSION_AT_LEAST(3, 4, 0)
    reserve(m, n, k);
#endif
  }

  /// Whether a caller free to compute C^T (n x m) instead of C (m x n)
  /// should: loom's kernel pads less of it. Always false on Eigen's path.
  static bool faster_transposed([[maybe_unused]] Index m, [[maybe_unused]] Index n) {
#ifdef LOOM_OWN_SGEMM
    if constexpr (std::is_same_v<T, float>) return sgemm::faster_transposed(m, n);
#endif
    return false;
  }

  /// A row stride for an operand B of n columns (read in place) that the
  /// kernel reads in whole vectors: n rounded up to loom's kernel's vector
  /// (16 floats with AVX-512, 8 with AVX2), so that an aligned B's rows start
  /// on a vector and no load splits a cache line. On Eigen's path, n.
  static Index aligned_stride(Index n) {
#ifdef LOOM_OWN_SGEMM
    if constexpr (std::is_same_v<T, float>) return (n + sgemm::Isa::W - 1) / sgemm::Isa::W * sgemm::Isa::W;
#endif
    return n;
  }

  /// C[m x n] (row-major, row stride ldc) = op(A)[m x k] * op(B)[k x n], or
  /// += when `accumulate`, then the epilogue (bias, ReLU, affine). Allocates only
  /// when m, n or k exceed every earlier call's.
  void operator()(Index m, Index n, Index k, GemmOperand<T> a, GemmOperand<T> b, T* c, Index ldc,
                  bool accumulate = false, GemmEpilogue<T> epilogue = {}) {
    if (m <= 0 || n <= 0) return;
#ifdef LOOM_OWN_SGEMM
    if constexpr (std::is_same_v<T, float>) {
#ifdef LOOM_BF16_GEMM
      if (k > 0 && precision_ == Precision::MixedBFloat16) {
        return bf16::gemm(m, n, k, a, b, c, ldc, accumulate, epilogue, pairs_);
      }
#endif
      if (k > 0) return sgemm::gemm(m, n, k, a, b, c, ldc, accumulate, epilogue, bpack_);
    }
#endif
    if (!accumulate) {
      for (Index r = 0; r < m; ++r) std::fill(c + r * ldc, c + r * ldc + n, T(0));
    }
    if (k > 0) product(m, n, k, a, b, c, ldc);
    if (epilogue.bias || epilogue.relu || epilogue.scale) {
      for (Index r = 0; r < m; ++r) {
        T* row = c + r * ldc;
        for (Index j = 0; j < n; ++j) row[j] = epilogue(row[j], j);
      }
    }
  }

 private:
  /// C += op(A) op(B) through Eigen.
  void product(Index m, Index n, Index k, const GemmOperand<T>& a, const GemmOperand<T>& b, T* c, Index ldc) {
#if EIGEN_VERSION_AT_LEAST(3, 4, 0)
    reserve(m, n, k);
    if (a.transposed) {
      if (b.transposed) {
        run<Eigen::ColMajor, Eigen::ColMajor>(m, n, k, a, b, c, ldc);
      } else {
        run<Eigen::ColMajor, Eigen::RowMajor>(m, n, k, a, b, c, ldc);
      }
    } else if (b.transposed) {
      run<Eigen::RowMajor, Eigen::ColMajor>(m, n, k, a, b, c, ldc);
    } else {
      run<Eigen::RowMajor, Eigen::RowMajor>(m, n, k, a, b, c, ldc);
    }
#else
    using Stride = Eigen::OuterStride<>;
    using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
    Eigen::Map<RowMat, 0, Stride> cm(c, m, n, Stride(ldc));
    const auto view = [](const GemmOperand<T>& o, Index rows, Index cols) {
      // op(X) as rows x cols: a row-major map, or a column-major one for X^T.
      return std::make_pair(Eigen::Map<const RowMat, 0, Stride>(o.data, rows, cols, Stride(o.ld)),
                            Eigen::Map<const ColMat, 0, Stride>(o.data, rows, cols, Stride(o.ld)));
    };
    const auto av = view(a, m, k);
    const auto bv = view(b, k, n);
    if (a.transposed && b.transposed) cm.noalias() += av.second * bv.second;
    else if (a.transposed) cm.noalias() += av.second * bv.first;
    else if (b.transposed) cm.noalias() += av.first * bv.second;
    else cm.noalias() += av.first * bv.first;
#endif
  }

#if EIGEN_VERSION_AT_LEAST(3, 4, 0)
  using Blocking = Eigen::internal::gemm_blocking_space<Eigen::RowMajor, T, T, Eigen::Dynamic, Eigen::Dynamic,
                                                        Eigen::Dynamic, 1, false>;

  /// Packing buffers sized for the largest product seen. Blocking sizes for a
  /// larger shape are valid for a smaller one: Eigen clips every block.
  void reserve(Index m, Index n, Index k) {
    if (blocking_ && m <= m_ && n <= n_ && k <= k_) return;
    m_ = std::max(m, m_);
    n_ = std::max(n, n_);
    k_ = std::max(k, k_);
    blocking_ = std::make_unique<Blocking>(m_, n_, k_, 1, true);
    blocking_->allocateAll();
  }

  template <int LhsOrder, int RhsOrder>
  void run(Index m, Index n, Index k, const GemmOperand<T>& a, const GemmOperand<T>& b, T* c, Index ldc) {
    Eigen::internal::general_matrix_matrix_product<Index, T, LhsOrder, false, T, RhsOrder, false, Eigen::RowMajor,
                                                   1>::run(m, n, k, a.data, a.ld, b.data, b.ld, c, 1, ldc, T(1),
                                                           *blocking_, nullptr);
  }

  std::unique_ptr<Blocking> blocking_;
  Index m_ = 0, n_ = 0, k_ = 0;
#endif
#ifdef LOOM_OWN_SGEMM
  sgemm::Buffer bpack_;  // loom's own kernel's packed B panel (float)
#endif
#ifdef LOOM_BF16_GEMM
  bf16::Buffers pairs_;  // the bfloat16 kernel's packed operands
#endif
  Precision precision_ = Precision::Float32;
};

}  // namespace loom::detail
