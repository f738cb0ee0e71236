#pragma once
/// \file parallel.hpp
/// The number of threads loom's kernels (OpenMP loops and Eigen's GEMM) use.
/// Without OpenMP everything runs on one thread and these are no-ops.

#include <Eigen/Core>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace loom {

/// Sets the threads for OpenMP loops and Eigen's GEMM (n >= 1).
inline void set_num_threads(int n) {
  if (n < 1) n = 1;
#if defined(_OPENMP)
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
}

/// The threads loom's kernels will use.
inline int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace loom
