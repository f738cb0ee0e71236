#!/usr/bin/env python3
"""Keras model files written by real Keras, for loom's importer check.

    make_keras_corpus.py OUT_DIR

Run with the pinned reference environment's python (scripts/reference-env:
Keras 3 on TensorFlow, tf-keras 2 as `tf_keras`). Writes into OUT_DIR, for
every case below, the files of the formats it names:

    NAME.k3.keras    Keras 3, model.save(".keras")
    NAME.k3.h5       Keras 3, model.save(".h5") (the legacy HDF5 format)
    NAME.tfk2.h5     tf-keras 2, model.save(".h5")

Beside each file a loom must read, `FILE.npy`: Keras's own `model.predict`
(float32) on the first COUNT Fashion-MNIST test images, fed as keras_tool
predict feeds them (pixels / 255 in float32, or 0..255 with `raw`), in the
model's input shape. Weights are not Keras's initial ones: kernels, biases
and BatchNormalization's four vectors are drawn at random (moving variance
positive), so that a weight read into the wrong place shows. Compiled cases
take two training steps (batch 16), so that the optimizer has state.

Cases loom must refuse name the word loom's one-line refusal must contain
(a layer class, an activation, an option).

`corpus.json` lists every file with what the check compares it with:
the predictions, and for compiled files what Keras compiled (loss, its
settings, the optimizer's class and get_config(), its iteration count).
"""

import gzip
import json
import os
import struct
import sys
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

