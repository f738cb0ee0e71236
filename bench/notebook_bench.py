"""What the Python benchmarks of the notebook's CNN share: the model in PyTorch
and the way examples/notebook_speed.cpp times it, so that bench/pytorch_notebook.py
(Debian's PyTorch 1.13, bench/compare-pytorch) and bench/peers_notebook.py (the
pinned reference environment, bench/compare-peers) measure the same thing.

The conventions, as in notebook_speed:

- data: random (uniform pixels in [0, 1), uniform labels 0..9): speed, not accuracy;
- training: WARMUP_STEPS untimed steps, then --repeats runs of --steps timed
  steps, each on the next batch cut from a pool of TRAIN_POOL images
  (train_start);
- inference: --infer-images images in batches of each size (the last batch may
  be smaller; inference_slices), the batches cut before the clock starts, one
  untimed pass, then --repeats timed passes;
- a speed is images per second: the median and the best of the repeats.

Nothing here imports a framework at load time: the scripts set thread and ISA
variables before their framework is imported.
"""
import argparse
import statistics
import time

TRAINABLE_PARAMETERS = 256567  # loom's summary() of the notebook's model
WARMUP_STEPS = 10
TRAIN_POOL = 1024  # images the training batches are cut from, as in notebook_speed


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def batch_list(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive batch sizes, got {text!r}")
    return sizes


def train_start(step, batch, pool_n):
    """Where training step `step` cuts its batch from the pool (notebook_speed's rule)."""
    return (step * batch) % (pool_n - batch + 1)


def inference_slices(n, batch):
    """(start, stop) of each batch when n images are predicted `batch` at a time."""
    return [(i, min(i + batch, n)) for i in range(0, n, batch)]


def rate(images, seconds):
    """Images per second over repeated timings: {"median", "best"}."""
    return {"median": images / statistics.median(seconds), "best": images / min(seconds)}


def time_training(step, steps, repeats, batch):
    """WARMUP_STEPS untimed calls of step(i), then `repeats` timings of `steps` calls.

    Returns (rate, seconds per repeat, what the last call returned)."""
    for i in range(WARMUP_STEPS):
        step(i)
    i, last, seconds = WARMUP_STEPS, None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            last = step(i)
            i += 1
        seconds.append(time.perf_counter() - t0)
    return rate(steps * batch, seconds), seconds, last


def time_inference(predict_all, images, repeats):
    """One untimed call of predict_all(), then `repeats` timed ones: (rate, seconds)."""
    predict_all()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_all()
        seconds.append(time.perf_counter() - t0)
    return rate(images, seconds), seconds


def torch_notebook_model(num_categories=10):
    """The notebook's CNN_FMNST_model() in PyTorch, in torch's NCHW layout.

        Conv2D(75, 3x3, same, relu) BatchNorm MaxPool(2, 2, same)
        Conv2D(50, 3x3, same, relu) Dropout(0.2) BatchNorm MaxPool(2, 2, same)
        Conv2D(25, 3x3, same, relu) BatchNorm MaxPool(2, 2, same)
        Flatten Dense(512, relu) Dropout(0.3) Dense(10)

    with Keras's defaults: BatchNormalization(momentum=0.99, epsilon=1e-3), i.e.
    torch momentum 0.01; glorot_uniform kernels and zero biases. Keras's "same"
    max pooling pads at the bottom/right only, which for a 2x2 window with
    stride 2 is ceil_mode=True (7 -> 4). The softmax is left to the caller: in
    the loss for training (CrossEntropyLoss), applied for inference.
    Works with PyTorch 1.13 and 2.x."""
    from torch import nn

    def conv(cin, cout):
        return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)  # "same" for 3x3, stride 1

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)  # Keras: epsilon=1e-3, momentum=0.99

    def pool():
        return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)  # Keras "same": 28->14->7->4

    model = nn.Sequential(
        conv(1, 75), nn.ReLU(), bn(75), pool(),
        conv(75, 50), nn.ReLU(), nn.Dropout(0.2), bn(50), pool(),
        conv(50, 25), nn.ReLU(), bn(25), pool(),
        nn.Flatten(),
        nn.Linear(25 * 4 * 4, 512), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(512, num_categories),
    )
    for m in model.modules():  # Keras's initializers: glorot_uniform kernels, zero biases
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model
