"""Step for step with Keras: the notebook's model, built and saved untrained by
Keras, loaded into loom, and both trained from those same weights on the same
batches in the same order; every weight, every BatchNormalization moving
statistic, every optimizer variable and the loss compared after each step.

    PY tests/reference/step_check.py --tool KERAS_STEPS --work DIR
        [--cases rmsprop,adam,...] [--dtypes float64,float32] [--steps 20] [--batch 32]

Each case is an optimizer, loss and option of compile(); Dropout's rates are
0 here (its masks come from two different random streams). The batches are
the first steps x batch Fashion-MNIST training images, pixels / 255, in
order. Keras takes its steps with train_on_batch; loom's side is
tests/reference/keras_steps.cpp, which loads the same file compiled as Keras
saved it. The difference of a tensor is max |loom - keras| / max |keras|.

float64 must agree within 1e-9 on every tensor after every step. float32 must
agree on the first step's loss within 1e-5; after that its differences are
reported as they grow, beside loom's own float32 against float64 from the
same file (the scale of float32 rounding alone). One line per case and
dtype; exit 1 on a failure.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402

FLOAT64_BOUND = 1e-9
FLOAT32_FIRST_LOSS = 1e-5
DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def cases(keras):
    """name -> (optimizer factory, loss factory, one-hot labels, tf-keras).

    Hyperparameters are exact in float32 (0.875 rather than 0.9, 2**-10
    rather than 1e-3) wherever Keras rounds them to float32 even when
    floatx is float64: Keras 3's ops.cast of a Python float goes through
    tf.convert_to_tensor's float32 (Adam's beta_1 and beta_2 in its bias
    correction, SGD's momentum, clipvalue, the schedules, which compute in
    float32), and tf-keras keeps its legacy optimizers' hyperparameters and
    BatchNormalization's 1 - momentum in float32. With values that float32
    holds exactly, float64 compares the rules, not that rounding.
    """
    o, losses = keras.optimizers, keras.losses
    sparse = (lambda: losses.SparseCategoricalCrossentropy(), False)
    adam = dict(beta_1=0.875, beta_2=1 - 2 ** -10)
    return {
        "rmsprop": (lambda: o.RMSprop(), *sparse, False),
        "rmsprop_legacy": (None, None, False, True),  # tf-keras's legacy RMSprop (TF 2.0-2.10's rule)
        "adam": (lambda: o.Adam(**adam), *sparse, False),
        "adamw": (lambda: o.AdamW(weight_decay=2 ** -4, **adam), *sparse, False),
        "sgd_momentum": (lambda: o.SGD(2 ** -6, momentum=0.875), *sparse, False),
        "sgd_nesterov": (lambda: o.SGD(2 ** -6, momentum=0.875, nesterov=True), *sparse, False),
        "dropout": (lambda: o.RMSprop(), *sparse, False),  # Dropout on, Keras fed loom's masks
        "label_smoothing": (lambda: o.RMSprop(), lambda: losses.CategoricalCrossentropy(label_smoothing=0.1), True,
                            False),
        "schedule": (lambda: o.Adam(o.schedules.ExponentialDecay(2 ** -9, decay_steps=4, decay_rate=0.5,
                                                                 staircase=True), **adam), *sparse, False),
        "clipnorm": (lambda: o.Adam(clipnorm=2 ** -4, **adam), *sparse, False),
        "global_clipnorm": (lambda: o.RMSprop(global_clipnorm=2 ** -3), *sparse, False),
        "clipvalue": (lambda: o.SGD(2 ** -5, momentum=0.875, clipvalue=2 ** -9), *sparse, False),
        "bn_rule": "bn_rule",  # run_bn_rule_case: the moving variance's rule on a small model
        "bn_rule_tf_keras": "bn_rule",
    }


def set_dtype(k, dtype):
    """floatx and the global dtype policy: Keras 3 keeps the policy it made from floatx at its first
    layer, so floatx alone would leave a second model in the first one's dtype."""
    if k.__name__ == "tf_keras":
        k.backend.set_floatx(dtype)
        k.mixed_precision.set_global_policy(dtype)
    else:
        k.config.set_floatx(dtype)
        k.config.set_dtype_policy(dtype)


