#!/usr/bin/python3
"""Independent numpy reference for Keras Sequential image classifiers.

Reads a model file written by Keras and runs its forward pass in numpy
float64, so that loom's Keras importer (loom/keras.hpp, through keras_tool)
can be checked against something that shares no code with it.

Formats, told apart by content rather than by file name:
  * legacy HDF5 (magic b"\\x89HDF\\r\\n\\x1a\\n"), as written by Keras 2.1.6
    through Keras 3.x ``model.save("x.h5")``.  Read the way Keras 3's
    keras/src/legacy/saving/legacy_h5_format.py (load_model_from_hdf5,
    load_weights_from_hdf5_group) reads it: the root attribute
    ``model_config``; ``model_weights.attrs["layer_names"]`` (or the chunked
    ``layer_names0``, ``layer_names1``, ... written when an attribute would
    pass 64 KB); each group's ``weight_names``, looked up relative to that
    group; fixed- or variable-length strings, bytes or str.  Weight-bearing
    groups are matched to weight-bearing config layers in order, as Keras
    does, never by name.
  * Keras 3 ``.keras`` zip (magic b"PK\\x03\\x04") holding config.json and
    model.weights.h5, as keras/src/saving/saving_lib.py reads it: the
    variables of the i-th layer are ``layers/<auto name>/vars/<j>``, where the
    auto name is the snake_case class name de-duplicated per class in order of
    appearance (conv2d, conv2d_1, batch_normalization, ...), never the
    config's layer name.  The InputLayer has no entry.

Sequential configs in every shape seen in real files: a bare list of layers
(Keras <= 2.2), {"name", "layers"} with an InputLayer using
``batch_input_shape`` (Keras 2.3-2.15) or ``batch_shape`` (Keras 3).

Layers: InputLayer, Conv2D (channels_last, kernel (kh, kw, in, out), strides,
dilation, padding valid/same with TensorFlow's split: pad_total =
max((out-1)*s + k_eff - in, 0), pad_before = pad_total // 2), MaxPooling2D
(valid/same; same pads with -inf, same split), BatchNormalization in inference
(gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta over the
last axis; center/scale false means no beta/gamma, and Keras then stores
fewer variables), Dropout (identity), Flatten (row-major NHWC), Reshape, Dense,
Activation.  Activations: relu, softmax (also the TF name softmax_v2 and the
serialized form {"class_name": "function", "config": "softmax_v2"}), linear,
sigmoid, tanh.  Anything else is refused with a message naming it.

Usage:
  reference_check.py MODEL [--images PATH] [--labels PATH] [--count N]
                           [--accuracy-only | --tool KERAS_TOOL] [--tolerance T]

It prints the reference's accuracy on the first N Fashion-MNIST test images
(pixels / 255 as float, reshaped to the model's input shape: (28, 28, 1),
(28, 28) or (784,)).  With --accuracy-only it prints only that number.
With --tool it also runs ``KERAS_TOOL predict MODEL IMAGES N OUT``, which must
write N x classes float32 little-endian values (row-major, no header) to OUT,
and checks max |loom - reference| <= T on the model's outputs (probabilities
after softmax, logits if the last activation is linear).

Exit status: 0 on success / agreement; 1 with one line saying what is wrong
(disagreement, unreadable or unsupported model, tool failure); 77 (ctest's
skip code) when the model file or the data set is absent or numpy/h5py cannot
be imported; 2 for bad usage.

Dependencies: numpy and h5py only (plus the standard library).
"""

import argparse
import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

DATASET_DIR = "/usr/share/datasets/fashion-mnist"

try:
    import numpy as np
    import h5py
    from numpy.lib.stride_tricks import sliding_window_view
except ImportError as error:  # pragma: no cover - depends on the machine
    print(f"SKIP: reference_check needs numpy and h5py ({error})")
    sys.exit(77)

from keras_files import HDF5_MAGIC, SKIP, ZIP_MAGIC, attribute_chunks, chunk_items, decode
from keras_files import pair as _pair, snake_case as _snake_case


class ModelError(Exception):
    """The model file cannot be read, or uses something the reference lacks."""


# ---------------------------------------------------------------- reading

def _decode(value):
    return str(decode(value))


def _string_list_attr(group, name):
    """An attribute holding a list of strings, as Keras's
    load_attributes_from_hdf5_group reads it (plain or chunked name0, name1...).
    Returns None when neither form is present."""
    chunks = attribute_chunks(group, name)
    if chunks is None:
        return None
    return [_decode(v) for chunk in chunks for v in chunk_items(chunk)]


