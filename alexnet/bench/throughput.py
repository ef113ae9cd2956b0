"""Training and inference throughput of our stack, measured end to end, and the model FLOP utilisation (MFU).

"Ours" is the trainer's own step (`Trainer.train_step`): uint8 Fashion-MNIST held on the device by the
`DeviceLoader` -> the on-device `Pipeline` (28x28 -> bilinear resize to the input size -> normalise, as the d2l
preset) -> autocast forward -> loss -> backward -> SGD, with the trainer's channels_last / compile choices.
The baseline it is compared with (d2l's torchvision DataLoader recipe) is in `alexnet.bench.baseline`.

Timing rules, the same for every measurement here: `alexnet.bench.timing.time_steps`. MFU = (training FLOPs per
image x images/s) / the device's peak FLOP/s in the arithmetic the model runs, measured once and cached
(`alexnet.bench.peak`), or no MFU and the reason where that figure could not be true. Every timed step is kept:
their spread (`step_ms_stats`) says how far the mean holds. Peak memory is each side's own, from a reset before
its training steps: the CUDA allocator's peak, or on a CPU the process's RSS high-water mark (Linux).
"""

import contextlib
import functools
import gc
import os
import resource
import statistics
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from alexnet.analysis.summary import training_flops
from alexnet.base.errors import AlexNetError
from alexnet.bench.peak import utilisation
from alexnet.bench.timing import time_steps
from alexnet.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig, build_model
from alexnet.data import idx
from alexnet.data.run import validate
from alexnet.models import model_info
from alexnet.runtime.device import pick_device
from alexnet.runtime.distributed import DistEnv
from alexnet.runtime.precision import PRECISIONS
from alexnet.runtime.settings import torch_settings
from alexnet.training.trainer import Trainer

SYNTHETIC_IMAGES = 60_000  # --synthetic: as many random 28x28 images as Fashion-MNIST's training split


@dataclass
class BenchSpec:
    """What `alexnet bench` measures; every field is a command-line option."""
    model: str = "d2l"
    input_size: int = 0             # px; 0: the model's own (d2l 224, small 28)
    batch_size: int = 128
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    precision: str = "auto"         # auto | fp32 | tf32 | bf16 | fp16 (as the trainer: alexnet.runtime.precision)
    channels_last: bool | str = "auto"  # auto: with bf16 / fp16, as the trainer
    compile: bool = False
    cuda_graphs: bool | str = "auto"     # the step as one CUDA graph, as the trainer (alexnet.training.fast)
    space_to_depth: bool | str = "auto"  # conv1 folded, as the trainer
    pool_first: bool | str = "auto"      # max-pool before ReLU, as the trainer
    fused_lrn: bool | str = "auto"       # the paper's LRN as one Function, as the trainer
    fused_pool: bool | str = "auto"      # max-pool + ReLU as Triton kernels (CUDA), as the trainer
    bias_after_pool: bool | str = "auto"  # conv -> ReLU -> pool run as conv -> pool -> + bias -> ReLU, as the trainer
    triton_lrn: bool | str = "auto"      # ReLU + LRN as Triton kernels (CUDA), as the trainer
    steps: int = 10                 # timed steps
    warmup: int = 3                 # untimed steps before them
    synthetic: bool = False         # random uint8 images of Fashion-MNIST's shape instead of the real files
    synthetic_images: int = SYNTHETIC_IMAGES
    data_dir: str | None = None
    threads: int = 0                # CPU intra-op threads; 0 = torch's default
    lr: float = 0.01                # d2l 7.1's rate; plain SGD as the d2l preset
    remeasure_peak: bool = False    # measure the MFU's peak again, replacing the cached one
    model_options: dict = field(default_factory=dict)  # create_model's options (--set model.two_column=true)

    def __post_init__(self):
        info = model_info(self.model)  # unknown model: AlexNetError
        if self.input_size == 0:
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
        cfg = Config(preset="bench", model=ModelConfig(self.model, dict(self.model_options)),
                     data=DataConfig(dataset="fashion-mnist", data_dir=data_dir, input_size=self.input_size),
                     optim=OptimConfig(lr=self.lr, momentum=0.0, weight_decay=0.0),
                     train=TrainConfig(epochs=1, batch_size=self.batch_size, eval_batch_size=self.batch_size,
                                       device=self.device, precision=self.precision,
                                       channels_last=self.channels_last, compile=self.compile,
                                       cuda_graphs=self.cuda_graphs, space_to_depth=self.space_to_depth,
                                       pool_first=self.pool_first, fused_lrn=self.fused_lrn,
                                       fused_pool=self.fused_pool, bias_after_pool=self.bias_after_pool,
                                       triton_lrn=self.triton_lrn,
                                       threads=self.threads, drop_last=True))
        return validate(cfg)


