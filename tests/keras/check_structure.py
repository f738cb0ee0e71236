#!/usr/bin/python3
"""Checks that a Keras model file has the structure Keras's loaders expect.

Meant for files written by loom's Keras exporter (loom/keras.hpp): it reads
them with h5py, zipfile and json only, and checks what Keras 3's loaders read,
so that a file passing here loads with keras.models.load_model.  The format is
told by content (HDF5 magic or zip magic), not by the file name.

Legacy HDF5, as keras/src/legacy/saving/legacy_h5_format.py
(load_model_from_hdf5, load_weights_from_hdf5_group,
load_attributes_from_hdf5_group) and saving_utils.py read it:
  * root attributes ``model_config`` (JSON: class_name "Sequential", config a
    list of layers, each with class_name and a config holding a unique name),
    ``keras_version`` and ``backend``;
  * group ``model_weights`` with attributes ``layer_names`` (plain, or chunked
    as layer_names0, layer_names1, ...), ``backend`` and ``keras_version``;
    layer_names are the config's layers other than InputLayer, same names,
    same order;
  * for every name a group whose ``weight_names`` attribute lists datasets that
    exist relative to that group; weight-bearing layers have the count and
    shapes their config implies (Conv2D kernel (kh, kw, in, filters) and bias
    (filters,) if use_bias; Dense kernel (in, units) and bias (units,);
    BatchNormalization gamma, beta, moving_mean, moving_variance, each (C,),
    without gamma/beta when scale/center is false); other layers have none;
    every weight is float32.  Input sizes are followed through Conv2D,
    pooling, Flatten, Dense and the shape-keeping layers; after a layer this
    script does not know, only the sizes the config itself gives are checked;
  * if present: ``training_config`` (JSON with ``loss``, ``loss_weights`` —
    Keras reads training_config["loss_weights"] without a default — and
    ``optimizer_config`` {class_name, config}); ``optimizer_weights`` (its
    weight_names must exist); ``model_weights/top_level_model_weights``
    (written by recent Keras 3; must list no weights for a Sequential).
  Accepted as real Keras writes them: the config as a bare list of layers with
  no InputLayer and ``batch_input_shape`` on the first layer (Keras <= 2.2);
  {"name", "layers"} with an InputLayer holding ``batch_input_shape`` (Keras
  2.3-2.15) or ``batch_shape`` (Keras 3); string attributes of fixed or
  variable length, bytes or str; weight paths of any depth
  (``conv2d/conv2d/kernel:0``, ``kernel``, ``sequential/conv2d/kernel``), since
  Keras looks up whatever weight_names says.

Keras 3 ``.keras`` zip, as keras/src/saving/saving_lib.py (load_model,
_load_state, _load_container_state, H5IOStore/H5Entry) and
Layer.load_own_variables read it:
  * entries ``metadata.json`` (JSON with keras_version), ``config.json`` and
    ``model.weights.h5``;
  * config.json: class_name "Sequential", module "keras" (or "keras.models"),
    config.layers a list, each with module "keras.layers", class_name,
    registered_name present and null, and a config with a unique name; the
    first layer an InputLayer with ``batch_shape``;
  * model.weights.h5 opens with h5py from bytes and has a root ``vars`` group
    (read unconditionally for the model itself; it must be empty); for every
    layer after the InputLayer, in config order, the entry
    ``layers/<auto name>/vars`` where the auto name is the snake_case class
    name de-duplicated per class in order of appearance (conv2d, conv2d_1,
    batch_normalization, ...), not the config's layer name; a weight-bearing
    layer's vars group holds exactly the datasets 0..n-1 with the shapes above
    (BatchNormalization in the order gamma, beta, moving_mean,
    moving_variance), float32; a weightless layer's vars group, if present,
    is empty (Keras compares the counts);
  * if config.json has a non-null ``compile_config``: it has ``loss``, and an
    ``optimizer``, when there is one, has class_name and config.  (Keras 3.9.2
    wrote a real file whose compile_config has no optimizer; Keras then
    compiles with its default, so that is accepted.)

Usage: check_structure.py FILE [--verbose]
  --verbose prints the file's tree (zip entries, HDF5 groups, datasets and
  attributes) before checking.

Exit status: 0 when the file passes; 1 with one line naming what is wrong;
77 (ctest's skip code) when h5py or numpy cannot be imported; 2 for bad usage.
Dependencies: numpy and h5py only (plus the standard library).
"""