def _string_attr(attrs, name):
    value = attrs.get(name)
    return None if value is None else _decode(value)


def _sequential_layers(model_config):
    if not isinstance(model_config, dict) or model_config.get("class_name") != "Sequential":
        kind = model_config.get("class_name") if isinstance(model_config, dict) else type(model_config).__name__
        raise ModelError(f"only Sequential models are supported, this one is {kind!r}")
    config = model_config.get("config")
    if isinstance(config, list):  # Keras <= 2.2: a bare list of layers
        return config, {}
    if isinstance(config, dict) and isinstance(config.get("layers"), list):
        return config["layers"], config
    raise ModelError("model config has no list of layers")


def _weight_count(layer):
    """How many variables Keras stores for a layer (legacy order: trainable
    then non-trainable, which for these layers is also the .keras order)."""
    cls, cfg = layer["class_name"], layer["config"]
    if cls in ("Conv2D", "Dense"):
        return 1 + (1 if cfg.get("use_bias", True) else 0)
    if cls == "BatchNormalization":
        return int(bool(cfg.get("scale", True))) + int(bool(cfg.get("center", True))) + 2
    return 0


def load_legacy_h5(path):
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise ModelError("no model_config attribute (a weights-only file?)")
        model_config = json.loads(_decode(raw))
        layers, seq_config = _sequential_layers(model_config)
        if "model_weights" not in f:
            raise ModelError("no model_weights group")
        mw = f["model_weights"]
        names = _string_list_attr(mw, "layer_names")
        if names is None:
            raise ModelError("model_weights has no layer_names attribute")
        saved = []  # (group name, [arrays]) for groups that hold weights
        for name in names:
            if name not in mw:
                raise ModelError(f"layer_names lists {name!r} but model_weights has no such group")
            group = mw[name]
            weight_names = _string_list_attr(group, "weight_names") or []
            if weight_names:
                arrays = []
                for wn in weight_names:
                    if wn not in group:
                        raise ModelError(f"model_weights/{name} lists weight {wn!r}, which does not exist")
                    arrays.append(np.asarray(group[wn]))
                saved.append((name, arrays))
        version = _string_attr(f.attrs, "keras_version") or "?"
    bearing = [layer for layer in layers if _weight_count(layer) > 0]
    if len(bearing) != len(saved):
        raise ModelError(f"the config has {len(bearing)} layers with weights, "
                         f"model_weights has {len(saved)} groups with weights")
    weights = {}
    for layer, (name, arrays) in zip(bearing, saved):
        if len(arrays) != _weight_count(layer):
            raise ModelError(f"layer {layer['config'].get('name')!r} expects {_weight_count(layer)} "
                             f"weights, group {name!r} has {len(arrays)}")
        weights[id(layer)] = arrays
    return layers, seq_config, weights, f"legacy HDF5, keras {version}"


def load_keras_zip(path):
    with zipfile.ZipFile(path) as z:
        members = set(z.namelist())
        for needed in ("config.json", "model.weights.h5"):
            if needed not in members:
                raise ModelError(f".keras archive has no {needed}")
        model_config = json.loads(z.read("config.json"))
        metadata = json.loads(z.read("metadata.json")) if "metadata.json" in members else {}
        weights_bytes = z.read("model.weights.h5")
    layers, seq_config = _sequential_layers(model_config)
    weights = {}
    used = {}
    with h5py.File(io.BytesIO(weights_bytes), "r") as f:
        for layer in layers:
            if layer["class_name"] == "InputLayer":
                continue  # Sequential.layers leaves the InputLayer out
            base = _snake_case(layer["class_name"])
            used[base] = used.get(base, -1) + 1
            auto = base if used[base] == 0 else f"{base}_{used[base]}"
            count = _weight_count(layer)
            if count == 0:
                continue
            where = f"layers/{auto}/vars"
            if where not in f:
                raise ModelError(f"layer {layer['config'].get('name')!r} should have weights at {where}, "
                                 "which does not exist")
            group = f[where]
            if len(group.keys()) != count:
                raise ModelError(f"{where} holds {len(group.keys())} variables, "
                                 f"layer {layer['config'].get('name')!r} expects {count}")
            weights[id(layer)] = [np.asarray(group[str(i)]) for i in range(count)]
    return layers, seq_config, weights, f".keras zip, keras {metadata.get('keras_version', '?')}"


