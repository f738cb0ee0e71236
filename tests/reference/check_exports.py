#!/usr/bin/env python3
"""Every kind of model loom exports, loaded by real Keras, predicts what loom
predicts and trains on as loom does.

    PY tests/reference/check_exports.py --corpus-tool build/tests/keras_export_corpus --work DIR

PY is the reference environment's python (`scripts/reference-env --python`:
Keras 3 on TensorFlow, tf-keras, numpy). The script runs the corpus program
(export_corpus.cpp) into DIR/corpus, then, for each case, Keras 3
(`keras.saving.load_model`) loads its .keras and its .h5 file and tf-keras
(`tf_keras.models.load_model`) its .h5 file, and:

- the predictions on the case's inputs are within PREDICTION_TOLERANCE
  (largest absolute difference) of loom's;
- for a compiled case, the optimizer is of the class loom had, and its whole
  config (the learning-rate schedule included) is that of the same optimizer
  made in that Keras from the case's settings, so the settings loom leaves at
  Keras's defaults are checked too; likewise the loss; the step count is the
  one loom saved; and one `train_on_batch` on the case's batch reports the
  loss loom's next step reported (the weight regularizers' penalties
  included), within LOSS_TOLERANCE, and gives every weight loom's next step
  gave, within WEIGHT_TOLERANCE relative to the weight's largest magnitude.

One line per case and loader, "ok" or "FAILED" with the reason, the largest
differences at the end, exit status 1 on any failure. What a loader cannot do
with loom's files for a reason that is not loom's is listed in EXPECTED, with
the reason; each such failure is checked to happen as described, so that the
list cannot go stale silently.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

PREDICTION_TOLERANCE = 1e-5  # largest absolute difference of a prediction
WEIGHT_TOLERANCE = 1e-5  # largest difference of a weight after a step, relative to the weight's largest magnitude
SETTING_TOLERANCE = 1e-6  # relative: Keras keeps a constant learning rate as a float32 variable
LOSS_TOLERANCE = 1e-5  # relative (absolute below 1): the loss a training step reports

# What a loader legitimately cannot do with loom's files. Each entry: the loader ("keras3 .h5",
# "tf_keras .h5"), the cases (None: every compiled case), the stage that fails, a text of the error
# it fails with (None: the stage is not run at all), and why.
#   load     loading fails: nothing is checked.
#   compile  loading with compile=True fails: the predictions are checked on a load with compile=False.
#   train    the step count is checked, then train_on_batch fails.
#   state    the optimizer's state and the next step are not compared (the compile config still is).
EXPECTED = [
    {"loader": "tf_keras .h5", "cases": ["random_erasing"], "stage": "load", "error": "RandomErasing",
     "why": "RandomErasing is a Keras 3 layer (Keras 3.8+); tf-keras has none"},
    {"loader": "tf_keras .h5", "cases": None, "stage": "state", "error": None,
     "why": "tf-keras reads the optimizer_config of an .h5 that does not say \"is_legacy_optimizer\": false as "
            "its legacy optimizer (tf_keras/src/optimizers/__init__.py, deserialize), and Keras 3 refuses that key "
            "(its optimizers take no unknown argument): a file both read cannot say it, and loom writes what Keras "
            "3 writes. The compile config is compared with tf-keras's legacy optimizer of the same settings; the "
            "state is not: the legacy optimizers keep it in another order and with no learning_rate variable (so "
            "they restore it only where the lists happen to agree), and their RMSprop adds epsilon outside the "
            "square root"},
    {"loader": "tf_keras .h5", "cases": ["adam_weight_decay", "sgd_weight_decay"], "stage": "compile",
     "error": "weight_decay", "why": "tf-keras's legacy optimizers (E2) have no weight_decay"},
    {"loader": "tf_keras .h5", "cases": ["adamw_cosine_warmup"], "stage": "compile", "error": "AdamW",
     "why": "tf-keras's legacy optimizers (E2) have no AdamW"},
    {"loader": "keras3 .h5", "cases": None, "stage": "train", "error": "Unknown variable",
     "why": "Keras 3's legacy .h5 loader builds the optimizer for model._trainable_variables, which for a "
            "Sequential model holds none of its layers' variables (keras/src/legacy/saving/legacy_h5_format.py, "
            "load_model_from_hdf5), so train_on_batch refuses every weight; Keras 3's own .h5 files fail the same way"},
    {"loader": "keras3 .h5", "cases": ["layer_normalization_axes"], "stage": "load", "error": "Shape mismatch",
     "why": "Keras 3's legacy .h5 loader builds a LayerNormalization over several axes with gamma over the last "
            "axis alone and then refuses the saved gamma (\"Weight expects shape (3,). Received saved weight with "
            "shape (13, 3)\"); the .h5 Keras 3 itself writes of such a layer fails the same way"},
]


def tag(e):
    return f"{e['stage']} fails as expected [E{EXPECTED.index(e) + 1}]"


def expected(loader, case, stage):
    for e in EXPECTED:
        compiled_match = e["cases"] is None and "compile" in case
        if e["loader"] == loader and e["stage"] == stage and (compiled_match or case["name"] in (e["cases"] or ())):
            return e
    return None


class Failure(Exception):
    pass


class ExpectedFailure(Exception):
    """A stage failed as EXPECTED says."""

    def __init__(self, stage, message):
        super().__init__(message)
        self.stage = stage


def run_stage(loader, case, stages, action):
    """action(), unless EXPECTED says that one of `stages` fails: then it must fail with that error."""
    entries = [e for e in (expected(loader, case, stage) for stage in stages) if e]
    if not entries:
        return action()
    try:
        action()
    except Exception as err:  # noqa: BLE001: compared with what EXPECTED says
        for e in entries:
            if e["error"] in str(err):
                raise ExpectedFailure(e["stage"], tag(e)) from None
        raise
    raise Failure(f"{entries[0]['stage']} succeeded, but EXPECTED says it fails ({entries[0]['why']}): update the list")


def read_f32(corpus, entry):
    return np.fromfile(corpus / entry["file"], dtype="<f4").reshape(entry["shape"])


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def relative(got, want):
    return max_abs(got, want) / max(float(np.max(np.abs(want))) if np.size(want) else 0.0, 1e-12)


def weight_stem(name):
    return name.split("/")[-1].split(":")[0]  # "conv2d/kernel:0" (tf-keras) and "kernel" (Keras 3)


class Loader:
    """Keras 3 or tf-keras, and the few calls that differ between them."""

    def __init__(self, label, module, optimizers):
        self.label, self.k, self.optimizers = label, module, optimizers

    def load(self, path, compile=True):
        if self.label.startswith("tf_keras"):
            return self.k.models.load_model(path, compile=compile)
        return self.k.saving.load_model(path, compile=compile)

    def optimizer(self, spec):
        kwargs = dict(spec["config"])
        if "schedule" in spec:
            s = spec["schedule"]
            kwargs["learning_rate"] = getattr(self.k.optimizers.schedules, s["class"])(**s["config"])
        return getattr(self.optimizers, spec["class"])(**kwargs)

    def loss(self, spec):
        kwargs = {key: value for key, value in spec.items() if key != "class"}
        # Keras 3's reduction, which loom writes; tf-keras's default, "auto", means it too in compile.
        return getattr(self.k.losses, spec["class"])(reduction="sum_over_batch_size", **kwargs)


def check_setting(what, got, want):
    if isinstance(want, dict) or isinstance(got, dict):
        if not (isinstance(want, dict) and isinstance(got, dict)):
            raise Failure(f"{what}: {got!r}, expected {want!r}")
        for key in sorted(set(want) | set(got)):
            if key != "name":  # an instance's name, which Keras numbers per session
                check_setting(f"{what}.{key}", got.get(key), want.get(key))
    elif isinstance(want, (list, tuple)) or isinstance(got, (list, tuple)):
        if not (isinstance(want, (list, tuple)) and isinstance(got, (list, tuple)) and len(got) == len(want)):
            raise Failure(f"{what}: {got!r}, expected {want!r}")
        for i, (g, w) in enumerate(zip(got, want)):
            check_setting(f"{what}[{i}]", g, w)
    elif isinstance(want, (bool, str)) or isinstance(got, (bool, str)) or want is None or got is None:
        if got != want:
            raise Failure(f"{what}: {got!r}, expected {want!r}")
    elif abs(float(got) - float(want)) > SETTING_TOLERANCE * abs(float(want)):
        raise Failure(f"{what}: {got!r}, expected {want!r}")


def check_compile(loader, model, spec):
    """The optimizer and loss that came back, against the same ones made in this Keras from the case's settings."""
    want = loader.optimizer(spec["optimizer"])
    if type(model.optimizer) is not type(want):
        raise Failure(f"optimizer {type(model.optimizer).__module__}.{type(model.optimizer).__name__}, "
                      f"expected {type(want).__module__}.{type(want).__name__}")
    check_setting("optimizer", model.optimizer.get_config(), want.get_config())

    loss, want = model.loss, loader.loss(spec["loss"])
    if isinstance(loss, str) or (callable(loss) and not hasattr(loss, "get_config")):
        # loom writes a loss without settings by its function name: Keras keeps the name, or the function.
        name = loss if isinstance(loss, str) else getattr(loss, "__name__", repr(loss))
        if name != want.get_config()["name"] or len(spec["loss"]) > 2 or spec["loss"]["from_logits"]:
            raise Failure(f"loss '{name}', expected {type(want).__name__} with {spec['loss']}")
        return
    if type(loss) is not type(want):
        raise Failure(f"loss {type(loss).__name__}, expected {type(want).__name__}")
    check_setting("loss", loss.get_config(), want.get_config())


