"""Numeric precision, decided in one place: `auto` picks the fastest precision the device runs well, an
explicit `fp32 | tf32 | bf16 | fp16` is taken as asked, and the name says what runs. Every runner (trainer,
evaluation, benchmark) then uses the same `Precision.autocast(device)` context and the same memory format.

* `fp32` is IEEE fp32 everywhere: on CUDA, TF32 is off for convolutions (cuDNN would use it by default) and for
  matmuls (`alexnet.runtime.settings.tf32_math`).
* `tf32` is fp32 tensors with the convolutions and matmuls on TF32 tensor cores (10-bit mantissa products, fp32
  accumulation), CUDA compute capability >= 8.0 only; never chosen by `auto`.

`auto`, by device (issue #11; the rules of thumb of the NVIDIA and oneDNN performance guides):
* CUDA, compute capability >= 8.0 (A100, H100, RTX 30/40, L4 ...): bf16 autocast, tensor cores, fp32 range;
* CUDA, 7.x (V100, T4: Colab's cards): fp16 autocast with a GradScaler (no fast bf16 there);
* older CUDA cards: fp32;
* CPU with AVX512-BF16 or AMX: bf16 autocast (2.4-2.7x fp32 for the d2l net at 224 on an AMX Xeon, quiet runs of
  benchmarks/d2l_book.py, docs/benchmarks.md);
* other CPUs: fp32 (bf16 is emulated there, about 20x slower).
channels_last (NHWC) goes with 16-bit autocast on a GPU (what tensor cores want) and with everything on a CPU
(oneDNN's NHWC convolutions: in fp32 +6 % for the d2l net and +22 % for `small` on the AVX2 EPYC,
docs/performance.md); an fp32 GPU run stays contiguous.
"""

import contextlib
import warnings
from dataclasses import dataclass

import torch

from alexnet.base.errors import AlexNetError
from alexnet.runtime.device import cpu_features
from alexnet.runtime.settings import tf32_math

PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FLOAT32 = ("fp32", "tf32")  # no autocast: fp32 tensors, the math mode decides the products


@dataclass(frozen=True)
class Precision:
    name: str             # fp32 | tf32 | bf16 | fp16: what runs
    channels_last: bool   # the model and its inputs in NHWC
    reason: str           # why, for the start-up banner and the run's record

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def needs_scaler(self) -> bool:
        return self.name == "fp16"  # fp16's small range underflows gradients without loss scaling

    @property
    def tf32(self) -> bool:
        return self.name == "tf32"

    def math(self):
        """The math mode of the products, for the backward pass too (fp32: TF32 off, tf32: on; 16-bit: their own
        autocast decides, nothing to set)."""
        return tf32_math(self.tf32) if self.name in FLOAT32 else contextlib.nullcontext()

    def autocast(self, device: torch.device):
        """The forward pass's context, one code path for every precision: autocast for bf16 / fp16; for fp32 and
        tf32 the math mode they name (`tf32_math`), so that a forward run outside `torch_settings` (evaluation,
        predict) computes what the name says too. The training step's backward runs under `torch_settings`."""
        if self.name in FLOAT32:
            return tf32_math(self.tf32)
        return torch.autocast(device.type, dtype=self.dtype)

    def to_dict(self) -> dict:
        return {"precision": self.name, "channels_last": self.channels_last, "reason": self.reason}

    def describe(self) -> str:
        return describe(self.name, self.channels_last, self.reason)


def describe(name: str, channels_last: bool, reason: str) -> str:
    """"fp32 + channels_last (asked for; channels_last: auto, on every CPU)": what runs and why, one line (the
    banner, the report, eval / predict and bench say it alike)."""
    return f"{name}{' + channels_last' if channels_last else ''} ({reason})"


FP32 = Precision("fp32", False, "asked for")


def auto_precision(device: torch.device) -> tuple[str, str]:
    """(precision, why) for `auto` on this device."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        if major >= 8:
            return "bf16", f"{name} (compute capability {major}.{minor}) has bf16 tensor cores"
        if major >= 7:
            return "fp16", f"{name} (compute capability {major}.{minor}) has fp16 tensor cores but no fast bf16"
        return "fp32", f"{name} (compute capability {major}.{minor}) has no 16-bit tensor cores"
    cpu = cpu_features()
    if cpu.native_bf16:
        units = "AMX" if cpu.amx else "AVX512-BF16"
        return "bf16", f"the CPU has {units} ({cpu.model})"
    return "fp32", f"the CPU has no native bf16 units ({cpu.capability}: bf16 would be emulated)"


def resolve_precision(requested: str, device: torch.device, channels_last: bool | str = "auto") -> Precision:
    """`requested` in PRECISIONS, `channels_last` True, False or "auto" (with 16-bit autocast)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "auto":
        name, reason = auto_precision(device)
        reason = f"auto: {reason}"
    else:
        name, reason = requested, "asked for"
        if name == "tf32":
            check_tf32(device)
            reason = "asked for: fp32 tensors, TF32 tensor-core products"
        elif name == "fp32" and device.type == "cuda":
            reason = "asked for: IEEE fp32 (TF32 off)"
        if device.type == "cpu" and name in ("bf16", "fp16") and not cpu_features().native_bf16:
            warnings.warn(f"{name} on a CPU without native bf16 units ({cpu_features().capability}) is emulated "
                          "and much slower than fp32; --precision auto picks fp32 there", stacklevel=2)
            reason = "asked for; emulated on this CPU (no AVX512-BF16 / AMX)"
    if channels_last == "auto":
        channels_last = device.type == "cpu" or name not in FLOAT32
        if channels_last and requested != "auto":  # the precision was asked for, the layout was not: say why
            reason += "; channels_last: auto, " + ("on every CPU" if device.type == "cpu" else "with 16-bit autocast")
    return Precision(name, bool(channels_last), reason)


def check_tf32(device: torch.device) -> None:
    """tf32 exists on CUDA GPUs of compute capability >= 8.0 (Ampere and later) only: elsewhere a one-line error."""
    if device.type != "cuda":
        raise AlexNetError(f"precision tf32 needs a CUDA GPU with TF32 tensor cores (compute capability >= 8.0); "
                           f"this is a {device.type} device: use fp32 (or auto)")
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        raise AlexNetError(f"precision tf32 needs compute capability >= 8.0; {torch.cuda.get_device_name(device)} "
                           f"is {major}.{minor}: use fp32, or fp16 (auto)")
