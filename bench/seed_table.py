#!/usr/bin/env python3
"""Markdown tables of the notebook's recipe over seeds, from the experiment's
results.json files and bench/pytorch_twin.py's JSON files (docs/results.md).

    bench/seed_table.py --group "today's rule" A/results.json B/results.json \\
                        --group "TF 2.0-2.10's rule" C/results.json D/results.json \\
                        --twin "PyTorch twin" T1.json T2.json T3.json [--probe A/results.json]
                        [--probe-summary A/results.json B/results.json]
                        [--classes "notebook recipe" A/results.json --classes "improved" B/results.json]
                        [--compare] [--late]

Every run found in a group's files counts once per model (a file of
`--seeds K` holds K runs per model; runs of the same model and seed found
twice are an error). Per model: runs, the last epoch's test accuracy (mean,
sd over runs, min, max), where the notebook's number falls, the volatility
(mean |change| of val_accuracy between consecutive epochs over the last 10
epochs, in points, averaged over runs) and the best-validation epoch's test
accuracy. --probe prints the BatchNormalization probe (--bn-probe) of the
first run of each model in the file. --classes, given twice, compares two
groups class by class: recall (and errors per 1,000 images) averaged over
every run of every model in each group, and what changed. --compare sets the
first two groups (--group or --twin, in that order) side by side per model:
the F-test of their last-epoch variances (two-sided p-value) and Welch's
t-test of their means. --late asks, per group and model, whether the spread
of the last epoch over seeds is what each run's own late-epoch fluctuation
predicts: if a run's last epoch were any one of its last five (val_accuracy),
how often would the runs' last epochs be as close together as they are?
(Exact: every combination of one epoch per run is counted.) Beside it, the
level the runs reach: the mean of each run's best val_accuracy of those epochs.
"""
import argparse
import itertools
import json
import math
import statistics
import sys

NOTEBOOK = {1: 92.05, 2: 91.63, 3: 91.49, 4: 91.69}


def volatility(val, last=10):
    tail = val[-(last + 1):]
    steps = [abs(b - a) for a, b in zip(tail, tail[1:])]
    return sum(steps) / len(steps) if steps else 0.0


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"seed_table: {path}: {e}")


def experiment_runs(paths):
    """(model, seed) -> run dict with test, best_val_test, val_accuracy, epochs."""
    runs = {}
    for path in paths:
        for m in load(path).get("models", []):
            key = (m["model"], m["seed"])
            if key in runs:
                sys.exit(f"seed_table: {path}: model {key[0]} with seed {key[1]} is there twice")
            best = m.get("best_val_epoch_test_accuracy")  # null without a validation split (--refit)
            runs[key] = {"test": 100 * m["test_accuracy"], "best": None if best is None else 100 * best,
                         "val": m["history"].get("val_accuracy", []), "epochs": m["epochs"],
                         "seconds": m.get("train_seconds"), "per_class": m.get("per_class", [])}
            if m.get("recalibrated_bn_test_accuracy") is not None:
                runs[key]["recalibrated"] = 100 * m["recalibrated_bn_test_accuracy"]
    return runs


def twin_runs(paths):
    runs = {}
    for path in paths:
        d = load(path)
        for r in d["runs"]:
            key = (d["model"], r["seed"])
            if key in runs:
                sys.exit(f"seed_table: {path}: model {key[0]} with seed {key[1]} is there twice")
            runs[key] = {"test": 100 * r["last_epoch_test_accuracy"], "best": 100 * r["best_val_test_accuracy"],
                         "val": r["history"]["val_accuracy"], "epochs": r["epochs"]}
    return runs


def place(nb, accs):
    below = sum(a < nb for a in accs)
    if below == 0:
        return f"below all {len(accs)}"
    if below == len(accs):
        return f"above all {len(accs)}"
    return f"above {below} of {len(accs)}"


