"""loom's residual network (examples/resnet_model.hpp) in PyTorch 2, with
Keras's semantics, trained with the same recipe as
`scripts/run-experiment --model resnet`: the second peer of issue 36
(bench/reference/keras_resnet.py is Keras itself).

    $(scripts/reference-env) bench/reference/pytorch_resnet.py --out DIR [--seed 120695] [--seeds K] [--run R]
        [--epochs 20] [--width 32] [--translation 0.1] [--threads 2] [--data-dir DIR]
    $(scripts/reference-env) bench/reference/pytorch_resnet.py --speed [--steps 100] [--repeats 3] [--threads 2]

Where PyTorch's defaults differ from Keras's, Keras's are used:

  - "same" padding as TensorFlow pads it: a 3x3 convolution with stride 2 on
    28x28 pads one row and column at the bottom and right only;
  - glorot_uniform kernels, zero biases; BatchNormalization momentum 0.99
    (torch 0.01), epsilon 1e-3;
  - AdamW with epsilon 1e-7 and weight decay 0.04 on every parameter; the
    learning rate Keras's CosineDecay with warmup, read at the step count
    before the update (0 at the first step), as Keras's optimizer reads it;
  - RandomFlip("horizontal") and RandomTranslation(0.1, 0.1) on each
    training batch: each image flipped with probability 1/2, then moved by
    uniform(-0.1, 0.1) x 28 pixels on each axis (fractions too), bilinear,
    filled by reflection (d c b a | a b c d), as Keras's layer;
  - cross-entropy with label smoothing 0.1 on the logits.

Batch 32, reshuffled every epoch; all 60,000 training images (the recipe's
refit); the last epoch's weights scored on the 10,000 test images. Each run
goes to DIR/resnet-seed<s>.json (seed + 100 r + 2, as loom's experiment)
when it ends; a run whose file exists is skipped. --speed times training
steps on random data instead, as `notebook_speed --model resnet` does.
"""
import math
import os
import time

import numpy as np

from keras_notebook import load_data, per_class  # this folder; imports numpy only
from resnet_common import parse_args, report_speed, run_seeds


args = parse_args(__doc__)
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, str(args.threads))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_interop_threads(1)
torch.set_num_threads(args.threads)


