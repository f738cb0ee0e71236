#pragma once
/// \file optimizers/make_optimizer.hpp
/// make_optimizer: an optimizer by name. It includes the built-in
/// optimizers, so that their names are registered.

#include <memory>
#include <string>

#include "../config.hpp"
#include "../registry.hpp"
#include "adam.hpp"
#include "optimizer.hpp"
#include "rmsprop.hpp"
#include "sgd.hpp"

namespace loom {

/// An optimizer by Keras's name, its class name ("RMSprop") or its string
/// alias ("rmsprop"), or any optimizer registered with LOOM_REGISTER, with
/// `config` over Keras's defaults. Throws ConfigError naming those there are.
template <class T>
std::unique_ptr<Optimizer<T>> make_optimizer(const std::string& name, const Config& config = {}) {
  return Registry<Optimizer<T>>::global().create(name, config);
}

}  // namespace loom