def table(title, runs):
    print(f"**{title}**\n")
    print("| model | runs | last epoch: mean | sd | min | max | notebook | notebook's place | volatility | "
          "best-validation epoch: mean (min-max) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in sorted({k[0] for k in runs}):
        rs = [runs[k] for k in sorted(runs) if k[0] == model]
        accs = [r["test"] for r in rs]
        best = [r["best"] for r in rs if r["best"] is not None]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        validated = [r for r in rs if r["val"]]
        vol = f"{100 * sum(volatility(r['val']) for r in validated) / len(validated):.2f}" if validated else "-"
        best_cell = (f"{statistics.mean(best):.2f} % ({min(best):.2f}-{max(best):.2f})" if best
                     else "- (no validation split)")
        print(f"| {model} | {len(rs)} | {statistics.mean(accs):.2f} % | {sd:.2f} | {min(accs):.2f} % | "
              f"{max(accs):.2f} % | {NOTEBOOK[model]:.2f} % | {place(NOTEBOOK[model], accs)} | {vol} | "
              f"{best_cell} |")
    print()
    recal = {k: r["recalibrated"] for k, r in runs.items() if "recalibrated" in r}
    if recal:
        print("Last epoch's weights with BatchNormalization's statistics recalibrated on the training images "
              "(--bn-probe): " + "; ".join(f"model {k[0]} seed {k[1]}: {runs[k]['test']:.2f} % -> {v:.2f} %"
                                          for k, v in sorted(recal.items())) + ".\n")
    seconds = [r.get("seconds") or 0 for r in runs.values()]
    if min(seconds) > 1:  # a run resumed after it had finished records (almost) no training time
        print(f"Training time per run: mean {statistics.mean(seconds):.0f} s ({min(seconds):.0f}-{max(seconds):.0f} s), "
              f"{statistics.mean(seconds) / statistics.mean(r['epochs'] for r in runs.values()):.1f} s per epoch.\n")
    print("Each run's last-epoch test accuracy: " + "; ".join(
        f"model {k[0]} seed {k[1]}: {runs[k]['test']:.2f} %" for k in sorted(runs)) + ".\n")


def betainc(a, b, x):
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (Lentz)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - betainc(b, a, 1 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)) / a
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1.0 + num / c if abs(c) > 1e-300 else 1e-300
        f *= c * d
        if abs(1.0 - c * d) < 1e-14:
            break
    return front * (f - 1.0)


def f_test(a, b):
    """F = var(a) / var(b) and its two-sided p-value on (len(a) - 1, len(b) - 1) degrees of freedom."""
    d1, d2 = len(a) - 1, len(b) - 1
    va, vb = statistics.variance(a), statistics.variance(b)
    if vb == 0 or va == 0:
        return math.inf if vb == 0 else 0.0, 0.0
    f = va / vb
    cdf = betainc(d1 / 2, d2 / 2, d1 * f / (d1 * f + d2))
    return f, min(1.0, 2 * min(cdf, 1 - cdf))


