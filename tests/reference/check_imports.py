#!/usr/bin/env python3
"""loom's Keras importer against real Keras: every file of the corpus that
make_keras_corpus.py writes is read by keras_tool and must predict what
Keras predicted, be compiled as Keras compiled it, or be refused by name.

    check_imports.py --tool KERAS_TOOL --work DIR [--export] [--verbose]

Run with the pinned reference environment's python (scripts/reference-env).
The corpus is made in DIR/corpus, and reused while make_keras_corpus.py and
the pins (bench/reference/requirements.txt) are unchanged. For each file:

  * a model loom reads: `keras_tool predict` on the corpus's images, max
    |loom - Keras| <= 1e-5 over every output (1e-3 for the mixed-precision
    model, which Keras computes in float16);
  * a compiled one also: `keras_tool summary` names Keras's loss, its
    from_logits and label_smoothing, the optimizer's class, every setting of
    Keras's get_config() that changes training (a schedule's too; a setting
    loom leaves out must be Keras's neutral value), the metrics, and the
    iteration count of the optimizer state it imported;
  * a model loom refuses: keras_tool exits 1 with one line on stderr that
    names the layer, activation or option (`summary`, and `predict` too
    unless it is the compile config that is refused).

With --export, each file loom reads is also converted by `keras_tool
convert` to .keras and .h5, which Keras 3 must load, predict as the original
did and resume at the same optimizer step (this imports TensorFlow here too).

One line per file, then the totals; exit 1 if any file failed.
"""

import argparse
import gzip
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAKER = os.path.join(HERE, "make_keras_corpus.py")
PINS = os.path.join(ROOT, "bench", "reference", "requirements.txt")
TOLERANCE = 1e-5

# Optimizer settings that do not change what a step computes, or are Keras's bookkeeping.
BOOKKEEPING = {"name", "jit_compile", "is_legacy_optimizer", "ema_momentum", "ema_overwrite_frequency"}


def stamp():
    """What the corpus depends on: the maker and the pins."""
    h = hashlib.sha256()
    for path in (MAKER, PINS):
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def corpus(work):
    """The corpus in work/corpus, made (again) when its stamp is not today's."""
    directory = os.path.join(work, "corpus")
    manifest = os.path.join(directory, "corpus.json")
    want = stamp()
    if os.path.exists(manifest):
        with open(manifest) as f:
            c = json.load(f)
        if c.get("stamp") == want:
            return directory, c
    os.makedirs(work, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix="corpus.", dir=work)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    made = subprocess.run([sys.executable, MAKER, fresh], env=env, capture_output=True, text=True)
    if made.returncode != 0:
        shutil.rmtree(fresh, ignore_errors=True)
        sys.exit(f"check_imports: make_keras_corpus.py failed:\n{made.stderr[-3000:]}")
    with open(os.path.join(fresh, "corpus.json")) as f:
        c = json.load(f)
    c["stamp"] = want
    with open(os.path.join(fresh, "corpus.json"), "w") as f:
        json.dump(c, f, indent=1)
    shutil.rmtree(directory, ignore_errors=True)
    os.rename(fresh, directory)
    return directory, c


def run(tool, *args):
    return subprocess.run([tool, *args], capture_output=True, text=True)


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def summary_settings(stdout):
    """keras_tool summary's compile lines: {"loss": (class, {k: v}), "optimizer": ..., "metrics": [...], ...}."""
    out = {}
    for line in stdout.splitlines():
        head, _, rest = line.partition(":")
        rest = rest.strip()
        if head in ("loss", "optimizer"):
            words = rest.split()
            out[head] = (words[0], dict(w.split("=", 1) for w in words[1:]))
        elif head == "metrics":
            out[head] = rest.split()
        elif head == "optimizer state":
            out["iterations"] = int(rest.split("=")[1])
        elif line == "not compiled":
            out["not compiled"] = True
    return out


def neutral(value):
    return value is None or value is False or value == 0


def same_value(keras_value, loom_text):
    """A Keras setting against loom's text of it: numbers, flags ("1"/"0"), lists ("0.5,1000")."""
    if isinstance(keras_value, bool):
        return loom_text == ("1" if keras_value else "0")
    if isinstance(keras_value, (list, tuple)):
        parts = loom_text.split(",")
        return len(parts) == len(keras_value) and all(close(float(a), float(b)) for a, b in zip(keras_value, parts))
    return close(float(keras_value), float(loom_text))


