"""The baseline checked against the book's own code (issue #16): d2l's `train_ch6` on the book's AlexNet (Dive into
Deep Learning 7.1) beside `alexnet bench --baseline` and ours, in one process, same batch, same threads.

    python benchmarks/d2l_book.py [--images 1920] [--test-images 256] [--batch-size 128] [--threads N] [--json]

The book's side is the `d2l` package's code, unchanged: `d2l.load_data_fashion_mnist(batch, resize=224)` and
`d2l.train_ch6(net, train_iter, test_iter, 1, 0.01, device)`, one epoch over the first `--images` training images.
Two things are redirected, neither timed: torchvision's `FashionMNIST` reads the raw files that
`alexnet.bench.baseline.torchvision_root` lays out (the book's `../data` is not used; nothing is downloaded) and
keeps the first N images of each split; `d2l.Timer` is subclassed only to keep the instance, so the per-batch times
can be read back. The figure is what `train_ch6` prints, `images x epochs / timer.sum()`: its timer runs from after
a batch arrives to after the loss and accuracy are read back, so it counts the step alone (no data loading, no
test pass, no plotting), and the first batch (oneDNN's kernel set-up) is in it; the script also prints it without
that batch. The alexnet side is `run_bench` (`alexnet bench`): `--warmup` untimed steps, then `--steps` timed ones,
data loading included. Each part also reports how many cores other processes took while it ran: on 2 cores one
busy neighbour halves a figure, and the three parts need not see the same neighbours.

`d2l` is not a dependency of the project: its pins (numpy 1.23, matplotlib 3.7, ...) would replace ours. Install it
in an environment of its own (commands in benchmarks/README.md); without it the script says so and exits 0.
"""

import argparse
import contextlib
import gc
import io
import json
import os
import re
import resource
import sys
import time
import warnings
from collections.abc import Iterator
from unittest import mock

import torch
import torchvision
from torch import nn

from alexnet.bench.baseline import torchvision_root
from alexnet.bench.compare import run_bench
from alexnet.bench.throughput import BenchSpec
from alexnet.models import create_model
from alexnet.runtime.device import cpu_features, device_name, pick_device

# The same torch and torchvision as this process: the book's figure is only comparable on the same build.
INSTALL = (f"python3 -m venv /tmp/d2l-venv && /tmp/d2l-venv/bin/pip install torch=={torch.__version__.split('+')[0]} "
           f"torchvision=={torchvision.__version__.split('+')[0]} pandas requests ipython matplotlib "
           "matplotlib-inline scipy pyyaml tqdm && /tmp/d2l-venv/bin/pip install --no-deps d2l==1.0.3 -e .")
LR = 0.01  # d2l 7.1's rate
INPUT_SIZE = 224  # the book's resize; its net's first Linear (6400 = 256 x 5 x 5) holds only at 224


def book_net() -> nn.Sequential:
    """d2l 7.1's AlexNet as the book writes it (the version whose code calls `train_ch6`)."""
    return nn.Sequential(
        nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Linear(6400, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 10))


def check_same_net(net: nn.Module) -> None:
    """The book's net and our `d2l` model must be the same architecture, or the comparison means nothing."""
    ours = [tuple(p.shape) for p in create_model("d2l").parameters()]
    if [tuple(p.shape) for p in net.parameters()] != ours:
        sys.exit("the book's net and alexnet's `d2l` model have different parameter shapes")


def subset_dataset(data_root, n_train: int, n_test: int):
    """A stand-in for `torchvision.datasets.FashionMNIST` that reads `data_root` (never downloading) and keeps the
    first N images of the split."""
    real = torchvision.datasets.FashionMNIST

    def make(*, train: bool, transform, **ignored):  # d2l also passes root="../data", download=True
        ds = real(root=str(data_root), train=train, transform=transform, download=False)
        n = n_train if train else n_test
        ds.data, ds.targets = ds.data[:n], ds.targets[:n]
        return ds
    return make


def measure_book(d2l, args, root) -> dict:
    """One epoch of `d2l.train_ch6` on the subset; its printed examples/sec and the timer's per-batch seconds."""
    timers: list = []

    class KeptTimer(d2l.Timer):  # the same timer, kept so its per-batch times can be read back
        def __init__(self):
            super().__init__()
            timers.append(self)

    net = book_net()
    check_same_net(net)
    printed = io.StringIO()
    with mock.patch.object(torchvision.datasets, "FashionMNIST", subset_dataset(root, args.images, args.test_images)), \
            mock.patch.object(d2l, "Timer", KeptTimer), contextlib.redirect_stdout(printed), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers on 2 cores: d2l's
        warnings.filterwarnings("ignore", message="Attempting to set identical")  # the plot's x axis, 1 epoch
        train_iter, test_iter = d2l.load_data_fashion_mnist(args.batch_size, resize=INPUT_SIZE)
        t0 = time.perf_counter()
        d2l.train_ch6(net, train_iter, test_iter, 1, LR, torch.device(args.device))
        wall = time.perf_counter() - t0
    text = printed.getvalue()
    rate = re.search(r"([\d.]+) examples/sec", text)
    losses = re.search(r"loss ([\d.na]+), train acc ([\d.]+), test acc ([\d.]+)", text)
    if rate is None or losses is None:
        sys.exit(f"train_ch6 printed no examples/sec line:\n{text[-500:]}")
    times = timers[0].times
    return {"examples_per_sec": float(rate.group(1)),
            "examples_per_sec_unrounded": args.images / sum(times),
            "examples_per_sec_after_first_batch": (args.images - args.batch_size) / sum(times[1:]),
            "batches": len(times), "first_batch_s": times[0], "timer_s": sum(times), "train_ch6_wall_s": wall,
            "loss": float(losses.group(1)), "train_acc": float(losses.group(2)), "test_acc": float(losses.group(3))}


