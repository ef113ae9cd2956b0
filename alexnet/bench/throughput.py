"""Training and inference throughput of our stack, measured end to end, and the model FLOP utilisation (MFU).

"Ours" is the trainer's own step (`Trainer.train_step`): uint8 Fashion-MNIST held on the device by the
`DeviceLoader` -> the on-device `Pipeline` (28x28 -> bilinear resize to the input size -> normalise, as the d2l
preset) -> autocast forward -> loss -> backward -> SGD, with the trainer's channels_last / compile choices.
The baseline it is compared with (d2l's torchvision DataLoader recipe) is in `alexnet.bench.baseline`.

Timing rules, the same for every measurement here: `warmup` untimed steps (cuDNN autotuning, torch.compile,
allocator growth), then `steps` timed steps; CUDA events between two synchronisations on a GPU, perf_counter on
the CPU. MFU = (training FLOPs per image x images/s) / the peak FLOP/s of a square matmul measured in the same
process on the same device in the same dtype, fp32 without TF32 (`peak_flops`).
"""

import contextlib
import dataclasses
import functools
import gc
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from alexnet.analysis.summary import training_flops
from alexnet.base.errors import AlexNetError
from alexnet.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig, build_model
from alexnet.data import idx
from alexnet.data.run import validate
from alexnet.models import model_info
from alexnet.runtime.device import device_name, pick_device, sync
from alexnet.runtime.distributed import DistEnv
from alexnet.runtime.precision import DTYPES, PRECISIONS
from alexnet.runtime.settings import matmul_precision, torch_settings
from alexnet.training.trainer import Trainer
PEAK_MATMUL_SIZE = {"cuda": 8192, "cpu": 2048}  # largest n of the n x n x n peak matmul
PEAK_BUDGET_S = 0.5   # stop growing the peak matmul once one timed sample takes longer than this (s)
SYNTHETIC_IMAGES = 60_000  # --synthetic: as many random 28x28 images as Fashion-MNIST's training split