def notebook_model(k, L, bn_momentum=0.99, rates=(0.0, 0.0), dropout=None):
    """The notebook's CNN_FMNST_model() in Keras `k` with layers module `L`; Dropout's rates 0 unless
    `rates` are given, its class `dropout` (default L.Dropout)."""
    dropout = dropout or L.Dropout
    return k.Sequential([
        L.InputLayer(input_shape=(28, 28, 1)) if hasattr(L, "InputLayer") and k.__name__ == "tf_keras"
        else k.Input(shape=(28, 28, 1)),
        L.Conv2D(75, (3, 3), strides=1, padding="same", activation="relu"), L.BatchNormalization(momentum=bn_momentum),
        L.MaxPool2D((2, 2), strides=2, padding="same"),
        L.Conv2D(50, (3, 3), strides=1, padding="same", activation="relu"), dropout(rates[0]),
        L.BatchNormalization(momentum=bn_momentum), L.MaxPool2D((2, 2), strides=2, padding="same"),
        L.Conv2D(25, (3, 3), strides=1, padding="same", activation="relu"), L.BatchNormalization(momentum=bn_momentum),
        L.MaxPool2D((2, 2), strides=2, padding="same"), L.Flatten(), L.Dense(512, activation="relu"),
        dropout(rates[1]), L.Dense(10, activation="softmax"),
    ])


MASKS = {}  # id of a ReplayDropout layer -> tf.Variable holding the keep mask of the step about to run (outside Keras's tracking)


def replay_dropout(keras):
    """Keras's Dropout fed loom's masks: in training x * (1 / (1 - rate)) * keep, TensorFlow's dropout
    arithmetic (scale first, then the mask), with the mask loom's Dropout draws for the same step."""
    import tensorflow as tf

    class ReplayDropout(keras.layers.Dropout):
        def call(self, inputs, training=False):
            if not training or self.rate == 0:
                return inputs
            scale = tf.constant(1.0 / (1.0 - self.rate), dtype=inputs.dtype)
            return inputs * scale * MASKS[id(self)]

    return ReplayDropout


def keras_state(model, optimizer, slot_names):
    """Every weight (buffers too) in model order, then every optimizer slot, as float64 arrays."""
    out = [np.array(w, dtype=np.float64) for w in model.get_weights()]
    for i, var in enumerate(model.trainable_variables):
        for name in slot_names:
            out.append(np.array(slot(optimizer, var, i, name), dtype=np.float64))
    return out


def slot(optimizer, var, i, name):
    if hasattr(optimizer, "get_slot"):  # tf-keras's legacy optimizers
        return optimizer.get_slot(var, {"velocity": "rms", "momentum": "momentum"}[name])
    lists = {"velocity": ("_velocities",), "momentum": ("_momentums", "momentums")}[name]
    for attr in lists:
        if hasattr(optimizer, attr):
            return getattr(optimizer, attr)[i]
    raise SystemExit(f"step_check: {type(optimizer).__name__} keeps no {name}")


