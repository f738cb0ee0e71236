#!/usr/bin/env python3
"""The notebook's CNN in one peer framework, timed like loom's notebook_speed:
the per-process half of bench/compare-peers, run with the pinned reference
environment's python (scripts/reference-env).

    $(scripts/reference-env) bench/peers_notebook.py PEER [--isa native|avx2] [--threads T]
        [--train-batches 32,128] [--steps N] [--infer-batches 1,32,1000] [--infer-images N]
        [--repeats R] [--seed S] [--torch-layout channels_last|contiguous]
        [--epoch-sizes 48000,12000,10000] [--epoch-batch 32] [--epoch-eval-batch 32]

PEER, one framework and mode a process (each sets its threads and ISA cap
before its framework loads, and none shares a thread pool with another):

    pytorch-eager        PyTorch 2 eager; inference under torch.inference_mode
    pytorch-compile      torch.compile (Inductor); inference frozen, under no_grad
    tensorflow           Keras 3 model, tf.function steps, XLA off
    tensorflow-xla       the same, tf.function(jit_compile=True)
    onnxruntime          inference only: CPUExecutionProvider, ORT_ENABLE_ALL, one request at a time
    onnxruntime-concurrent  the same session serving T requests at once, one intra-op thread each
    openvino-latency     inference only: CPU plugin, LATENCY hint, one request at a time
    openvino-throughput  inference only: CPU plugin, THROUGHPUT hint, AsyncInferQueue
    pytorch-epoch        one experiment epoch in PyTorch 2, eager and compiled

and each framework's own reduced precision, which bench/compare-precision times
beside loom's mixed_bfloat16 and int8:

    pytorch-eager-bf16   pytorch-eager under torch.autocast("cpu", dtype=torch.bfloat16): the convolutions
                         and linear layers in bfloat16, training (backward outside the context, as
                         PyTorch's AMP examples do) and inference
    pytorch-compile-bf16 pytorch-compile under the same autocast
    tensorflow-bf16      tensorflow with Keras's mixed_bfloat16 policy set before the model is built
    onnxruntime-int8     onnxruntime on the model quantized by onnxruntime.quantization.quantize_static:
                         QDQ, int8 weights per channel (symmetric), uint8 activations (asymmetric, MinMax
                         on 256 calibration images), as loom::quantize
    openvino-int8-latency, openvino-int8-throughput
                         OpenVINO's CPU plugin on the same quantized file (it runs QDQ models in int8)

Every peer runs the same model (bench/notebook_bench.py: layers, Keras's
defaults, float32), the same random data and the same timing conventions
(notebook_bench's docstring): training steps with RMSprop and sparse
cross-entropy at each --train-batches size, inference with the softmax at each
--infer-batches size. A measurement that fails (torch.compile on a machine
without a working compiler, say) becomes a row with its one-line reason; the
others still run. The last line of the output is one JSON object with the
versions, the settings, the ISA cap and the rows.

--isa avx2 caps each peer to AVX2 by its own documented switch (AVX2_CAPS
below, with where each is documented); --isa native removes those switches
from the environment, so that native means native.
"""
import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time

from notebook_bench import (TRAIN_POOL, TRAINABLE_PARAMETERS, WARMUP_STEPS, batch_list, inference_slices,
                            positive_int, time_inference, time_training, torch_notebook_model, train_start)

BENCH = os.path.dirname(os.path.abspath(__file__))
PEERS = ("pytorch-eager", "pytorch-compile", "tensorflow", "tensorflow-xla", "onnxruntime", "onnxruntime-concurrent",
         "openvino-latency", "openvino-throughput", "pytorch-epoch",
         # Their reduced precision (issue 38), for bench/compare-precision:
         "pytorch-eager-bf16", "pytorch-compile-bf16", "tensorflow-bf16", "onnxruntime-int8", "openvino-int8-latency",
         "openvino-int8-throughput")
BF16_PEERS = ("pytorch-eager-bf16", "pytorch-compile-bf16", "tensorflow-bf16")
INT8_PEERS = ("onnxruntime-int8", "openvino-int8-latency", "openvino-int8-throughput")
CALIBRATION_IMAGES = 256  # as notebook_speed --int8 calibrates loom::quantize

