#!/usr/bin/env python3
"""The table of bench/compare-peers: reads the runs' outputs from its work
directory and prints a markdown table of images per second, loom's ratio to
each peer, loom against the fastest peer with issue 35's targets, and the
PyTorch epoch when it was measured; with --json FILE, the same as JSON
(written to a temporary file, then renamed into place).

    bench/peers_table.py WORK --isa native|avx2 --train-batches 32,128 --infer-batches 1,32,1000
                         [--threads T] [--loom-build TEXT] [--loom-build-dir DIR] [--loom-cap TEXT]
                         [--machine TEXT] [--date TEXT]
                         [--load TEXT] [--json FILE]

WORK holds, for each run NAME (loom, loom-train-B, or a peer of
bench/peers_notebook.py): NAME.out (its output, whose last line is JSON) and
NAME.status (its exit code); commands.txt lists the commands, one a line.
"""
import argparse
import json
import os
import re
import signal
import sys

from notebook_bench import batch_list

# Display order and names; the peers that only do inference.
PEERS = ("pytorch-eager", "pytorch-compile", "tensorflow", "tensorflow-xla", "onnxruntime", "onnxruntime-concurrent",
         "openvino-latency", "openvino-throughput")
LABELS = {"pytorch-eager": "PyTorch eager", "pytorch-compile": "PyTorch torch.compile",
          "tensorflow": "TensorFlow tf.function", "tensorflow-xla": "TensorFlow XLA", "onnxruntime": "ONNX Runtime",
          "onnxruntime-concurrent": "ONNX Runtime, requests at once",
          "openvino-latency": "OpenVINO LATENCY", "openvino-throughput": "OpenVINO THROUGHPUT"}
GLOG = re.compile(r"^([IWE]\d{4} |WARNING: All log messages before absl)")  # glog/absl lines: I1206 01:24:49...
INFERENCE_ONLY = {"onnxruntime", "onnxruntime-concurrent", "openvino-latency", "openvino-throughput"}
# Peers that serve several requests at once (OpenVINO's streams, ONNX Runtime's
# session called from several threads): their ratio
# is to loom's concurrent figure (notebook_speed --concurrent), the others' to
# loom's one request at a time.
CONCURRENT = {"onnxruntime-concurrent", "openvino-throughput"}
LOOM_CONCURRENT = "loom, requests at once"
# Issue 35's done-means: loom / fastest peer, in float32, on both instruction sets.
TARGETS = {("training", 32): 2.0, ("inference", 1): 1.5, ("inference", 32): 1.5, ("inference", 1000): 1.5}


def parse_args():
    p = argparse.ArgumentParser(description="The table of bench/compare-peers")
    p.add_argument("work", help="the work directory of bench/compare-peers")
    p.add_argument("--isa", choices=("native", "avx2"), required=True)
    p.add_argument("--train-batches", type=batch_list, required=True)
    p.add_argument("--infer-batches", type=batch_list, required=True)
    p.add_argument("--loom-build", default="", help="loom's compiler and flags, for the record")
    p.add_argument("--loom-cap", default="", help="what caps loom's instruction set")
    p.add_argument("--loom-build-dir", default="build", help="loom's build directory, for the epoch's note")
    p.add_argument("--threads", type=int, default=2, help="the threads of every run")
    p.add_argument("--machine", default="", help="CPU and cores, for the record")
    p.add_argument("--date", default="")
    p.add_argument("--load", default="", help="load averages before and after, for the record")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    return p.parse_args()


def read_run(work, name):
    """(the run's JSON or None, its exit code or None, the last line of its stderr)."""
    def lines(suffix):
        try:
            with open(os.path.join(work, name + suffix), errors="replace") as f:
                return [line.strip() for line in f if line.strip()]
        except OSError:
            return None
    out, status, err = lines(".out"), lines(".status"), lines(".err") or []
    if out is None:
        return None, None, ""
    code = int(status[0]) if status and status[0].lstrip("-").isdigit() else None
    err = [line for line in err if not GLOG.match(line)]  # the frameworks' own info and warning lines
    result = None
    if out:
        try:
            result = json.loads(out[-1])
        except json.JSONDecodeError:
            result = None
    return result, code, (err[-1] if err else "")


