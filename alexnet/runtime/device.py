"""Which device a run uses and what it is: `pick_device` turns `auto | cpu | cuda | cuda:N` into a
`torch.device` (under torchrun each process takes the GPU of its local rank), `device_name` says what it is,
and `cpu_features` reads what the CPU can do (its SIMD units decide whether bf16 is fast there)."""

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from alexnet.base.errors import AlexNetError
from alexnet.runtime.distributed import DistEnv

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"


def pick_device(requested: str, env: DistEnv | None = None) -> torch.device:
    env = env or DistEnv.from_environ()
    if re.fullmatch(DEVICE_PATTERN, str(requested)) is None:
        raise AlexNetError(f"device must be auto, cpu, cuda or cuda:N, got {requested!r}")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AlexNetError("device cuda was asked for but no CUDA device is available; use --device cpu")
        if requested == "cuda":  # under torchrun each process takes the GPU of its local rank
            return torch.device("cuda", env.local_rank)
        index = int(requested.split(":")[1])
        if env.distributed:
            raise AlexNetError(f"device {requested} under torchrun would put every rank on one GPU; use cuda")
        if index >= torch.cuda.device_count():
            raise AlexNetError(f"device {requested} does not exist: {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    return torch.device("cpu")


@dataclass(frozen=True)
class CpuFeatures:
    model: str        # /proc/cpuinfo's "model name", e.g. "AMD EPYC 9454 48-Core Processor"
    capability: str   # the widest SIMD torch dispatches to: AVX2, AVX512 ...
    native_bf16: bool  # AVX512-BF16 or AMX: bf16 matmuls and convolutions run on real units
    amx: bool


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # torch's own probes (private, so looked up defensively): the ISA oneDNN will actually use.
    bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    has_amx, has_bf16 = bool(amx and amx()), bool(bf16 and bf16())
    # oneDNN can be capped below what the CPU has (ONEDNN_MAX_CPU_ISA=AVX2, say): then its bf16 is emulated
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if cap != "ALL":
        has_amx = has_amx and "AMX" in cap
        has_bf16 = has_bf16 and ("BF16" in cap or "AMX" in cap)
    return CpuFeatures(model, torch.backends.cpu.get_cpu_capability(), has_bf16 or has_amx, has_amx)


def device_name(device: torch.device) -> str:
    """'cuda: NVIDIA H100 80GB HBM3' or 'cpu: <model>, AVX512, 2 CPUs, 2 threads'."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = cpu_features()
    return f"cpu: {cpu.model}, {cpu.capability}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU, where work runs when it is called)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
