"""What bench/reference/keras_resnet.py and pytorch_resnet.py share: their
options, the seeds they run (one JSON file each, skipped when it exists) and
how --speed reports. numpy and the standard library only."""
import argparse
import json
import os
import platform
import sys

MODEL = 2  # normalized pixels, integer labels: the notebook's model 2, as loom's --model resnet


def parse_args(doc):
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--out", help="folder for resnet-seed<s>.json files (training)")
    p.add_argument("--seed", type=int, default=120695)
    p.add_argument("--seeds", type=int, default=1, help="runs (run r: seed + 100 r + 2)")
    p.add_argument("--run", type=int, default=0, help="first run index")
    p.add_argument("--epochs", type=int, default=20, help="epochs (default 20, as loom's --model resnet)")
    p.add_argument("--width", type=int, default=32, help="the first stage's channels")
    p.add_argument("--translation", type=float, default=0.1, help="RandomTranslation's factor, 0 for none")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (inter-op: 1)")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--verbose", type=int, default=2, help="Keras's fit verbosity (keras_resnet.py)")
    p.add_argument("--speed", action="store_true", help="time training steps on random data instead")
    p.add_argument("--steps", type=int, default=100, help="with --speed: steps per repeat")
    p.add_argument("--repeats", type=int, default=3, help="with --speed: timed repeats")
    p.add_argument("--json", action="store_true", help="with --speed: end with one line of JSON")
    args = p.parse_args()
    if not args.speed and not args.out:
        p.error("--out is needed to train (or give --speed)")
    if min(args.epochs, args.width, args.threads, args.steps, args.repeats, args.seeds) < 1:
        p.error("--epochs, --width, --threads, --steps, --repeats and --seeds must be at least 1")
    if not 0 <= args.translation <= 1:
        p.error("--translation must lie in [0, 1]")
    return args


def report_speed(args, rates, name, fields):
    """Prints the median and best of `rates` (images/s), and with --json one line of JSON with `fields` added."""
    rates = sorted(rates)
    n = len(rates)
    median = rates[n // 2] if n % 2 else 0.5 * (rates[n // 2 - 1] + rates[n // 2])
    print(f"{name}, {args.threads} threads, training batch 32, {args.repeats} repeats of {args.steps} steps: "
          f"{median:.0f} images/s median, {rates[-1]:.0f} best ({1e3 * 32 / median:.1f} ms/step)", flush=True)
    if args.json:
        print(json.dumps({**fields, "model": "resnet", "threads": args.threads, "train_batch": 32,
                          "train_steps": args.steps, "repeats": args.repeats, "train_images_per_s_median": median,
                          "train_images_per_s_best": rates[-1]}))


def run_seeds(args, program, framework, train):
    """Trains run r = args.run ... with seed args.seed + 100 r + 2 by train(seed) (a result dict), each
    written to args.out/resnet-seed<s>.json when it ends; a run whose file exists is skipped."""
    os.makedirs(args.out, exist_ok=True)
    for r in range(args.run, args.run + args.seeds):
        seed = args.seed + 100 * r + MODEL
        path = os.path.join(args.out, f"resnet-seed{seed}.json")
        if os.path.exists(path):
            print(f"{program}: {path} exists, skipped", flush=True)
            continue
        print(f"{program}: seed {seed}, {args.epochs} epochs, {args.threads} threads", flush=True)
        result = train(seed)
        result.update(model=MODEL, architecture="resnet", seed=seed, epochs=args.epochs, width=args.width,
                      translation=args.translation, run=r)
        doc = {"framework": framework, "python": platform.python_version(), "threads": args.threads,
               "cpus": os.cpu_count(), "batch_size": 32, "recipe": "improved", "command": " ".join(sys.argv),
               "models": [result]}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)
        print(f"{program}: seed {seed}: test accuracy {100 * result['test_accuracy']:.2f} % in "
              f"{result['train_seconds']:.0f} s ({result['train_images_per_s']:.0f} images/s)", flush=True)
