"""The seed notebook's experiment in real Keras (TensorFlow backend), run as
the notebook runs it, writing the results.json schema loom's experiment writes
so that bench/seed_table.py puts Keras, the PyTorch twin and loom side by side.

    $(scripts/reference-env) bench/reference/keras_notebook.py --models 2 4 --seed 120695 \\
        [--seeds K] [--run R] [--epochs E] [--threads T] [--data-dir DIR] --out DIR

The notebook's code as it is: its split (the first 48,000 training images to
train, the last 12,000 to validate), CNN_FMNST_model() built with
keras.Sequential, compile(loss=..., metrics=['accuracy']) with the default
optimizer (RMSprop(0.001)), fit(..., epochs=20/20/20/10, verbose=...,
validation_data=...) with fit's defaults (batch 32, shuffle=True), and the
last epoch's weights evaluated on the test images. Model 1 and 3 get one-hot
labels and categorical cross-entropy, 2 and 4 integer labels and sparse;
models 1 and 2 train on pixels / 255 (float64 in numpy, as in the notebook),
3 and 4 on the raw 0..255 pixels.

Seeds follow loom's experiment: model i of run r uses seed + 100 r + i,
through keras.utils.set_random_seed (Python, numpy and the backend). Each
(model, run) is written to its own DIR/model<i>-seed<s>.json as soon as it
ends, and a run whose file exists is skipped, so an interrupted batch of seeds
resumes where it stopped. The data is Debian's dataset-fashion-mnist (the
same bytes keras.datasets.fashion_mnist downloads).
"""
import argparse
import gzip
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

NOTEBOOK = {1: 0.9205, 2: 0.9163, 3: 0.9149, 4: 0.9169}
EPOCHS = {1: 20, 2: 20, 3: 20, 4: 10}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
DESCRIPTION = {1: "normalized pixels, one-hot labels, categorical cross-entropy",
               2: "normalized pixels, integer labels, sparse categorical cross-entropy",
               3: "raw pixels, one-hot labels, categorical cross-entropy",
               4: "raw pixels, integer labels, sparse categorical cross-entropy"}


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_data(data_dir):
    def find(stem):
        for name in (stem + ".gz", stem):
            if os.path.exists(os.path.join(data_dir, name)):
                return os.path.join(data_dir, name)
        sys.exit(f"keras_notebook: no {stem}(.gz) in {data_dir} (Debian's dataset-fashion-mnist installs it)")
    X, Y = read_idx(find("train-images-idx3-ubyte")), read_idx(find("train-labels-idx1-ubyte"))
    x_test, y_test = read_idx(find("t10k-images-idx3-ubyte")), read_idx(find("t10k-labels-idx1-ubyte"))
    x_train, x_valid, y_train, y_valid = X[:48000], X[48000:], Y[:48000], Y[48000:]
    return tuple(a.reshape(-1, 28, 28, 1) for a in (x_train, x_valid, x_test)) + (y_train, y_valid, y_test)


def cnn_fmnst_model(keras, num_categories=10):
    """The notebook's CNN_FMNST_model(), line for line (Keras 3 spells the input as an Input)."""
    from keras.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, Input, MaxPool2D
    model = keras.Sequential()
    model.add(Input(shape=(28, 28, 1)))
    model.add(Conv2D(75, (3, 3), strides=1, padding="same", activation="relu"))
    model.add(BatchNormalization())
    model.add(MaxPool2D((2, 2), strides=2, padding="same"))
    model.add(Conv2D(50, (3, 3), strides=1, padding="same", activation="relu"))
    model.add(Dropout(0.2))
    model.add(BatchNormalization())
    model.add(MaxPool2D((2, 2), strides=2, padding="same"))
    model.add(Conv2D(25, (3, 3), strides=1, padding="same", activation="relu"))
    model.add(BatchNormalization())
    model.add(MaxPool2D((2, 2), strides=2, padding="same"))
    model.add(Flatten())
    model.add(Dense(units=512, activation="relu"))
    model.add(Dropout(0.3))
    model.add(Dense(units=num_categories, activation="softmax"))
    return model


def per_class(truth, predicted):
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    rows = []
    for c in range(10):
        tp = int(confusion[c, c])
        images, called = int(confusion[c].sum()), int(confusion[:, c].sum())
        precision = tp / called if called else 0.0
        recall = tp / images if images else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": CLASSES[c], "images": images, "predicted": called, "missed": images - tp,
                     "false_alarms": called - tp, "precision": precision, "recall": recall, "f1": f1})
    return rows, confusion.tolist()