def compare_settings(what, keras_config, loom, extra_ok=()):
    """Problems between a Keras config and loom's printed settings of it."""
    problems = []
    for key, value in keras_config.items():
        if key in BOOKKEEPING or isinstance(value, dict):
            continue
        if key not in loom:
            if not neutral(value):
                problems.append(f"{what} {key}={value} is not in loom's")
        elif value is None or not same_value(value, loom[key]):
            problems.append(f"{what} {key}: Keras {value}, loom {loom[key]}")
    for key in loom:
        if key not in keras_config and key not in extra_ok:
            problems.append(f"{what} {key}={loom[key]} is not in Keras's")
    return problems


def check_compile(expected, stdout):
    """Problems between what Keras compiled and what keras_tool summary reports."""
    got = summary_settings(stdout)
    if "loss" not in got or "optimizer" not in got:
        return ["summary reports no compile config"]
    problems = []
    loss, loss_settings = got["loss"]
    if loss != expected["loss"]:
        problems.append(f"loss {loss}, Keras compiled {expected['loss']}")
    if (loss_settings.get("from_logits") == "1") != expected["from_logits"]:
        problems.append(f"from_logits: loom {loss_settings.get('from_logits', '0')}, Keras {expected['from_logits']}")
    if not close(float(loss_settings.get("label_smoothing", 0)), expected["label_smoothing"]):
        problems.append(f"label_smoothing: loom {loss_settings.get('label_smoothing', 0)}, "
                        f"Keras {expected['label_smoothing']}")
    optimizer, settings = got["optimizer"]
    if optimizer != expected["optimizer"]:
        problems.append(f"optimizer {optimizer}, Keras compiled {expected['optimizer']}")
    config = dict(expected["config"])
    schedule = config.get("learning_rate") if isinstance(config.get("learning_rate"), dict) else None
    # loom's RMSprop names its rule; Keras has one per version: the old one for tf-keras's legacy optimizers.
    rule = {}
    if optimizer == "RMSprop":
        rule["epsilon_inside_sqrt"] = "0" if expected["legacy_optimizer"] else "1"
        if settings.get("epsilon_inside_sqrt") != rule["epsilon_inside_sqrt"]:
            problems.append(f"RMSprop's epsilon_inside_sqrt {settings.get('epsilon_inside_sqrt')}, "
                            f"expected {rule['epsilon_inside_sqrt']}")
    own = {k: v for k, v in settings.items() if not k.startswith("learning_rate_schedule")}
    if schedule:
        config.pop("learning_rate")
        scheduled = {k[len("learning_rate_schedule."):]: v for k, v in settings.items()
                     if k.startswith("learning_rate_schedule.")}
        if settings.get("learning_rate_schedule") != schedule["class_name"]:
            problems.append(f"schedule {settings.get('learning_rate_schedule')}, Keras {schedule['class_name']}")
        problems += compare_settings("schedule", schedule["config"], scheduled)
        own.pop("learning_rate", None)  # the constant the schedule replaces
    problems += compare_settings("optimizer", config, own, extra_ok=rule)
    if got.get("metrics") != expected["metrics"]:
        problems.append(f"metrics {got.get('metrics')}, Keras {expected['metrics']}")
    if got.get("iterations") != expected["iterations"]:
        problems.append(f"optimizer state of {got.get('iterations')} steps, Keras saved {expected['iterations']}")
    return problems


def check_model(tool, directory, c, entry, scratch):
    path = os.path.join(directory, entry["file"])
    keras_out = np.load(os.path.join(directory, entry["predictions"]))
    out = os.path.join(scratch, "out.bin")
    args = ["predict", path, c["images"], str(c["count"]), out] + (["--raw"] if entry["raw"] else [])
    p = run(tool, *args)
    if p.returncode != 0:
        return f"predict failed: {p.stderr.strip()}", None
    loom_out = np.fromfile(out, dtype="<f4")
    if loom_out.size != keras_out.size:
        return f"loom gave {loom_out.size} values, Keras {keras_out.size}", None
    diff = float(np.max(np.abs(loom_out.reshape(keras_out.shape) - keras_out)))
    tolerance = entry.get("tolerance", TOLERANCE)
    if not diff <= tolerance:
        return f"max |loom - Keras| = {diff:.3g} > {tolerance:g}", diff
    if "compile" in entry:
        s = run(tool, "summary", path)
        if s.returncode != 0:
            return f"summary failed: {s.stderr.strip()}", diff
        if entry["compile"] is None:  # saved without its optimizer: Keras loads it uncompiled
            return (None if "not compiled" in summary_settings(s.stdout) else "compiled, Keras's is not"), diff
        problems = check_compile(entry["compile"], s.stdout)
        if problems:
            return "; ".join(problems), diff
    return None, diff