import argparse
import io
import json
import math
import sys
import zipfile

try:
    import numpy as np
    import h5py
except ImportError as error:  # pragma: no cover - depends on the machine
    print(f"SKIP: check_structure needs numpy and h5py ({error})")
    sys.exit(77)

from keras_files import HDF5_MAGIC, ZIP_MAGIC, attribute_chunks, chunk_items, pair as _pair, snake_case
from keras_files import decode as _decode


class StructureError(Exception):
    """What is wrong with the file, in one line."""


def require(condition, message):
    if not condition:
        raise StructureError(message)


# ---------------------------------------------------------------- helpers

def string_attr(attrs, name, where):
    require(name in attrs, f"{where} has no {name!r} attribute")
    value = _decode(attrs[name])
    require(isinstance(value, str), f"{where} attribute {name!r} is not a string ({type(value).__name__})")
    return value


def string_list_attr(group, name, where):
    """Keras's load_attributes_from_hdf5_group: plain or chunked (name0, name1...)."""
    chunks = attribute_chunks(group, name)
    require(chunks, f"{where} has no {name!r} attribute")
    values = []
    for chunk in chunks:
        require(np.asarray(chunk, dtype=object).ndim <= 1, f"{where} attribute {name!r} is not a list")
        for item in chunk_items(chunk):
            item = _decode(item)
            require(isinstance(item, str), f"{where} attribute {name!r} holds a {type(item).__name__}, not strings")
            values.append(item)
    return values


def json_attr(attrs, name, where):
    text = string_attr(attrs, name, where)
    try:
        return json.loads(text)
    except ValueError as error:
        raise StructureError(f"{where} attribute {name!r} is not JSON ({error})")


def print_h5_tree(handle, indent="  "):
    def show(name, obj):
        depth = name.count("/")
        label = name.rsplit("/", 1)[-1]
        if isinstance(obj, h5py.Dataset):
            line = f"{label}  dataset {obj.shape} {obj.dtype}"
        else:
            line = f"{label}/"
        attrs = ", ".join(f"{k}={_short(obj.attrs[k])}" for k in obj.attrs)
        print(f"{indent}{'  ' * depth}{line}" + (f"  [{attrs}]" if attrs else ""))
    root_attrs = ", ".join(f"{k}={_short(handle.attrs[k])}" for k in handle.attrs)
    print(f"{indent}/" + (f"  [{root_attrs}]" if root_attrs else ""))
    handle.visititems(show)


def _short(value, limit=100):
    value = _decode(value)
    if isinstance(value, np.ndarray):
        text = "[" + ", ".join(repr(_decode(v)) for v in value.ravel()[:8]) + (", ..." if value.size > 8 else "") + "]"
        text += f" ({value.dtype})"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- model config

def sequential_layers(model_config, where):
    require(isinstance(model_config, dict), f"{where} is not a JSON object")
    require(model_config.get("class_name") == "Sequential",
            f"{where} class_name is {model_config.get('class_name')!r}, expected 'Sequential'")
    config = model_config.get("config")
    if isinstance(config, list):
        layers, seq = config, {}
    else:
        require(isinstance(config, dict), f"{where} has no config object")
        require(isinstance(config.get("layers"), list), f"{where} config.layers is not a list")
        layers, seq = config["layers"], config
    require(layers, f"{where} lists no layers")
    names = set()
    for i, layer in enumerate(layers):
        require(isinstance(layer, dict), f"{where} layer #{i} is not an object")
        require(isinstance(layer.get("class_name"), str) and layer["class_name"],
                f"{where} layer #{i} has no class_name")
        require(isinstance(layer.get("config"), dict), f"{where} layer #{i} ({layer['class_name']}) has no config")
        name = layer["config"].get("name")
        require(isinstance(name, str) and name, f"{where} layer #{i} ({layer['class_name']}) has no name")
        require(name not in names, f"{where} has two layers named {name!r}")
        names.add(name)
    return layers, seq


