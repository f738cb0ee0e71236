#pragma once
/// \file loom.hpp
/// The umbrella header: everything in loom that needs only Eigen (and OpenMP,
/// when enabled) and the standard library. Headers with other dependencies,
/// such as the gzip IDX reader (zlib), are included on their own.

#include "error.hpp"
#include "initializers.hpp"
#include "layers/activation.hpp"
#include "layers/batch_normalization.hpp"
#include "layers/conv2d.hpp"
#include "layers/dense.hpp"
#include "layers/dropout.hpp"
#include "layers/flatten.hpp"
#include "layers/layer.hpp"
#include "layers/max_pool2d.hpp"
#include "losses.hpp"
#include "metrics.hpp"
#include "config.hpp"
#include "io.hpp"
#include "io/bytes.hpp"
#include "model/callback.hpp"
#include "model/callbacks.hpp"
#include "model/fit_options.hpp"
#include "model/history.hpp"
#include "model/sequential.hpp"
#include "model/summary.hpp"
#include "model/trainer.hpp"
#include "optimizers.hpp"
#include "parallel.hpp"
#include "random.hpp"
#include "registry.hpp"
#include "tensor.hpp"
#include "version.hpp"