DATA = os.environ.get("LOOM_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
IMAGES = os.path.join(DATA, "t10k-images-idx3-ubyte.gz")
LABELS = os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")
COUNT = 100  # images each prediction covers
TRAIN = 32  # images of the two training steps

K3, H5, TFK2 = "k3.keras", "k3.h5", "tfk2.h5"
ALL = (K3, H5, TFK2)
KERAS3 = (K3, H5)


def read_idx(path):
    """The array of a gzipped IDX file (uint8 data)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, kind, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 0x08:
        sys.exit(f"make_keras_corpus: {path} is not an IDX file of bytes")
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


# ---------------------------------------------------------------- the cases

CASES = []


def case(name, formats=ALL, compile=None, raw=False, refuse=None, include_optimizer=True, tolerance=1e-5,
         fresh_optimizer=False, note=None):
    """Registers a builder `build(k)` (k: the keras or tf_keras module) of a
    model. `compile(k)` gives compile()'s keyword arguments; `refuse` the word
    loom's refusal must name; `tolerance` the largest |loom - Keras| allowed;
    `fresh_optimizer`: loom is expected not to take Keras's optimizer state;
    `note`: why the case is as it is, printed beside its result."""

    def register(build):
        CASES.append(dict(name=name, build=build, formats=formats, compile=compile, raw=raw, refuse=refuse,
                          include_optimizer=include_optimizer, tolerance=tolerance, fresh_optimizer=fresh_optimizer,
                          note=note))
        return build

    return register


def image_input(k):
    return k.Input((28, 28, 1))


def small_cnn(k, last="softmax"):
    """A small model for the compiled cases: conv, BatchNormalization, pool, dense."""
    L = k.layers
    return k.Sequential([image_input(k), L.Conv2D(4, 3, activation="relu"), L.BatchNormalization(),
                         L.MaxPooling2D(), L.Flatten(), L.Dense(10, activation=last)])


# Layers, their options, activations and paddings.


@case("conv_options")
def _(k):
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(6, (3, 5), strides=(2, 1), padding="same", activation="relu", name="conv_a"),
        L.Conv2D(5, 3, padding="valid", use_bias=False),
        L.Activation("relu"),
        L.Conv2D(4, 2, strides=2, activation="linear"),
        L.Conv2D(3, (1, 3), strides=(1, 2), padding="same"),
        L.Flatten(),
        L.Dense(10, activation="softmax"),
    ])


@case("pooling")
def _(k):
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(4, 3, padding="same", activation="relu"),
        L.MaxPooling2D(),
        L.Conv2D(6, 3),
        L.MaxPool2D(3, strides=2, padding="same"),
        L.MaxPooling2D((2, 3), strides=(1, 2)),
        L.Flatten(),
        L.Dense(10, activation="softmax"),
    ])


@case("batch_normalization")
def _(k):
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(4, 3),
        L.BatchNormalization(),
        L.ReLU(),
        L.Conv2D(4, 3),
        L.BatchNormalization(center=False),
        L.Conv2D(4, 3, strides=2),
        L.BatchNormalization(scale=False, epsilon=0.01, momentum=0.9),
        L.Conv2D(4, 3),
        L.BatchNormalization(center=False, scale=False),
        L.Flatten(),
        L.Dense(16),
        L.BatchNormalization(),
        L.Activation("relu"),
        L.Dense(10),
        L.Softmax(),
    ])


@case("flat_input_logits")
def _(k):
    L = k.layers
    return k.Sequential([
        k.Input((784,)),
        L.Dense(32, activation="relu"),
        L.Dropout(0.3),
        L.Dense(16, use_bias=False),
        L.BatchNormalization(),
        L.Activation("relu"),
        L.Dense(10, activation="linear"),
    ])


@case("padding_and_augmentation")
def _(k):
    L = k.layers
    augment = [L.RandomFlip("horizontal", seed=3), L.RandomTranslation(0.1, (-0.2, 0.1), fill_mode="constant")]
    if hasattr(L, "RandomErasing"):  # Keras 3 only
        augment.append(L.RandomErasing(factor=0.5, scale=(0.02, 0.2), value_range=(0, 1)))
    return k.Sequential([
        image_input(k),
        *augment,
        L.ZeroPadding2D(2),
        L.Conv2D(4, 5, activation="relu"),
        L.ZeroPadding2D((1, 2)),
        L.Conv2D(4, 3),
        L.ZeroPadding2D(((0, 1), (2, 0))),
        L.MaxPooling2D(padding="same"),
        L.Flatten(),
        L.Dense(10, activation="softmax"),
    ])


@case("shape_layers")
def _(k):
    """Rescaling by one number and per channel, Cropping2D in its three forms, Permute, Reshape, Identity."""
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Rescaling(2.0, offset=-1.0),
        L.Cropping2D(((1, 3), (2, 0))),  # 24 x 26
        L.Conv2D(4, 3, strides=2, activation="relu"),  # 11 x 12 x 4
        L.Rescaling([0.5, 1.0, 2.0, -1.0], offset=[0.0, 0.1, -0.1, 0.2]),
        L.Cropping2D((1, 0)),  # 9 x 12
        L.Cropping2D(1),  # 7 x 10
        L.Permute((2, 1, 3)),  # 10 x 7 x 4
        L.Reshape((10, -1)),  # 10 x 28
        L.Permute((2, 1)),  # 28 x 10
        L.Identity(),
        L.Reshape((7, 4, 10)),
        L.Conv2D(3, 3, activation="relu"),  # 5 x 2 x 3
        L.Flatten(),
        L.Dense(10, activation="softmax"),
    ])


@case("activations")
def _(k):
    L = k.layers
    if k.__name__ == "tf_keras":  # tf.nn functions are saved as {"class_name": "function", "config": "softmax_v2"}
        import tensorflow as tf

        relu, softmax = tf.nn.relu, tf.nn.softmax
    else:
        relu, softmax = k.activations.relu, k.activations.softmax
    return k.Sequential([
        image_input(k),
        L.Conv2D(4, 3, activation=relu),
        L.Conv2D(4, 3, activation=None),
        L.Activation("softmax"),
        L.Activation("linear"),
        L.Flatten(),
        L.Dense(12, activation="relu"),
        L.Dense(10, activation=softmax),
    ])


@case("functional_chain", compile=lambda k: dict(optimizer=k.optimizers.Adam(2e-3), loss="categorical_crossentropy",
                                                 metrics=["accuracy"]))
def _(k):
    L = k.layers
    x = inputs = image_input(k)
    x = L.Conv2D(4, 3, activation="relu")(x)
    x = L.BatchNormalization()(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    outputs = L.Dense(10, activation="softmax")(x)
    return k.Model(inputs, outputs, name="chain")


@case("regularized", compile=lambda k: dict(optimizer="sgd", loss="sparse_categorical_crossentropy"))
def _(k):
    """Every weight regularizer loom reads (L1, L2, L1L2 on Conv2D, BatchNormalization, LayerNormalization
    and Dense); constraints and initializers, which loom ignores."""
    L, R = k.layers, k.regularizers
    return k.Sequential([
        image_input(k),
        L.Conv2D(4, 3, kernel_regularizer=R.L2(1e-3), bias_regularizer=R.L1(1e-4),
                 kernel_constraint=k.constraints.MaxNorm(2.0), kernel_initializer="he_normal"),
        L.BatchNormalization(beta_regularizer=R.L2(1e-4), gamma_regularizer=R.L1L2(1e-4, 1e-3),
                             gamma_constraint=k.constraints.NonNeg()),
        L.Flatten(),
        L.LayerNormalization(gamma_regularizer=R.L1(1e-4), beta_regularizer=R.L2(1e-3)),
        L.Dense(10, activation="softmax", kernel_regularizer=R.L1L2(1e-4, 1e-4), bias_regularizer=R.L2(1e-3)),
    ], name="regularized_net")


@case("mixed_precision", tolerance=1e-3, note="Keras computes it in float16, loom in float32: within 1e-3")
def _(k):
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(4, 3, activation="relu", dtype="mixed_float16"),
        L.BatchNormalization(dtype="mixed_float16"),
        L.Flatten(dtype="mixed_float16"),
        L.Dense(10, activation="softmax", dtype="float32"),
    ])


# A frozen layer: Keras keeps optimizer state for the trainable variables only. loom trains
# every layer (docs/keras.md), so that state does not fit its optimizer, which starts fresh.
@case("frozen_layer", compile=lambda k: dict(optimizer=k.optimizers.Adam(), loss="categorical_crossentropy"),
      fresh_optimizer=True, note="a frozen layer: loom trains every layer, its optimizer starts fresh")
def _(k):
    model = small_cnn(k)
    model.layers[0].trainable = False
    return model


# The notebook's model (docs/keras-compat.md): compiled with Keras's default optimizer.


def notebook(k):
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(8, 3, padding="same", activation="relu"), L.BatchNormalization(),
        L.MaxPool2D((2, 2), strides=2, padding="same"),
        L.Conv2D(8, 3, padding="same", activation="relu"), L.Dropout(0.2), L.BatchNormalization(),
        L.MaxPool2D((2, 2), strides=2, padding="same"),
        L.Conv2D(8, 3, padding="same", activation="relu"), L.BatchNormalization(),
        L.MaxPool2D((2, 2), strides=2, padding="same"),
        L.Flatten(), L.Dense(32, activation="relu"), L.Dropout(0.3), L.Dense(10, activation="softmax"),
    ])


case("notebook", compile=lambda k: dict(loss="categorical_crossentropy", metrics=["accuracy"]))(notebook)
case("notebook_raw_pixels", raw=True,
     compile=lambda k: dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"]))(notebook)

# Optimizers, losses, schedules and clipping, on one small model.


def compiled(name, compile, formats=ALL, last="softmax", **options):
    case(name, formats=formats, compile=compile, **options)(lambda k: small_cnn(k, last))


compiled("sgd", lambda k: dict(optimizer=k.optimizers.SGD(), loss="categorical_crossentropy"))
compiled("sgd_momentum_clipnorm",
         lambda k: dict(optimizer=k.optimizers.SGD(0.05, momentum=0.9, clipnorm=1.0), loss="categorical_crossentropy"))
compiled("sgd_nesterov_clipvalue",
         lambda k: dict(optimizer=k.optimizers.SGD(0.02, momentum=0.8, nesterov=True, clipvalue=0.5),
                        loss="sparse_categorical_crossentropy", metrics=["acc"]))
compiled("rmsprop_global_clipnorm",
         lambda k: dict(optimizer=k.optimizers.RMSprop(0.002, rho=0.8, epsilon=1e-6, global_clipnorm=2.0),
                        loss="categorical_crossentropy"))
compiled("adam_label_smoothing",
         lambda k: dict(optimizer=k.optimizers.Adam(3e-4, beta_1=0.85, beta_2=0.99, epsilon=1e-6),
                        loss=k.losses.CategoricalCrossentropy(label_smoothing=0.1), metrics=["accuracy"]))
compiled("adamw_sparse_logits",
         lambda k: dict(optimizer=k.optimizers.AdamW(1e-3, weight_decay=0.01),
                        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True)), last="linear")
compiled("exponential_decay",
         lambda k: dict(optimizer=k.optimizers.Adam(k.optimizers.schedules.ExponentialDecay(
             1e-3, decay_steps=100, decay_rate=0.9, staircase=True)),
             loss=k.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.05)), last="linear")
compiled("piecewise_constant_decay",
         lambda k: dict(optimizer=k.optimizers.SGD(k.optimizers.schedules.PiecewiseConstantDecay(
             [1, 10], [0.1, 0.05, 0.01]), momentum=0.5), loss="sparse_categorical_crossentropy"))
compiled("cosine_decay_warmup",
         lambda k: dict(optimizer=k.optimizers.AdamW(k.optimizers.schedules.CosineDecay(
             1e-3, decay_steps=1000, alpha=0.1, warmup_target=2e-3, warmup_steps=10), weight_decay=0.02),
             loss="categorical_crossentropy"))
compiled("h5_without_optimizer", lambda k: dict(optimizer=k.optimizers.Adam(), loss="categorical_crossentropy"),
         formats=(H5, TFK2), include_optimizer=False)
# tf-keras 2's legacy optimizers (is_legacy_optimizer: RMSprop keeps epsilon outside the square root).
compiled("legacy_rmsprop", lambda k: dict(optimizer=k.optimizers.legacy.RMSprop(0.002),
                                          loss="categorical_crossentropy"), formats=(TFK2,))
compiled("legacy_adam", lambda k: dict(optimizer=k.optimizers.legacy.Adam(1e-3, beta_1=0.8),
                                       loss="sparse_categorical_crossentropy"), formats=(TFK2,))
compiled("legacy_sgd_momentum", lambda k: dict(optimizer=k.optimizers.legacy.SGD(0.01, momentum=0.9, nesterov=True),
                                               loss="categorical_crossentropy"), formats=(TFK2,))


# What loom must refuse, each naming the word its refusal must contain.


def refused(name, word, layers=None, formats=KERAS3, compile=None, model=None):
    """A model of `layers(k)` after a 28x28x1 input (or `model(k)`), which loom refuses naming `word`."""
    build = model or (lambda k: k.Sequential([image_input(k), *layers(k)]))
    case(name, formats=formats, compile=compile, refuse=word)(build)


def residual(k):
    L = k.layers
    inputs = image_input(k)
    x = L.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    y = L.Conv2D(4, 3, padding="same")(x)
    x = L.Add()([x, y])
    x = L.Flatten()(x)
    return k.Model(inputs, L.Dense(10, activation="softmax")(x))


def augmentation_block(k):
    L = k.layers
    augment = k.Sequential([L.RandomFlip("horizontal"), L.RandomTranslation(0.1, 0.1)], name="augmentation")
    return k.Sequential([image_input(k), augment, L.Conv2D(4, 3), L.Flatten(), L.Dense(10)])


def head(k):
    return [k.layers.Flatten(), k.layers.Dense(10, activation="softmax")]


case("residual_add")(residual)


@case("graph_merges")
def _(k):
    """Branches joined by every merge layer, a layer called twice, global and average pooling."""
    L = k.layers
    inputs = image_input(k)
    x = L.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    y = L.BatchNormalization()(L.Conv2D(6, 3, padding="same")(x))
    x = L.ReLU()(L.Add()([x, y]))
    a = L.Conv2D(4, 3, padding="same")(x)
    b = L.Conv2D(4, 1)(x)
    x = L.Concatenate()([L.Maximum()([a, b]), L.Multiply()([a, b]), L.Subtract()([a, b])])
    x = L.AveragePooling2D(3, strides=2, padding="same")(x)
    g = L.GlobalMaxPooling2D()(x)
    x = L.Flatten()(L.MaxPooling2D()(x))
    shared = L.Dense(12, activation="relu")
    h = L.Average()([shared(L.Dense(12)(x)), shared(L.Dense(12)(g))])
    return k.Model(inputs, L.Dense(10, activation="softmax")(L.Concatenate(axis=1)([h, g])))


case("nested_augmentation", formats=ALL)(augmentation_block)


@case("nested_block", formats=ALL)
def _(k):
    """A Sequential with weights nested in a model: its variables under its own path."""
    L = k.layers
    block = k.Sequential([k.Input((14, 14, 4)), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
                          L.Conv2D(6, 3)], name="block")
    return k.Sequential([image_input(k), L.Conv2D(4, 3, strides=2, padding="same"), block, L.Flatten(),
                         L.Dense(10, activation="softmax")])
case("global_average_pooling")(lambda k: k.Sequential([image_input(k), k.layers.Conv2D(4, 3),
                                                       k.layers.GlobalAveragePooling2D(keepdims=True),
                                                       k.layers.Flatten(), k.layers.Dense(10)]))


@case("depthwise_separable")
def _(k):
    """DepthwiseConv2D with a depth multiplier, strides, dilation; SeparableConv2D; a dilated Conv2D."""
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(6, 3, dilation_rate=2, padding="same", activation="relu"),
        L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same", activation="relu6"),
        L.DepthwiseConv2D((3, 2), dilation_rate=(2, 1), use_bias=False),
        L.SeparableConv2D(8, 3, depth_multiplier=2, padding="same", activation="relu"),
        L.SeparableConv2D(5, (2, 3), strides=2, dilation_rate=1, use_bias=False),
        L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax"),
    ])


@case("grouped_conv")
def _(k):
    """Conv2D with groups: same and valid, strided, dilated, without a bias."""
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.Conv2D(8, 3, groups=4, padding="same", activation="relu"),
        L.Conv2D(6, (3, 2), groups=2, strides=2, use_bias=False),
        L.Conv2D(6, 3, groups=3, dilation_rate=2, padding="same"),
        L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax"),
    ])


@case("conv_transpose")
def _(k):
    """Conv2DTranspose valid and same, strided, dilated, with and without a bias."""
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(4, 3, strides=2),
        L.Conv2DTranspose(3, 3, strides=2, activation="relu"),
        L.Conv2DTranspose(4, (2, 3), strides=(3, 1), padding="same", use_bias=False),
        L.Conv2DTranspose(2, 3, dilation_rate=2, activation="tanh"),
        L.GlobalMaxPooling2D(), L.Dense(10, activation="softmax"),
    ])


@case("conv_transpose_output_padding")
def _(k):
    """Conv2DTranspose with an output_padding: valid, same, 0 (which changes the size), per axis."""
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(4, 3, strides=2),                                               # 13x13
        L.Conv2DTranspose(3, 3, strides=2, output_padding=1, activation="relu"),  # 28x28
        L.Conv2DTranspose(3, 3, strides=2, padding="same", output_padding=0),     # 55x55
        L.Conv2D(4, 3, strides=3),                                               # 18x18
        L.Conv2DTranspose(2, (3, 2), strides=(2, 3), padding="same", output_padding=(1, 2), use_bias=False),
        L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax"),
    ])




@case("layer_normalization")
def _(k):
    """LayerNormalization over the last axis, over the last two and the last three (gamma and beta of their
    shape), without center or scale, another epsilon; and on flat features."""
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(4, 3, strides=2, activation="relu"),
        L.LayerNormalization(),
        L.LayerNormalization(axis=[2, 3], center=False, epsilon=0.01),
        L.LayerNormalization(axis=(-3, -2, -1), scale=False),
        L.Flatten(),
        L.Dense(16),
        L.LayerNormalization(epsilon=1e-5),
        L.Dense(10, activation="softmax"),
    ])


refused("layer_normalization_axis", "axis", lambda k: [k.layers.LayerNormalization(axis=1), *head(k)], formats=ALL)
refused("layer_normalization_rms_scaling", "rms_scaling",
        lambda k: [k.layers.LayerNormalization(rms_scaling=True), *head(k)])


@case("activation_functions")
def _(k):
    """Every activation Keras names that loom has, in Conv2D, Dense and
    Activation; hard_sigmoid as the Keras that wrote the file defines it."""
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(4, 3, strides=2, activation="gelu"), L.Conv2D(4, 3, activation="silu"),
        L.Activation("selu"), L.Activation("elu"), L.Activation("softplus"), L.Activation("relu6"),
        L.Conv2D(4, 3, activation="swish"), L.Activation("leaky_relu"), L.Activation("softsign"),
        L.Flatten(),
        L.Dense(24, activation="tanh"), L.Dense(24, activation="sigmoid"), L.Dense(24, activation="hard_sigmoid"),
        L.Dense(10, activation="softmax"),
    ])


@case("activation_layers")
def _(k):
    """LeakyReLU (alpha in tf.keras 2, negative_slope in Keras 3), ELU,
    ReLU's options, PReLU per channel and per element."""
    L = k.layers
    return k.Sequential([
        image_input(k),
        L.Conv2D(4, 3, strides=2), L.LeakyReLU(), L.Conv2D(4, 3), L.ELU(alpha=0.5),
        L.Conv2D(4, 3), L.ReLU(max_value=1.0, negative_slope=0.1, threshold=0.2),
        L.Conv2D(4, 3), L.PReLU(shared_axes=[1, 2]), L.Conv2D(4, 3), L.PReLU(),
        L.Flatten(), L.Dense(10), L.LeakyReLU(0.05), L.Softmax(),
    ])


refused("mish", "mish", lambda k: [k.layers.Flatten(), k.layers.Dense(10, activation="mish")])
refused("prelu_constraint", "alpha_constraint", lambda k: [k.layers.PReLU(alpha_constraint="non_neg"), *head(k)])
refused("channels_first", "channels_first", lambda k: [k.layers.Conv2D(4, 1, data_format="channels_first"),
                                                       *head(k)])
case("average_pooling")(lambda k: k.Sequential([image_input(k), k.layers.AveragePooling2D(2),
                                                k.layers.AveragePooling2D(3, strides=2, padding="same"), *head(k)]))
case("noise_layers", note="SpatialDropout2D and GaussianNoise: the identity in inference")(
    lambda k: k.Sequential([image_input(k), k.layers.Conv2D(4, 3, activation="relu"), k.layers.SpatialDropout2D(0.2),
                            k.layers.SpatialDropout2D(0.5, seed=4), k.layers.GaussianNoise(0.1),
                            k.layers.GaussianNoise(0.3, seed=8), *head(k)]))
refused("spatial_dropout_channels_first", "channels_first",
        lambda k: [k.layers.SpatialDropout2D(0.2, data_format="channels_first"), *head(k)])
refused("activity_regularizer", "activity_regularizer",
        lambda k: [k.layers.Conv2D(4, 3, activity_regularizer=k.regularizers.L2(1e-5)), *head(k)], formats=ALL)
refused("orthogonal_regularizer", "OrthogonalRegularizer",
        lambda k: [k.layers.Flatten(), k.layers.Dense(10, kernel_regularizer=k.regularizers.OrthogonalRegularizer())])
refused("random_rotation", "RandomRotation", lambda k: [k.layers.RandomRotation(0.1), *head(k)], formats=ALL)
refused("random_zoom", "RandomZoom", lambda k: [k.layers.RandomZoom(0.1), *head(k)])
refused("random_crop", "RandomCrop", lambda k: [k.layers.ZeroPadding2D(2), k.layers.RandomCrop(28, 28), *head(k)],
        formats=ALL)
refused("dropout_noise_shape", "noise_shape", lambda k: [k.layers.Dropout(0.2, noise_shape=(None, 1, 1, 1)),
                                                         *head(k)])
refused("batch_normalization_axis", "axis", lambda k: [k.layers.BatchNormalization(axis=1), *head(k)])
refused("batch_normalization_renorm", "renorm", lambda k: [k.layers.BatchNormalization(renorm=True), *head(k)],
        formats=(TFK2,))
refused("dense_on_images", "Dense", lambda k: [k.layers.Dense(4), *head(k)])
refused("dense_lora", "lora_rank", lambda k: [k.layers.Flatten(), k.layers.Dense(10, lora_rank=2)])
refused("conv_lora", "lora_rank", lambda k: [k.layers.Conv2D(4, 3, lora_rank=2), *head(k)])


def quantized(k):
    model = k.Sequential([image_input(k), *head(k)])
    model.quantize("int8")
    return model


refused("quantized_int8", "quantized", model=quantized)


def refused_compile(name, word, compile, formats=KERAS3):
    refused(name, word, lambda k: head(k), formats=formats, compile=compile)


refused_compile("rmsprop_momentum", "momentum",
                lambda k: dict(optimizer=k.optimizers.RMSprop(momentum=0.9), loss="categorical_crossentropy"),
                formats=ALL)
refused_compile("rmsprop_centered", "centered",
                lambda k: dict(optimizer=k.optimizers.RMSprop(centered=True), loss="categorical_crossentropy"))
refused_compile("adam_amsgrad", "amsgrad",
                lambda k: dict(optimizer=k.optimizers.Adam(amsgrad=True), loss="categorical_crossentropy"),
                formats=ALL)
refused_compile("use_ema", "use_ema",
                lambda k: dict(optimizer=k.optimizers.Adam(use_ema=True), loss="categorical_crossentropy"))
refused_compile("loss_scale_factor", "loss_scale_factor",
                lambda k: dict(optimizer=k.optimizers.SGD(loss_scale_factor=128.0), loss="categorical_crossentropy"))
refused_compile("gradient_accumulation", "gradient_accumulation_steps",
                lambda k: dict(optimizer=k.optimizers.SGD(gradient_accumulation_steps=4),
                               loss="categorical_crossentropy"))
refused_compile("legacy_decay", "decay",
                lambda k: dict(optimizer=k.optimizers.legacy.SGD(0.01, decay=1e-4), loss="categorical_crossentropy"),
                formats=(TFK2,))
refused_compile("loss_scale_optimizer", "LossScaleOptimizer",
                lambda k: dict(optimizer=k.mixed_precision.LossScaleOptimizer(k.optimizers.SGD()),
                               loss="categorical_crossentropy"), formats=ALL)
refused_compile("nadam", "Nadam", lambda k: dict(optimizer="nadam", loss="categorical_crossentropy"), formats=ALL)
refused_compile("adagrad", "Adagrad", lambda k: dict(optimizer=k.optimizers.Adagrad(), loss="categorical_crossentropy"))
refused_compile("adamax", "Adamax", lambda k: dict(optimizer=k.optimizers.Adamax(), loss="categorical_crossentropy"))
refused_compile("lion", "Lion", lambda k: dict(optimizer=k.optimizers.Lion(), loss="categorical_crossentropy"))
refused_compile("inverse_time_decay", "InverseTimeDecay",
                lambda k: dict(optimizer=k.optimizers.SGD(k.optimizers.schedules.InverseTimeDecay(0.1, 10, 0.5)),
                               loss="categorical_crossentropy"), formats=ALL)
refused_compile("polynomial_decay", "PolynomialDecay",
                lambda k: dict(optimizer=k.optimizers.SGD(k.optimizers.schedules.PolynomialDecay(0.1, 10)),
                               loss="categorical_crossentropy"))
refused_compile("cosine_decay_restarts", "CosineDecayRestarts",
                lambda k: dict(optimizer=k.optimizers.SGD(k.optimizers.schedules.CosineDecayRestarts(0.1, 10)),
                               loss="categorical_crossentropy"))
refused_compile("binary_crossentropy", "binary_crossentropy",
                lambda k: dict(optimizer="adam", loss="binary_crossentropy"), formats=ALL)
refused_compile("mean_squared_error", "MeanSquaredError",
                lambda k: dict(optimizer="adam", loss=k.losses.MeanSquaredError()))
refused_compile("focal_crossentropy", "CategoricalFocalCrossentropy",
                lambda k: dict(optimizer="adam", loss=k.losses.CategoricalFocalCrossentropy()))
refused_compile("sparse_ignore_class", "ignore_class",
                lambda k: dict(optimizer="adam", loss=k.losses.SparseCategoricalCrossentropy(ignore_class=0)),
                formats=ALL)
refused_compile("loss_reduction_sum", "reduction",
                lambda k: dict(optimizer="adam", loss=k.losses.CategoricalCrossentropy(reduction="sum")),
                formats=ALL)
refused_compile("loss_weights", "loss_weights",
                lambda k: dict(optimizer="adam", loss="categorical_crossentropy", loss_weights=[2.0]), formats=ALL)


# ---------------------------------------------------------------- writing them


def stem(variable):
    """kernel, bias, gamma, ... of a Keras 3 or tf-keras variable."""
    return variable.name.split("/")[-1].split(":")[0]


def randomize(model, rng):
    """Non-trivial weights: every kernel, bias and BatchNormalization vector at random."""
    for variable in model.weights:
        shape, kind = tuple(variable.shape), stem(variable)
        if kind.endswith("kernel"):  # kernel, depthwise_kernel, pointwise_kernel
            fan_in = int(np.prod(shape[:-1]))
            value = rng.uniform(-1, 1, shape) * np.sqrt(3.0 / fan_in)
        elif kind in ("bias", "beta", "moving_mean"):
            value = rng.uniform(-0.3, 0.3, shape)
        elif kind == "gamma":
            value = rng.uniform(0.6, 1.4, shape)
        elif kind == "moving_variance":
            value = rng.uniform(0.4, 2.0, shape)
        elif kind == "alpha":  # PReLU's slopes
            value = rng.uniform(-0.5, 0.5, shape)
        else:
            continue
        variable.assign(value.astype(np.float32))


SPARSE_LOSSES = ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy")
LOSS_CLASSES = {"categorical_crossentropy": "CategoricalCrossentropy",
                "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy"}


def plain(value):
    """get_config() values as JSON: numpy scalars to numbers, nested dicts and lists kept."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "numpy"):
        return plain(value.numpy())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def expected_compile(model, arguments):
    """What Keras compiled: the loss and its settings, the optimizer, its state's step count, the metrics."""
    loss = arguments["loss"]
    if isinstance(loss, str):
        loss_class, loss_config = LOSS_CLASSES.get(loss, loss), {}
    else:
        loss_class, loss_config = type(loss).__name__, loss.get_config()
    optimizer = model.optimizer
    metrics = arguments.get("metrics") or []
    return dict(loss=loss_class, from_logits=bool(loss_config.get("from_logits", False)),
                label_smoothing=float(loss_config.get("label_smoothing", 0.0)),
                optimizer=type(optimizer).__name__, config=plain(optimizer.get_config()),
                legacy_optimizer=".legacy." in type(optimizer).__module__,
                iterations=int(optimizer.iterations.numpy()),
                metrics=["accuracy"] if any("acc" in str(m) for m in metrics) else [])


def write_case(k, c, formats, x, labels, out_dir):
    """Builds, trains (if compiled) and saves one case with module `k` in
    `formats`; returns the corpus entries."""
    k.utils.set_random_seed(1234)
    model = c["build"](k)
    entries = []
    arguments = c["compile"](k) if c["compile"] else None
    if c["refuse"]:
        if arguments:
            model.compile(**arguments)
    else:
        randomize(model, np.random.default_rng(sum(map(ord, c["name"]))))
        inputs = x.reshape((-1, *model.input_shape[1:]))
        if arguments:
            model.compile(**arguments)
            loss = arguments["loss"]
            sparse = (loss if isinstance(loss, str) else type(loss).__name__) in SPARSE_LOSSES
            y = labels[:TRAIN] if sparse else np.eye(10, dtype=np.float32)[labels[:TRAIN]]
            model.fit(inputs[:TRAIN], y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        predictions = model.predict(inputs, batch_size=COUNT, verbose=0).astype(np.float32)
    for fmt in formats:
        file = f"{c['name']}.{fmt}"
        path = os.path.join(out_dir, file)
        if fmt == K3:
            model.save(path)
        else:
            model.save(path, include_optimizer=c["include_optimizer"])
        entry = dict(file=file, writer=f"{k.__name__} {k.__version__}")
        if c["refuse"]:
            entry["refuse"] = c["refuse"]
            entry["compile_refusal"] = arguments is not None
        else:
            np.save(path + ".npy", predictions)
            entry.update(predictions=file + ".npy", raw=c["raw"], tolerance=c["tolerance"])
            if c["note"]:
                entry["note"] = c["note"]
            if arguments:  # without the optimizer, Keras saves no compile config at all
                entry["compile"] = expected_compile(model, arguments) if c["include_optimizer"] else None
                if c["fresh_optimizer"]:
                    entry["compile"]["iterations"] = 0
        entries.append(entry)
    return entries


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    warnings.filterwarnings("ignore")  # the legacy format's and tf-keras's advice
    import absl.logging
    import keras
    import tensorflow as tf
    import tf_keras

    absl.logging.set_verbosity("error")
    tf.get_logger().setLevel("ERROR")

    images = read_idx(IMAGES)[:COUNT].astype(np.float32)
    labels = read_idx(LABELS)[:COUNT].astype(np.int64)
    entries = []
    for c in CASES:
        x = images if c["raw"] else images / np.float32(255)  # as keras_tool predict scales them
        for k, formats in ((keras, [f for f in c["formats"] if f != TFK2]), (tf_keras, [f for f in c["formats"]
                                                                                        if f == TFK2])):
            if formats:
                entries.extend(write_case(k, c, formats, x, labels, out_dir))
    corpus = dict(images=IMAGES, count=COUNT, keras=keras.__version__, tf_keras=tf_keras.__version__, files=entries)
    with open(os.path.join(out_dir, "corpus.json"), "w") as f:
        json.dump(corpus, f, indent=1)
    print(f"make_keras_corpus: {len(entries)} files in {out_dir}")


if __name__ == "__main__":
    main()