def _busy_s() -> float:
    """Seconds of CPU time the whole machine has spent busy (user, nice, system, irq, softirq) since boot."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_s() -> float:
    """CPU seconds of this process and its reaped children (the DataLoader workers, joined when a loader ends)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def others_cpu(record: list[float]) -> Iterator[None]:
    """Appends how many cores' worth of CPU other processes took while the block ran (machine busy time less
    ours, per wall second): the noise of a shared machine, measured rather than guessed."""
    t0, busy0, own0 = time.perf_counter(), _busy_s(), _own_s()
    yield
    record.append(max(0.0, (_busy_s() - busy0) - (_own_s() - own0)) / (time.perf_counter() - t0))


def bench_spec(args, precision: str) -> BenchSpec:
    """`alexnet bench --device D --model d2l --batch-size B --threads T --precision P` at the book's 224."""
    return BenchSpec(model="d2l", input_size=INPUT_SIZE, batch_size=args.batch_size, device=args.device,
                     precision=precision, steps=args.steps, warmup=args.warmup, threads=args.threads,
                     data_dir=args.data_dir)


def table(result: dict) -> str:
    book, fp32, ours_auto = result["book"], result["bench_fp32"], result["bench_auto"]["ours"]
    c = result["config"]
    def options(r):  # what the trainer chose: "precision" in newer alexnet.bench results, "peak_precision" before
        return r.get("precision", r["peak_precision"]) + (", channels_last" if r["channels_last"] else "")
    rows = [("book: d2l.train_ch6, as it prints", book["examples_per_sec"]),
            ("book: the same timer, first batch left out", book["examples_per_sec_after_first_batch"]),
            ("alexnet bench --baseline (fp32)", fp32["baseline"]["train_images_per_sec"]),
            (f"ours, --precision fp32 ({options(fp32['ours'])})", fp32["ours"]["train_images_per_sec"]),
            (f"ours, --precision auto ({options(ours_auto)})", ours_auto["train_images_per_sec"])]
    ref = book["examples_per_sec"]
    lines = [f"d2l AlexNet @{INPUT_SIZE}, batch {c['batch_size']}, {c['threads']} threads; {result['device']}; "
             f"torch {result['torch']}, d2l {result['d2l']}",
             f"book: {c['images']} training images ({book['batches']} batches, 1 epoch), test pass on "
             f"{c['test_images']} (not timed); alexnet bench: {c['steps']} timed steps after {c['warmup']} warm-up",
             f"{'':<52}{'train img/s':>12}{'/ book':>8}"]
    lines += [f"{name:<52}{rate:>12.1f}{rate / ref:>7.2f}x" for name, rate in rows]
    lines.append(f"book: loss {book['loss']:.3f}, train acc {book['train_acc']:.3f}, first batch "
                 f"{book['first_batch_s']:.1f} s, train_ch6 wall {book['train_ch6_wall_s']:.0f} s (data and test pass "
                 f"included); ratio ours fp32 / baseline {fp32['ratio']:.2f}x")
    book_o, fp32_o, auto_o = result["others_cpu_cores"]
    lines.append(f"CPU taken by other processes, in cores of {os.cpu_count()}: {book_o:.2f} during the book, "
                 f"{fp32_o:.2f} during fp32 + baseline, {auto_o:.2f} during auto")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1920, help="training images for the book's epoch (default 1920)")
    p.add_argument("--test-images", type=int, default=256, help="test images for train_ch6's test pass (default 256)")
    p.add_argument("--batch-size", type=int, default=128, help="default 128, the book's")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="CPU intra-op threads for all three (default: every core this process may use)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--steps", type=int, default=10, help="alexnet bench: timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="alexnet bench: untimed steps before them (default 3)")
    p.add_argument("--data-dir", help="where the Fashion-MNIST files are (default: alexnet's search path)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    if args.images < 5 * args.batch_size:  # train_ch6 plots every num_batches // 5 batches: 0 would divide by 0
        p.error(f"--images must hold at least 5 batches of {args.batch_size}")
    if args.test_images < 1 or args.threads < 1:
        p.error("--test-images and --threads must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import d2l
        from d2l import torch as d2l_torch  # optional: the book's package, not a dependency of the project
    except ImportError as e:
        print(f"d2l is not installed here ({e}); nothing measured. Install it apart from the project: {INSTALL}")
        return 0
    torch.set_num_threads(args.threads)  # the book's run; run_bench sets the same for both of its sides
    root = torchvision_root(args.data_dir)
    others: list[float] = []  # cores' worth of CPU that other processes took, one figure per part
    with others_cpu(others):
        book = measure_book(d2l_torch, args, root)
    gc.collect()
    with others_cpu(others):
        fp32 = run_bench(bench_spec(args, "fp32"), baseline=True)  # ours and the baseline, like for like
    with others_cpu(others):
        auto = run_bench(bench_spec(args, "auto"))  # ours as a user gets it: the device's default precision
    result = {"book": book, "bench_fp32": fp32, "bench_auto": auto, "others_cpu_cores": others,
              "baseline_over_book": fp32["baseline"]["train_images_per_sec"] / book["examples_per_sec"],
              "device": device_name(pick_device(args.device)), "torch": torch.__version__,
              "d2l": getattr(d2l, "__version__", "?"), "cpu_native_bf16": cpu_features().native_bf16,
              "cpu_amx": cpu_features().amx, "config": vars(args)}
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
