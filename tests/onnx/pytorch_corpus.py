"""ONNX files written by PyTorch 2, read by loom (run from the reference environment).

    pytorch_corpus.py --tool build/examples/onnx_tool --work DIR [--no-finetune]

Exports a corpus with torch.onnx.export, each model twice, the batch dimension dynamic: with the
torch.export-based exporter (dynamo=True, PyTorch's default since 2.9, opset 18) and with the
TorchScript one (dynamo=False, opset 17, still what many files were written with). Then:

  * every model built from the operators loom reads (the notebook's model as the PyTorch twin has
    it, convolutions with each padding, stride, kernel shape and bias variant, pooling with
    'valid', ceil_mode and asymmetric zero padding, BatchNorm2d and BatchNorm1d, Linear as Gemm
    and as MatMul + Add, Dropout, Softmax) in eval mode, its BatchNormalization statistics drawn
    away from 0 and 1: `onnx_tool predict` gives PyTorch's outputs within 1e-5 on 16 inputs;
  * every model with an operator loom does not read (average pooling, a residual Add, a grouped
    convolution, GELU) is refused with one line naming it;
  * fine-tuning: the PyTorch twin trained for one epoch on 12,000 Fashion-MNIST images (its
    BatchNormalization statistics then recomputed over them), exported with a softmax, then
    `onnx_tool finetune`: loom scores it as PyTorch does, and one more epoch in loom keeps or
    raises its test accuracy (at most 0.2 points lower, as noise).

Exits 1 on any failure.
"""
import argparse
import contextlib
import gzip
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from notebook_bench import torch_notebook_model  # noqa: E402  (the notebook's model in PyTorch)

DATA = "/usr/share/datasets/fashion-mnist"


class MatMulAdd(nn.Module):
    """A dense layer written as x @ W + b: exported as MatMul then Add."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_in, n_out) * 0.2)
        self.b = nn.Parameter(torch.randn(n_out) * 0.1)

    def forward(self, x):
        return torch.matmul(x, self.w) + self.b


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


def supported():
    """(name, model, per-sample input shape) for models of the operators loom reads."""
    twin = nn.Sequential(torch_notebook_model(), nn.Softmax(dim=1))
    convolutions = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),                        # Keras's 'same'
        nn.Conv2d(8, 6, (5, 3), stride=(2, 1), padding=(2, 1), bias=False),
        nn.Conv2d(6, 5, 2, stride=2), nn.ReLU(),                         # 'valid'
        nn.Conv2d(5, 4, 3, stride=2, padding=1),                         # symmetric pads Keras would not use
        nn.Flatten(), nn.Linear(4 * 2 * 4, 5), nn.Softmax(dim=1))
    pooling = nn.Sequential(
        nn.ZeroPad2d((1, 2, 0, 3)),                                      # left, right, top, bottom
        nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2),                                                 # 'valid', the odd row dropped
        nn.MaxPool2d(2, ceil_mode=True),                                 # Keras's 'same'
        nn.MaxPool2d(3, stride=1, padding=1),                            # 'same', stride 1
        nn.Dropout(0.3), nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.Softmax(dim=-1))
    vectors = nn.Sequential(
        nn.Linear(9, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.5),
        MatMulAdd(12, 7), nn.ReLU(), nn.Linear(7, 3, bias=False), nn.Softmax(dim=1))
    grouped = nn.Sequential(
        nn.Conv2d(4, 6, 3, groups=2, padding=1), nn.ReLU(),               # groups
        nn.Conv2d(6, 6, 3, dilation=2, groups=3),                        # dilated, 'valid'
        nn.Conv2d(6, 4, 3, dilation=(2, 1), padding=(2, 1)),             # dilated, 'same'
        nn.Flatten(), nn.Linear(4 * 6 * 5, 3))
    return [("pytorch_notebook_twin", twin, (1, 28, 28)), ("pytorch_convolutions", convolutions, (3, 17, 15)),
            ("pytorch_grouped", grouped, (4, 10, 9)),
            ("pytorch_pooling", pooling, (2, 14, 13)), ("pytorch_vectors", vectors, (9,))]


def refused():
    """(name, model, input shape, what loom's one line must name: any of these)."""
    return [("pytorch_average_pool", nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2)), (1, 8, 8), ("AveragePool",)),
            ("pytorch_residual", nn.Sequential(nn.Conv2d(1, 2, 1), Residual(2)), (1, 8, 8), ("Add",)),
            ("pytorch_gelu", nn.Sequential(nn.Linear(4, 4), nn.GELU()), (4,), ("Div", "Gelu", "Erf"))]


def randomize_statistics(model, rng):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.from_numpy(rng.uniform(-0.3, 0.3, m.num_features).astype(np.float32)))
            m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, m.num_features).astype(np.float32)))
            m.weight.data.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.num_features).astype(np.float32)))
            m.bias.data.copy_(torch.from_numpy(rng.uniform(-0.2, 0.2, m.num_features).astype(np.float32)))


