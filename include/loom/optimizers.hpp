#pragma once
/// \file optimizers.hpp
/// The optimizers: SGD (momentum, Nesterov), RMSprop, Adam and AdamW with
/// Keras's update rules and defaults, and make_optimizer. One header each
/// under optimizers/: optimizer.hpp (Optimizer<T> and what every optimizer
/// takes: the learning rate or its schedule, weight decay, gradient
/// clipping), sgd.hpp, rmsprop.hpp, adam.hpp (Adam and AdamW) and
/// make_optimizer.hpp. This header includes them all.

#include "optimizers/adam.hpp"
#include "optimizers/make_optimizer.hpp"
#include "optimizers/optimizer.hpp"
#include "optimizers/rmsprop.hpp"
#include "optimizers/sgd.hpp"
