#!/usr/bin/env python3
"""The runs and the table of bench/compare-precision (issue 38): the notebook's
CNN in each framework's float32 and in its own reduced precision, the two runs
of a framework one right after the other, in one process each; then a markdown
table of images per second.

    bench/precision_runs.py --notebook-speed PATH [--threads T] [--steps N] [--repeats R]
                            [--train-batch B] [--infer-batches 1,32,1000] [--infer-images N]
                            [--loom-rounds K] [--peers LIST] [--json FILE]

Run with the reference environment's python (bench/compare-precision does it,
after building notebook_speed). The runs:

    loom       notebook_speed --precision float32 --int8 (float32 training and inference, and the
               int8 model's inference timed alternately with the float32 model's), then
               notebook_speed --precision mixed_bfloat16; the pair --loom-rounds times
    pytorch-eager, pytorch-eager-bf16        PyTorch 2 eager; under bfloat16 autocast
    pytorch-compile, pytorch-compile-bf16    torch.compile; under bfloat16 autocast
    tensorflow, tensorflow-bf16              Keras 3 on TensorFlow; under the mixed_bfloat16 policy
    onnxruntime, onnxruntime-int8            ONNX Runtime; its static int8 quantization (QDQ)
    openvino-latency, openvino-int8-latency  OpenVINO, LATENCY hint; on the int8 (QDQ) file
    openvino-throughput, openvino-int8-throughput   the same with the THROUGHPUT hint

bench/peers_notebook.py runs each peer (its docstring says how); every
framework gets the same threads, batches, images and timing conventions
(bench/notebook_bench.py).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

from notebook_bench import batch_list, positive_int

BENCH = os.path.dirname(os.path.abspath(__file__))
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"  # as bench/compare-peers gives PyTorch
# (label, float32 run, reduced run, what the reduced run is); inference-only frameworks have no training rows.
PAIRS = (
    ("PyTorch eager", "pytorch-eager", "pytorch-eager-bf16", "bfloat16 autocast"),
    ("PyTorch torch.compile", "pytorch-compile", "pytorch-compile-bf16", "bfloat16 autocast"),
    ("Keras 3 on TensorFlow", "tensorflow", "tensorflow-bf16", "mixed_bfloat16"),
    ("ONNX Runtime", "onnxruntime", "onnxruntime-int8", "int8 (QDQ)"),
    ("OpenVINO LATENCY", "openvino-latency", "openvino-int8-latency", "int8 (QDQ)"),
    ("OpenVINO THROUGHPUT", "openvino-throughput", "openvino-int8-throughput", "int8 (QDQ)"),
)
INFERENCE_ONLY = {"onnxruntime", "openvino-latency", "openvino-throughput"}
# Issue 38's done-means, loom against its own float32.
TARGETS = {"mixed_bfloat16 training": 1.6, "int8 inference": 2.0}


def parse_args():
    p = argparse.ArgumentParser(description="Time the notebook's CNN in reduced precision, loom's and its peers', "
                                            "each beside its own float32; print a markdown table")
    p.add_argument("--notebook-speed", required=True, help="loom's build/examples/notebook_speed")
    p.add_argument("--build-dir", default="build", help="loom's build directory, for the record")
    p.add_argument("--threads", type=positive_int, default=2, help="threads of every run (default 2)")
    p.add_argument("--steps", type=positive_int, default=200, help="timed training steps per repeat (default 200)")
    p.add_argument("--repeats", type=positive_int, default=3, help="repeats of each measurement (default 3)")
    p.add_argument("--train-batch", type=positive_int, default=32, help="training batch (default 32)")
    p.add_argument("--infer-batches", type=batch_list, default=[1, 32, 1000],
                   help="comma-separated inference batch sizes (default 1,32,1000)")
    p.add_argument("--infer-images", type=positive_int, default=4096, help="images per inference measurement")
    p.add_argument("--loom-rounds", type=positive_int, default=2,
                   help="loom's float32 and mixed_bfloat16 runs, alternated this many times (default 2)")
    known = ["loom"] + [name for pair in PAIRS for name in pair[1:3]]
    p.add_argument("--peers", default=",".join(known),
                   help="comma-separated runs (default all): " + ", ".join(known))
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE (atomically)")
    args = p.parse_args()
    args.peers = [r for r in args.peers.split(",") if r]
    unknown = [r for r in args.peers if r not in known]
    if unknown or not args.peers:
        p.error(f"--peers: unknown run(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        p.error(f"--json: no directory for {args.json}")
    if "loom" in args.peers and not os.access(args.notebook_speed, os.X_OK):
        p.error(f"--notebook-speed: {args.notebook_speed} is not an executable (build the notebook_speed target)")
    return args


def machine():
    flags = set()
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
    have = [f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni") if f in flags]
    return f"{model}, {os.cpu_count()} CPUs, {platform.machine()}, with {', '.join(have) or 'none of AVX-512, BF16, VNNI'}"


def run(name, command, env, log):
    """Runs one process; its output streamed and kept; returns (its last line as JSON or None, exit code, stderr's
    last line)."""
    print(f"\n== {name}: {' '.join(command)}", flush=True)
    log.append(" ".join(command))
    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        print(f"== {name} could not start: {e.strerror}", flush=True)
        return None, 127, f"could not start: {e.strerror}"
    lines = []
    for line in proc.stdout:
        if not line.startswith("{"):
            print("   " + line.rstrip(), flush=True)
        lines.append(line.strip())
    err = [line.strip() for line in proc.stderr.read().splitlines() if line.strip()]
    code = proc.wait()
    result = None
    if lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    if code != 0:
        print(f"== {name} failed (exit {code}): {err[-1] if err else ''}", flush=True)
    return result, code, (err[-1] if err else "")


def rows_of(result):
    """{(measurement, batch): median} of a peer's JSON."""
    return {(r["measurement"], r["batch"]): r["median"] for r in (result or {}).get("rows", []) if "median" in r}


