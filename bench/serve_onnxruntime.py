"""ONNX Runtime serving an ONNX model to C client threads at once, as examples/serve_bench.cpp
serves loom's Predictor: the same protocol, so bench/compare-serving can put them side by side.

    serve_onnxruntime.py MODEL.onnx [--clients 1,2,4,8] [--requests N] [--repeats R] [--loom-json FILE]

One InferenceSession (CPU provider, ORT_ENABLE_ALL, one intra-op and one inter-op thread, sequential
execution); C Python threads call session.run on it at once, each with a request of one image
(InferenceSession.run may be called from several threads, and it releases the GIL while it runs).
Each repeat runs every client count in turn; a count's throughput is the median of its repeats, its
p50 and p99 latency over all its requests. A request's latency is the session.run call, timed in
Python: it includes the binding's own cost per call (a few microseconds), which a C++ caller of ONNX
Runtime would not pay; the model's input is made once per request from a preallocated array.

With --loom-json (serve_bench's JSON line), prints the two side by side with loom's ratio.
"""
import argparse
import json
import sys
import threading
import time

import numpy as np


def serve(session, name, images, clients, requests):
    """(images per second, latencies in microseconds) for `requests` requests from `clients` threads."""
    latencies = [[] for _ in range(clients)]
    counter = iter(range(requests))
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    done = threading.Barrier(clients + 1)

    def client(c):
        mine = latencies[c]
        image = images[c % len(images)][None]
        session.run(None, {name: image})  # untimed first call
        ready.wait()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            image = images[i % len(images)][None]
            t0 = time.perf_counter_ns()
            session.run(None, {name: image})
            mine.append((time.perf_counter_ns() - t0) / 1000.0)
        done.wait()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    done.wait()
    seconds = time.perf_counter() - start
    for t in threads:
        t.join()
    return requests / seconds, [v for l in latencies for v in l]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loom-json", help="serve_bench's JSON line (a file), to print beside")
    args = parser.parse_args()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape][1:]
    images = np.random.default_rng(2).uniform(size=[256] + shape).astype(np.float32)

    counts = [int(c) for c in args.clients.split(",")]
    rates = {c: [] for c in counts}
    latencies = {c: [] for c in counts}
    for _ in range(args.repeats):
        for c in counts:
            rate, lat = serve(session, name, images, c, args.requests)
            rates[c].append(rate)
            latencies[c].extend(lat)
    rows = [{"clients": c, "images_per_s": float(np.median(rates[c])), "rates": rates[c],
             "p50_us": float(np.percentile(latencies[c], 50)), "p99_us": float(np.percentile(latencies[c], 99)),
             "requests": args.requests, "repeats": args.repeats} for c in counts]
    ort_result = {"framework": "ONNX Runtime", "version": ort.__version__, "rows": rows}

    if args.loom_json:
        with open(args.loom_json, encoding="utf-8") as f:
            line = next(l for l in f if l.startswith("JSON: "))
        loom = {r["clients"]: r for r in json.loads(line[len("JSON: "):])["rows"]}
        print("| clients | loom images/s | loom p50 (µs) | loom p99 (µs) | ONNX Runtime images/s | "
              "ORT p50 (µs) | ORT p99 (µs) | loom ÷ ORT, images/s |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            l = loom.get(r["clients"])
            if l is None:
                continue
            print(f"| {r['clients']} | {l['images_per_s']:,.0f} | {l['p50_us']:.0f} | {l['p99_us']:.0f} | "
                  f"{r['images_per_s']:,.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
                  f"{l['images_per_s'] / r['images_per_s']:.2f} |")
        if 1 in loom and 2 in loom:
            print(f"\nloom with 2 clients serves {loom[2]['images_per_s'] / loom[1]['images_per_s']:.2f}x its "
                  f"1-client throughput (ONNX Runtime: "
                  f"{rates_ratio(rows)})")
    print("JSON: " + json.dumps(ort_result))
    return 0


def rates_ratio(rows):
    by = {r["clients"]: r["images_per_s"] for r in rows}
    return f"{by[2] / by[1]:.2f}x" if 1 in by and 2 in by else "?"


if __name__ == "__main__":
    sys.exit(main())
