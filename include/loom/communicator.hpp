#pragma once
/// \file communicator.hpp
/// `Communicator`: the few collective operations data-parallel training
/// needs, as an interface, so that the core stays free of any message
/// library. loom/distributed.hpp implements it over MPI (`loom::mpi`);
/// `FitOptions().distributed(comm)` hands one to fit.
///
/// Every process of a job (a "rank", numbered 0..size()-1) calls the same
/// collectives in the same order; each call returns once every rank has made
/// it, and leaves the same result on every rank.

#include <cstddef>
#include <string>

#include "tensor.hpp"

namespace loom {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  /// data[0..n) <- the elementwise sum of every rank's data[0..n), in place.
  virtual void allreduce_sum(float* data, Index n) = 0;
  virtual void allreduce_sum(double* data, Index n) = 0;

  /// data[0..bytes) <- root's data[0..bytes), on every rank.
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;

  /// Ends every process of the job with exit code `code`: what a rank that
  /// cannot go on does, so that the others do not wait for it forever.
  [[noreturn]] virtual void abort(int code) = 0;

  /// Rank 0's `bytes` (any size) to every rank.
  void broadcast(std::string& bytes) {
    unsigned long long n = bytes.size();
    broadcast(&n, sizeof n, 0);
    bytes.resize(static_cast<std::size_t>(n));
    if (n > 0) broadcast(&bytes[0], bytes.size(), 0);
  }
};

}  // namespace loom