def _conv_out(size, kernel, stride, dilation, padding):
    if size is None:
        return None
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        return -(-size // stride)
    return (size - effective) // stride + 1


def input_shape_of(layers, seq):
    """The batch-less input shape, from the first layer or the Sequential config."""
    first = layers[0]["config"]
    for key in ("batch_shape", "batch_input_shape"):
        if first.get(key):
            return tuple(first[key][1:])
    if seq.get("build_input_shape"):
        return tuple(seq["build_input_shape"][1:])
    return None


def expected_weights(layers, input_shape):
    """For each layer: None when this script does not know its weights, else a
    list of (variable name, shape) with None for sizes it cannot tell."""
    shape = input_shape
    result = []
    for layer in layers:
        cls, cfg = layer["class_name"], layer["config"]
        known = shape is not None
        expected = []
        if cls == "InputLayer":
            batch_shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
            if batch_shape:
                shape = tuple(batch_shape[1:])
        elif cls == "Conv2D":
            kh, kw = _pair(cfg["kernel_size"])
            filters = cfg["filters"]
            channels_last = cfg.get("data_format", "channels_last") in (None, "channels_last")
            groups = cfg.get("groups", 1) or 1
            cin = shape[-1] if known and len(shape) == 3 and channels_last else None
            expected = [("kernel", (kh, kw, None if cin is None else cin // groups, filters))]
            if cfg.get("use_bias", True):
                expected.append(("bias", (filters,)))
            if known and len(shape) == 3 and channels_last:
                strides, dilation = _pair(cfg.get("strides", 1)), _pair(cfg.get("dilation_rate", 1))
                padding = cfg.get("padding", "valid")
                shape = (_conv_out(shape[0], kh, strides[0], dilation[0], padding),
                         _conv_out(shape[1], kw, strides[1], dilation[1], padding), filters)
            else:
                shape = None
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            if known and len(shape) == 3 and cfg.get("data_format", "channels_last") in (None, "channels_last"):
                pool = _pair(cfg.get("pool_size", 2))
                strides = _pair(cfg.get("strides") or pool)
                padding = cfg.get("padding", "valid")
                shape = (_conv_out(shape[0], pool[0], strides[0], 1, padding),
                         _conv_out(shape[1], pool[1], strides[1], 1, padding), shape[2])
            else:
                shape = None
        elif cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            shape = (shape[-1],) if known and len(shape) == 3 else None
        elif cls == "Flatten":
            shape = (math.prod(shape),) if known and None not in shape else None
        elif cls == "Reshape":
            target = tuple(cfg.get("target_shape", ()))
            shape = target if -1 not in target else None
        elif cls == "Dense":
            units = cfg["units"]
            expected = [("kernel", (shape[-1] if known else None, units))]
            if cfg.get("use_bias", True):
                expected.append(("bias", (units,)))
            shape = shape[:-1] + (units,) if known else None
        elif cls == "BatchNormalization":
            axis = cfg.get("axis", -1)
            if isinstance(axis, list) and len(axis) == 1:
                axis = axis[0]
            channels = None
            if known and isinstance(axis, int) and (-len(shape) <= axis <= -1 or 1 <= axis <= len(shape)):
                channels = shape[axis if axis < 0 else axis - 1]  # a positive axis counts the batch
            for name, flag in (("gamma", "scale"), ("beta", "center")):
                if cfg.get(flag, True):
                    expected.append((name, (channels,)))
            expected += [("moving_mean", (channels,)), ("moving_variance", (channels,))]
        elif cls in ("Dropout", "Activation", "ReLU", "Softmax", "LeakyReLU", "SpatialDropout2D",
                     "GaussianNoise", "GaussianDropout", "AlphaDropout"):
            pass
        else:
            expected = None
            shape = None
        result.append(expected)
    return result


def check_values(dataset, where, expected_shape):
    require(isinstance(dataset, h5py.Dataset), f"{where} is not a dataset")
    require(dataset.dtype == np.float32, f"{where} is {dataset.dtype}, expected float32")
    if expected_shape is not None:
        shape = dataset.shape
        matches = len(shape) == len(expected_shape) and all(
            e is None or e == s for e, s in zip(expected_shape, shape))
        want = "(" + ", ".join("?" if e is None else str(e) for e in expected_shape) + ")"
        require(matches, f"{where} has shape {shape}, expected {want}")
    return dataset.size


# ---------------------------------------------------------------- legacy HDF5

def check_legacy_h5(path, verbose):
    with h5py.File(path, "r") as f:
        if verbose:
            print(f"{path}: HDF5 tree")
            print_h5_tree(f)
        model_config = json_attr(f.attrs, "model_config", "root")
        layers, seq = sequential_layers(model_config, "model_config")
        version = string_attr(f.attrs, "keras_version", "root")
        string_attr(f.attrs, "backend", "root")
        require(input_shape_of(layers, seq) is not None,
                "model_config gives no input shape (no InputLayer batch_shape/batch_input_shape, "
                "no batch_input_shape on the first layer)")
        expected = expected_weights(layers, input_shape_of(layers, seq))

        require("model_weights" in f and isinstance(f["model_weights"], h5py.Group), "no model_weights group")
        mw = f["model_weights"]
        names = string_list_attr(mw, "layer_names", "model_weights")
        string_attr(mw.attrs, "backend", "model_weights")
        string_attr(mw.attrs, "keras_version", "model_weights")
        config_names = [l["config"]["name"] for l in layers if l["class_name"] != "InputLayer"]
        if names != config_names:
            at = next((i for i, (a, b) in enumerate(zip(names, config_names)) if a != b),
                      min(len(names), len(config_names)))
            saved = repr(names[at]) if at < len(names) else "nothing"
            wanted = repr(config_names[at]) if at < len(config_names) else "nothing"
            raise StructureError(f"model_weights layer_names ({len(names)}) differ from the config's non-Input "
                                 f"layers ({len(config_names)}) at #{at}: {saved} where the config has {wanted}")

        values = 0
        with_weights = 0
        body = [(l, e) for l, e in zip(layers, expected) if l["class_name"] != "InputLayer"]
        for (layer, want), name in zip(body, names):
            where = f"model_weights/{name}"
            require(name in mw and isinstance(mw[name], h5py.Group), f"no group {where}")
            group = mw[name]
            weight_names = string_list_attr(group, "weight_names", where)
            if want is not None:
                require(len(weight_names) == len(want),
                        f"{where} ({layer['class_name']}) has {len(weight_names)} weights, expected "
                        f"{len(want)}" + (f" ({', '.join(n for n, _ in want)})" if want else ""))
            for i, weight_name in enumerate(weight_names):
                require(weight_name in group, f"{where} lists weight {weight_name!r}, which does not exist there")
                label = f"{where}/{weight_name}" + (f" ({want[i][0]})" if want else "")
                values += check_values(group[weight_name], label, want[i][1] if want else None)
            with_weights += bool(weight_names)

        if "top_level_model_weights" in mw:
            top = string_list_attr(mw["top_level_model_weights"], "weight_names",
                                   "model_weights/top_level_model_weights")
            require(not top, f"model_weights/top_level_model_weights lists {top}; a Sequential has none")

        if "training_config" in f.attrs:
            training = json_attr(f.attrs, "training_config", "root")
            require(isinstance(training, dict), "training_config is not a JSON object")
            require("loss" in training, "training_config has no 'loss'")
            require("loss_weights" in training, "training_config has no 'loss_weights' (Keras reads it, null is fine)")
            check_class_config(training.get("optimizer_config"), "training_config.optimizer_config")
        if "optimizer_weights" in f:
            group = f["optimizer_weights"]
            for weight_name in string_list_attr(group, "weight_names", "optimizer_weights"):
                require(weight_name in group, f"optimizer_weights lists {weight_name!r}, which does not exist")
    return (f"legacy HDF5 (keras {version}), {len(layers)} layers, {with_weights} with weights, "
            f"{values} weight values")


def check_class_config(value, where):
    require(isinstance(value, dict), f"{where} is missing or not an object")
    require(isinstance(value.get("class_name"), str) and value["class_name"], f"{where} has no class_name")
    require(isinstance(value.get("config"), dict), f"{where} has no config object")


# ---------------------------------------------------------------- .keras zip

def check_keras_zip(path, verbose):
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise StructureError(f"not a readable zip ({error})")
    with archive:
        entries = archive.namelist()
        if verbose:
            print(f"{path}: zip entries")
            for info in archive.infolist():
                print(f"  {info.filename}  {info.file_size} bytes")
        for needed in ("metadata.json", "config.json", "model.weights.h5"):
            require(needed in entries, f"the archive has no {needed} (entries: {entries})")
        try:
            metadata = json.loads(archive.read("metadata.json"))
            config = json.loads(archive.read("config.json"))
        except ValueError as error:
            raise StructureError(f"metadata.json or config.json is not JSON ({error})")
        weights_bytes = archive.read("model.weights.h5")

    require(isinstance(metadata, dict) and isinstance(metadata.get("keras_version"), str),
            "metadata.json has no keras_version string")
    if verbose:
        print(f"  metadata.json: {json.dumps(metadata)}")
    require(config.get("module") in ("keras", "keras.models"),
            f"config.json module is {config.get('module')!r}, expected 'keras'")
    require(isinstance(config.get("config"), dict), "config.json has no config object")
    layers, seq = sequential_layers(config, "config.json")
    for i, layer in enumerate(layers):
        where = f"config.json layer #{i} ({layer['class_name']} {layer['config']['name']!r})"
        require(layer.get("module") == "keras.layers",
                f"{where} has module {layer.get('module')!r}, expected 'keras.layers'")
        require("registered_name" in layer, f"{where} has no registered_name")
        require(layer["registered_name"] is None,
                f"{where} has registered_name {layer['registered_name']!r}, expected null")
    first = layers[0]
    require(first["class_name"] == "InputLayer", f"config.json's first layer is {first['class_name']}, not InputLayer")
    batch_shape = first["config"].get("batch_shape")
    require(isinstance(batch_shape, list) and len(batch_shape) >= 2,
            "config.json's InputLayer has no batch_shape list")
    compile_config = config.get("compile_config")
    if compile_config is not None:
        require(isinstance(compile_config, dict), "config.json compile_config is not an object")
        require("loss" in compile_config, "config.json compile_config has no 'loss'")
        if compile_config.get("optimizer") is not None:
            check_class_config(compile_config["optimizer"], "config.json compile_config.optimizer")

    expected = expected_weights(layers, tuple(batch_shape[1:]))
    try:
        handle = h5py.File(io.BytesIO(weights_bytes), "r")
    except OSError as error:
        raise StructureError(f"model.weights.h5 does not open as HDF5 ({error})")
    with handle as f:
        if verbose:
            print("  model.weights.h5:")
            print_h5_tree(f, indent="    ")
        require("vars" in f and isinstance(f["vars"], h5py.Group), "model.weights.h5 has no root 'vars' group")
        require(len(f["vars"]) == 0, f"model.weights.h5 root vars holds {len(f['vars'])} entries; "
                                     "a Sequential has no variables of its own")
        used = {}
        values = 0
        with_weights = 0
        for layer, want in zip(layers[1:], expected[1:]):
            base = snake_case(layer["class_name"])
            used[base] = used.get(base, -1) + 1
            auto = base if used[base] == 0 else f"{base}_{used[base]}"
            where = f"layers/{auto}/vars"
            label = f"{where} (layer {layer['config']['name']!r}, {layer['class_name']})"
            present = where in f and isinstance(f[where], h5py.Group)
            if want is not None and not want:
                require(not present or len(f[where]) == 0,
                        f"{label} holds {len(f[where]) if present else 0} entries; the layer has no weights")
                continue
            if want is None and not present:
                continue  # a layer this script does not know, and no weights stored for it
            require(present, f"no {where} group for layer {layer['config']['name']!r} ({layer['class_name']}), "
                             "which has weights")
            group = f[where]
            keys = sorted(group.keys())
            count = len(want) if want is not None else len(keys)
            wanted_keys = sorted(str(i) for i in range(count))
            require(keys == wanted_keys, f"{label} holds {keys}, expected {wanted_keys}"
                    + (f" ({', '.join(n for n, _ in want)})" if want else ""))
            for i in range(count):
                name = f"{where}/{i}" + (f" ({want[i][0]})" if want else "")
                values += check_values(group[str(i)], name, want[i][1] if want else None)
            with_weights += bool(count)
    return (f".keras zip (keras {metadata['keras_version']}), {len(layers)} layers, {with_weights} with weights, "
            f"{values} weight values")


# ---------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Check that a Keras .h5 or .keras file has the structure Keras's loaders expect.")
    parser.add_argument("file")
    parser.add_argument("--verbose", action="store_true", help="print the file's tree before checking")
    args = parser.parse_args(argv)
    try:
        with open(args.file, "rb") as handle:
            magic = handle.read(8)
    except OSError as error:
        print(f"FAIL: {args.file}: cannot read ({error.strerror})", file=sys.stderr)
        return 1
    try:
        if magic == HDF5_MAGIC:
            summary = check_legacy_h5(args.file, args.verbose)
        elif magic[:4] == ZIP_MAGIC:
            summary = check_keras_zip(args.file, args.verbose)
        else:
            raise StructureError(f"neither HDF5 nor zip (first bytes {magic.hex()})")
    except StructureError as error:
        print(f"FAIL: {args.file}: {error}", file=sys.stderr)
        return 1
    except (OSError, KeyError, ValueError, TypeError) as error:
        print(f"FAIL: {args.file}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"OK: {args.file}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
