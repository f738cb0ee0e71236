"""loom's residual network (examples/resnet_model.hpp) in real Keras 3
(TensorFlow backend), trained with the same recipe as
`scripts/run-experiment --model resnet`: the peer issue 36 compares loom with.

    $(scripts/reference-env) bench/reference/keras_resnet.py --out DIR [--seed 120695] [--seeds K] [--run R]
        [--epochs 20] [--width 32] [--translation 0.1] [--threads 2] [--data-dir DIR]
    $(scripts/reference-env) bench/reference/keras_resnet.py --speed [--steps 100] [--repeats 3] [--threads 2]

The network is the one resnet_model.hpp's comment writes in Keras: RandomFlip
("horizontal") and RandomTranslation(0.1, 0.1) in front (training only), a
3x3 Conv2D stem, three stages of two residual blocks (32, 64, 128 channels;
each block two 3x3 Conv2D without bias, each followed by
BatchNormalization, a 1x1 projection where the shape changes, Add, ReLU),
GlobalAveragePooling2D and a softmax Dense. Keras's defaults throughout
(glorot_uniform kernels, BatchNormalization momentum 0.99 and epsilon 1e-3),
as loom's layers have them.

The recipe is loom's improved one (examples/recipe.hpp): AdamW (weight decay
0.04 on every variable, Keras's default), its learning rate a CosineDecay from
0 with a linear warmup to 2e-3 over the first epoch, then a cosine to 0 over
the rest; cross-entropy with label smoothing 0.1 (Keras's sparse loss has no
label smoothing, so the labels go in one-hot: the same loss); batch 32,
reshuffled every epoch; all 60,000 training images (the recipe's refit, no
validation split); the last epoch's weights scored on the 10,000 test images.
The pixels are scaled by 1/255 (model 2 of the notebook).

Seeds follow loom's experiment: run r uses seed + 100 r + 2 (the notebook's
model 2), through keras.utils.set_random_seed. Each run is written to
DIR/resnet-seed<s>.json as soon as it ends (results.json's schema, as
keras_notebook.py writes it), and a run whose file exists is skipped.

--speed times training steps on random data instead, as
`notebook_speed --model resnet` does for loom: --steps steps of batch 32 per
repeat after one untimed repeat, and prints the median and the best in
images per second (one JSON line with --json).
"""
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_notebook import load_data, per_class  # noqa: E402  (this folder)
from resnet_common import parse_args, report_speed, run_seeds  # noqa: E402


def resnet(keras, width=32, translation=0.1, num_categories=10):
    """examples/resnet_model.hpp in Keras, line for line."""
    from keras import layers

    def conv(filters, kernel, stride):
        return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)

    x = inputs = keras.Input((28, 28, 1))
    x = layers.RandomFlip("horizontal")(x)
    if translation > 0:
        x = layers.RandomTranslation(translation, translation)(x)
    x = layers.ReLU()(layers.BatchNormalization()(conv(width, 3, 1)(x)))
    filters = width
    for stage in range(3):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = layers.ReLU()(layers.BatchNormalization()(conv(filters, 3, stride)(x)))
            y = layers.BatchNormalization()(conv(filters, 3, 1)(y))
            shortcut = x
            if stride != 1 or x.shape[-1] != filters:
                shortcut = layers.BatchNormalization()(conv(filters, 1, stride)(x))
            x = layers.ReLU()(layers.Add()([shortcut, y]))
        filters *= 2
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_categories, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet")


def compile_recipe(keras, model, steps_per_epoch, epochs):
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, steps_per_epoch * (epochs - 1)), alpha=0.0,
        warmup_target=2e-3, warmup_steps=steps_per_epoch)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.04),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1), metrics=["accuracy"])


def run_one(keras, args, seed):
    x_train, x_valid, x_test, y_train, y_valid, y_test = load_data(args.data_dir)
    x = np.concatenate([x_train, x_valid]).astype(np.float32) / np.float32(255)  # the refit: all 60,000
    y = keras.utils.to_categorical(np.concatenate([y_train, y_valid]), 10)
    x_test = x_test.astype(np.float32) / np.float32(255)
    y_te = keras.utils.to_categorical(y_test, 10)
    keras.utils.set_random_seed(seed)
    model = resnet(keras, args.width, args.translation)
    steps = (len(x) + 31) // 32
    compile_recipe(keras, model, steps, args.epochs)

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self.t0 = [], 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.t0)

    clock = EpochClock()
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=32, epochs=args.epochs, shuffle=True, verbose=args.verbose,
                        callbacks=[clock])
    train_seconds = time.perf_counter() - start
    test_loss, test_accuracy = model.evaluate(x_test, y_te, verbose=0)
    predicted = np.argmax(model.predict(x_test, verbose=0), axis=1)
    rows, confusion = per_class(y_test.astype(np.int64), predicted)
    h = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    return {"test_accuracy": float(test_accuracy), "test_loss": float(test_loss), "train_seconds": train_seconds,
            "epoch_seconds": clock.seconds, "train_images_per_s": len(x) * args.epochs / train_seconds,
            "history": h, "per_class": rows, "confusion_matrix": confusion, "parameters": int(model.count_params())}


def speed(keras, args):
    keras.utils.set_random_seed(args.seed)
    model = resnet(keras, args.width, args.translation)
    compile_recipe(keras, model, args.steps, 2)
    rng = np.random.default_rng(args.seed + 1)
    n = 32 * args.steps
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, n), 10)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)  # warm-up: the graph traced and built
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        rates.append(n / (time.perf_counter() - t0))
    report_speed(args, rates, f"keras {keras.__version__} ({keras.backend.backend()})",
                 {"framework": "keras", "version": keras.__version__, "backend": keras.backend.backend()})


def main():
    args = parse_args(__doc__)
    import keras
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.speed:
        speed(keras, args)
        return
    run_seeds(args, "keras_resnet", f"keras {keras.__version__} ({keras.backend.backend()}), tensorflow {tf.__version__}",
              lambda seed: run_one(keras, args, seed))


if __name__ == "__main__":
    main()