def exit_text(code):
    """An exit code as words: 'exit 1', or 'killed by SIGSEGV (exit 139)'."""
    if code is not None and code > 128:
        try:
            return f"killed by {signal.Signals(code - 128).name} (exit {code})"
        except ValueError:
            pass
    return f"exit {code}"


def fmt(value):
    return "-" if value is None else f"{value:,.0f}"


def cell(text):
    return str(text).replace("|", "\\|")


def main():
    args = parse_args()
    measurements = [("training", b) for b in args.train_batches] + [("inference", b) for b in args.infer_batches]
    rows, versions, epoch, notes = [], {}, None, []

    # loom: one notebook_speed run at the first training batch (with the inference), one per further batch.
    loom, loom_ran = {}, os.path.exists(os.path.join(args.work, "loom.status"))
    loom_concurrent = {}
    for i, b in enumerate(args.train_batches):
        name = "loom" if i == 0 else f"loom-train-{b}"
        result, code, err = read_run(args.work, name)
        if result is None:
            if code is not None:
                notes.append(f"loom ({name}) failed: {exit_text(code)}" + (f": {err}" if err else ""))
            continue
        versions["loom"] = result.get("version", "?")
        loom[("training", b)] = {"median": result.get("train_images_per_s_median"),
                                 "best": result.get("train_images_per_s_best")}
        if i == 0:
            for size, r in result.get("infer", {}).items():
                loom[("inference", int(size))] = {"median": r.get("median"), "best": r.get("best")}
            for size, r in result.get("infer_concurrent", {}).items():
                loom_concurrent[("inference", int(size))] = {"median": r.get("median"), "best": r.get("best")}
    loom_settings = f"notebook_speed; {args.threads} threads"
    loom_concurrent_settings = (f"notebook_speed --concurrent; {args.threads} workers of 1 thread each calling "
                                f"one loom::Predictor of the model, taking the batches from one queue")

    peers = {}
    for peer in PEERS + ("pytorch-epoch",):
        result, code, err = read_run(args.work, peer)
        if result is None and code is None:
            continue  # not run
        if result is None:
            reason = exit_text(code) + (f": {err}" if err else "")
            peers[peer] = {"error": reason}
            notes.append(f"{LABELS.get(peer, peer)} failed: {reason}")
            continue
        peers[peer] = result
        versions.update(result.get("versions", {}))
        if peer == "pytorch-epoch":
            epoch = result
        elif code not in (0, None):
            notes.append(f"{LABELS[peer]} ended with {exit_text(code)} after its measurements"
                         + (f": {err}" if err else ""))

    def label(peer, result):
        mode = {"eager": "eager", "torch.compile": "torch.compile", "tf.function": "tf.function", "XLA": "XLA",
                "latency": "LATENCY", "throughput": "THROUGHPUT", "CPU": "",
                "concurrent": "(requests at once)"}.get(result.get("mode"), "")
        return " ".join(x for x in (result.get("framework"), mode) if x) if "framework" in result else LABELS[peer]

    for m in measurements:
        l = loom.get(m)
        if loom_ran:
            rows.append({"measurement": m[0], "batch": m[1], "framework": "loom",
                         "median": l and round(l["median"], 1), "best": l and round(l["best"], 1),
                         "loom_ratio": None, "cap": args.loom_cap,
                         "settings": loom_settings + ("; one predict call at a time, on a loom::Predictor (the weights frozen)"
                                                          if m[0] == "inference" else ""),
                         "error": None if l else "not measured"})
        c = loom_concurrent.get(m)
        if c:
            rows.append({"measurement": m[0], "batch": m[1], "framework": LOOM_CONCURRENT,
                         "median": round(c["median"], 1), "best": round(c["best"], 1), "loom_ratio": None,
                         "cap": args.loom_cap, "settings": loom_concurrent_settings, "error": None})
        for peer in PEERS:
            if peer not in peers or (m[0] == "training" and peer in INFERENCE_ONLY):
                continue
            result = peers[peer]
            if "rows" not in result:  # the whole process failed
                r = {"error": result["error"]}
            else:
                r = next((x for x in result["rows"] if (x["measurement"], x["batch"]) == m), None)
                if r is None:
                    continue
            median = r.get("median")
            mine = c if peer in CONCURRENT else l  # like for like: requests at once, or one at a time
            ratio = round(mine["median"] / median, 3) if mine and mine.get("median") and median else None
            rows.append({"measurement": m[0], "batch": m[1], "framework": label(peer, result), "peer": peer,
                         "median": median, "best": r.get("best"), "loom_ratio": ratio,
                         "cap": result.get("cap", "-"), "isa_check": result.get("isa_check"),
                         "settings": result.get("settings", ""), "details": result.get("details"),
                         "error": r.get("error")})

    fastest = []
    for m in measurements:
        # Each at its best: the fastest peer in any mode, against loom's faster mode.
        timed = [r for r in rows if (r["measurement"], r["batch"]) == m and "peer" in r and r["median"]]
        modes = [x for x in (loom.get(m), loom_concurrent.get(m)) if x and x.get("median")]
        l = max(modes, key=lambda x: x["median"]) if modes else None
        loom_mode = None if l is None else ("requests at once" if l is loom_concurrent.get(m) else "one at a time")
        if not timed:
            continue
        best = max(timed, key=lambda r: r["median"])
        ratio = l["median"] / best["median"] if l else None
        target = TARGETS.get(m)
        if target is None or ratio is None:
            verdict = "-"
        elif ratio >= target:
            verdict = "met"
        else:
            verdict = f"missed: loom needs {100 * (target / ratio - 1):.0f} % more"
        entry = {"measurement": m[0], "batch": m[1], "fastest": best["framework"],
                 "fastest_median": best["median"], "loom_median": l and l["median"], "loom_mode": loom_mode,
                 "loom_ratio": None if ratio is None else round(ratio, 3), "target": target, "verdict": verdict}
        # In an AVX2 run where a peer ran uncapped (ONNX Runtime on a machine that
        # cannot fault CPUID), also the fastest peer that was capped: the uncapped
        # one ran AVX-512, which an AVX2-only machine would not.
        capped = [r for r in timed if not str(r.get("cap", "")).startswith("none")]
        if args.isa == "avx2" and capped and len(capped) < len(timed):
            top = max(capped, key=lambda r: r["median"])
            entry.update({"fastest_capped": top["framework"], "fastest_capped_median": top["median"],
                          "loom_ratio_capped": None if l is None else round(l["median"] / top["median"], 3)})
        fastest.append(entry)

    isa_text = {"native": "native (every framework at the CPU's full instruction set)",
                "avx2": "AVX2 (loom's AVX2 build; each peer capped by its own switch or at CPUID, see the cap column)"}[args.isa]
    repeats = next((p.get("repeats") for p in peers.values() if "repeats" in p), "?")
    steps = next((p.get("steps") for p in peers.values() if "steps" in p), "?")
    images = next((p.get("infer_images") for p in peers.values() if "infer_images" in p), "?")
    threads = args.threads

    print(f"### loom beside its peers: the notebook's CNN, images per second ({args.isa})")
    print()
    print(f"{args.date}; {args.machine}; instruction set: {isa_text}; {threads} threads; float32; each figure the "
          f"median and the best of {repeats} repeats (training: {steps} timed steps after 10 warm-up steps; "
          f"inference: {images} images after one untimed pass); load average {args.load}.")
    print()
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    print()
    print("| measurement | framework, mode | images/s (median) | best | loom ÷ it | ISA cap | settings |")
    print("|---|---|---:|---:|---:|---|---|")
    for r in rows:
        what = f"{r['measurement']}, batch {r['batch']}"
        if r["error"]:
            print(f"| {what} | {cell(r['framework'])} | failed | - | - | {cell(r['cap'])} | {cell(r['error'])} |")
            continue
        ratio = "-" if r["loom_ratio"] is None else f"{r['loom_ratio']:.2f}"
        cap = r["cap"] + (f" (seen: {r['isa_check']})" if r.get("isa_check") else "")
        print(f"| {what} | {cell(r['framework'])} | {fmt(r['median'])} | {fmt(r['best'])} | {ratio} | "
              f"{cell(cap)} | {cell(r['settings'])} |")
    print()
    print("Settings in full:")
    print()
    if loom_ran:
        print(f"- loom: notebook_speed, {args.loom_build}")
    for peer in PEERS + ("pytorch-epoch",):
        if peer in peers and "details" in peers[peer]:
            name = "PyTorch epoch" if peer == "pytorch-epoch" else label(peer, peers[peer])
            print(f"- {name}: {peers[peer]['details']}")
    print()
    if fastest:
        print("Each at its best: the fastest peer in any mode against loom's faster mode.")
        print()
        print("| measurement | fastest peer | its images/s | loom's (mode) | loom ÷ fastest | target | |")
        print("|---|---|---:|---:|---:|---:|---|")
        for f in fastest:
            ratio = "-" if f["loom_ratio"] is None else f"{f['loom_ratio']:.2f}"
            target = "-" if f["target"] is None else f"{f['target']:.1f}"
            mode = f" ({f['loom_mode']})" if f.get("loom_mode") and f["measurement"] == "inference" else ""
            print(f"| {f['measurement']}, batch {f['batch']} | {cell(f['fastest'])} | {fmt(f['fastest_median'])} | "
                  f"{fmt(f['loom_median'])}{mode} | {ratio} | {target} | {f['verdict']} |")
        print()
        if any("fastest_capped" in f for f in fastest):
            print("The same against the fastest peer capped to AVX2 (leaving out peers without a cap, which ran "
                  "AVX-512):")
            print()
            print("| measurement | fastest capped peer | its images/s | loom ÷ it | target |")
            print("|---|---|---:|---:|---:|")
            for f in fastest:
                if "fastest_capped" not in f:
                    continue
                ratio = "-" if f["loom_ratio_capped"] is None else f"{f['loom_ratio_capped']:.2f}"
                target = "-" if f["target"] is None else f"{f['target']:.1f}"
                print(f"| {f['measurement']}, batch {f['batch']} | {cell(f['fastest_capped'])} | "
                      f"{fmt(f['fastest_capped_median'])} | {ratio} | {target} |")
            print()
    # loom's whole program for one epoch, timed by compare-peers before and after PyTorch's, and the parts of it
    # the issue counts (loading, the epoch with validation, the test) as the program's last line gives them.
    loom_epoch, loom_parts = [], []
    for n in (1, 2):
        path = os.path.join(args.work, f"loom-epoch-{n}.seconds")
        if os.path.exists(path):
            with open(path) as f:
                loom_epoch.append(float(f.read()))
            with open(os.path.join(args.work, f"loom-epoch-{n}.log")) as f:
                m = re.search(r"loading the data ([\d.]+) s, training with validation ([\d.]+) s, "
                              r"scoring the test images ([\d.]+) s", f.read())
            if m:
                loom_parts.append(sum(float(g) for g in m.groups()))
        elif os.path.exists(os.path.join(args.work, f"loom-epoch-{n}.log")):
            notes.append(f"loom's experiment epoch (run {n}) failed: see its log")
    epoch_summary = None
    if epoch is not None:
        e = epoch["epoch"]
        parts = []
        for mode in ("eager", "torch.compile"):
            r = e.get(mode, {})
            parts.append(f"{mode} {r['seconds']:.1f} s (training {r['train_seconds']:.1f}, validation "
                         f"{r['val_seconds']:.1f}, test {r['test_seconds']:.1f}; warm-up {r['warmup_seconds']:.1f} s "
                         f"before it, not counted)" if "seconds" in r else f"{mode} failed: {r.get('error')}")
        print(f"PyTorch epoch: {e['train_images']:,} training images at batch {e['batch']}, validation on "
              f"{e['val_images']:,} and test on {e['test_images']:,} at batch {e['eval_batch']}, random data in "
              f"memory: {'; '.join(parts)}.")
        if "best_seconds" in e:
            print(f"Best: {e['best']}, {e['best_seconds']:.1f} s; issue 35's target for loom's whole experiment "
                  f"epoch (load, epoch with validation, test): at most 0.25 of it, {0.25 * e['best_seconds']:.1f} s.")
        command = (f"{args.loom_build_dir}/examples/fashion_mnist_experiment --models 1 --epochs 1 "
                   f"--threads {args.threads}")
        if loom_epoch and "best_seconds" in e:
            def verdict(ratios):
                return "met" if max(ratios) <= 0.25 else ("met by one run of two" if min(ratios) <= 0.25 else "missed")

            best = e["best_seconds"]

            def against_best(times):  # "10.8 s and 10.9 s, 0.269 and 0.272 of PyTorch's best: missed"
                ratios = [t / best for t in times]
                return ratios, (f"{' and '.join(f'{t:.1f} s' for t in times)}, "
                                f"{' and '.join(f'{r:.3f}' for r in ratios)} of PyTorch's best: {verdict(ratios)}")

            ratios, text = against_best(loom_epoch)
            print(f"loom's whole program (`{command}`, Debian's Fashion-MNIST: loading, the epoch with validation, "
                  f"the test, the per-class analysis, figures and report), before and after PyTorch's: {text}.")
            epoch_summary = {"loom_seconds": loom_epoch, "pytorch_best": e["best"], "pytorch_best_seconds": best,
                             "loom_ratios": [round(r, 3) for r in ratios], "target": 0.25,
                             "verdict": verdict(ratios), "loom_command": command}
            if len(loom_parts) == len(loom_epoch):
                part_ratios, text = against_best(loom_parts)
                print(f"Of that, the parts the target counts (loading, the epoch with validation, the test, as the "
                      f"program's last line times them): {text}.")
                epoch_summary.update({"loom_counted_seconds": loom_parts,
                                      "loom_counted_ratios": [round(r, 3) for r in part_ratios],
                                      "counted_verdict": verdict(part_ratios)})
        else:
            print(f"loom's side was not timed in this run: time `{command}` (Debian's Fashion-MNIST) on the same "
                  f"machine.")
        print()
    elif "pytorch-epoch" in peers:
        print(f"PyTorch epoch: failed: {peers['pytorch-epoch'].get('error')}")
        print()
    for note in notes:
        print(f"Note: {note}")

    if args.json:
        try:
            with open(os.path.join(args.work, "commands.txt")) as f:
                commands = [line.rstrip("\n") for line in f if line.strip()]
        except OSError:
            commands = []
        document = {"date": args.date, "machine": args.machine, "isa": args.isa, "threads": threads,
                    "repeats": repeats, "train_steps": steps, "infer_images": images, "versions": versions,
                    "loom_build": args.loom_build, "rows": rows, "fastest": fastest,
                    "epoch": epoch["epoch"] if epoch else None, "epoch_vs_loom": epoch_summary, "notes": notes, "commands": commands}
        target = os.path.abspath(args.json)
        temporary = f"{target}.tmp{os.getpid()}"
        try:
            with open(temporary, "w") as f:
                json.dump(document, f, indent=1)
                f.write("\n")
            os.replace(temporary, target)
        except OSError as e:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            sys.exit(f"peers_table: cannot write {args.json}: {e.strerror}")
        print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
