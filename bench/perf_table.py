#!/usr/bin/env python3
"""Turns Google Benchmark JSON from bench_conv2d and bench_layers into the
markdown tables of docs/performance.md: the median and the best (minimum
time) of the repetitions, with the conv layers' ratios against the GEMM
ceilings computed from the same run.

    build/bench/bench_conv2d --benchmark_repetitions=5 --benchmark_format=json > conv.json
    build/bench/bench_layers --benchmark_repetitions=5 --benchmark_format=json > layers.json
    bench/perf_table.py conv.json layers.json
"""
import json
import statistics
import sys
from collections import defaultdict

LAYERS = {"0": "conv 1: 28x28x1 -> 75", "1": "conv 2: 14x14x75 -> 50", "2": "conv 3: 7x7x50 -> 25"}
SHAPES = {"0": "28x28x75", "1": "14x14x50", "2": "7x7x25"}


def load(paths):
    """name -> list of (real_time in ms, counters) over the repetitions."""
    runs = defaultdict(list)
    context = None
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        context = context or data.get("context", {})
        for b in data["benchmarks"]:
            if b.get("run_type") != "iteration":
                continue
            scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
            counters = {k: v for k, v in b.items() if isinstance(v, (int, float)) and "/" in k}
            runs[b["run_name"]].append((b["real_time"] * scale, counters))
    return runs, context


def summary(runs, name):
    """(median ms, best ms, median counters) or None."""
    if name not in runs:
        return None
    times = [t for t, _ in runs[name]]
    counters = {k: statistics.median(c[k] for _, c in runs[name]) for k in runs[name][0][1]}
    return statistics.median(times), min(times), counters


def scaled(value, unit):
    """12345678 'rows/s' -> '12.3 M rows/s'."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor and unit != "GFLOP/s":
            return f"{value / factor:.3g} {prefix}{unit}" if factor > 1e3 else f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"


def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()


def conv_tables(runs):
    rows = []
    for layer, label in LAYERS.items():
        for batch in ("32", "256"):
            key = f"layer:{layer}/batch:{batch}/real_time"
            fwd = summary(runs, f"BM_Conv2DForward/{key}")
            if fwd is None:
                continue
            inf = summary(runs, f"BM_Conv2DForwardInference/{key}")
            split = summary(runs, f"BM_GemmRowsPerThread/{key}")
            eigen = summary(runs, f"BM_GemmCeiling/layer:{layer}/batch:{batch}/product:0/real_time")
            wts = summary(runs, f"BM_Conv2DBackwardWeights/{key}")
            both = summary(runs, f"BM_Conv2DBackward/{key}")
            naive = summary(runs, f"BM_NaiveDirectConv/{key}")
            gf = lambda s: s[2]["GFLOP/s"]
            flops = gf(fwd) * fwd[0]  # GFLOP per pass, times 1e3 (ms)
            ceiling = max(gf(split), gf(eigen))
            input_ms = both[0] - wts[0]
            rows.append([label, batch, f"{fwd[0]:.3f} ({fwd[1]:.3f})", f"{gf(fwd):.0f}", f"{gf(inf):.0f}",
                         f"{gf(eigen):.0f}", f"{gf(split):.0f}", f"{100 * gf(fwd) / ceiling:.0f} %",
                         f"{gf(wts):.0f}", f"{flops / input_ms:.0f}" if input_ms > 0 else "-",
                         f"{gf(naive):.1f}"])
    print("Conv2D (3x3, same, ReLU), GFLOP/s unless stated; forward ms is the median (best):\n")
    table(["layer", "batch", "forward ms", "forward", "forward, inference", "Eigen GEMM, its own threads",
           "GEMM split by rows", "forward / best ceiling", "backward to weights", "backward to input",
           "naive direct"], rows)
    rows = []
    for layer, label in LAYERS.items():
        for batch in ("32", "256"):
            key = f"layer:{layer}/batch:{batch}/real_time"
            i2c, c2i = summary(runs, f"BM_Im2col/{key}"), summary(runs, f"BM_Col2im/{key}")
            if i2c is None:
                continue
            products = [summary(runs, f"BM_GemmCeiling/layer:{layer}/batch:{batch}/product:{p}/real_time")
                        for p in range(3)]
            rows.append([label, batch, f"{i2c[0]:.3f}", f"{i2c[2]['GB/s']:.1f}", f"{c2i[0]:.3f}",
                         f"{c2i[2]['GB/s']:.1f}"] + [f"{p[2]['GFLOP/s']:.0f}" for p in products])
    print("im2col and col2im alone (ms, GB/s of the column matrix), and Eigen's GEMM on each product's shape "
          "(GFLOP/s: forward col*K, weights colT*dz, input dz*KT):\n")
    table(["layer", "batch", "im2col ms", "im2col GB/s", "col2im ms", "col2im GB/s", "GEMM forward",
           "GEMM weights", "GEMM input"], rows)


def layer_table(runs):
    rows = []
    for name in runs:
        if not name.startswith(("BM_Dense", "BM_BatchNorm", "BM_MaxPool", "BM_Softmax", "BM_Notebook")):
            continue
        med, best, counters = summary(runs, name)
        parts = name.replace("/real_time", "").split("/")
        what = parts[0][3:]
        args = parts[1:]
        if what.startswith(("BatchNorm", "MaxPool")) and args and args[0] in SHAPES:
            args = [SHAPES[args[0]]] + [f"batch {a}" for a in args[1:]]
        elif what.startswith(("Dense", "Softmax")) or what == "NotebookInference":
            args = [f"batch {a}" for a in args]
        label = what + (" " + ", ".join(args) if args else "")
        rate = ", ".join(scaled(v, k) for k, v in counters.items())
        rows.append([label.replace(":", " "), f"{med:.3f}", f"{best:.3f}", rate])
    print("Other layers and the whole model (ms per call: median, best):\n")
    table(["benchmark", "median ms", "best ms", "rate (median)"], rows)


def main():
    runs, context = load(sys.argv[1:])
    print(f"Machine: {context.get('num_cpus')} CPUs at {context.get('mhz_per_cpu')} MHz (as Google Benchmark "
          f"reads it), {context.get('date', '')}; repetitions per benchmark: "
          f"{max(len(v) for v in runs.values())}.\n")
    conv_tables(runs)
    layer_table(runs)


if __name__ == "__main__":
    main()
