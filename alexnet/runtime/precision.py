"""Numeric precision, decided in one place: `auto` picks the fastest precision the device runs well, an
explicit `fp32 | bf16 | fp16` is taken as asked. Every runner (trainer, evaluation, benchmark) then uses the
same `Precision.autocast(device)` context and the same memory format.

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

from alexnet.runtime.device import cpu_features

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str             # fp32 | bf16 | fp16: what runs
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

    def autocast(self, device: torch.device):
        """The forward pass's autocast context (a no-op in fp32): one code path for every precision."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def to_dict(self) -> dict:
        return {"precision": self.name, "channels_last": self.channels_last, "reason": self.reason}


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
        if device.type == "cpu" and name != "fp32" and not cpu_features().native_bf16:
            warnings.warn(f"{name} on a CPU without native bf16 units ({cpu_features().capability}) is emulated "
                          "and much slower than fp32; --precision auto picks fp32 there", stacklevel=2)
            reason = "asked for; emulated on this CPU (no AVX512-BF16 / AMX)"
    if channels_last == "auto":
        channels_last = device.type == "cpu" or name != "fp32"
    return Precision(name, bool(channels_last), reason)
