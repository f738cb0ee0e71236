#!/usr/bin/env python3
"""The notebook's recipe trained in PyTorch with Keras's semantics: an independent
twin of loom's experiment, to tell what the recipe itself gives from what loom does.

    bench/pytorch_twin.py --model 2 --seeds 1,2,3 [--epochs 20] [--threads 1]
                          [--data-dir DIR] [--out FILE.json]

One JSON object per seed is written (a list, to --out) with the per-epoch
history (loss, accuracy, val_loss, val_accuracy, test accuracy), the last
epoch's test accuracy (the notebook's recipe) and the volatility (the mean
absolute change of val_accuracy between consecutive epochs over the last 10).

The model is the notebook's CNN (bench/pytorch_notebook.py holds the same
layers for timing); where PyTorch's defaults differ from Keras's, Keras's are
used (docs/keras-compat.md):

  - kernels glorot_uniform (fan_in = kh*kw*cin, fan_out = kh*kw*cout), biases zero;
  - BatchNormalization momentum 0.99 (torch momentum 0.01), epsilon 1e-3.
    torch updates the running variance with the unbiased batch variance,
    n/(n-1) times the biased one, as TensorFlow's fused kernel does for
    tf.keras 2.x (Keras 3 uses the biased one: at n = 32*7*7 = 1,568, the
    smallest n here, the two differ by 0.06 %);
  - RMSprop with today's Keras rule, w -= lr*g/sqrt(a + eps), lr 1e-3, rho 0.9,
    eps 1e-7 (torch.optim.RMSprop puts eps outside the root, TensorFlow
    2.0-2.10's rule, so it is written out here); --legacy-rmsprop for that one;
  - inverted dropout (torch's, as Keras's), "same" 2x2 max pooling
    (ceil_mode: 7 -> 4), training data reshuffled every epoch, batch 32, the
    last batch of 48,000 / 32 is full;
  - the loss: softmax cross-entropy on the logits. Keras computes its
    cross-entropy after a softmax output from the logits too (the softmax's
    `_keras_logits`), so no clipping applies in either.

The data split is the notebook's: the first 48,000 training images train, the
last 12,000 validate; the 10,000 test images are only scored. Model 1 and 3
take one-hot labels with categorical cross-entropy, which for one-hot targets
is the same loss and gradient as sparse; models 3 and 4 take raw 0..255
pixels. Models 1-3 train 20 epochs, model 4 10.
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np

NOTEBOOK_EPOCHS = {1: 20, 2: 20, 3: 20, 4: 10}
NORMALIZED = {1: True, 2: True, 3: False, 4: False}


def parse_args():
    p = argparse.ArgumentParser(description="The notebook's recipe in PyTorch with Keras's semantics")
    p.add_argument("--model", type=int, choices=[1, 2, 3, 4], default=2, help="the notebook's model (default 2)")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds, one run each (default 1,2,3)")
    p.add_argument("--epochs", type=int, default=0, help="epochs (default: the notebook's for the model)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--legacy-rmsprop", action="store_true",
                   help="RMSprop with eps outside the square root (TensorFlow 2.0-2.10)")
    p.add_argument("--data-dir", default=os.environ.get("LOOM_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    p.add_argument("--out", default="", help="JSON file for the results (written at the end of every run)")
    args = p.parse_args()
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if not args.seeds:
        p.error("--seeds: at least one seed")
    if args.epochs < 0 or args.threads < 1:
        p.error("--epochs must be >= 0 and --threads >= 1")
    return args


def keep_freed_memory():
    """glibc malloc: no mmap, no trimming (what MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4 GiB do, and
    bench/compare-pytorch --keep-freed-memory). Otherwise torch's large activation buffers are mapped
    and unmapped at every step, and the page faults made training 1.9x slower here."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    except (OSError, AttributeError):
        pass  # not glibc: slower, not different


args = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, str(args.threads))
keep_freed_memory()

import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_interop_threads(1)
torch.set_num_threads(args.threads)


def read_idx(path, magic, dims):
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        sys.exit(f"pytorch_twin: cannot read {path}: {e}")
    if int.from_bytes(data[0:4], "big") != magic:
        sys.exit(f"pytorch_twin: {path}: not an IDX file of the expected kind")
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        sys.exit(f"pytorch_twin: {path}: holds {body.size} values, its header says {shape}")
    return body.reshape(shape)


def load_data(model_number):
    d = args.data_dir
    xtr = read_idx(os.path.join(d, "train-images-idx3-ubyte.gz"), 2051, 3)
    ytr = read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz"), 2049, 1)
    xte = read_idx(os.path.join(d, "t10k-images-idx3-ubyte.gz"), 2051, 3)
    yte = read_idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"), 2049, 1)
    scale = 255.0 if NORMALIZED[model_number] else 1.0

    def images(a):
        return torch.from_numpy(a.astype(np.float32) / np.float32(scale)).reshape(-1, 1, 28, 28)

    def labels(a):
        return torch.from_numpy(a.astype(np.int64))

    return ((images(xtr[:48000]), labels(ytr[:48000])), (images(xtr[48000:]), labels(ytr[48000:])),
            (images(xte), labels(yte)))