def load_model(path):
    with open(path, "rb") as handle:
        magic = handle.read(8)
    if magic == HDF5_MAGIC:
        layers, seq_config, weights, description = load_legacy_h5(path)
    elif magic[:4] == ZIP_MAGIC:
        layers, seq_config, weights, description = load_keras_zip(path)
    else:
        raise ModelError("neither HDF5 nor zip (first bytes " + magic.hex() + ")")
    for layer in layers:
        if not isinstance(layer, dict) or "class_name" not in layer or not isinstance(layer.get("config"), dict):
            raise ModelError("a layer entry lacks class_name or config")
    return Model(layers, seq_config, weights, description)


# ---------------------------------------------------------------- layers

def _activation(spec, where):
    if isinstance(spec, dict):  # {"class_name": "function", "config": "softmax_v2", ...}
        if spec.get("class_name") != "function" or not isinstance(spec.get("config"), str):
            raise ModelError(f"{where}: unsupported activation {json.dumps(spec)}")
        spec = spec["config"]
    name = "linear" if spec is None else spec
    if name in ("softmax", "softmax_v2"):
        def softmax(x):
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        return "softmax", softmax
    table = {
        "linear": lambda x: x,
        "relu": lambda x: np.maximum(x, 0.0),
        "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
        "tanh": np.tanh,
    }
    if name not in table:
        raise ModelError(f"{where}: unsupported activation {name!r}")
    return name, table[name]


