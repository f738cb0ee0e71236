#pragma once
/// \file augmentation.hpp
/// Image augmentation layers, Keras's preprocessing layers of the same
/// names: `RandomFlip`, `RandomTranslation`, `RandomCrop`, `RandomErasing`,
/// and the plain `ZeroPadding2D` that goes before a RandomCrop. Inputs are
/// NHWC images.
///
/// The random layers change their input only in `Mode::Train`. In
/// inference RandomFlip, RandomTranslation and RandomErasing return their input itself
/// (no copy), and RandomCrop takes the central window, so ZeroPadding2D(p)
/// followed by RandomCrop of the unpadded size is the identity in inference.
/// (Keras's RandomCrop resizes in inference instead; see docs/keras-compat.md.)
///
/// Randomness is the layer's own seeded stream, as Dropout's: each training
/// forward draws one key, and sample b's draws are SplitMix64 values of
/// (key, b), so they depend neither on the thread count nor on the other
/// samples, and a saved model resumes them bit for bit. Samples are split
/// across threads; no step allocates once the batch size is steady.
/// Backward is exact (each layer is linear in its input for fixed draws), so
/// the layers may sit anywhere in a model.
///
/// This header includes one header per layer: random_flip.hpp,
/// random_translation.hpp, random_crop.hpp, random_erasing.hpp and
/// zero_padding2d.hpp; the random layers' common base is in
/// random_augmentation.hpp.

#include "random_augmentation.hpp"
#include "random_crop.hpp"
#include "random_erasing.hpp"
#include "random_flip.hpp"
#include "random_translation.hpp"
#include "zero_padding2d.hpp"