def notebook_model():
    def conv(cin, cout):
        return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    def pool():
        return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)

    model = nn.Sequential(
        conv(1, 75), nn.ReLU(), bn(75), pool(),
        conv(75, 50), nn.ReLU(), nn.Dropout(0.2), bn(50), pool(),
        conv(50, 25), nn.ReLU(), bn(25), pool(),
        nn.Flatten(),  # NCHW flattening: a fixed permutation of Keras's NHWC order, the same function class
        nn.Linear(25 * 4 * 4, 512), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(512, 10),
    )
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


class KerasRMSprop(torch.optim.Optimizer):
    """a <- rho a + (1 - rho) g^2; w <- w - lr g / sqrt(a + eps) (Keras 3, tf.keras >= 2.11), or
    w <- w - lr g / (sqrt(a) + eps) with legacy=True (TensorFlow 2.0-2.10, torch's RMSprop)."""

    def __init__(self, params, lr=1e-3, rho=0.9, eps=1e-7, legacy=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, legacy=legacy))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, rho, eps = group["lr"], group["rho"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["velocity"] = torch.zeros_like(p)
                a = state["velocity"]
                a.mul_(rho).addcmul_(p.grad, p.grad, value=1 - rho)
                denom = a.sqrt().add_(eps) if group["legacy"] else (a + eps).sqrt_()
                p.addcdiv_(p.grad, denom, value=-lr)


def evaluate(model, x, y, batch=1000):
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, correct = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            logits = model(x[i:i + batch])
            total += loss_fn(logits, y[i:i + batch]).item()
            correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    return total / len(x), correct / len(x)


def volatility(val_accuracy, last=10):
    tail = val_accuracy[-(last + 1):]
    steps = [abs(b - a) for a, b in zip(tail, tail[1:])]
    return sum(steps) / len(steps) if steps else 0.0


def train(seed, data, epochs):
    (xtr, ytr), (xva, yva), (xte, yte) = data
    torch.manual_seed(seed)
    model = notebook_model()
    optimizer = KerasRMSprop(model.parameters(), legacy=args.legacy_rmsprop)
    loss_fn = nn.CrossEntropyLoss()
    order_gen = torch.Generator().manual_seed(seed + 1)
    history = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "test_accuracy")}
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xtr), generator=order_gen)
        loss_sum, correct = 0.0, 0
        t0 = time.time()
        for i in range(0, len(xtr), 32):
            idx = order[i:i + 32]
            xb, yb = xtr[idx], ytr[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
        val_loss, val_acc = evaluate(model, xva, yva)
        _, test_acc = evaluate(model, xte, yte)
        for k, v in (("loss", loss_sum / len(xtr)), ("accuracy", correct / len(xtr)), ("val_loss", val_loss),
                     ("val_accuracy", val_acc), ("test_accuracy", test_acc)):
            history[k].append(v)
        print(f"seed {seed} epoch {epoch + 1}/{epochs} - {time.time() - t0:.0f}s - loss: {history['loss'][-1]:.4f} - "
              f"accuracy: {history['accuracy'][-1]:.4f} - val_loss: {val_loss:.4f} - val_accuracy: {val_acc:.4f} "
              f"- test_accuracy: {test_acc:.4f}", flush=True)
    best = max(range(epochs), key=lambda e: (history["val_accuracy"][e], -e))
    return {
        "seed": seed, "epochs": epochs, "seconds": time.time() - start,
        "last_epoch_test_accuracy": history["test_accuracy"][-1],
        "volatility": volatility(history["val_accuracy"]),
        "best_val_epoch": best + 1, "best_val_accuracy": history["val_accuracy"][best],
        "best_val_test_accuracy": history["test_accuracy"][best],
        "history": history,
    }


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def main():
    epochs = args.epochs or NOTEBOOK_EPOCHS[args.model]
    data = load_data(args.model)
    rule = "eps outside sqrt (TF 2.0-2.10)" if args.legacy_rmsprop else "eps inside sqrt (Keras 3)"
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads; model {args.model}, {epochs} epochs, "
          f"RMSprop {rule}, seeds {args.seeds}", flush=True)
    runs = []
    for seed in args.seeds:
        runs.append(train(seed, data, epochs))
        if args.out:
            write_json(args.out, {"model": args.model, "legacy_rmsprop": args.legacy_rmsprop,
                                  "torch": torch.__version__, "runs": runs})
    accs = [100 * r["last_epoch_test_accuracy"] for r in runs]
    mean = sum(accs) / len(accs)
    sd = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5 if len(accs) > 1 else 0.0
    print(f"model {args.model}: last-epoch test accuracy mean {mean:.2f} %, sd {sd:.2f}, "
          f"min {min(accs):.2f}, max {max(accs):.2f}; volatility "
          f"{100 * sum(r['volatility'] for r in runs) / len(runs):.2f} points")


if __name__ == "__main__":
    main()
