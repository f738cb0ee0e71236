"""The PyTorch twin (bench/pytorch_twin.py) step for step against Keras, in
float64, as tests/reference/step_check.py does for loom: does the twin train
as Keras trains?

    $(scripts/reference-env) bench/reference/twin_step_check.py keras --out DIR [--steps 20]
    /usr/bin/python3 bench/reference/twin_step_check.py twin --out DIR

Two Pythons, because the twin runs on Debian's PyTorch (python3-torch) and
Keras on the reference environment's. `keras` builds the notebook's model in
Keras (float64, Dropout's rates 0), saves its initial weights, trains `steps`
batches of 32 Fashion-MNIST images with RMSprop and writes the loss and every
weight (moving statistics too) after each step. `twin` builds the twin's model
(pytorch_twin.notebook_model and its KerasRMSprop) in float64, copies Keras's
initial weights into it (kernels transposed to PyTorch's layout, the first
Dense's rows permuted from Keras's (h, w, c) flattening to the twin's
(c, h, w)), trains the same batches and prints, per step, the largest
max |twin - Keras| / max |Keras| over the tensors and where, and the largest
without the moving variances (PyTorch updates them with the unbiased batch
variance, Keras 3 with the biased one).
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "reference"))
from step_check import DATA, read_idx  # noqa: E402  (numpy only at import: both Pythons can)


def keras_side(out, steps):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from step_check import notebook_model, set_dtype
    set_dtype(keras, "float64")
    keras.utils.set_random_seed(1)
    model = notebook_model(keras, keras.layers)
    model.compile(optimizer=keras.optimizers.RMSprop(), loss=keras.losses.SparseCategoricalCrossentropy())
    x = read_idx(os.path.join(DATA, "train-images-idx3-ubyte.gz"))[:steps * 32].reshape(-1, 28, 28, 1) / 255.0
    y = read_idx(os.path.join(DATA, "train-labels-idx1-ubyte.gz"))[:steps * 32].astype(np.int64)
    initial = [np.array(w, np.float64) for w in model.get_weights()]
    losses, states = [], []
    for s in range(steps):
        losses.append(float(model.train_on_batch(x[s * 32:(s + 1) * 32], y[s * 32:(s + 1) * 32])))
        states.append([np.array(w, np.float64) for w in model.get_weights()])
    np.savez(os.path.join(out, "keras.npz"), x=x, y=y, losses=np.array(losses),
             **{f"initial_{i}": w for i, w in enumerate(initial)},
             **{f"step{s}_{i}": w for s, ws in enumerate(states) for i, w in enumerate(ws)})
    print(f"keras side: {steps} steps written to {out}/keras.npz")


def twin_side(out):
    sys.argv = [sys.argv[0], "--threads", "1"]  # pytorch_twin parses its arguments when imported
    sys.path.insert(0, os.path.join(HERE, ".."))
    import torch
    import pytorch_twin as twin
    torch.set_default_dtype(torch.float64)
    d = np.load(os.path.join(out, "keras.npz"))
    steps = len(d["losses"])
    keras_initial = [d[f"initial_{i}"] for i in range(sum(k.startswith("initial_") for k in d.files))]
    model = twin.notebook_model().double()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # as Keras's side: Dropout's masks come from two different streams
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    denses = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]

    def dense_rows(kernel):  # Keras's rows in (h, w, c) order -> the twin's (c, h, w) flattening
        return kernel.reshape(4, 4, 25, -1).transpose(2, 0, 1, 3).reshape(400, -1)

    def to_twin(ws):
        """Keras's weight list -> the same values in the twin's tensors, in Keras's order."""
        it = iter(ws)
        out = []
        for conv, bn in zip(convs, bns):
            out += [(conv.weight, next(it).transpose(3, 2, 0, 1)), (conv.bias, next(it))]
            out += [(bn.weight, next(it)), (bn.bias, next(it)), (bn.running_mean, next(it)), (bn.running_var, next(it))]
        out += [(denses[0].weight, dense_rows(next(it)).T), (denses[0].bias, next(it))]
        out += [(denses[1].weight, next(it).T), (denses[1].bias, next(it))]
        return out

    with torch.no_grad():
        for tensor, value in to_twin(keras_initial):
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    names = ["conv/kernel", "conv/bias", "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"] * 3 + \
            ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
    optimizer = twin.KerasRMSprop(model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.from_numpy(d["x"]).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(d["y"])
    model.train()
    for s in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[s * 32:(s + 1) * 32]), y[s * 32:(s + 1) * 32])
        loss.backward()
        optimizer.step()
        keras_now = [d[f"step{s}_{i}"] for i in range(len(keras_initial))]
        diffs = [(abs(loss.item() - d["losses"][s]) / abs(d["losses"][s]), "loss")]
        for (tensor, want), name in zip(to_twin(keras_now), names):
            diffs.append((np.max(np.abs(tensor.detach().numpy() - want)) / max(np.max(np.abs(want)), 1e-30), name))
        worst = max(diffs)
        rest = max(x for x in diffs if not x[1].endswith("moving_variance"))
        print(f"step {s + 1}: largest difference {worst[0]:.2e} ({worst[1]}); "
              f"without the moving variances {rest[0]:.2e} ({rest[1]})")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("side", choices=["keras", "twin"])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    keras_side(args.out, args.steps) if args.side == "keras" else twin_side(args.out)


if __name__ == "__main__":
    main()
