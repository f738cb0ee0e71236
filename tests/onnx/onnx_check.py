"""Checks the ONNX files loom writes against runtimes that are not loom.

    onnx_check.py --tool build/examples/onnx_tool [--runtimes numpy,onnxruntime,openvino] [--tolerance 1e-5]

Runs `onnx_tool cases DIR` (loom's models, their ONNX files, inputs and
loom's predictions; see examples/onnx_tool.cpp), then for every case:

  * ONNX's own checker, with full_check (shape inference, strict);
  * each runtime asked for, on the case's inputs, against loom's outputs:
      numpy        an evaluator of the graph written here from the ONNX operator
                   specification, in float64 (Debian's python3-numpy and python3-onnx:
                   the main tests, /usr/bin/python3);
      onnxruntime  ONNX Runtime's CPU provider (the reference environment);
      openvino     OpenVINO's CPU plugin, reading the .onnx file (the reference environment).

Prints one line per case and runtime with the largest difference; exits 1 if
any exceeds the tolerance or a check fails, 77 (skip) when a runtime's Python
package is missing and --require is not given.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

try:
    import onnx
    from onnx import numpy_helper
except ImportError:  # (Debian: python3-onnx)
    print("onnx_check: skipped: the onnx Python package is not installed (Debian: python3-onnx)")
    sys.exit(77)


# ---------------------------------------------------------------- a numpy evaluator of the operators loom writes


def attributes(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def windows(x, kh, kw, sh, sw, dh=1, dw=1):
    """x [N, C, H, W] (padded) -> [N, C, Ho, Wo, kh, kw] views of every window, its cells dh, dw apart."""
    n, c, h, w = x.shape
    ho, wo = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(x, (n, c, ho, wo, kh, kw),
                                           (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw), writeable=False)


def pad_images(x, pads, value):
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def conv(x, w, b, a):
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError("the numpy evaluator does Conv with explicit pads only")
    kh, kw = w.shape[2:]
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    p = a.get("pads", [0, 0, 0, 0])
    cols = windows(pad_images(x, p, 0.0), kh, kw, sh, sw, dh, dw)  # [N, Cin, Ho, Wo, kh, kw]
    # group g: output channels [g F/G, (g+1) F/G) see input channels [g C/G, (g+1) C/G).
    groups = a.get("group", 1)
    cg, fg = x.shape[1] // groups, w.shape[0] // groups
    y = np.concatenate([np.einsum("nchwij,fcij->nfhw", cols[:, g * cg:(g + 1) * cg], w[g * fg:(g + 1) * fg])
                        for g in range(groups)], axis=1)
    return y + b.reshape(1, -1, 1, 1) if b is not None else y


def max_pool(x, a):
    if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
        raise ValueError("the numpy evaluator does MaxPool without ceil_mode or dilations")
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    return windows(pad_images(x, a.get("pads", [0, 0, 0, 0]), -np.inf), kh, kw, sh, sw).max(axis=(4, 5))


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def run_numpy(model, x):
    """The graph's output for x, every operator in float64."""
    graph = model.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    values = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in values.items()}
    values[graph.input[0].name] = x.astype(np.float64)
    for node in graph.node:
        a = attributes(node)
        i = [values[name] if name else None for name in node.input]
        op = node.op_type
        if op == "Transpose":
            y = np.transpose(i[0], a["perm"])
        elif op == "Conv":
            y = conv(i[0], i[1], i[2] if len(i) > 2 else None, a)
        elif op == "Relu":
            y = np.maximum(i[0], 0)
        elif op == "Softmax":
            y = softmax(i[0], a.get("axis", -1))
        elif op == "BatchNormalization":
            x0, gamma, beta, mean, var = i
            shape = (1, -1) + (1,) * (x0.ndim - 2)
            y = (x0 - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + a.get("epsilon", 1e-5)) \
                * gamma.reshape(shape) + beta.reshape(shape)
        elif op == "MaxPool":
            y = max_pool(i[0], a)
        elif op == "Flatten":
            axis = a.get("axis", 1)
            y = i[0].reshape(int(np.prod(i[0].shape[:axis])), -1)
        elif op == "Gemm":
            x0 = i[0].T if a.get("transA", 0) else i[0]
            w = i[1].T if a.get("transB", 0) else i[1]
            y = a.get("alpha", 1.0) * (x0 @ w)
            if len(i) > 2 and i[2] is not None:
                y = y + a.get("beta", 1.0) * i[2]
        elif op == "Pad":
            if a.get("mode", b"constant") not in (b"constant", "constant"):
                raise ValueError("the numpy evaluator does constant Pad only")
            p = [int(v) for v in i[1]]
            half = len(p) // 2
            value = float(i[2]) if len(i) > 2 and i[2] is not None else 0.0
            y = np.pad(i[0], [(p[d], p[d + half]) for d in range(half)], constant_values=value)
        elif op == "Slice":
            starts, ends = i[1], i[2]
            axes = i[3] if len(i) > 3 and i[3] is not None else range(len(starts))
            steps = i[4] if len(i) > 4 and i[4] is not None else [1] * len(starts)
            index = [slice(None)] * i[0].ndim
            for s, e, ax, st in zip(starts, ends, axes, steps):
                index[int(ax)] = slice(int(s), int(e), int(st))
            y = i[0][tuple(index)]
        elif op == "Identity":
            y = i[0]
        else:
            raise ValueError(f"the numpy evaluator has no {op}")
        values[node.output[0]] = y
    return values[graph.output[0].name]