def welch(a, b):
    """Welch's t-test of equal means: (difference of the means, two-sided p-value)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.mean(a) - statistics.mean(b)
    if va + vb == 0:
        return diff, 0.0 if diff else 1.0
    t = diff / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return diff, betainc(dof / 2, 0.5, dof / (dof + t * t))


def compare(title_a, runs_a, title_b, runs_b, field="test", what="last epoch's test accuracy"):
    print(f"**{title_a} against {title_b}**: {what} per model; F-test of the variances "
          "(two-sided), Welch's t-test of the means\n")
    print(f"| model | runs | {title_a}: mean (sd) | {title_b}: mean (sd) | sd ratio | F | p (F-test) | "
          "mean difference | p (Welch) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in sorted({k[0] for k in runs_a} & {k[0] for k in runs_b}):
        a = [r[field] for k, r in sorted(runs_a.items()) if k[0] == model and r[field] is not None]
        b = [r[field] for k, r in sorted(runs_b.items()) if k[0] == model and r[field] is not None]
        if len(a) < 2 or len(b) < 2:
            continue
        f, pf = f_test(a, b)
        diff, pt = welch(a, b)
        print(f"| {model} | {len(a)} / {len(b)} | {statistics.mean(a):.2f} % ({statistics.stdev(a):.2f}) | "
              f"{statistics.mean(b):.2f} % ({statistics.stdev(b):.2f}) | "
              f"{statistics.stdev(a) / statistics.stdev(b):.2f} | {f:.2f} | {pf:.3f} | {diff:+.2f} | {pt:.3f} |")
    print()


def late(title, runs, last=5):
    """The last epoch's spread over seeds against what the runs' own late epochs give."""
    print(f"**{title}: the last epoch's spread against each run's own last {last} epochs** "
          f"(val_accuracy; 'as tight or tighter': the share of the {last}^runs ways to pick one of its last "
          f"{last} epochs per run whose picks are no more spread than the runs' last epochs)\n")
    print(f"| model | runs | last epochs' sd over seeds | sd within a run (last {last} epochs, pooled) | "
          f"epochs more than 0.7 points below the run's best of the last {last}: before the last / at the last | "
          f"as tight or tighter | the plateau: best of the last {last}, mean over runs |")
    print("|---|---|---|---|---|---|---|")
    for model in sorted({k[0] for k in runs}):
        tails = [[100 * v for v in r["val"][-last:]] for k, r in sorted(runs.items()) if k[0] == model]
        tails = [t for t in tails if len(t) == last]
        if len(tails) < 2:
            continue
        observed = statistics.stdev(t[-1] for t in tails)
        within = math.sqrt(sum(statistics.variance(t) for t in tails) / len(tails))
        dips = [[v < max(t) - 0.7 for v in t] for t in tails]
        before, at = sum(sum(d[:-1]) for d in dips), sum(d[-1] for d in dips)
        picks = list(itertools.product(*tails))
        tight = sum(statistics.stdev(c) <= observed + 1e-9 for c in picks) / len(picks)
        print(f"| {model} | {len(tails)} | {observed:.2f} | {within:.2f} | {before}/{len(tails) * (last - 1)} / "
              f"{at}/{len(tails)} | {tight:.2f} | {statistics.mean(max(t) for t in tails):.2f} % |")
    print()


def probe(path):
    for m in load(path).get("models", []):
        rows = m.get("bn_probe", [])
        if not rows or m.get("run", 0) != 0:
            continue
        layers = sorted({r["layer"] for r in rows})
        print(f"**BatchNormalization probe, model {m['model']}, seed {m['seed']}**: moving variance / the "
              "variance of the layer's input in inference on the validation images, median over channels "
              "(min-max); then the moving mean's distance from that input's mean, in its standard deviations, "
              "averaged over channels; and val_accuracy\n")
        print("| epoch | " + " | ".join(layers) + " | val_accuracy |")
        print("|---|" + "---|" * len(layers) + "---|")
        for epoch in sorted({r["epoch"] for r in rows}):
            cells = []
            for layer in layers:
                r = next((r for r in rows if r["epoch"] == epoch and r["layer"] == layer), None)
                cells.append(f"{r['variance_ratio_median']:.2f} ({r['variance_ratio_min']:.2f}-"
                             f"{r['variance_ratio_max']:.2f}); {r['mean_shift']:.2f}" if r else "")
            val = m["history"]["val_accuracy"][epoch - 1]
            print(f"| {epoch} | " + " | ".join(cells) + f" | {100 * val:.2f} % |")
        print()


def probe_summary(paths):
    """Per model and BatchNormalization layer: the moving variance / inference variance ratio (median over
    channels), averaged over each run's last 10 epochs; the range and mean of that over the runs."""
    per = {}
    for path in paths:
        for m in load(path).get("models", []):
            rows = m.get("bn_probe", [])
            if not rows:
                continue
            last = max(r["epoch"] for r in rows)
            for layer in sorted({r["layer"] for r in rows}):
                tail = [r["variance_ratio_median"] for r in rows if r["layer"] == layer and r["epoch"] > last - 10]
                per.setdefault((m["model"], layer), []).append(sum(tail) / len(tail))
    if not per:
        return
    print("**BatchNormalization probe over runs**: moving variance / the variance of the layer's input in "
          "inference on the validation images (median over channels), averaged over each run's last 10 epochs\n")
    print("| model | layer | runs | mean | min-max over runs |")
    print("|---|---|---|---|---|")
    for (model, layer), ratios in sorted(per.items()):
        print(f"| {model} | {layer} | {len(ratios)} | {statistics.mean(ratios):.2f} | "
              f"{min(ratios):.2f}-{max(ratios):.2f} |")
    print()