# Each peer's own switch for "no instruction newer than AVX2", set before the
# framework is imported (each reads it once, at its first kernel):
#
# - ONEDNN_MAX_CPU_ISA: oneDNN's CPU dispatcher control (oneDNN's
#   doc/performance_considerations/dispatcher_control.md), read by the oneDNN
#   inside PyTorch (convolutions, and Inductor's convolutions), inside
#   TensorFlow (its oneDNN ops, on by default on x86 Linux) and inside
#   OpenVINO's CPU plugin (its oneDNN primitives and its own JIT kernels, which
#   derive from oneDNN's generator).
# - ATEN_CPU_CAPABILITY=avx2: ATen's kernel dispatch (aten/src/ATen/native/
#   DispatchStub.cpp), and the vector ISA Inductor generates code for
#   (torch/_inductor/cpu_vec_isa.py, pick_vec_isa).
# - MKL_ENABLE_INSTRUCTIONS=AVX2: MKL, which PyTorch's wheel uses for Linear's
#   GEMM. MKL's developer guide says it is honoured on Intel processors only:
#   on AMD it changes nothing (MKL picks its own path there).
# - XLA_FLAGS=--xla_cpu_max_isa=AVX2: the most XLA:CPU's LLVM code generator
#   may emit (XLA's flags reference; the string is in TensorFlow 2.21's
#   libtensorflow_cc). TensorFlow's own Eigen kernels are compiled for AVX in
#   the wheel (its start-up message lists AVX2 and AVX-512 as not used), below
#   the cap already.
# - OV_CPU_MAX_ISA: OpenVINO's cap for its own kernels' with_cpu_x86_* dispatch;
#   its "Max ISA cap" page says to set it together with ONEDNN_MAX_CPU_ISA, to
#   the same value. Release builds honour it from 2026.4 (openvino#38305; the
#   name is in libopenvino.so.2641), and the kernels the plugin reports switch
#   from *_avx512_* to *_avx2_* under the two. The kernel it picks for the Dense
#   layers, gemm_mlas_f32, is MLAS, which dispatches on CPUID; the cap page does
#   not say whether the caps reach it.
# - ONNX Runtime has no switch: MLAS chooses its kernels from CPUID at start-up
#   (onnxruntime/core/mlas/lib/platform.cpp) with no run-time switch, as its
#   maintainers answer in microsoft/onnxruntime#7010 and #12479 (the only
#   AVX-512 variable in 1.32's binary, ORT_QMOE_CPU_DISABLE_AVX512, concerns a
#   quantized mixture-of-experts operator). So bench/compare-peers caps it at
#   CPUID itself: it preloads bench/reference/cpuid_avx2.c, which turns on
#   Linux's CPUID faulting and answers every CPUID of the process with the
#   AVX-512 bits cleared, as an AVX2-only CPU would. The same library goes
#   under OpenVINO too, for the MLAS GEMM its own cap does not reach. Where the
#   kernel cannot fault CPUID, ONNX Runtime's rows say it ran uncapped.
AVX2_CAPS = {
    "pytorch": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "tensorflow": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "tensorflow-xla": {"ONEDNN_MAX_CPU_ISA": "AVX2", "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"},
    "onnxruntime": {},
    "openvino": {"OV_CPU_MAX_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
                 "OV_CPU_MAX_ISA")
CPUID_CAPPED = ("onnxruntime", "openvino")  # the families compare-peers preloads cpuid_avx2.so under
CPUID_CAP = "CPUID without AVX-512 (cpuid_avx2.so)"
NO_CAP = {"onnxruntime": "none: MLAS has no run-time ISA switch (AVX-512 kernels run)"}


def cpuid_cap():
    """(on, CPUIDs answered) of bench/reference/cpuid_avx2.c when it is preloaded, else None."""
    import ctypes
    try:
        status = ctypes.CDLL(None).cpuid_avx2_status
    except AttributeError:
        return None
    status.restype, status.argtypes = ctypes.c_int, [ctypes.POINTER(ctypes.c_long)]
    count = ctypes.c_long(0)
    return bool(status(ctypes.byref(count))), count.value


def parse_args():
    p = argparse.ArgumentParser(description="Time the Keras notebook's CNN in one peer framework (training steps "
                                            "and inference, images per second); the last line is JSON")
    p.add_argument("peer", choices=PEERS, help="framework and mode")
    p.add_argument("--isa", choices=("native", "avx2"), default="native",
                   help="native, or capped to AVX2 by the peer's own switches (default native)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads (default 2)")
    p.add_argument("--train-batches", type=batch_list, default=[32, 128],
                   help="comma-separated training batch sizes (default 32,128)")
    p.add_argument("--steps", type=positive_int, default=200,
                   help=f"timed training steps per repeat, after {WARMUP_STEPS} warm-up steps (default 200)")
    p.add_argument("--infer-batches", type=batch_list, default=[1, 32, 1000],
                   help="comma-separated inference batch sizes (default 1,32,1000)")
    p.add_argument("--infer-images", type=positive_int, default=4096,
                   help="images per inference measurement (default 4096)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="repeats of each measurement; median and best are reported (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and the data (default 0)")
    p.add_argument("--torch-layout", choices=("channels_last", "contiguous"), default="channels_last",
                   help="PyTorch's memory format for the model and images (default channels_last, which "
                        "PyTorch's performance tuning guide recommends for convolutions on CPUs)")
    p.add_argument("--epoch-sizes", type=batch_list, default=[48000, 12000, 10000],
                   help="pytorch-epoch: training, validation and test images (default 48000,12000,10000)")
    p.add_argument("--epoch-batch", type=positive_int, default=32, help="pytorch-epoch: training batch (default 32)")
    p.add_argument("--epoch-eval-batch", type=positive_int, default=32,
                   help="pytorch-epoch: validation and test batch (default 32, as Keras's fit and evaluate and "
                        "loom's experiment)")
    args = p.parse_args()
    if len(args.epoch_sizes) != 3:
        p.error(f"--epoch-sizes expects three sizes (training, validation, test), got {len(args.epoch_sizes)}")
    return args


def family(peer):
    """The key of AVX2_CAPS for a peer."""
    if peer.startswith("pytorch"):
        return "pytorch"
    if peer.startswith("openvino"):
        return "openvino"
    if peer.startswith("onnxruntime"):
        return "onnxruntime"
    return "tensorflow-xla" if peer == "tensorflow-xla" else "tensorflow"


def set_isa(peer, isa):
    """Sets (avx2) or removes (native) the peer's ISA switches; returns the cap's description."""
    caps = AVX2_CAPS[family(peer)]
    xla = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_cpu_max_isa=")]
    removed = [v for v in CAP_VARIABLES if v in os.environ]
    for v in CAP_VARIABLES:
        os.environ.pop(v, None)
    if isa == "avx2":
        for name, value in caps.items():
            if name == "XLA_FLAGS":
                xla.append(value)
            else:
                os.environ[name] = value
    if xla:
        os.environ["XLA_FLAGS"] = " ".join(xla)
    else:
        os.environ.pop("XLA_FLAGS", None)
    if isa == "native":
        if removed:
            print(f"native run: removed {', '.join(removed)} from the environment")
        if cpuid_cap():
            raise SystemExit("a native run with cpuid_avx2.so preloaded: it would cap the peer to AVX2")
        return "none"
    switches = [f"{name}={value}" for name, value in caps.items()]
    shim = cpuid_cap()
    if family(peer) in CPUID_CAPPED and shim and shim[0]:
        switches.append(CPUID_CAP)
    elif family(peer) in CPUID_CAPPED:
        print(f"{peer}: CPUID is not capped ({'this kernel cannot fault CPUID' if shim else 'cpuid_avx2.so not preloaded'})")
    if not switches:
        return NO_CAP[family(peer)] + ("; this machine cannot fault CPUID" if shim else "")
    return " ".join(switches)


def one_line(error):
    """An exception as one readable line: its type and its first non-empty lines, shortened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {' / '.join(lines[:2])}" if lines else type(error).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def measure(rows, measurement, batch, run):
    """Appends the row of one measurement: run() gives {"median", "best"}; an exception becomes the row's error."""
    row = {"measurement": measurement, "batch": batch}
    try:
        row.update({k: round(v, 1) for k, v in run().items()})
        print(f"{measurement}, batch {batch}: median {row['median']:,.0f} images/s, best {row['best']:,.0f}",
              flush=True)
    except Exception as e:  # the reason goes into the table; the other measurements still run
        row["error"] = one_line(e)
        print(f"{measurement}, batch {batch}: failed: {row['error']}", flush=True)
    rows.append(row)


def measure_inference(rows, args, n, batches_of, predict, context=contextlib.nullcontext, serve=None):
    """The inference rows: at each --infer-batches size, predict(xb) on every batch of the n images
    (batches_of(size) cuts them), or serve(batches) on them all, the whole pass timed by time_inference,
    inside context()."""
    for b in args.infer_batches:
        batches = batches_of(b)

        def infer():
            with context():
                def predict_all():
                    if serve is not None:
                        return serve(batches)
                    for xb in batches:
                        predict(xb)

                return time_inference(predict_all, n, args.repeats)[0]

        measure(rows, "inference", b, infer)


def allocator():
    preload = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload:
        return "jemalloc (LD_PRELOAD)"
    if "tcmalloc" in preload:
        return "tcmalloc (LD_PRELOAD)"
    tuned = [f"{v}={os.environ[v]}" for v in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_") if v in os.environ]
    return "glibc malloc" + (f" ({', '.join(tuned)})" if tuned else "")


def random_images(rng, n, layout="nchw"):
    import numpy as np
    shape = (n, 1, 28, 28) if layout == "nchw" else (n, 28, 28, 1)
    return rng.random(shape, dtype=np.float32)


# ---------------------------------------------------------------- PyTorch


def torch_setup(args):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before torch loads its OpenMP and MKL
        os.environ.setdefault(var, str(args.threads))
    import torch
    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)
    return torch


def torch_versions(torch):
    config = torch.__config__.show()
    onednn = next((line.split("v", 1)[1].split()[0] for line in config.splitlines() if "MKL-DNN v" in line), "?")
    mkl = next((line.split("Version", 1)[1].split("-")[0].strip() for line in config.splitlines()
                if "Math Kernel Library Version" in line), None)
    return {"PyTorch": torch.__version__, "oneDNN (PyTorch)": onednn, "MKL (PyTorch)": mkl or "not used"}


def torch_model(torch, args):
    torch.manual_seed(args.seed)
    model = torch_notebook_model()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == TRAINABLE_PARAMETERS, f"expected {TRAINABLE_PARAMETERS:,} parameters, got {trainable:,}"
    if args.torch_layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    return model


def torch_images(torch, args, rng, n):
    x = torch.from_numpy(random_images(rng, n))
    return x.contiguous(memory_format=torch.channels_last) if args.torch_layout == "channels_last" else x


def run_pytorch(args, compiled, bf16=False):
    """The training and inference rows; bf16: the forward passes under torch.autocast to bfloat16."""
    torch = torch_setup(args)
    import numpy as np
    from torch import nn
    versions = torch_versions(torch)
    rng = np.random.default_rng(args.seed + 1)
    rows = []

    def autocast():  # PyTorch's CPU autocast: conv2d and linear in bfloat16, the rest as its op lists say
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    for batch in args.train_batches:
        def train(batch=batch):
            model = torch_model(torch, args).train()
            pool_n = max(TRAIN_POOL, batch)
            x = torch_images(torch, args, rng, pool_n)
            y = torch.from_numpy(rng.integers(0, 10, pool_n))
            loss_fn = nn.CrossEntropyLoss()
            optimizer = torch.optim.RMSprop(model.parameters(), lr=0.001, alpha=0.9, eps=1e-7)
            forward, optimizer_step = model, optimizer.step
            if compiled:
                forward = torch.compile(model, dynamic=False)
                # "Compiling the optimizer with torch.compile" (PyTorch's tutorial): the step as its own graph.
                optimizer_step = torch.compile(optimizer.step, dynamic=False)

            def step(i):
                start = train_start(i, batch, pool_n)
                xb, yb = x[start:start + batch], y[start:start + batch]
                optimizer.zero_grad(set_to_none=True)
                with autocast():  # the forward pass and the loss; backward outside, as PyTorch's AMP examples
                    loss = loss_fn(forward(xb), yb)
                loss.backward()
                optimizer_step()
                return loss

            return time_training(step, args.steps, args.repeats, batch)[0]

        measure(rows, "training", batch, train)

    n = args.infer_images
    xi = torch_images(torch, args, rng, n)
    model = torch_model(torch, args).eval()
    if compiled:
        import torch._inductor.config as inductor_config
        # Inductor's CPU inference setting (its freezing option): weights folded in as
        # constants and prepacked for oneDNN; it applies under no_grad.
        inductor_config.freezing = True
        grad_off = torch.no_grad
        predict = torch.compile(lambda xb: torch.softmax(model(xb), dim=1), dynamic=False)
    else:
        grad_off = torch.inference_mode
        predict = lambda xb: torch.softmax(model(xb), dim=1)  # noqa: E731

    @contextlib.contextmanager
    def context():
        with grad_off(), autocast():
            yield

    measure_inference(rows, args, n, lambda b: [xi[i:j] for i, j in inference_slices(n, b)], predict, context)

    layout = "channels_last" if args.torch_layout == "channels_last" else "NCHW contiguous"
    threads = f"{torch.get_num_threads()} threads (inter-op {torch.get_num_interop_threads()})"
    if compiled:
        settings = f"torch.compile + compiled optimizer step; inference frozen, no_grad; {layout}; {threads}"
        details = ("torch.compile(dynamic=False), Inductor's default mode, a fresh Inductor cache; the optimizer "
                   "step compiled apart; inference frozen (freezing=True) under no_grad")
    else:
        settings = f"eager; inference_mode; {layout}; {threads}"
        details = "eager; inference under torch.inference_mode"
    if bf16:
        settings = f"autocast bfloat16; {settings}"
        details = ("torch.autocast('cpu', dtype=torch.bfloat16) around the forward pass and the loss (backward "
                   "outside) and around inference; " + details)
    details += (f"; {layout}; intra-op {torch.get_num_threads()} / inter-op {torch.get_num_interop_threads()} "
                f"threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; {allocator()}; RMSprop(lr 0.001, "
                f"alpha 0.9, eps 1e-7), CrossEntropyLoss")
    isa_check = f"ATen {torch_capability(torch)}"
    if compiled:
        from torch._inductor.cpu_vec_isa import pick_vec_isa
        isa_check += f", Inductor {pick_vec_isa() or 'no vector ISA'}"
    return {"framework": "PyTorch", "mode": ("torch.compile" if compiled else "eager") + (", bf16" if bf16 else ""),
            "precision": "bfloat16 autocast" if bf16 else "float32", "versions": versions,
            "settings": f"{settings}; {allocator().split(' (')[0]}", "details": details, "isa_check": isa_check,
            "rows": rows}


def torch_capability(torch):
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception as e:  # older builds
        return f"unknown ({one_line(e)})"


def run_pytorch_epoch(args):
    """One experiment epoch in PyTorch 2, eager and compiled: training on the first size at --epoch-batch
    (reshuffled, as fit does), then validation and test in inference at --epoch-eval-batch, each with its loss
    and accuracy, as the experiment's epoch and its test evaluation."""
    torch = torch_setup(args)
    import numpy as np
    from torch import nn
    n_train, n_val, n_test = args.epoch_sizes
    b, eb = args.epoch_batch, args.epoch_eval_batch
    rng = np.random.default_rng(args.seed + 1)
    data = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        data[name] = (torch_images(torch, args, rng, n), torch.from_numpy(rng.integers(0, 10, n)))
    loss_fn = nn.CrossEntropyLoss()
    result = {"train_images": n_train, "val_images": n_val, "test_images": n_test, "batch": b, "eval_batch": eb}

    def one_mode(compiled):
        model = torch_model(torch, args)
        optimizer = torch.optim.RMSprop(model.parameters(), lr=0.001, alpha=0.9, eps=1e-7)
        forward, optimizer_step = model, optimizer.step
        if compiled:
            # No freezing here: the weights change every step, and validation runs between epochs.
            forward = torch.compile(model, dynamic=False)
            optimizer_step = torch.compile(optimizer.step, dynamic=False)
        generator = torch.Generator().manual_seed(args.seed + 2)

        def train_epoch(x, y, limit=None):
            model.train()
            order = torch.randperm(len(x), generator=generator)
            total_loss, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
            starts = list(range(0, len(x), b))
            if limit is not None:  # warm-up: a few full batches and the last (maybe shorter) one
                starts = starts[:limit] + starts[-1:]
            for i in starts:
                idx = order[i:i + b]
                xb, yb = x[idx], y[idx]
                optimizer.zero_grad(set_to_none=True)
                out = forward(xb)
                loss = loss_fn(out, yb)
                loss.backward()
                optimizer_step()
                total_loss += loss.detach() * len(idx)
                correct += (out.argmax(1) == yb).sum()
            return float(total_loss) / len(x), int(correct) / len(x)

        def evaluate(x, y, limit=None):
            model.eval()
            total_loss, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
            starts = list(range(0, len(x), eb))
            if limit is not None:
                starts = starts[:limit] + starts[-1:]
            with torch.no_grad():
                for i in starts:
                    xb, yb = x[i:i + eb], y[i:i + eb]
                    out = forward(xb)
                    total_loss += loss_fn(out, yb) * len(xb)
                    correct += (out.argmax(1) == yb).sum()
            return float(total_loss) / len(x), int(correct) / len(x)

        t0 = time.perf_counter()  # warm-up (compilation, for torch.compile) on every batch shape the epoch meets
        train_epoch(*data["train"], limit=WARMUP_STEPS)
        evaluate(*data["val"], limit=2)
        evaluate(*data["test"], limit=2)
        warmup = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_epoch(*data["train"])
        t1 = time.perf_counter()
        evaluate(*data["val"])
        t2 = time.perf_counter()
        evaluate(*data["test"])
        t3 = time.perf_counter()
        return {"seconds": round(t3 - t0, 3), "train_seconds": round(t1 - t0, 3),
                "val_seconds": round(t2 - t1, 3), "test_seconds": round(t3 - t2, 3),
                "warmup_seconds": round(warmup, 3)}

    for mode, compiled in (("eager", False), ("torch.compile", True)):
        try:
            result[mode] = one_mode(compiled)
            r = result[mode]
            print(f"epoch, {mode}: {r['seconds']:.1f} s (training {r['train_seconds']:.1f} s, validation "
                  f"{r['val_seconds']:.1f} s, test {r['test_seconds']:.1f} s; warm-up {r['warmup_seconds']:.1f} s "
                  f"before it, not counted)", flush=True)
        except Exception as e:
            result[mode] = {"error": one_line(e)}
            print(f"epoch, {mode}: failed: {result[mode]['error']}", flush=True)
    timed = [m for m in ("eager", "torch.compile") if "seconds" in result[m]]
    if timed:
        best = min(timed, key=lambda m: result[m]["seconds"])
        result["best"], result["best_seconds"] = best, result[best]["seconds"]
    layout = "channels_last" if args.torch_layout == "channels_last" else "NCHW contiguous"
    details = (f"in-memory random data, reshuffled with randperm and gathered per batch; training at batch {b}, "
                f"validation and test at batch {eb} under no_grad; loss and accuracy summed as tensors; {layout}; "
                f"intra-op {torch.get_num_threads()} / inter-op {torch.get_num_interop_threads()} threads; "
                f"{allocator()}; loading the data not included")
    return {"framework": "PyTorch", "mode": "epoch", "versions": torch_versions(torch), "details": details,
            "settings": f"{layout}; {torch.get_num_threads()} threads; {allocator().split(' (')[0]}",
            "isa_check": f"ATen {torch_capability(torch)}", "rows": [], "epoch": result}


# ---------------------------------------------------------------- TensorFlow / Keras 3


def run_tensorflow(args, xla, bf16=False):
    """The training and inference rows; bf16: under Keras's mixed_bfloat16 policy (every layer's compute in
    bfloat16, its variables float32)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)  # one op at a time: the model is a chain
    import keras
    sys.path.insert(0, os.path.join(BENCH, "reference"))
    from keras_notebook import cnn_fmnst_model  # the notebook's model, line for line
    if bf16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")  # before the model is built

    rng = np.random.default_rng(args.seed + 1)
    rows = []

    def build():
        keras.utils.set_random_seed(args.seed)
        model = cnn_fmnst_model(keras)
        trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        assert trainable == TRAINABLE_PARAMETERS, f"expected {TRAINABLE_PARAMETERS:,} parameters, got {trainable:,}"
        return model

    for batch in args.train_batches:
        def train(batch=batch):
            model = build()
            optimizer = keras.optimizers.RMSprop()  # Keras's defaults, the notebook's optimizer
            loss_fn = keras.losses.SparseCategoricalCrossentropy()  # from the softmax's probabilities, as the notebook
            pool_n = max(TRAIN_POOL, batch)
            x = tf.constant(random_images(rng, pool_n, "nhwc"))
            y = tf.constant(rng.integers(0, 10, pool_n).astype(np.int32))

            # The training loop of Keras's guide "Writing a training loop from scratch in TensorFlow".
            @tf.function(jit_compile=xla)
            def train_step(xb, yb):
                with tf.GradientTape() as tape:
                    loss = loss_fn(yb, model(xb, training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
                return loss

            def step(i):
                start = train_start(i, batch, pool_n)
                return train_step(x[start:start + batch], y[start:start + batch])

            return time_training(step, args.steps, args.repeats, batch)[0]

        measure(rows, "training", batch, train)

    n = args.infer_images
    xi = random_images(rng, n, "nhwc")
    model = build()

    @tf.function(jit_compile=xla)
    def predict(xb):
        return model(xb, training=False)  # the softmax is the model's last activation

    measure_inference(rows, args, n, lambda b: [tf.constant(xi[i:j]) for i, j in inference_slices(n, b)], predict)

    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")
    try:
        from tensorflow.python.util import _pywrap_util_port
        onednn += ", on" if _pywrap_util_port.IsMklEnabled() else ", off"
    except Exception:  # a private module: only for the record
        pass
    settings = (f"tf.function step, jit_compile={xla}; oneDNN {onednn.split(', ')[-1]}; NHWC; "
                f"{args.threads} threads (inter-op 1)")
    details = (f"Keras 3 model (NHWC), tf.function steps (GradientTape, Keras's RMSprop, "
               f"SparseCategoricalCrossentropy), jit_compile={xla}; oneDNN ops (TF_ENABLE_ONEDNN_OPTS={onednn}); "
               f"intra-op {args.threads} / inter-op 1 threads")
    if xla:
        details += f"; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    if bf16:
        settings = f"Keras mixed_bfloat16; {settings}"
        details = f"keras.mixed_precision policy {keras.mixed_precision.global_policy().name}; {details}"
    return {"framework": "TensorFlow", "mode": ("XLA" if xla else "tf.function") + (", mixed_bfloat16" if bf16 else ""),
            "precision": "mixed_bfloat16" if bf16 else "float32",
            "versions": {"TensorFlow": tf.__version__, "Keras": keras.__version__},
            "settings": settings, "details": details, "isa_check": None, "rows": rows}


# ---------------------------------------------------------------- ONNX: ONNX Runtime, OpenVINO


def notebook_onnx(path, seed):
    """The notebook's model for inference as an ONNX file (opset 17, IR 8, float32, NCHW, batch dimension free):
    Conv, Relu, BatchNormalization (inference: its moving statistics), MaxPool (ceil_mode, Keras's "same"), the
    dense layers as Gemm, Softmax; no Dropout (absent at inference). Glorot-uniform kernels, zero biases, moving
    statistics drawn near their starting values so that no optimizer can treat them as an identity.

    Written with onnx.helper rather than exported from PyTorch: PyTorch 2.15's default exporter (dynamo=True)
    needs onnxscript, one more pin that moves with it, and the TorchScript exporter (dynamo=False) is
    deprecated. Eleven node kinds written directly give the same graph with every pinned version, checked by
    onnx.checker, and keep torch out of the ONNX Runtime and OpenVINO processes."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, weights = [], []

    def weight(name, array):
        weights.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def glorot(shape, fan_in, fan_out):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape)

    def node(op, inputs, name, **attributes):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    x, channels = "images", 1
    for i, filters in enumerate((75, 50, 25), start=1):
        k = weight(f"conv{i}.kernel", glorot((filters, channels, 3, 3), channels * 9, filters * 9))
        x = node("Conv", [x, k, weight(f"conv{i}.bias", np.zeros(filters))], f"conv{i}", kernel_shape=[3, 3],
                 pads=[1, 1, 1, 1])
        x = node("Relu", [x], f"conv{i}.relu")
        x = node("BatchNormalization", [x, weight(f"bn{i}.gamma", np.ones(filters)),
                                        weight(f"bn{i}.beta", np.zeros(filters)),
                                        weight(f"bn{i}.moving_mean", rng.uniform(-0.1, 0.1, filters)),
                                        weight(f"bn{i}.moving_variance", rng.uniform(0.5, 1.5, filters))],
                 f"bn{i}", epsilon=1e-3)
        x = node("MaxPool", [x], f"pool{i}", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
        channels = filters
    x = node("Flatten", [x], "flatten", axis=1)
    x = node("Gemm", [x, weight("dense1.kernel", glorot((512, 400), 400, 512)), weight("dense1.bias", np.zeros(512))],
             "dense1", transB=1)
    x = node("Relu", [x], "dense1.relu")
    x = node("Gemm", [x, weight("dense2.kernel", glorot((10, 512), 512, 10)), weight("dense2.bias", np.zeros(10))],
             "dense2", transB=1)
    node("Softmax", [x], "probabilities", axis=1)
    graph = helper.make_graph(nodes, "notebook_cnn",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1, 28, 28])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
                              weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="loom bench/peers_notebook.py")
    onnx.checker.check_model(model, full_check=True)
    params = sum(int(np.prod(w.dims)) for w in weights if "moving" not in w.name)
    assert params == TRAINABLE_PARAMETERS, f"expected {TRAINABLE_PARAMETERS:,} parameters, got {params:,}"
    onnx.save(model, path)


def quantize_onnx(path, quantized_path, seed):
    """The ONNX file quantized by ONNX Runtime's post-training static quantization, as its quantization guide
    does it for CNNs on x86 with VNNI (pre-processed, then quantized): QDQ format, int8 weights per output channel (symmetric), uint8
    activations (asymmetric), calibrated by MinMax on CALIBRATION_IMAGES random images of the benchmark's
    distribution (loom::quantize's choices, and notebook_speed --int8's calibration set's size). Returns a
    description for the settings."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static

    class Images(CalibrationDataReader):
        def __init__(self):
            x = random_images(np.random.default_rng(seed + 3), CALIBRATION_IMAGES)
            self.batches = iter([{"images": x[i:i + 32]} for i in range(0, len(x), 32)])

        def get_next(self):
            return next(self.batches, None)

    # The pre-processing its guide asks for first (shape inference and graph optimization).
    from onnxruntime.quantization.shape_inference import quant_pre_process
    prepared = quantized_path + ".prepared.onnx"
    quant_pre_process(path, prepared)
    quantize_static(prepared, quantized_path, Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return (f"onnxruntime.quantization (quant_pre_process, then quantize_static): QDQ, int8 weights per channel, "
            f"uint8 activations, MinMax "
            f"on {CALIBRATION_IMAGES} images")


def run_onnxruntime(args, path, concurrent, quantized=None):
    """One request at a time on T intra-op threads; or, concurrent, T requests at once on one session
    (InferenceSession.run may be called from several threads), each with one intra-op thread."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1 if concurrent else args.threads  # the calling thread counts as one of them
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(args.seed + 1)
    n = args.infer_images
    xi = random_images(rng, n)
    rows = []
    batches_of = lambda b: [np.ascontiguousarray(xi[i:j]) for i, j in inference_slices(n, b)]  # noqa: E731

    def serve(batches):  # T workers take the batches from one queue; run() releases the GIL
        queue = iter(batches)
        lock = threading.Lock()

        def worker():
            while True:
                with lock:
                    xb = next(queue, None)
                if xb is None:
                    return
                session.run(None, {name: xb})

        workers = [threading.Thread(target=worker) for _ in range(args.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    measure_inference(rows, args, n, batches_of, lambda xb: session.run(None, {name: xb}),
                      serve=serve if concurrent else None)
    if concurrent:
        settings = (f"CPU EP, ORT_ENABLE_ALL; {args.threads} requests at once on one session, 1 intra-op thread "
                    f"each; NCHW")
    else:
        settings = f"CPU EP, ORT_ENABLE_ALL; {args.threads} threads (inter-op 1), sequential; NCHW"
    if quantized:
        settings = f"int8 QDQ; {settings}"
    details = (f"providers {','.join(session.get_providers())}; graph optimizations ORT_ENABLE_ALL; "
               + (f"{args.threads} Python threads calling run() on one session, taking the batches from one "
                  f"queue, intra-op 1 / inter-op 1 threads; " if concurrent else
                  f"intra-op {args.threads} / inter-op 1 threads, sequential execution; ")
               + "NCHW model (opset 17) from onnx.helper; default CPU memory arena")
    if quantized:
        details = f"the file quantized by {quantized}; " + details
    return {"framework": "ONNX Runtime", "mode": ("concurrent" if concurrent else "CPU") + (", int8" if quantized else ""),
            "precision": "int8" if quantized else "float32",
            "versions": {"ONNX Runtime": ort.__version__, "onnx": onnx.__version__},
            "settings": settings, "details": details, "isa_check": None, "rows": rows}


def run_openvino(args, path, hint, quantized=None):
    import numpy as np
    import openvino as ov
    core = ov.Core()
    config = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": args.threads,
              "INFERENCE_PRECISION_HINT": "f32"}  # float32: the CPU plugin may pick bf16 where the CPU has it
    compiled = {}

    def compiled_for(batch):
        # Static shapes, one compiled model per batch size: OpenVINO's CPU plugin is fastest on static shapes.
        if batch not in compiled:
            model = core.read_model(path)
            model.reshape([batch, 1, 28, 28])
            compiled[batch] = core.compile_model(model, "CPU", config)
        return compiled[batch]

    rng = np.random.default_rng(args.seed + 1)
    n = args.infer_images
    xi = random_images(rng, n)
    rows = []
    for b in args.infer_batches:
        batches = [np.ascontiguousarray(xi[i:j]) for i, j in inference_slices(n, b)]

        def infer():
            if hint == "LATENCY":  # one synchronous request at a time, as an application waiting for each answer
                requests = {len(xb): compiled_for(len(xb)).create_infer_request() for xb in batches}

                def predict_all():
                    for xb in batches:
                        requests[len(xb)].infer({0: xb}, share_inputs=True)
            else:  # THROUGHPUT: every batch queued at once on the plugin's streams, as its docs do it
                queues = {size: ov.AsyncInferQueue(c, c.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
                          for size, c in ((len(xb), compiled_for(len(xb))) for xb in batches)}

                def predict_all():
                    for xb in batches:
                        queues[len(xb)].start_async({0: xb}, share_inputs=True)
                    for queue in queues.values():
                        queue.wait_all()

            return time_inference(predict_all, n, args.repeats)[0]

        measure(rows, "inference", b, infer)

    first = compiled_for(args.infer_batches[0])
    props = {p: property_text(first.get_property(p)) for p in ("NUM_STREAMS", "INFERENCE_NUM_THREADS",
                                                     "OPTIMAL_NUMBER_OF_INFER_REQUESTS", "INFERENCE_PRECISION_HINT",
                                                     "ENABLE_CPU_PINNING")}
    settings = (f"{hint}, {props['INFERENCE_PRECISION_HINT']}{', int8 QDQ file' if quantized else ''}, "
                f"{props['INFERENCE_NUM_THREADS']} threads, "
                f"{props['NUM_STREAMS']} streams, {props['OPTIMAL_NUMBER_OF_INFER_REQUESTS']} requests; static batch; "
                + ("sync infer()" if hint == "LATENCY" else "AsyncInferQueue"))
    kernels, kernel_list = openvino_kernels(first)
    details = (f"CPU plugin, PERFORMANCE_HINT={hint}, " + ", ".join(f"{k}={v}" for k, v in props.items())
                + f" (at batch {args.infer_batches[0]}); the ONNX file read by its ONNX frontend, reshaped to a "
                  "static batch; " + ("synchronous infer() per batch" if hint == "LATENCY"
                                      else "AsyncInferQueue, all batches queued, then wait_all()")
                + f"; the kernels it chose: {kernel_list}")
    if quantized:
        details = f"the file quantized by {quantized}; " + details
    return {"framework": "OpenVINO", "mode": hint.lower() + (", int8" if quantized else ""),
            "precision": "int8" if quantized else "float32", "versions": {"OpenVINO": ov.get_version()},
            "settings": settings, "details": details, "isa_check": kernels, "rows": rows}


def property_text(value):
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)  # ov.Type: "f32"


def openvino_kernels(compiled):
    """The instruction sets named by the kernels the CPU plugin picked (its runtime model's primitiveType)."""
    try:
        kinds = set()
        for op in compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if "primitiveType" in info:
                kinds.add(info["primitiveType"].astype(str))
        isas = sorted({k for kind in kinds for k in ("avx512", "avx2", "sse42", "amx") if k in kind.lower()})
        return f"kernels {'+'.join(isas) or 'naming no ISA'}", ", ".join(sorted(kinds))
    except Exception as e:  # only for the record
        return "kernels unknown", one_line(e)


def main():
    args = parse_args()
    # numpy's own OpenBLAS only makes the data here; one thread keeps its pool from spinning beside the peer's.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    cap = set_isa(args.peer, args.isa)
    print(f"{args.peer}: Python {platform.python_version()}, {platform.machine()}, threads {args.threads}, "
          f"ISA {args.isa} (cap: {cap})", flush=True)
    import numpy as np

    if args.peer in ("pytorch-compile", "pytorch-compile-bf16", "pytorch-epoch"):
        # A fresh Inductor cache for each run: Inductor's on-disk cache does not tell ATEN_CPU_CAPABILITY apart
        # (PyTorch 2.15: kernels cached by a native run crashed a later run under ATEN_CPU_CAPABILITY=avx2 with a
        # segmentation fault), and a cold cache makes every run's warm-up compile the same way. (Inductor keeps its
        # precompiled headers in /tmp/torchinductor_USER whatever this says, keyed by the compiler's flags.)
        inductor_cache = tempfile.TemporaryDirectory(prefix="peers-inductor-", ignore_cleanup_errors=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache.name
    if args.peer in ("pytorch-eager", "pytorch-compile", "pytorch-eager-bf16", "pytorch-compile-bf16"):
        result = run_pytorch(args, compiled=args.peer.startswith("pytorch-compile"),
                             bf16=args.peer in BF16_PEERS)
    elif args.peer == "pytorch-epoch":
        result = run_pytorch_epoch(args)
    elif args.peer in ("tensorflow", "tensorflow-xla", "tensorflow-bf16"):
        result = run_tensorflow(args, xla=args.peer == "tensorflow-xla", bf16=args.peer == "tensorflow-bf16")
    else:
        with tempfile.TemporaryDirectory() as work:
            path = os.path.join(work, "notebook.onnx")
            notebook_onnx(path, args.seed)
            quantized = None
            if args.peer in INT8_PEERS:
                quantized = quantize_onnx(path, os.path.join(work, "notebook.int8.onnx"), args.seed)
                path = os.path.join(work, "notebook.int8.onnx")
            if args.peer.startswith("onnxruntime"):
                result = run_onnxruntime(args, path, concurrent=args.peer == "onnxruntime-concurrent",
                                         quantized=quantized)
            else:
                result = run_openvino(args, path, "LATENCY" if args.peer.endswith("-latency") else "THROUGHPUT",
                                      quantized=quantized)
    result["versions"]["numpy"] = np.__version__
    shim = cpuid_cap()
    if shim and shim[0]:
        seen = f"{shim[1]} CPUIDs answered without AVX-512"
        result["isa_check"] = f"{result['isa_check']}; {seen}" if result.get("isa_check") else seen
    print(f"versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}")
    print(f"settings: {result['details']}")
    if result.get("isa_check"):
        print(f"ISA check: {result['isa_check']}")
    result.update({"peer": args.peer, "isa": args.isa, "cap": cap, "threads": args.threads,
                   "repeats": args.repeats, "steps": args.steps, "infer_images": args.infer_images})
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