@dataclass
class BenchSpec:
    """What `alexnet bench` measures; every field is a command-line option."""
    model: str = "d2l"
    input_size: int | None = None   # px; None: the model's own (d2l 224, small 28)
    batch_size: int = 128
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    precision: str = "auto"         # auto | fp32 | bf16 | fp16 (autocast, as the trainer)
    channels_last: bool | str = "auto"  # auto: with bf16 / fp16, as the trainer
    compile: bool = False
    steps: int = 10                 # timed steps
    warmup: int = 3                 # untimed steps before them
    synthetic: bool = False         # random uint8 images of Fashion-MNIST's shape instead of the real files
    synthetic_images: int = SYNTHETIC_IMAGES
    data_dir: str | None = None
    threads: int = 0                # CPU intra-op threads; 0 = torch's default
    lr: float = 0.01                # d2l 7.1's rate; plain SGD as the d2l preset

    def __post_init__(self):
        info = model_info(self.model)  # unknown model: AlexNetError
        if self.input_size is None:
            self.input_size = info.input_shape[1]
        checks = [(self.steps >= 1, f"--steps must be >= 1, got {self.steps}"),
                  (self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}"),
                  (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
                  (self.input_size >= 1, f"--input-size must be >= 1, got {self.input_size}"),
                  (self.threads >= 0, f"--threads must be >= 0, got {self.threads}"),
                  (self.synthetic_images >= self.batch_size,
                   f"synthetic_images ({self.synthetic_images}) must hold at least one batch ({self.batch_size})"),
                  (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got "
                                                 f"{self.precision!r}"),
                  (not self.compile or self.warmup >= 1,
                   "--compile needs --warmup >= 1: the first step compiles, and that must not be timed")]
        for ok, message in checks:
            if not ok:
                raise AlexNetError(message)

    def to_config(self, data_dir: str | None) -> Config:
        """The trainer's config for this measurement: the d2l preset's data and optimiser (no augmentation,
        plain SGD), this spec's model, sizes and speed options; full batches only, so shapes never change."""
        cfg = Config(preset="bench", model=ModelConfig(self.model),
                     data=DataConfig(dataset="fashion-mnist", data_dir=data_dir, input_size=self.input_size),
                     optim=OptimConfig(lr=self.lr, momentum=0.0, weight_decay=0.0),
                     train=TrainConfig(epochs=1, batch_size=self.batch_size, eval_batch_size=self.batch_size,
                                       device=self.device, precision=self.precision,
                                       channels_last=self.channels_last, compile=self.compile,
                                       threads=self.threads, drop_last=True))
        return validate(cfg)


# --- timing, peak -------------------------------------------------------------------------------------------------

def time_steps(step: Callable[[], object], *, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds taken by `steps` calls of `step` after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    sync(device)  # the warm-up's queued kernels must not land in the timed window
    if device.type == "cuda":
        with torch.cuda.device(device):  # events on the device's current stream, where the steps run
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                step()
            end.record()
            end.synchronize()
        return start.elapsed_time(end) / 1000  # ms -> s
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t0


_PEAKS: dict[tuple[str, str, str], dict] = {}


def peak_flops(device: torch.device, precision: str, repeats: int = 5,
               float32_matmul_precision: str = "highest") -> dict:
    """The device's matmul FLOP/s in `precision`: n x n x n products for n = 256, 512, ... up to
    PEAK_MATMUL_SIZE, the median of `repeats` timed samples at each size (after one untimed), the best size kept.
    A sample is one product on the CPU and 10 back to back on a GPU (one product of 4096^3 in bf16 is a fraction
    of a millisecond there: launch and event overhead would show). Growth stops once a sample takes over
    PEAK_BUDGET_S: on a CPU without bf16 units the bf16 matmul falls back to a slow kernel (2048^3 would take
    about 90 s on the AVX2 development machine) that gets slower, not faster, with size.
    fp32 products run under `float32_matmul_precision`, "highest" (no TF32) unless asked otherwise, whatever the
    process-wide setting is (the trainer sets "high" on CUDA)."""
    key = (str(device), precision, float32_matmul_precision)
    if key in _PEAKS:
        return _PEAKS[key]
    with matmul_precision(float32_matmul_precision):
        best = _measure_peak(device, precision, repeats)
    best["float32_matmul_precision"] = float32_matmul_precision
    _PEAKS[key] = best
    return best


def _measure_peak(device: torch.device, precision: str, repeats: int) -> dict:
    dtype, best = DTYPES[precision], {"peak_flops": 0.0, "matmul_size": 0}
    per_sample = 10 if device.type == "cuda" else 1
    n = 256
    while n <= PEAK_MATMUL_SIZE.get(device.type, 2048):
        a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
        times = []
        for _ in range(repeats + 1):  # sample 0 is a warm-up (kernel choice, thread pool start)
            times.append(time_steps(lambda: a @ b, steps=per_sample, warmup=0, device=device) / per_sample)
            if times[-1] * per_sample > PEAK_BUDGET_S:
                break
        seconds = statistics.median(times[1:] or times)
        if 2 * n**3 / seconds > best["peak_flops"]:
            best = {"peak_flops": 2 * n**3 / seconds, "matmul_size": n}
        if times[-1] * per_sample > PEAK_BUDGET_S:
            break
        n *= 2
    return best


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are): the allocator's peak on a GPU, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated since the phase began"
    # Linux reports ru_maxrss in KiB. It never goes down: the whole process so far, dataset included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu peak RSS of the process (ru_maxrss)"


def reset_peak_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --- data ---------------------------------------------------------------------------------------------------------

def write_synthetic_fashion_mnist(root: Path, n_train: int, n_test: int = 1000, seed: int = 0) -> Path:
    """Random uint8 images and labels as the four raw IDX files, laid out as torchvision expects
    (`root/FashionMNIST/raw/`), which `load_dataset` also searches: one folder serves ours and the baseline."""
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    side = idx.IMAGE_SIDE
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        image_stem, label_stem = idx.FASHION_MNIST_FILES[split]
        (raw / image_stem).write_bytes(np.array([idx.IMAGES_MAGIC, n, side, side], ">u4").tobytes() + images.tobytes())
        (raw / label_stem).write_bytes(np.array([idx.LABELS_MAGIC, n], ">u4").tobytes() + labels.tobytes())
    return Path(root)


def forever(batches_of_epoch: Callable[[int], Iterator]) -> Iterator:
    """Batches across epochs without end (the timed window may span an epoch boundary). An epoch without a batch
    (fewer images than one batch, the last one dropped) is an AlexNetError, not an endless loop."""
    epoch = 0
    while True:
        empty = True
        for batch in batches_of_epoch(epoch):
            empty = False
            yield batch
        if empty:
            raise AlexNetError("the data set holds fewer images than one batch; use a smaller --batch-size")
        epoch += 1


# --- ours ---------------------------------------------------------------------------------------------------------

def build_trainer(spec: BenchSpec, data_dir: str | None, scratch: Path):
    """The real `Trainer` (data on the device, pipelines, model, optimizer, autocast, compile) for `spec`."""
    device = pick_device(spec.device)
    cfg = spec.to_config(data_dir)
    return Trainer(cfg, scratch, DistEnv(), device, quiet=True)


def flops_per_image(spec: BenchSpec) -> int:
    """Forward + backward FLOPs of one training image (torch's flop counter, on a CPU copy of the model)."""
    spec.to_config(None)  # a too-small input is a one-line error here, not a shape error in the counter
    return _training_flops(spec.model, spec.input_size)


@functools.lru_cache(maxsize=None)
def _training_flops(model: str, input_size: int) -> int:  # ours and the baseline share it: counted once
    net = build_model(Config(model=ModelConfig(model), data=DataConfig(input_size=input_size)), num_classes=10)
    return training_flops(net, (1, input_size, input_size))


def measure_ours(spec: BenchSpec) -> dict:
    """Training and inference images/s of the trainer's own step, with memory, FLOPs and MFU. The process-wide
    torch settings are the trainer's (as `alexnet train` sets them) inside, torch's defaults again after."""
    flops = flops_per_image(spec)
    device = pick_device(spec.device)
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as scratch, \
            torch_settings(device, threads=spec.threads):
        data_dir = spec.data_dir
        if spec.synthetic:
            data_dir = str(write_synthetic_fashion_mnist(Path(scratch) / "data", spec.synthetic_images))
        trainer = build_trainer(spec, data_dir, Path(scratch) / "run")
        batches = forever(trainer.data.train.batches)
        reset_peak_memory(device)
        trainer.net.train()
        train_s = time_steps(lambda: trainer.train_step(next(batches)), steps=spec.steps, warmup=spec.warmup,
                             device=device)
        trainer.check_weights()  # a NaN in the timed steps is an error, not a figure
        memory, memory_kind = peak_memory(device)
        trainer.eval_net.eval()
        infer_s = time_steps(lambda: trainer.eval_logits(next(batches).images), steps=spec.steps,
                             warmup=spec.warmup, device=device)
        precision = trainer.precision
    result = summarise(spec, device, train_s=train_s, infer_s=infer_s, flops=flops, memory=memory,
                       memory_kind=memory_kind, precision=precision.name)
    return {**result, "channels_last": precision.channels_last, "precision_reason": precision.reason}


def summarise(spec: BenchSpec, device: torch.device, *, train_s: float, infer_s: float | None, flops: int,
              memory: int, memory_kind: str, precision: str) -> dict:
    peak = peak_flops(device, precision)
    train_rate = spec.batch_size * spec.steps / train_s
    achieved = flops * train_rate
    return {"train_images_per_sec": train_rate,
            "infer_images_per_sec": None if infer_s is None else spec.batch_size * spec.steps / infer_s,
            "step_ms": 1000 * train_s / spec.steps,
            "flops_per_image": flops, "achieved_flops": achieved, "peak_flops": peak["peak_flops"],
            "mfu": achieved / peak["peak_flops"], "peak_matmul_size": peak["matmul_size"],
            "peak_precision": precision, "float32_matmul_precision": peak["float32_matmul_precision"],
            "peak_memory_bytes": memory, "peak_memory_kind": memory_kind}