def options_label(options: dict) -> str:
    """", two_column=True" for a header line that names the model's options after its name ("" for none)."""
    return "".join(f", {k}={v}" for k, v in sorted(options.items()))


# --- memory -------------------------------------------------------------------------------------------------------

# What `peak_memory` measured: a phase's own peak (a phase: one side's training steps, warm-up included), or on a
# machine where the high-water mark cannot be reset, the process's, the same for every phase.
CUDA_PEAK = ("the CUDA allocator's peak during each row's training steps, warm-up included "
             "(torch.cuda.max_memory_allocated, reset before them)")
RSS_PHASE = ("the process's resident-memory high-water mark during each row's training steps, warm-up included "
             "(VmHWM, reset before them through /proc/self/clear_refs; torch and the data held in memory count, "
             "DataLoader workers do not)")
RSS_PROCESS = "the process's peak RSS since it started (ru_maxrss)"
CLEAR_REFS, STATUS = Path("/proc/self/clear_refs"), Path("/proc/self/status")


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are: CUDA_PEAK, RSS_PHASE or RSS_PROCESS): the peak since `reset_peak_memory`."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), CUDA_PEAK
    if os.access(CLEAR_REFS, os.W_OK):
        try:
            kib = next(line.split()[1] for line in STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
            return int(kib) * 1024, RSS_PHASE
        except (OSError, StopIteration, IndexError, ValueError):
            pass
    # Linux reports ru_maxrss in KiB. It never goes down: the whole process so far, dataset included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, RSS_PROCESS


def reset_peak_memory(device: torch.device) -> None:
    """Begin a phase: its peak memory is measured from here (on the CPU, Linux: "5" to clear_refs resets the
    process's RSS high-water mark to its current RSS, and touches nothing else)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # no /proc, or not allowed: peak_memory says RSS_PROCESS
        CLEAR_REFS.write_text("5")


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
    return _training_flops(spec.model, spec.input_size, tuple(sorted(spec.model_options.items())))


@functools.cache
def _training_flops(model: str, input_size: int, options: tuple = ()) -> int:  # ours and the baseline: counted once
    net = build_model(Config(model=ModelConfig(model, dict(options)), data=DataConfig(input_size=input_size)),
                      num_classes=10)
    return training_flops(net, (1, input_size, input_size))


def measure_ours(spec: BenchSpec) -> dict:
    """Training and inference images/s of the trainer's own step, with memory, FLOPs and MFU, and the fast paths
    the step took (`fast_paths`: each named with its reason, as `alexnet train`'s banner). The process-wide
    torch settings are the trainer's (as `alexnet train` sets them) inside, torch's defaults again after."""
    flops = flops_per_image(spec)
    device = pick_device(spec.device)
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as scratch, \
            torch_settings(device, threads=spec.threads, precision=spec.precision):
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
        fast_paths = dict(trainer.run_info["fast_paths"])  # after the steps: a failed graph capture says so here
    result = summarise(spec, device, train_s=train_s, infer_s=infer_s, flops=flops, memory=memory,
                       memory_kind=memory_kind, precision=precision.name)
    return {**result, "channels_last": precision.channels_last, "precision_reason": precision.reason,
            "fast_paths": fast_paths}


def summarise(spec: BenchSpec, device: torch.device, *, train_s: float, infer_s: float | None, flops: int,
              memory: int, memory_kind: str, precision: str) -> dict:
    """The figures of one side. `train_s` from `time_steps` carries every step's time: their spread is
    `step_ms_stats`; `step_ms` is their mean, as the images/s."""
    train_rate = spec.batch_size * spec.steps / train_s
    achieved = flops * train_rate
    return {"train_images_per_sec": train_rate,
            "infer_images_per_sec": None if infer_s is None else spec.batch_size * spec.steps / infer_s,
            "step_ms": 1000 * train_s / spec.steps, "step_ms_stats": step_stats(train_s),
            "flops_per_image": flops, "achieved_flops": achieved,
            "precision": precision, **utilisation(device, precision, achieved, remeasure=spec.remeasure_peak),
            "peak_memory_bytes": memory, "peak_memory_kind": memory_kind,
            "peak_memory_per_phase": memory_kind != RSS_PROCESS}


def step_stats(seconds: float) -> dict | None:
    """Timed steps, ms: their number, median, quartiles and extremes; None where only their total is known."""
    each = sorted(1000 * s for s in getattr(seconds, "each", ()))
    if not each:
        return None
    p25, _, p75 = statistics.quantiles(each, n=4, method="inclusive") if len(each) > 1 else each * 3
    return {"steps": len(each), "median": statistics.median(each), "p25": p25, "p75": p75, "min": each[0],
            "max": each[-1]}