def loom_rows(results):
    """loom's figures: the mean over the rounds of each run's median, {precision: {(measurement, batch): value}};
    int8 with the float32 inference it alternated with."""
    out = {"float32": {}, "mixed_bfloat16": {}, "int8": {}, "int8_float32": {}}
    collected = {k: {} for k in out}
    for precision, result in results:
        c = collected[precision]
        c.setdefault(("training", result["train_batch"]), []).append(result["train_images_per_s_median"])
        for b, r in result.get("infer", {}).items():
            c.setdefault(("inference", int(b)), []).append(r["median"])
        for b, r in result.get("infer_int8", {}).items():
            collected["int8"].setdefault(("inference", int(b)), []).append(r["median"])
            collected["int8_float32"].setdefault(("inference", int(b)), []).append(r["float32_median"])
    for k, c in collected.items():
        out[k] = {m: statistics.mean(v) for m, v in c.items()}
    return out


def fmt(v):
    return "-" if v is None else f"{v:,.0f}"


def ratio(a, b):
    return None if not a or not b else a / b


def rfmt(r):
    return "-" if r is None else f"{r:.2f}"


def main():
    args = parse_args()
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load_before = open("/proc/loadavg").read().split()[:3]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    commands, failures = [], []
    print(f"== machine: {machine()}\n== date: {date}\n== threads {args.threads}; load average {' '.join(load_before)}")

    loom_results = []
    if "loom" in args.peers:
        base = [args.notebook_speed, "--steps", str(args.steps), "--batch-size", str(args.train_batch), "--threads",
                str(args.threads), "--repeats", str(args.repeats), "--infer-batches",
                ",".join(map(str, args.infer_batches)), "--infer-images", str(args.infer_images), "--json"]
        for k in range(args.loom_rounds):
            for precision, extra in (("float32", ["--int8"]), ("mixed_bfloat16", [])):
                result, code, err = run(f"loom {precision}, round {k + 1}", base + ["--precision", precision] + extra,
                                        env, commands)
                if result is None:
                    failures.append(f"loom {precision}: exit {code}: {err}")
                else:
                    loom_results.append((precision, result))
    loom = loom_rows(loom_results)

    peers = {}
    peer_args = ["--threads", str(args.threads), "--train-batches", str(args.train_batch), "--steps", str(args.steps),
                 "--infer-batches", ",".join(map(str, args.infer_batches)), "--infer-images", str(args.infer_images),
                 "--repeats", str(args.repeats)]
    for _, *names, _ in PAIRS:
        for name in names:
            if name not in args.peers:
                continue
            peer_env = dict(env)
            if name.startswith("pytorch") and os.path.exists(JEMALLOC):
                peer_env["LD_PRELOAD"] = JEMALLOC
            result, code, err = run(name, [sys.executable, os.path.join(BENCH, "peers_notebook.py"), name] + peer_args,
                                    peer_env, commands)
            peers[name] = result
            if result is None:
                failures.append(f"{name}: exit {code}: {err}")
    load_after = open("/proc/loadavg").read().split()[:3]

    measurements = [("training", args.train_batch)] + [("inference", b) for b in args.infer_batches]
    table = []  # rows of the markdown table and the JSON
    for m in measurements:
        def loom_row(precision, float_key):
            own = loom[precision].get(m)
            if own is None:
                return
            table.append({"measurement": m[0], "batch": m[1], "framework": "loom", "reduced": precision,
                          "float32": loom[float_key].get(m), "reduced_median": own,
                          "gain": ratio(own, loom[float_key].get(m)), "loom_ratio": None})

        loom_row("mixed_bfloat16", "float32")
        if m[0] == "inference":
            loom_row("int8", "int8_float32")
        for label, f32, reduced, what in PAIRS:
            if m[0] == "training" and f32 in INFERENCE_ONLY:
                continue
            if f32 not in peers and reduced not in peers:
                continue
            a, b = rows_of(peers.get(f32)).get(m), rows_of(peers.get(reduced)).get(m)
            mine = loom["int8" if "int8" in what else "mixed_bfloat16"].get(m)
            table.append({"measurement": m[0], "batch": m[1], "framework": label, "reduced": what, "float32": a,
                          "reduced_median": b, "gain": ratio(b, a), "loom_ratio": ratio(mine, b)})

    verdicts = []
    training = ("training", args.train_batch)
    g = ratio(loom["mixed_bfloat16"].get(training), loom["float32"].get(training))
    if g is not None:
        verdicts.append({"what": f"mixed_bfloat16 training, batch {args.train_batch}", "gain": g,
                         "target": TARGETS["mixed_bfloat16 training"]})
    for b in args.infer_batches:
        g = ratio(loom["int8"].get(("inference", b)), loom["int8_float32"].get(("inference", b)))
        if g is not None:
            verdicts.append({"what": f"int8 inference, batch {b}", "gain": g,
                             "target": TARGETS["int8 inference"] if b in (32, 1000) else None})

    versions = {}
    for result in peers.values():
        versions.update((result or {}).get("versions", {}))
    print()
    print("### Reduced precision, loom's and its peers': the notebook's CNN, images per second")
    print()
    print(f"{date}; {machine()}; {args.threads} threads; medians of {args.repeats} repeats (training: {args.steps} "
          f"timed steps at batch {args.train_batch} after 10 warm-up steps; inference: {args.infer_images} random "
          f"images after one untimed pass); each framework's float32 and reduced runs one right after the other; "
          f"loom's the mean of {args.loom_rounds} alternated rounds, its int8 timed alternately with its float32 in "
          f"one process; load average before {' '.join(load_before)}, after {' '.join(load_after)}.")
    print()
    if versions:
        print("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
        print()
    print("| measurement | framework | reduced precision | float32 | reduced | reduced ÷ float32 | "
          "loom's same precision ÷ it |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['measurement']}, batch {r['batch']} | {r['framework']} | {r['reduced']} | {fmt(r['float32'])} | "
              f"{fmt(r['reduced_median'])} | {rfmt(r['gain'])} | {rfmt(r['loom_ratio'])} |")
    print()
    if verdicts:
        print("Issue 38's targets, loom against its own float32:")
        print()
        for v in verdicts:
            target = "" if v["target"] is None else (f" (target {v['target']:.1f}x: "
                                                      f"{'met' if v['gain'] >= v['target'] else 'missed'})")
            print(f"- {v['what']}: {v['gain']:.2f}x{target}")
        print()
    for f in failures:
        print(f"Note: {f}")
    if args.json:
        document = {"date": date, "machine": machine(), "threads": args.threads, "repeats": args.repeats,
                    "train_steps": args.steps, "train_batch": args.train_batch, "infer_images": args.infer_images,
                    "loom_rounds": args.loom_rounds, "load_before": load_before, "load_after": load_after,
                    "versions": versions, "rows": table, "targets": verdicts, "failures": failures,
                    "commands": commands, "peers": peers, "loom_runs": [r for _, r in loom_results]}
        target = os.path.abspath(args.json)
        temporary = f"{target}.tmp{os.getpid()}"
        with open(temporary, "w") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
        os.replace(temporary, target)
        print(f"JSON: {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