def volatility(val, last=10):
    tail = val[-(last + 1):]
    steps = [abs(b - a) for a, b in zip(tail, tail[1:])]
    return 100 * sum(steps) / len(steps) if steps else 0.0


def run_one(keras, data, model_number, seed, epochs, verbose):
    x_train, x_valid, x_test, y_train, y_valid, y_test = data
    keras.utils.set_random_seed(seed)
    normalized, one_hot = model_number in (1, 2), model_number in (1, 3)
    if normalized:  # the notebook's norm_tr = x_train / 255: float64
        x_train, x_valid, x_test = x_train / 255, x_valid / 255, x_test / 255
    if one_hot:
        y_tr, y_va, y_te = (keras.utils.to_categorical(y, 10) for y in (y_train, y_valid, y_test))
    else:
        y_tr, y_va, y_te = y_train, y_valid, y_test
    loss = "categorical_crossentropy" if one_hot else "sparse_categorical_crossentropy"
    model = cnn_fmnst_model(keras)
    model.compile(loss=loss, metrics=["accuracy"])

    class BestValidation(keras.callbacks.Callback):  # the best-validation epoch's weights, kept in memory
        best, epoch, weights = -1.0, 0, None

        def on_epoch_end(self, epoch, logs=None):
            if logs["val_accuracy"] > self.best:
                self.best, self.epoch, self.weights = logs["val_accuracy"], epoch + 1, self.model.get_weights()

    best = BestValidation()
    start = time.perf_counter()
    history = model.fit(x_train, y_tr, epochs=epochs, verbose=verbose, validation_data=(x_valid, y_va),
                        callbacks=[best])
    train_seconds = time.perf_counter() - start
    test_loss, test_accuracy = model.evaluate(x_test, y_te, verbose=0)
    predicted = np.argmax(model.predict(x_test, verbose=0), axis=1)
    rows, confusion = per_class(y_test.astype(np.int64), predicted)
    last = model.get_weights()
    model.set_weights(best.weights)
    best_loss, best_accuracy = model.evaluate(x_test, y_te, verbose=0)
    model.set_weights(last)
    h = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    return {"model": model_number, "seed": seed, "epochs": epochs, "description": DESCRIPTION[model_number],
            "normalized": normalized, "one_hot": one_hot, "loss_function": loss,
            "notebook_test_accuracy": NOTEBOOK[model_number], "test_accuracy": float(test_accuracy),
            "test_loss": float(test_loss), "best_val_epoch": best.epoch,
            "best_val_epoch_test_accuracy": float(best_accuracy), "best_val_epoch_test_loss": float(best_loss),
            "volatility": volatility(h["val_accuracy"]), "train_seconds": train_seconds, "history": h,
            "per_class": rows, "confusion_matrix": confusion}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4])
    p.add_argument("--seed", type=int, default=120695)
    p.add_argument("--seeds", type=int, default=1, help="runs per model (run r: seed + 100 r + model)")
    p.add_argument("--run", type=int, default=0, help="first run index")
    p.add_argument("--epochs", type=int, help="epochs for every model (default: the notebook's 20, 20, 20, 10)")
    p.add_argument("--threads", type=int, help="TensorFlow's intra- and inter-op threads (default: its own)")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--verbose", type=int, default=2)
    p.add_argument("--out", required=True, help="folder for model<i>-seed<s>.json files")
    args = p.parse_args()

    import keras
    import tensorflow as tf
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    data = load_data(args.data_dir)
    for r in range(args.run, args.run + args.seeds):
        for m in args.models:
            seed = args.seed + 100 * r + m
            path = os.path.join(args.out, f"model{m}-seed{seed}.json")
            if os.path.exists(path):
                print(f"keras_notebook: {path} exists, skipped", flush=True)
                continue
            print(f"keras_notebook: model {m}, seed {seed}", flush=True)
            result = run_one(keras, data, m, seed, args.epochs or EPOCHS[m], args.verbose)
            result["run"] = r
            doc = {"framework": f"keras {keras.__version__}, tensorflow {tf.__version__}",
                   "backend": keras.backend.backend(), "python": platform.python_version(),
                   "threads": args.threads or "TensorFlow's default", "cpus": os.cpu_count(), "batch_size": 32,
                   "recipe": "notebook", "command": " ".join(sys.argv), "models": [result]}
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=1)
            os.replace(tmp, path)
            print(f"keras_notebook: model {m}, seed {seed}: test accuracy {100 * result['test_accuracy']:.2f} % "
                  f"in {result['train_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