def read_images(c, entry):
    """The inputs keras_tool predict gives the model: the first images of the IDX file, / 255 unless raw."""
    with gzip.open(c["images"], "rb") as f:
        data = f.read()
    x = np.frombuffer(data, dtype=np.uint8, offset=16)[: c["count"] * 784].astype(np.float32)
    return x if entry["raw"] else x / np.float32(255)


def check_export(tool, keras, directory, c, entry, scratch):
    """loom's export of the file (keras_tool convert) loaded by Keras 3: its predictions and step count."""
    path = os.path.join(directory, entry["file"])
    keras_out = np.load(os.path.join(directory, entry["predictions"]))
    for ext in (".keras", ".h5"):
        out = os.path.join(scratch, "export" + ext)
        p = run(tool, "convert", path, out)
        if p.returncode != 0:
            return f"convert to {ext} failed: {p.stderr.strip()}"
        try:
            model = keras.models.load_model(out)
        except Exception as e:  # noqa: BLE001 (Keras raises many kinds)
            return f"Keras cannot load loom's {ext}: {str(e).splitlines()[0]}"
        x = read_images(c, entry).reshape((-1, *model.input_shape[1:]))
        diff = float(np.max(np.abs(model.predict(x, verbose=0) - keras_out)))
        if not diff <= entry.get("tolerance", TOLERANCE):
            return f"loom's {ext} predicts in Keras {diff:.3g} away from the original"
        if entry.get("compile"):
            steps = int(model.optimizer.iterations.numpy())
            if steps != entry["compile"]["iterations"]:
                return f"loom's {ext} resumes in Keras at step {steps}, not {entry['compile']['iterations']}"
    return None


def check_refusal(tool, directory, c, entry, scratch):
    path = os.path.join(directory, entry["file"])
    commands = [["summary", path]]
    if not entry["compile_refusal"]:
        commands.append(["predict", path, c["images"], "1", os.path.join(scratch, "out.bin")])
    message = ""
    for command in commands:
        p = run(tool, *command)
        lines = p.stderr.strip().splitlines()
        if p.returncode != 1:
            return f"{command[0]} exited {p.returncode}, not 1 (a refusal)", message
        if len(lines) != 1:
            return f"{command[0]} wrote {len(lines)} lines on stderr, not one", message
        message = lines[0].replace(path, "FILE")  # the file's name is not what the refusal must name
        if entry["refuse"] not in message:
            return f"{command[0]}'s refusal does not name {entry['refuse']}: {message}", message
    return None, message


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tool", required=True, help="the keras_tool executable")
    parser.add_argument("--work", required=True, help="where the corpus is made and kept")
    parser.add_argument("--verbose", action="store_true", help="print each refusal's message")
    parser.add_argument("--export", action="store_true",
                        help="also convert each file loom reads to .keras and .h5 and load those in Keras 3")
    a = parser.parse_args()
    start = time.time()
    directory, c = corpus(a.work)
    made = time.time() - start
    keras = None
    if a.export:
        import warnings

        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        warnings.filterwarnings("ignore")
        import absl.logging
        import keras
        import tensorflow as tf

        absl.logging.set_verbosity("error")
        tf.get_logger().setLevel("ERROR")  # its advice on retracing
    failed = 0
    with tempfile.TemporaryDirectory() as scratch:
        for entry in c["files"]:
            if "refuse" in entry:
                problem, message = check_refusal(a.tool, directory, c, entry, scratch)
                detail = f"refused: {message}" if a.verbose else f"refused, naming {entry['refuse']}"
            else:
                problem, diff = check_model(a.tool, directory, c, entry, scratch)
                if keras and not problem:
                    problem = check_export(a.tool, keras, directory, c, entry, scratch)
                detail = f"max |diff| {diff:.1e}" if diff is not None else "no prediction"
                if entry.get("compile"):
                    steps = entry["compile"]["iterations"]
                    detail += ", compile config as Keras's" + (f", optimizer state at step {steps}" if steps else "")
                elif "compile" in entry:
                    detail += ", not compiled, as in Keras"
                detail += f" ({entry['note']})" if "note" in entry else ""
                detail += "; its .keras and .h5 from loom too" if keras else ""
            failed += problem is not None
            print(f"{'FAILED' if problem else 'ok':6}  {entry['file']:44} {problem or detail}", flush=True)
    total = len(c["files"])
    print(f"check_imports: {total - failed} of {total} files ok, {failed} failed "
          f"(Keras {c['keras']}, tf-keras {c['tf_keras']}; corpus {made:.0f} s, total {time.time() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
