#!/usr/bin/env python3
"""The Keras notebook's CNN in PyTorch, timed like loom's notebook_speed.

    bench/pytorch_notebook.py [--threads T] [--batch-size B] [--steps N]
                              [--infer-batches 32,1000] [--infer-images 4096]
                              [--repeats R] [--seed S] [--json]

It is the PyTorch half of bench/compare-pytorch. The model is the notebook's
CNN_FMNST_model() (examples/notebook_model.hpp), in torch's native NCHW layout
(bench/notebook_bench.py, which bench/peers_notebook.py shares, holds it and
the timing conventions):

    Conv2D(75, 3x3, same, relu) BatchNorm MaxPool(2, 2, same)
    Conv2D(50, 3x3, same, relu) Dropout(0.2) BatchNorm MaxPool(2, 2, same)
    Conv2D(25, 3x3, same, relu) BatchNorm MaxPool(2, 2, same)
    Flatten Dense(512, relu) Dropout(0.3) Dense(10, softmax)

with Keras's defaults: BatchNormalization(momentum=0.99, epsilon=1e-3), i.e.
torch momentum 0.01; RMSprop(learning_rate=0.001, rho=0.9, epsilon=1e-7);
glorot_uniform kernels and zero biases. Keras's "same" max pooling pads at the
bottom/right only, which for a 2x2 window with stride 2 is ceil_mode=True
(7 -> 4). Training uses CrossEntropyLoss (softmax and cross-entropy fused,
integer labels); inference applies the softmax, as Keras's predict() does.

The data is random (uniform pixels, random labels): this measures speed, not
accuracy. Training: 10 warm-up steps, then --repeats runs of --steps timed
steps each (zero_grad, forward in train mode, loss, backward, step) on batches
cut from a pool of 1024 images, as notebook_speed does. Inference: model.eval()
under torch.inference_mode(), --infer-images images in batches of each size in
--infer-batches (the last batch may be smaller), one warm-up pass, then
--repeats timed passes. Speeds are images per second, median and best of the
repeats. With --json the last line of the output is one JSON object.
"""
import argparse
import json
import os
import platform
import re
import sys

from notebook_bench import (TRAIN_POOL, TRAINABLE_PARAMETERS, WARMUP_STEPS, batch_list, inference_slices,
                            positive_int, time_inference, time_training, torch_notebook_model, train_start)


def parse_args():
    p = argparse.ArgumentParser(description="Time the Keras notebook's CNN in PyTorch: training steps and "
                                            "inference, images per second")
    p.add_argument("--threads", type=positive_int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="training batch size (default 32)")
    p.add_argument("--steps", type=positive_int, default=200,
                   help=f"timed training steps per repeat, after {WARMUP_STEPS} warm-up steps (default 200)")
    p.add_argument("--infer-batches", type=batch_list, default=[32, 1000],
                   help="comma-separated inference batch sizes (default 32,1000)")
    p.add_argument("--infer-images", type=positive_int, default=4096,
                   help="images per inference measurement (default 4096)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="repeats of each measurement; median and best are reported (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and the data (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    return p.parse_args()


args = parse_args()
# Before torch (and OpenBLAS / OpenMP) start: pools that read these at load time
# get the same thread count as torch.set_num_threads. Explicit settings win.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, str(args.threads))

import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_interop_threads(1)
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)


def blas_summary():
    """One short line about the BLAS and oneDNN (mkldnn) torch was built with."""
    try:
        config = torch.__config__.show()
    except Exception:  # pragma: no cover - very old or unusual builds
        config = ""
    fields = dict(re.findall(r"([A-Z_][A-Z0-9_]*)=([^,\n]*)", config))
    lower = config.lower()
    parts = [f"BLAS_INFO={fields.get('BLAS_INFO', '?')}"]
    if "LAPACK_INFO" in fields:
        parts.append(f"LAPACK_INFO={fields['LAPACK_INFO']}")
    parts.append(f"openblas {'mentioned' if 'openblas' in lower else 'not mentioned'}")
    parts.append(f"mkldnn/oneDNN {'available' if torch.backends.mkldnn.is_available() else 'not available'}")
    parts.append(f"USE_MKLDNN={fields.get('USE_MKLDNN', '?')}")
    parts.append(f"USE_OPENMP={fields.get('USE_OPENMP', '?')}")
    return ", ".join(parts)


def loaded_math_libraries():
    """The BLAS, LAPACK, oneDNN and OpenMP libraries this process has loaded (Linux only).

    Debian's torch says BLAS_INFO=generic: it links libblas.so.3, which is whatever
    the libblas.so.3 alternative points to (OpenBLAS once libopenblas0 is installed)."""
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                name = os.path.basename(path)
                if path.startswith("/") and any(k in name for k in ("blas", "lapack", "dnnl", "mkl", "omp")):
                    short = os.path.join(os.path.basename(os.path.dirname(path)), name)
                    if short not in found:
                        found.append(short)
    except OSError:
        return "unknown"
    return ", ".join(found) or "none found"


def inference_context():
    return torch.inference_mode() if hasattr(torch, "inference_mode") else torch.no_grad()


def main():
    print(f"PyTorch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}")
    print(f"threads: intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()} "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')})")
    malloc = [f"{v}={os.environ[v]}" for v in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
              if v in os.environ]
    print(f"glibc malloc: {', '.join(malloc) if malloc else 'default settings'}")
    print(f"build: {blas_summary()}")
    print(f"loaded: {loaded_math_libraries()}")

    model = torch_notebook_model()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    print(f"model: {trainable:,} trainable parameters, {buffers:,} non-trainable (BatchNorm running statistics)")
    assert trainable == TRAINABLE_PARAMETERS, f"expected {TRAINABLE_PARAMETERS:,} trainable parameters, got {trainable:,}"

    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.001, alpha=0.9, eps=1e-7)

    batch = args.batch_size
    pool_n = max(TRAIN_POOL, batch)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.rand(pool_n, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (pool_n,), generator=gen)

    def train_step(step):
        start = train_start(step, batch, pool_n)
        xb, yb = x[start:start + batch], y[start:start + batch]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    model.train()
    train, _, loss = time_training(train_step, args.steps, args.repeats, batch)
    last_loss = float(loss.item())
    train_median, train_best = train["median"], train["best"]
    print(f"training, batch {batch}: {args.repeats} x {args.steps} steps, median {train_median:.0f} images/s "
          f"({1e3 * batch / train_median:.2f} ms/step), best {train_best:.0f} images/s "
          f"(last loss {last_loss:.4f})")

    n = args.infer_images
    xi = torch.rand(n, 1, 28, 28, generator=gen)
    model.eval()
    infer = {}
    with inference_context():
        for b in args.infer_batches:
            batches = [xi[i:j] for i, j in inference_slices(n, b)]

            def predict():
                for xb in batches:
                    torch.softmax(model(xb), dim=1)

            infer[str(b)], _ = time_inference(predict, n, args.repeats)
            print(f"inference, batch {b}: {args.repeats} x {n} images, median {infer[str(b)]['median']:.0f} "
                  f"images/s, best {infer[str(b)]['best']:.0f} images/s")

    if args.json:
        print(json.dumps({
            "framework": "pytorch",
            "version": torch.__version__,
            "threads": args.threads,
            "train_batch": batch,
            "train_steps": args.steps,
            "repeats": args.repeats,
            "train_images_per_s_median": round(train_median, 1),
            "train_images_per_s_best": round(train_best, 1),
            "infer_images": n,
            "infer": {k: {"median": round(v["median"], 1), "best": round(v["best"], 1)} for k, v in infer.items()},
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