def check_step_count(model, case):
    steps = int(np.asarray(model.optimizer.iterations))
    if steps != case["steps_before_saving"]:
        raise Failure(f"the optimizer's step count is {steps}, loom saved {case['steps_before_saving']}")


def weights_by_name(model, case):
    """The loaded model's variable for each weight loom wrote ("<layer>/<weight>")."""
    layers = {layer.name: layer for layer in model.layers}
    out = {}
    for entry in case["weights_after_step"]:
        layer, stem = entry["name"].split("/")
        matches = [w for w in layers[layer].weights if weight_stem(w.name) == stem] if layer in layers else []
        if len(matches) != 1:
            raise Failure(f"the loaded model has {len(matches)} weights '{entry['name']}'")
        out[entry["name"]] = (layers[layer], matches[0])
    return out


def check_step(model, case, corpus):
    """One train_on_batch against loom's next step: the loss it reports (the regularizers' penalties
    included), then every weight; the largest relative difference of a weight."""
    x, y = read_f32(corpus, case["step"]["x"]), read_f32(corpus, case["step"]["y"])
    if y.ndim == 1:
        y = y.astype("int32")
    weights = weights_by_name(model, case)
    loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
    want_loss = case["step"]["loss"]
    if abs(loss - want_loss) > LOSS_TOLERANCE * max(1.0, abs(want_loss)):
        raise Failure(f"train_on_batch reports loss {loss:.7g}, loom's step {want_loss:.7g}")
    worst = 0.0
    for entry in case["weights_after_step"]:
        _, variable = weights[entry["name"]]
        want = read_f32(corpus, entry).astype(np.float64)  # BatchNormalization's moving variance too: one rule
        diff = relative(variable.numpy(), want)
        if diff > WEIGHT_TOLERANCE:
            raise Failure(f"after one training step, {entry['name']} differs from loom's by {diff:.2e} (relative)")
        worst = max(worst, diff)
    return worst