EXPORTERS = ("dynamo", "torchscript")


def export(model, shape, path, exporter="torchscript"):
    """torch.onnx.export with a dynamic batch: the torch.export-based exporter (dynamo=True, PyTorch's
    default since 2.9, opset 18) or the TorchScript one (dynamo=False, opset 17)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        if exporter == "dynamo":
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                # (its progress lines, and notes that torchvision is not installed)
                program = torch.onnx.export(model, (torch.zeros((2,) + shape),), dynamo=True, verbose=False,
                                            input_names=["x"], output_names=["y"], opset_version=18,
                                            dynamic_shapes=({0: torch.export.Dim("N")},))
            program.save(path)
        else:
            torch.onnx.export(model, torch.zeros((2,) + shape), path, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17, dynamo=False)


def read_idx(name):
    with gzip.open(os.path.join(DATA, name)) as f:
        raw = f.read()
    return np.frombuffer(raw, np.uint8, offset=16 if "images" in name else 8)


def finetune_case(tool, work):
    """The twin trained an epoch on 12,000 images in PyTorch; loom's accuracy before and after an epoch."""
    torch.manual_seed(0)
    x = read_idx("train-images-idx3-ubyte.gz").reshape(-1, 1, 28, 28)[:12000].astype(np.float32) / 255
    y = read_idx("train-labels-idx1-ubyte.gz")[:12000].astype(np.int64)
    model = torch_notebook_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    order = np.random.default_rng(0).permutation(len(x))
    for i in range(0, len(x), 32):
        idx = order[i:i + 32]
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
        loss.backward()
        optimizer.step()
    # The moving statistics of Keras's momentum (0.99) lag an epoch this short: recompute them over
    # the training images (momentum None: their plain average), as PyTorch users recalibrate.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        for i in range(0, len(x), 500):
            model(torch.from_numpy(x[i:i + 500]))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.01  # Keras's 0.99 again, for the file (and loom's fine-tuning)
    full = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    xt = read_idx("t10k-images-idx3-ubyte.gz").reshape(-1, 1, 28, 28).astype(np.float32) / 255
    yt = read_idx("t10k-labels-idx1-ubyte.gz")
    with torch.no_grad():
        torch_accuracy = float((full(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())
    path = os.path.join(work, "pytorch_twin_trained.onnx")
    export(full, (1, 28, 28), path, "dynamo")
    out = subprocess.run([tool, "finetune", path], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"finetune: onnx_tool failed: {out.stderr.strip()}")
        return False
    result = json.loads(next(l for l in out.stdout.splitlines() if l.startswith("JSON: "))[6:])
    ok = abs(result["before"] - torch_accuracy) <= 0.0005 and result["after"] >= result["before"] - 0.002
    print(f"finetune: PyTorch's test accuracy {torch_accuracy:.4f}; loom reads it as {result['before']:.4f}, "
          f"after an epoch in loom {result['after']:.4f} ({'ok' if ok else 'FAILED'})")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--no-finetune", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    failures = 0
    for model_name, model, shape in supported():
        randomize_statistics(model, rng)
        model.eval()
        x = rng.uniform(size=(16,) + shape).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        for exporter in EXPORTERS:
            name = f"{model_name}.{exporter}"
            path = os.path.join(args.work, name + ".onnx")
            export(model, shape, path, exporter)
            np.save(os.path.join(args.work, name + ".input.npy"), x)
            out_path = os.path.join(args.work, name + ".loom.npy")
            run = subprocess.run([args.tool, "predict", path, os.path.join(args.work, name + ".input.npy"), out_path],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                print(f"{name}: loom did not read it: {run.stderr.strip()}")
                failures += 1
                continue
            got = np.load(out_path)
            worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
            ok = worst <= args.tolerance
            failures += not ok
            print(f"{name}: largest difference from PyTorch {worst:.2e} ({'ok' if ok else 'FAILED'})")
    for model_name, model, shape, named in refused():
        model.eval()
        for exporter in EXPORTERS:
            name = f"{model_name}.{exporter}"
            path = os.path.join(args.work, name + ".onnx")
            export(model, shape, path, exporter)
            np.save(os.path.join(args.work, name + ".input.npy"), rng.uniform(size=(2,) + shape).astype(np.float32))
            run = subprocess.run([args.tool, "predict", path, os.path.join(args.work, name + ".input.npy"),
                                  os.path.join(args.work, name + ".loom.npy")], capture_output=True, text=True)
            lines = run.stderr.strip().splitlines()
            ok = run.returncode == 1 and len(lines) == 1 and any(n in lines[0] for n in named)
            failures += not ok
            print(f"{name}: {'refused by name' if ok else 'NOT refused as expected'}: "
                  f"{lines[0] if lines else '(no message)'}")
    if not args.no_finetune:
        failures += not finetune_case(args.tool, args.work)
    print(f"pytorch_corpus: {failures} failing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