class SameConv(nn.Conv2d):
    """Conv2D(padding="same", use_bias=False) as TensorFlow pads it: the odd pixel at the bottom and right."""

    def __init__(self, cin, cout, kernel, stride):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, bias=False)

    def forward(self, x):
        k, s = self.kernel_size[0], self.stride[0]
        out = -(-x.shape[-1] // s)
        total = max((out - 1) * s + k - x.shape[-1], 0)
        if total:
            x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
        return super().forward(x)


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = SameConv(cin, cout, 3, stride), bn(cout)
        self.conv2, self.bn2 = SameConv(cout, cout, 3, 1), bn(cout)
        self.project = None
        if stride != 1 or cin != cout:
            self.project = nn.Sequential(SameConv(cin, cout, 1, stride), bn(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu((self.project(x) if self.project is not None else x) + y)


class ResNet(nn.Module):
    def __init__(self, width=32, num_categories=10):
        super().__init__()
        self.stem = nn.Sequential(SameConv(1, width, 3, 1), bn(width), nn.ReLU())
        blocks, cin = [], width
        for stage in range(3):
            cout = width * 2 ** stage
            for block in range(2):
                blocks.append(Block(cin, cout, 2 if stage > 0 and block == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.dense = nn.Linear(cin, num_categories)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):  # logits; the softmax is in the loss
        return self.dense(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def augment(x, generator, translation):
    """RandomFlip("horizontal"), then RandomTranslation(translation, translation), on a batch [n, 1, 28, 28]."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    if translation <= 0:
        return x
    dy = (torch.rand(n, generator=generator) * 2 - 1) * translation * h
    dx = (torch.rand(n, generator=generator) * 2 - 1) * translation * w
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = -2 * dx / w, -2 * dy / h  # output (i, j) reads input (i - dy, j - dx)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def keras_cosine_decay(step, steps_per_epoch, epochs, peak=2e-3):
    """Keras's CosineDecay(0, decay_steps, alpha=0, warmup_target=peak, warmup_steps=steps_per_epoch)."""
    warmup, decay = steps_per_epoch, max(1, steps_per_epoch * (epochs - 1))
    if step < warmup:
        return peak * step / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(step - warmup, decay) / decay))


def make_training(model, steps_per_epoch, epochs):
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, betas=(0.9, 0.999), eps=1e-7, weight_decay=0.04)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    step = [0]

    def train_step(xb, yb):
        for group in optimizer.param_groups:
            group["lr"] = keras_cosine_decay(step[0], steps_per_epoch, epochs)
        optimizer.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = loss_fn(logits, yb)
        loss.backward()
        optimizer.step()
        step[0] += 1
        return loss, logits

    return train_step


def to_tensor(images):
    return torch.from_numpy(images.astype(np.float32) / np.float32(255)).reshape(-1, 1, 28, 28)


def run_one(seed):
    x_train, x_valid, x_test, y_train, y_valid, y_test = load_data(args.data_dir)
    x = to_tensor(np.concatenate([x_train, x_valid]))
    y = torch.from_numpy(np.concatenate([y_train, y_valid]).astype(np.int64))
    torch.manual_seed(seed)
    model = ResNet(args.width).to(memory_format=torch.channels_last)
    steps = (len(x) + 31) // 32
    train_step = make_training(model, steps, args.epochs)
    generator = torch.Generator().manual_seed(seed + 1)
    history = {"loss": [], "accuracy": []}
    epoch_seconds = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(x), generator=generator)
        loss_sum, correct = 0.0, 0
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            xb = augment(x[idx], generator, args.translation).contiguous(memory_format=torch.channels_last)
            loss, logits = train_step(xb, y[idx])
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
        epoch_seconds.append(time.perf_counter() - t0)
        history["loss"].append(loss_sum / len(x))
        history["accuracy"].append(correct / len(x))
        print(f"seed {seed} epoch {epoch + 1}/{args.epochs} - {epoch_seconds[-1]:.0f}s - loss: "
              f"{history['loss'][-1]:.4f} - accuracy: {history['accuracy'][-1]:.4f}", flush=True)
    train_seconds = time.perf_counter() - start
    model.eval()
    xt = to_tensor(x_test)
    with torch.inference_mode():
        logits = torch.cat([model(xt[i:i + 1000].contiguous(memory_format=torch.channels_last))
                            for i in range(0, len(xt), 1000)])
    predicted = logits.argmax(1).numpy()
    rows, confusion = per_class(y_test.astype(np.int64), predicted)
    return {"test_accuracy": float((predicted == y_test).mean()),
            "test_loss": float(F.cross_entropy(logits, torch.from_numpy(y_test.astype(np.int64)))),
            "train_seconds": train_seconds, "epoch_seconds": epoch_seconds,
            "train_images_per_s": len(x) * args.epochs / train_seconds, "history": history, "per_class": rows,
            "confusion_matrix": confusion, "parameters": sum(p.numel() for p in model.parameters())}


def speed():
    torch.manual_seed(args.seed)
    model = ResNet(args.width).to(memory_format=torch.channels_last)
    train_step = make_training(model, args.steps, 2)
    generator = torch.Generator().manual_seed(args.seed + 1)
    n = 32 * args.steps
    x = torch.rand(n, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)

    def epoch():
        model.train()
        for i in range(0, n, 32):
            xb = augment(x[i:i + 32], generator, args.translation).contiguous(memory_format=torch.channels_last)
            loss, logits = train_step(xb, y[i:i + 32])
            loss.item()  # as a training loop reads it

    epoch()  # warm-up
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        epoch()
        rates.append(n / (time.perf_counter() - t0))
    report_speed(args, rates, f"PyTorch {torch.__version__} (eager, channels_last)",
                 {"framework": "pytorch", "version": torch.__version__})


def main():
    if args.speed:
        speed()
    else:
        run_seeds(args, "pytorch_resnet", f"pytorch {torch.__version__}", run_one)


if __name__ == "__main__":
    main()