def check(loader, ext, case, corpus):
    """Every check of one file with one loader; returns (notes, prediction difference, step difference or None)."""
    path, notes = str(corpus / case["files"][ext]), []
    try:
        model = run_stage(loader.label, case, ("load", "compile"), lambda: loader.load(path))
    except ExpectedFailure as e:
        if e.stage != "compile":
            raise
        notes.append(str(e))
        model = loader.load(path, compile=False)
    got = np.asarray(model(read_f32(corpus, case["input"]), training=False))
    want = read_f32(corpus, case["predictions"])
    if got.shape != want.shape:
        raise Failure(f"predictions of shape {got.shape}, loom's are {want.shape}")
    prediction = max_abs(got, want)
    if prediction > PREDICTION_TOLERANCE:
        raise Failure(f"predictions differ from loom's by {prediction:.2e}")
    if "compile" not in case or notes:
        return notes, prediction, None
    check_compile(loader, model, case["compile"])
    notes.append("compile config")
    skip = expected(loader.label, case, "state")
    if skip:
        notes.append(f"state and next step not compared [E{EXPECTED.index(skip) + 1}]")
        return notes, prediction, None
    check_step_count(model, case)
    notes.append("step count")
    try:
        return notes, prediction, run_stage(loader.label, case, ("train",), lambda: check_step(model, case, corpus))
    except ExpectedFailure as e:
        return notes + [str(e)], prediction, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus-tool", required=True, help="the keras_export_corpus program")
    parser.add_argument("--work", required=True, help="a folder for the corpus (its corpus/ is written afresh)")
    args = parser.parse_args()
    start = time.time()
    corpus = Path(args.work) / "corpus"
    if corpus.exists():
        for f in corpus.iterdir():
            f.unlink()
    subprocess.run([args.corpus_tool, str(corpus)], check=True, stdout=subprocess.DEVNULL)
    manifest = json.loads((corpus / "manifest.json").read_text())

    import keras
    import tf_keras
    loaders = [(Loader("keras3 .keras", keras, keras.optimizers), "keras"),
               (Loader("keras3 .h5", keras, keras.optimizers), "h5"),
               # A Keras 3 .h5's optimizer is tf-keras's legacy one (LEGACY_OPTIMIZER).
               (Loader("tf_keras .h5", tf_keras, tf_keras.optimizers.legacy), "h5")]
    print(f"Keras {keras.__version__} ({keras.backend.backend()}), tf-keras {tf_keras.__version__}: "
          f"{len(manifest['cases'])} cases")
    for i, e in enumerate(EXPECTED):
        cases = ", ".join(e["cases"]) if e["cases"] else "every compiled case"
        print(f"[E{i + 1}] {e['loader']}, {cases}: {e['stage']}: {e['why']}.")

    failures, worst_prediction, worst_step = 0, (0.0, ""), (0.0, "")
    for case in manifest["cases"]:
        for loader, ext in loaders:
            where = f"{case['name']} ({loader.label})"
            if ext not in case["files"]:
                print(f"--      {where}: no .{ext} file: {case['no_h5']}")
                continue
            try:
                notes, prediction, step = check(loader, ext, case, corpus)
            except ExpectedFailure as e:
                print(f"ok      {where}: {e}")
                continue
            except Exception as e:  # noqa: BLE001: every error is a failure, reported with its reason
                failures += 1
                reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
                print(f"FAILED  {where}: {type(e).__name__}: {reason}")
                continue
            worst_prediction = max(worst_prediction, (prediction, where))
            summary = [f"predictions {prediction:.1e}"] + notes
            if step is not None:
                worst_step = max(worst_step, (step, where))
                summary.append(f"next step {step:.1e}")
            print(f"ok      {where}: {', '.join(summary)}")
    print(f"largest prediction difference {worst_prediction[0]:.2e} ({worst_prediction[1]}); largest weight "
          f"difference after a step {worst_step[0]:.2e}, relative ({worst_step[1]})")
    print(f"{failures} failure(s), {time.time() - start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