def run_case(name, spec, dtype, x, y, args, keras):
    make_optimizer, make_loss, one_hot, legacy = spec
    case_dir = os.path.join(args.work, f"{name}-{dtype}")
    os.makedirs(case_dir, exist_ok=True)
    labels = np.eye(10)[y] if one_hot else y.astype(np.float64)
    if legacy:
        import tf_keras as k
        set_dtype(k, dtype)
        k.utils.set_random_seed(1)
        model = notebook_model(k, k.layers, bn_momentum=1 - 2 ** -7)
        # tf-keras's legacy optimizers keep their hyperparameters in float32 variables even in float64
        # (optimizer_v2's add_weight defaults to float32): values exact in float32 keep float64 exact.
        optimizer = k.optimizers.legacy.RMSprop(learning_rate=2 ** -10, rho=0.875, epsilon=2 ** -23)
        model.compile(optimizer=optimizer, loss=k.losses.SparseCategoricalCrossentropy())
        path = os.path.join(case_dir, "untrained.h5")
    else:
        k = keras
        set_dtype(k, dtype)
        k.utils.set_random_seed(1)
        rates = (0.2, 0.3) if name == "dropout" else (0.0, 0.0)
        model = notebook_model(k, k.layers, rates=rates)
        optimizer = make_optimizer()
        model.compile(optimizer=optimizer, loss=make_loss())
        path = os.path.join(case_dir, "untrained.keras")
    model.save(path)
    if name == "dropout":  # loom trains the saved file; Keras a twin whose Dropout replays loom's masks
        weights = model.get_weights()
        model = notebook_model(k, k.layers, rates=rates, dropout=replay_dropout(k))
        model.set_weights(weights)
        optimizer = make_optimizer()
        model.compile(optimizer=optimizer, loss=make_loss())

    steps, b = args.steps, args.batch
    xs = x[:steps * b].astype(np.float64) / 255.0
    ys = labels[:steps * b]
    xs.tofile(os.path.join(case_dir, "x.f64"))
    np.ascontiguousarray(ys, dtype=np.float64).tofile(os.path.join(case_dir, "y.f64"))
    with open(os.path.join(case_dir, "batches.json"), "w") as f:
        json.dump({"steps": steps, "batch": b, "x": "x.f64", "y": "y.f64", "x_shape": [28, 28, 1],
                   "y_shape": [10] if one_hot else []}, f)
    batches = os.path.join(case_dir, "batches.json")
    loom_run = run_loom(args.tool, path, batches, os.path.join(case_dir, "loom"), dtype == "float64")
    if isinstance(loom_run, str):
        return False, loom_run
    manifest, loom = loom_run
    slot_names = []
    for t in manifest["tensors"]:
        if t["kind"] not in ("weight", "buffer") and t["kind"] not in slot_names:
            slot_names.append(t["kind"])

    masks = load_masks(manifest, os.path.join(case_dir, "loom"), b, dtype, model)
    per_step, first_loss, first_buffers, final, keras_rows = [], 0.0, 0.0, [], []
    for s in range(steps):
        for layer, per_step_masks in masks.items():
            MASKS[layer].assign(per_step_masks[s])
        kl = model.train_on_batch(xs[s * b:(s + 1) * b].astype(dtype), ys[s * b:(s + 1) * b].astype(dtype))
        kl = float(kl[0] if isinstance(kl, (list, tuple)) else kl)
        ks = keras_state(model, optimizer, slot_names)
        if len(ks) != len(manifest["tensors"]):
            return False, f"keras has {len(ks)} tensors, loom {len(manifest['tensors'])}"
        for t, kt in zip(manifest["tensors"], ks):
            if list(kt.shape) != t["shape"]:
                return False, f"{t['name']}: keras shape {list(kt.shape)}, loom {t['shape']}"
        keras_rows.append([kl] + [kt.ravel() for kt in ks])
        diffs = differences(manifest, loom[s], keras_rows[-1])
        if s == 0:
            first_loss = diffs[0][0]
            first_buffers = max(d for d, n in diffs if "moving_" in n)
        per_step.append(max(diffs))
        final = sorted(diffs, reverse=True)
    picks = (0, steps // 4, steps // 2, 3 * steps // 4, steps - 1)
    growth = " ".join(f"{per_step[s][0]:.1e}" for s in picks)
    worst = max(per_step)
    top = ", ".join(f"{n} {d:.1e}" for d, n in final[:3])
    message = (f"largest difference {worst[0]:.2e} (step {per_step.index(worst) + 1}, {worst[1]}); "
               f"steps {', '.join(str(s + 1) for s in picks)}: {growth}; last step's largest: {top}")
    if dtype == "float64":
        return worst[0] <= FLOAT64_BOUND, message
    # float32: past the first steps, ReLU and MaxPool decisions flip on rounding-sized differences, so the
    # difference from Keras is set beside loom's own: loom in float32 against loom in float64, same file.
    own = run_loom(args.tool, path, batches, os.path.join(case_dir, "loom64"), True)
    if isinstance(own, str):
        return False, own
    own_steps = [max(differences(manifest, own[1][s], [own[1][s, 0]] + split(manifest, loom[s]))) for s in range(steps)]
    keras_own = [max(differences(manifest, own[1][s], keras_rows[s])) for s in range(steps)]
    message += "; loom float32 against loom float64: " + " ".join(f"{own_steps[s][0]:.1e}" for s in picks)
    message += "; Keras float32 against loom float64: " + " ".join(f"{keras_own[s][0]:.1e}" for s in picks)
    ok = first_loss <= FLOAT32_FIRST_LOSS
    return ok, f"first step's loss {first_loss:.1e}, moving statistics {first_buffers:.1e}; " + message


def run_bn_rule_case(legacy, dtype, args, keras):
    """BatchNormalization's moving-variance rule alone: Input(4, 4, 2) -> BatchNormalization(momentum 0.5)
    -> Flatten -> Dense(3, softmax), SGD, batches of 8 (n = 128 values per channel, so the unbiased rule's
    n / (n - 1) moves the moving variance by about 0.4 %, far above float32's rounding). Keras 3 updates
    with the biased batch variance; tf-keras's fused kernel (float32, NHWC) with the unbiased one, its
    non-fused path (float64) with the biased one. No chaos in so small a model: float32 is held to 1e-5."""
    if legacy:
        import tf_keras as k
        set_dtype(k, dtype)
    else:
        k = keras
        set_dtype(k, dtype)
    k.utils.set_random_seed(2)
    L = k.layers
    model = k.Sequential([L.InputLayer(input_shape=(4, 4, 2)) if legacy else k.Input(shape=(4, 4, 2)),
                          L.BatchNormalization(momentum=0.5), L.Flatten(), L.Dense(3, activation="softmax")])
    optimizer = (k.optimizers.legacy.SGD if legacy else k.optimizers.SGD)(2 ** -4)
    model.compile(optimizer=optimizer, loss=k.losses.SparseCategoricalCrossentropy())
    case_dir = os.path.join(args.work, f"bn_rule{'_tf_keras' if legacy else ''}-{dtype}")
    os.makedirs(case_dir, exist_ok=True)
    path = os.path.join(case_dir, "untrained.h5" if legacy else "untrained.keras")
    model.save(path)
    steps, b = 4, 8
    rng = np.random.default_rng(3)
    xs = rng.normal(1.0, 2.0, size=(steps * b, 4, 4, 2))
    ys = rng.integers(0, 3, size=steps * b).astype(np.float64)
    xs.tofile(os.path.join(case_dir, "x.f64"))
    ys.tofile(os.path.join(case_dir, "y.f64"))
    batches = os.path.join(case_dir, "batches.json")
    with open(batches, "w") as f:
        json.dump({"steps": steps, "batch": b, "x": "x.f64", "y": "y.f64", "x_shape": [4, 4, 2], "y_shape": []}, f)
    loom_run = run_loom(args.tool, path, batches, os.path.join(case_dir, "loom"), dtype == "float64")
    if isinstance(loom_run, str):
        return False, loom_run
    manifest, loom = loom_run
    worst = (0.0, "")
    for s in range(steps):
        kl = model.train_on_batch(xs[s * b:(s + 1) * b].astype(dtype), ys[s * b:(s + 1) * b].astype(dtype))
        kl = float(kl[0] if isinstance(kl, (list, tuple)) else kl)
        reference = [kl] + [np.array(w, dtype=np.float64).ravel() for w in model.get_weights()]
        worst = max(worst, max(differences(manifest, loom[s], reference)))
    bound = FLOAT64_BOUND if dtype == "float64" else 1e-5
    return worst[0] <= bound, f"largest difference over {steps} steps {worst[0]:.2e} ({worst[1]})"


def load_masks(manifest, out, batch, dtype, model):
    """loom's Dropout keep masks per step ({id of the Keras layer at the same place: [steps, batch, ...]}),
    each given a tf.Variable in MASKS."""
    import tensorflow as tf
    if not manifest["masks"]:
        return {}
    values = np.fromfile(out + ".masks.f64", dtype=np.float64).reshape(manifest["steps"], -1)
    keras_dropouts = [l for l in model.layers if type(l).__name__ == "ReplayDropout" and l.rate > 0]
    if len(keras_dropouts) != len(manifest["masks"]):
        raise SystemExit(f"step_check: loom drew masks for {len(manifest['masks'])} Dropout layers, "
                         f"the Keras twin replays {len(keras_dropouts)}")
    out_masks, offset = {}, 0
    for entry, layer in zip(manifest["masks"], keras_dropouts):
        shape = [batch] + entry["shape"]
        n = int(np.prod(shape))
        out_masks[id(layer)] = values[:, offset:offset + n].reshape([manifest["steps"]] + shape).astype(dtype)
        offset += n
        MASKS[id(layer)] = tf.Variable(np.zeros(shape, dtype=dtype), trainable=False)
    return out_masks


def run_loom(tool, model_path, batches, out, double):
    """loom's steps: (manifest, [steps, values] array), or the error's text."""
    done = subprocess.run([tool, model_path, batches, out] + (["--double"] if double else []),
                          capture_output=True, text=True)
    if done.returncode != 0:
        return f"keras_steps failed: {done.stderr.strip()}"
    with open(out + ".json") as f:
        manifest = json.load(f)
    return manifest, np.fromfile(out + ".f64", dtype=np.float64).reshape(manifest["steps"], -1)


def split(manifest, row):
    """One step's values (loss first) as the list of its tensors, without the loss."""
    out, offset = [], 1
    for t in manifest["tensors"]:
        n = int(np.prod(t["shape"]))
        out.append(row[offset:offset + n])
        offset += n
    return out


def differences(manifest, row, reference):
    """(max |row - reference| / max |reference|, name) for the loss and every tensor of one step."""
    out = [(abs(row[0] - reference[0]) / abs(reference[0]), "loss")]
    for t, mine, ref in zip(manifest["tensors"], split(manifest, row), reference[1:]):
        out.append((float(np.max(np.abs(mine - ref))) / max(float(np.max(np.abs(ref))), 1e-30), t["name"]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tool", required=True, help="the keras_steps program")
    p.add_argument("--work", required=True)
    p.add_argument("--cases", default="all")
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    import keras
    all_cases = cases(keras)
    names = list(all_cases) if args.cases == "all" else args.cases.split(",")
    unknown = [n for n in names if n not in all_cases]
    if unknown:
        sys.exit(f"step_check: unknown case(s) {', '.join(unknown)}; known: {', '.join(all_cases)}")
    x = read_idx(os.path.join(DATA, "train-images-idx3-ubyte.gz")).reshape(-1, 28, 28, 1)
    y = read_idx(os.path.join(DATA, "train-labels-idx1-ubyte.gz"))
    failures = 0
    for name in names:
        for dtype in args.dtypes.split(","):
            if all_cases[name] == "bn_rule":
                ok, message = run_bn_rule_case(name.endswith("tf_keras"), dtype, args, keras)
            else:
                ok, message = run_case(name, all_cases[name], dtype, x, y, args, keras)
            failures += not ok
            print(f"{'ok' if ok else 'FAILED'}: {name} {dtype}: {message}", flush=True)
    print(f"step_check: {len(names) * len(args.dtypes.split(',')) - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
