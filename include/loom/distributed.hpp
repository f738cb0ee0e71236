#pragma once
/// \file distributed.hpp
/// Data-parallel training over MPI (CMake target `loom::mpi`; Debian's Open
/// MPI: libopenmpi-dev, openmpi-bin). The core knows only the Communicator
/// interface (communicator.hpp); this header implements it over an MPI
/// communicator.
///
///     int main(int argc, char** argv) {
///       loom::mpi::Environment mpi(argc, argv);     // MPI_Init ... MPI_Finalize
///       auto model = ...;                           // the same model on every rank
///       model.fit(x, y, loom::FitOptions<float>().epochs(20).distributed(loom::mpi::world()));
///     }
///
///     $ mpirun -np 4 ./train        # four processes, each with a quarter of every batch
///
/// docs/distributed.md says what fit then does on every rank, how to run on
/// several machines, and what it costs.

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>

#include "communicator.hpp"
#include "error.hpp"

namespace loom {
namespace mpi {

/// Whether this process was started by an MPI launcher (mpirun or mpiexec of
/// Open MPI or MPICH, or srun): a program can then start MPI, and otherwise
/// run as a plain single process without it.
inline bool launched() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_NTASKS"}) {
    if (std::getenv(v)) return true;
  }
  return false;
}

namespace detail {
inline void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string(what) + " failed: " + std::string(text, static_cast<std::size_t>(len)));
}
}  // namespace detail

/// MPI for the lifetime of the object: MPI_Init_thread on construction (with
/// MPI_THREAD_FUNNELED: OpenMP threads compute, the main thread alone calls
/// MPI), MPI_Finalize on destruction. Left by an exception, it calls
/// MPI_Abort instead, so that the other ranks are not left waiting. Does
/// nothing when MPI is already initialized.
class Environment {
 public:
  Environment(int& argc, char**& argv) { init(&argc, &argv); }
  Environment() { init(nullptr, nullptr); }
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
  ~Environment() {
    if (!owner_) return;
    if (std::uncaught_exceptions() > exceptions_) MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Finalize();
  }

 private:
  void init(int* argc, char*** argv) {
    int ready = 0;
    MPI_Initialized(&ready);
    if (ready) return;
    int provided = 0;
    detail::check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    owner_ = true;
    exceptions_ = std::uncaught_exceptions();
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      owner_ = false;
      throw Error("MPI does not support MPI_THREAD_FUNNELED, which loom's OpenMP threads need");
    }
  }
  bool owner_ = false;
  int exceptions_ = 0;
};

/// A loom::Communicator over an MPI communicator (MPI_COMM_WORLD by
/// default; not owned, not freed).
class Communicator final : public loom::Communicator {
 public:
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) throw Error("loom::mpi::Communicator: MPI is not initialized: create a loom::mpi::Environment first");
    detail::check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    detail::check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MPI_Comm comm() const { return comm_; }

  /// How many of the ranks run on this machine (to share its cores among
  /// them: `--threads` is per process). A collective call.
  int processes_on_this_node() const {
    MPI_Comm node;
    detail::check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
    int n = 1;
    MPI_Comm_size(node, &n);
    MPI_Comm_free(&node);
    return n;
  }

  void allreduce_sum(float* data, Index n) override { allreduce(data, n, MPI_FLOAT); }
  void allreduce_sum(double* data, Index n) override { allreduce(data, n, MPI_DOUBLE); }

  void broadcast(void* data, std::size_t bytes, int root) override {
    auto* p = static_cast<char*>(data);
    for (std::size_t done = 0; done < bytes;) {  // MPI counts are ints
      const int n = static_cast<int>(std::min<std::size_t>(bytes - done, INT_MAX));
      detail::check(MPI_Bcast(p + done, n, MPI_BYTE, root, comm_), "MPI_Bcast");
      done += static_cast<std::size_t>(n);
    }
  }
  using loom::Communicator::broadcast;

  [[noreturn]] void abort(int code) override {
    MPI_Abort(comm_, code);
    std::_Exit(code);  // MPI_Abort does not return; in case it does
  }

 private:
  template <class V>
  void allreduce(V* data, Index n, MPI_Datatype type) {
    for (Index done = 0; done < n;) {
      const int count = static_cast<int>(std::min<Index>(n - done, INT_MAX));
      detail::check(MPI_Allreduce(MPI_IN_PLACE, data + done, count, type, MPI_SUM, comm_), "MPI_Allreduce");
      done += count;
    }
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

/// Every process of the job: a Communicator over MPI_COMM_WORLD, for
/// `FitOptions().distributed(...)`.
inline std::shared_ptr<Communicator> world() { return std::make_shared<Communicator>(MPI_COMM_WORLD); }

}  // namespace mpi
}  // namespace loom
