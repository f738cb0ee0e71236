#pragma once
// Ctrl-C asks training to stop after the current batch (a second Ctrl-C
// ends the program at once); the experiment then saves a checkpoint.

#include <atomic>
#include <csignal>

#include <loom/loom.hpp>

namespace loom::examples {

/// Set by SIGINT; fit stops after the batch it is in.
inline std::atomic<bool> interrupted{false};

inline void on_sigint(int) {
  interrupted.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the program
}

}  // namespace loom::examples