# ---------------------------------------------------------------- the runtimes


def make_runtime(name):
    """A function (path, x) -> outputs, or None when the runtime's package is missing."""
    if name == "numpy":
        return lambda path, x: run_numpy(onnx.load(path), x)
    if name == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            return None

        def run(path, x):
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            return session.run(None, {session.get_inputs()[0].name: x})[0]
        return run
    if name == "openvino":
        try:
            import openvino as ov
        except ImportError:
            return None
        core = ov.Core()

        def run(path, x):
            compiled = core.compile_model(core.read_model(path), "CPU",
                                          {"INFERENCE_PRECISION_HINT": "f32"})  # no bf16 on CPUs that have it
            return compiled(x)[compiled.output(0)]
        return run
    raise SystemExit(f"onnx_check: unknown runtime '{name}'")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool", required=True, help="build/examples/onnx_tool")
    parser.add_argument("--runtimes", default="numpy")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--require", action="store_true", help="fail, not skip, when a runtime is missing")
    args = parser.parse_args()
    runtimes = {}
    for name in args.runtimes.split(","):
        run = make_runtime(name)
        if run is None:
            message = f"onnx_check: the {name} Python package is not installed"
            if args.require:
                print(message, file=sys.stderr)
                return 1
            print(message + ": skipped")
            return 77
        runtimes[name] = run
    failures = 0
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([args.tool, "cases", work], check=True, stdout=subprocess.DEVNULL)
        cases = sorted(f[:-5] for f in os.listdir(work) if f.endswith(".onnx"))
        if not cases:
            print("onnx_check: onnx_tool wrote no case", file=sys.stderr)
            return 1
        for case in cases:
            path = os.path.join(work, case + ".onnx")
            try:
                onnx.checker.check_model(onnx.load(path), full_check=True)
            except Exception as e:  # noqa: BLE001  (the checker's errors have no common base)
                print(f"{case}: onnx.checker refuses it: {e}")
                failures += 1
                continue
            x = np.load(os.path.join(work, case + ".input.npy"))
            expected = np.load(os.path.join(work, case + ".output.npy"))
            for name, run in runtimes.items():
                got = np.asarray(run(path, x))
                if got.shape != expected.shape:
                    print(f"{case}: {name}: output shape {got.shape}, loom's {expected.shape}")
                    failures += 1
                    continue
                worst = float(np.max(np.abs(got.astype(np.float64) - expected)))
                ok = worst <= args.tolerance
                failures += not ok
                print(f"{case}: {name}: largest difference from loom {worst:.2e} "
                      f"({'ok' if ok else 'over ' + format(args.tolerance, '.0e')})")
    print(f"onnx_check: {len(cases)} cases, {failures} failing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