def classes(groups):
    """Per class: recall averaged over all runs of each of two groups, and the change."""
    (ta, ra), (tb, rb) = [(g[0], experiment_runs(g[1:])) for g in groups]

    def recall(runs):
        per = {}
        for r in runs.values():
            for c in r["per_class"]:
                per.setdefault(c["class"], []).append(100 * c["recall"])
        return {k: statistics.mean(v) for k, v in per.items()}, len(runs)

    (a, na), (b, nb) = recall(ra), recall(rb)
    print(f"**Per class, {ta} ({na} runs) against {tb} ({nb} runs)**: recall on the 1,000 test images of each "
          "class, averaged over every run of the four models\n")
    print(f"| class | {ta}: recall | {tb}: recall | change (points) | errors per 1,000: {ta} -> {tb} |")
    print("|---|---|---|---|---|")
    for name in a:
        if name not in b:
            continue
        print(f"| {name} | {a[name]:.2f} % | {b[name]:.2f} % | {b[name] - a[name]:+.2f} | "
              f"{10 * (100 - a[name]):.0f} -> {10 * (100 - b[name]):.0f} |")
    print()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--group", nargs="+", action="append", default=[], metavar=("TITLE", "RESULTS_JSON"),
                   help="a title, then the experiment's results.json files of that group")
    p.add_argument("--twin", nargs="+", action="append", default=[], metavar=("TITLE", "TWIN_JSON"),
                   help="a title, then bench/pytorch_twin.py's JSON files")
    p.add_argument("--probe", action="append", default=[], help="results.json whose --bn-probe rows to print")
    p.add_argument("--probe-summary", nargs="+", default=[], metavar="RESULTS_JSON",
                   help="results.json files whose --bn-probe ratios to summarize per model and layer")
    p.add_argument("--compare", action="store_true", help="the first two groups side by side: F-test and t-test")
    p.add_argument("--late", action="store_true",
                   help="per group: the last epoch's spread over seeds against the runs' own late-epoch fluctuation")
    p.add_argument("--classes", nargs="+", action="append", default=[], metavar=("TITLE", "RESULTS_JSON"),
                   help="twice: a title, then results.json files; compares the two groups class by class")
    args = p.parse_args()
    for g in args.group:
        if len(g) < 2:
            p.error("--group needs a title and at least one file")
        table(g[0], experiment_runs(g[1:]))
    for g in args.twin:
        if len(g) < 2:
            p.error("--twin needs a title and at least one file")
        table(g[0], twin_runs(g[1:]))
    if args.compare:
        groups = [(g[0], experiment_runs(g[1:])) for g in args.group] + [(g[0], twin_runs(g[1:])) for g in args.twin]
        if len(groups) < 2:
            p.error("--compare needs two groups")
        compare(*groups[0], *groups[1])
        compare(*groups[0], *groups[1], field="best", what="the best-validation epoch's test accuracy")
    if args.late:
        for title, runs in ([(g[0], experiment_runs(g[1:])) for g in args.group]
                            + [(g[0], twin_runs(g[1:])) for g in args.twin]):
            late(title, runs)
    for path in args.probe:
        probe(path)
    probe_summary(args.probe_summary)
    if args.classes:
        if len(args.classes) != 2 or any(len(g) < 2 for g in args.classes):
            p.error("--classes is given twice, each time a title and at least one file")
        classes(args.classes)


if __name__ == "__main__":
    main()