def _same_padding(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _windows(x, kernel, strides, padding, dilation, fill):
    """NHWC -> view (N, OH, OW, C, kh_eff, kw_eff), already strided."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilation
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        oh, top, bottom = _same_padding(h, eh, sh)
        ow, left, right = _same_padding(w, ew, sw)
        if top or bottom or left or right:
            x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    elif padding == "valid":
        oh, ow = (h - eh) // sh + 1, (w - ew) // sw + 1
        if oh <= 0 or ow <= 0:
            raise ModelError(f"a {kh}x{kw} window does not fit a {h}x{w} map")
    else:
        raise ModelError(f"unsupported padding {padding!r}")
    view = sliding_window_view(x, (eh, ew), axis=(1, 2))[:, ::sh, ::sw][:, :oh, :ow]
    return view[..., ::dh, ::dw]


def _check_channels_last(cfg, where):
    if cfg.get("data_format", "channels_last") not in (None, "channels_last"):
        raise ModelError(f"{where}: only channels_last is supported")


class Model:
    """A Sequential model: a list of numpy functions on float64 NHWC batches."""

    def __init__(self, layers, seq_config, weights, description):
        self.description = description
        self.input_shape = self._input_shape(layers, seq_config)
        self.steps = []
        self.weight_values = 0
        shape = self.input_shape
        self.output_activation = "linear"
        for layer in layers:
            cls, cfg = layer["class_name"], layer["config"]
            where = f"layer {cfg.get('name', '?')!r} ({cls})"
            arrays = [np.asarray(a, dtype=np.float64) for a in weights.get(id(layer), [])]
            self.weight_values += sum(a.size for a in arrays)
            step, shape, act = self._build(cls, cfg, arrays, shape, where)
            if act is not None:
                self.output_activation = act
            if step is not None:
                self.steps.append(step)
        self.output_shape = shape

    @staticmethod
    def _input_shape(layers, seq_config):
        candidates = []
        if layers:
            first = layers[0]["config"]
            candidates += [first.get("batch_shape"), first.get("batch_input_shape")]
        candidates.append(seq_config.get("build_input_shape"))
        for shape in candidates:
            if shape:
                shape = tuple(shape[1:])
                if any(d is None for d in shape):
                    raise ModelError(f"input shape {shape} has an unknown dimension")
                return shape
        raise ModelError("cannot find the model's input shape")

    def _build(self, cls, cfg, w, shape, where):
        """Returns (function or None, output shape without batch, activation name or None)."""
        if cls in ("InputLayer", "Dropout"):
            return None, shape, None
        if cls == "Activation":
            name, fn = _activation(cfg.get("activation"), where)
            return fn, shape, name
        if cls == "Flatten":
            return (lambda x: x.reshape(x.shape[0], -1)), (int(np.prod(shape)),), None
        if cls == "Reshape":
            target = tuple(cfg["target_shape"])
            if -1 in target:
                known = int(np.prod([d for d in target if d != -1]))
                target = tuple(int(np.prod(shape)) // known if d == -1 else d for d in target)
            if int(np.prod(target)) != int(np.prod(shape)):
                raise ModelError(f"{where}: cannot reshape {shape} to {target}")
            return (lambda x: x.reshape((x.shape[0],) + target)), target, None
        if cls == "Dense":
            if w[0].shape != (shape[-1], cfg["units"]):
                raise ModelError(f"{where}: kernel {w[0].shape}, expected {(shape[-1], cfg['units'])}")
            kernel = w[0]
            bias = w[1] if len(w) > 1 else None
            name, act = _activation(cfg.get("activation"), where)

            def dense(x):
                y = x @ kernel
                return act(y + bias if bias is not None else y)
            return dense, shape[:-1] + (cfg["units"],), name
        if cls == "BatchNormalization":
            axis = cfg.get("axis", -1)
            if isinstance(axis, list) and len(axis) == 1:
                axis = axis[0]
            if axis not in (-1, len(shape)):
                raise ModelError(f"{where}: only the last axis is supported (axis {cfg.get('axis')})")
            values = list(w)
            gamma = values.pop(0) if cfg.get("scale", True) else 1.0
            beta = values.pop(0) if cfg.get("center", True) else 0.0
            mean, var = values
            if mean.shape != (shape[-1],):
                raise ModelError(f"{where}: moving_mean {mean.shape}, expected {(shape[-1],)}")
            eps = float(cfg.get("epsilon", 1e-3))
            return (lambda x: gamma * (x - mean) / np.sqrt(var + eps) + beta), shape, None
        if cls == "Conv2D":
            _check_channels_last(cfg, where)
            if cfg.get("groups", 1) != 1:
                raise ModelError(f"{where}: groups != 1 is not supported")
            if len(shape) != 3:
                raise ModelError(f"{where}: needs an (H, W, C) input, gets {shape}")
            kernel = w[0]
            kh, kw = _pair(cfg["kernel_size"])
            expected = (kh, kw, shape[2], cfg["filters"])
            if kernel.shape != expected:
                raise ModelError(f"{where}: kernel {kernel.shape}, expected {expected}")
            bias = w[1] if len(w) > 1 else None
            strides, dilation = _pair(cfg.get("strides", 1)), _pair(cfg.get("dilation_rate", 1))
            padding = cfg.get("padding", "valid")
            name, act = _activation(cfg.get("activation"), where)
            matrix = kernel.reshape(kh * kw * shape[2], cfg["filters"])

            def conv(x):
                win = _windows(x, (kh, kw), strides, padding, dilation, 0.0)
                n, oh, ow = win.shape[:3]
                # (N, OH, OW, C, kh, kw) -> rows ordered (kh, kw, C) like the kernel
                cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, -1)
                y = (cols @ matrix).reshape(n, oh, ow, -1)
                return act(y + bias if bias is not None else y)
            out = conv(np.zeros((1,) + shape)).shape[1:]
            return conv, out, name
        if cls == "MaxPooling2D":
            _check_channels_last(cfg, where)
            pool = _pair(cfg.get("pool_size", 2))
            strides = _pair(cfg.get("strides") or pool)
            padding = cfg.get("padding", "valid")

            def maxpool(x):
                return _windows(x, pool, strides, padding, (1, 1), -np.inf).max(axis=(-2, -1))
            out = maxpool(np.zeros((1,) + shape)).shape[1:]
            return maxpool, out, None
        raise ModelError(f"{where}: layer class {cls} is not supported by the reference")

    def predict(self, x):
        for step in self.steps:
            x = step(x)
        return x


# ---------------------------------------------------------------- data

def read_idx(path, expected_magic):
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise ValueError(f"{path}: IDX magic {magic:#010x}, expected {expected_magic:#010x}")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {body.size} bytes of data for dimensions {dims}")
    return body.reshape(dims)


def reference_outputs(model, images, batch):
    size = int(np.prod(model.input_shape))
    if size != images[0].size:
        raise ModelError(f"the model takes input {model.input_shape}, not {images.shape[1:]} images")
    outputs = []
    for start in range(0, len(images), batch):
        x = images[start:start + batch].astype(np.float64) / 255.0
        outputs.append(model.predict(x.reshape((-1,) + model.input_shape)))
    return np.concatenate(outputs)


def run_tool(tool, model_path, images_path, count, classes, timeout):
    """Runs `tool predict MODEL IMAGES N OUT`; returns an (N, classes) array."""
    with tempfile.TemporaryDirectory(prefix="reference_check_") as folder:
        out = os.path.join(folder, "predictions.f32")
        command = [tool, "predict", model_path, images_path, str(count), out]
        try:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        except OSError as error:
            raise RuntimeError(f"cannot run {tool}: {error.strerror}")
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{os.path.basename(tool)} predict took over {timeout} s")
        if done.returncode != 0:
            said = done.stdout.decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(f"{os.path.basename(tool)} predict exited {done.returncode}"
                               + (f": {said[-1]}" if said else ""))
        if not os.path.exists(out):
            raise RuntimeError(f"{os.path.basename(tool)} predict wrote no output file")
        raw = np.fromfile(out, dtype="<f4")
    if raw.size != count * classes:
        raise RuntimeError(f"{os.path.basename(tool)} wrote {raw.size} floats, "
                           f"expected {count} x {classes} = {count * classes}")
    return raw.reshape(count, classes).astype(np.float64)


# ---------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Numpy float64 reference for a Keras Sequential model on Fashion-MNIST; "
                    "optionally compares keras_tool's predictions with it.")
    parser.add_argument("model", help="a Keras .h5 (legacy HDF5) or .keras file")
    parser.add_argument("--images", default=os.path.join(DATASET_DIR, "t10k-images-idx3-ubyte.gz"),
                        help="IDX image file, gzip or not (default: Fashion-MNIST t10k)")
    parser.add_argument("--labels", default=os.path.join(DATASET_DIR, "t10k-labels-idx1-ubyte.gz"),
                        help="IDX label file, gzip or not (default: Fashion-MNIST t10k)")
    parser.add_argument("--count", type=int, default=10000, help="use the first N images (default 10000)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--accuracy-only", action="store_true",
                      help="print only the reference's accuracy, as one number")
    mode.add_argument("--tool", help="keras_tool to compare: runs TOOL predict MODEL IMAGES N OUT")
    parser.add_argument("--tolerance", type=float, default=1e-5,
                        help="largest allowed |loom - reference| on any output (default 1e-5)")
    parser.add_argument("--batch", type=int, default=250, help="images per forward batch (default 250)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed for the tool (default 900)")
    args = parser.parse_args(argv)
    if args.count <= 0:
        parser.error("--count must be positive")

    for path, what in ((args.model, "model file"), (args.images, "images"), (args.labels, "labels")):
        if not os.path.exists(path):
            print(f"SKIP: {what} {path} is absent")
            return SKIP

    try:
        images = read_idx(args.images, 0x00000803)
        labels = read_idx(args.labels, 0x00000801)
    except (ValueError, OSError, EOFError, struct.error) as error:
        print(f"FAIL: cannot read the data set: {error}", file=sys.stderr)
        return 1
    if args.count > min(len(images), len(labels)):
        print(f"FAIL: --count {args.count} but the data set has {min(len(images), len(labels))} images",
              file=sys.stderr)
        return 1
    images, labels = images[:args.count], labels[:args.count].astype(np.int64)

    started = time.monotonic()
    try:
        model = load_model(args.model)
        reference = reference_outputs(model, images, args.batch)
    except (ModelError, OSError, KeyError, ValueError, TypeError) as error:
        message = error if isinstance(error, ModelError) else f"{type(error).__name__}: {error}"
        print(f"FAIL: {args.model}: {message}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    correct = int((reference.argmax(axis=1) == labels).sum())
    accuracy = correct / args.count

    if args.accuracy_only:
        print(f"{accuracy:.4f}")
        return 0
    print(f"model: {args.model} ({model.description}), input {model.input_shape}, "
          f"output {model.output_shape} after {model.output_activation}, {model.weight_values} weights")
    print(f"reference accuracy: {accuracy:.4f} ({correct}/{args.count}) in {elapsed:.1f} s")
    if not args.tool:
        return 0

    classes = reference.shape[1]
    try:
        loom = run_tool(args.tool, args.model, args.images, args.count, classes, args.timeout)
    except RuntimeError as error:
        print(f"FAIL: {error}", file=sys.stderr)
        return 1
    finite = np.isfinite(loom)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        print(f"FAIL: loom gave {loom[row, col]} for image {row}, class {col}", file=sys.stderr)
        return 1
    diff = np.abs(loom - reference)
    row, col = np.unravel_index(int(diff.argmax()), diff.shape)
    worst = float(diff[row, col])
    disagreements = int((loom.argmax(axis=1) != reference.argmax(axis=1)).sum())
    loom_accuracy = float((loom.argmax(axis=1) == labels).mean())
    print(f"loom accuracy: {loom_accuracy:.4f}")
    print(f"max |loom - reference|: {worst:.3g} (image {row}, class {col}), "
          f"argmax disagreements: {disagreements}/{args.count}, tolerance {args.tolerance:g}")
    if not worst <= args.tolerance:
        print(f"FAIL: loom and the reference differ by {worst:.3g} > {args.tolerance:g} "
              f"(image {row}, class {col}: loom {loom[row, col]:.7g}, reference {reference[row, col]:.7g}; "
              f"{disagreements} argmax disagreements)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
