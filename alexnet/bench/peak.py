"""The peak FLOP/s that MFU divides by (issue #16), and when an MFU may be printed at all.

Measured peak: the device's own n x n x n matmul rate in the arithmetic the model runs (fp32, TF32, bf16, fp16),
the *best* sample over a fixed set of sizes, a sample being back-to-back products for at least SAMPLE_S, as many
samples as fit in SIZE_BUDGET_S per size. The best, not the median: other processes, a descheduled OpenMP thread
or a clock change only ever slow a sample down, so the maximum is the figure that holds still from run to run (the
median of single products moved 157 -> 105 GFLOP/s between two runs on one 2-core CPU).

On a CPU the products run on one thread and the peak is that rate times the intra-op threads (one core each):
the textbook peak, cores x per-core rate. Timed on both threads at once, the busy 2-core Xeon VM of
docs/benchmarks.md gave an fp32 best of 70 to 307 GFLOP/s from one run to the next (both cores free at once is
rare under load, and one late OpenMP thread stalls the product); one thread's best was 157-163 in every run (a
loop of torch matmuls, 2026-11-30). Where all-core clocks are lower than one core's turbo, this peak is a little
high: an MFU a little low, never an impossible one.

It is measured once per (device with its thread count, torch version, precision, float32 matmul precision) and
kept with how and when in `cache_dir()/peaks.json`; `alexnet bench --remeasure-peak` measures it again.

Datasheet peak: on CUDA, the dense (no 2:4 sparsity) peak of the named GPU from NVIDIA's datasheets, the
denominator MFU papers use (PaLM, Chowdhery et al. 2022, appendix B).

An MFU is printed only where it can be true: not where the achieved FLOP/s exceed the peak (that peak does not
represent the precision on this device), nor for bf16 / fp16 emulated on a CPU without native units for them.
"""

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from alexnet.base.files import atomic_write
from alexnet.bench.timing import time_steps
from alexnet.data.datasets import cache_dir
from alexnet.runtime.device import cpu_features, device_name
from alexnet.runtime.precision import DTYPES
from alexnet.runtime.settings import matmul_precision, num_threads

CACHE_FILE = "peaks.json"
CACHE_VERSION = 1
SIZES = {"cpu": (256, 512, 1024, 1536), "cuda": (1024, 2048, 4096, 8192)}  # n of the n x n x n products
SAMPLE_S = {"cpu": 0.002, "cuda": 0.01}       # one sample: back-to-back products for at least this long (s)
SIZE_BUDGET_S = {"cpu": 0.4, "cuda": 0.2}     # samples at one size and round until this long is spent (s) ...
MIN_SAMPLES = 3                               # ... and at least this many
ROUNDS = (3, 6)  # rounds over the sizes: at least 3, more (up to 6) while a round still raises the best by
SETTLED = 0.02   # more than this fraction. A slow spell lasts seconds (a neighbour's fp32 work on a shared core
#                  took one thread's fp32 ceiling from 160 to 128 GFLOP/s for a whole 5 s measurement): spreading
#                  the samples over more seconds outlives it
MAX_PRODUCT_S = 0.5  # stop growing n once one product takes longer: bf16 emulated on an AVX2 CPU runs at ~1
#                      GFLOP/s, so 2048^3 would take ~15 s a product, and it gets slower, not faster, with n

EMULATED_SLOWDOWN = 2.0  # a 16-bit matmul this much slower than fp32 on a CPU is emulated, whatever CPUID says

_MEASURED: dict[str, dict] = {}  # measured by this process: ours and the baseline share one --remeasure-peak


# --- which arithmetic, which peak -----------------------------------------------------------------------------------

def arithmetic(device: torch.device, precision: str) -> tuple[str, str]:
    """(what the model's FLOPs run in, the float32 matmul precision its peak is timed under). The precision names
    say what runs (`alexnet.runtime.precision`): `fp32` is IEEE fp32 on every device, timed with TF32 off;
    `tf32` is timed with TF32 products (CUDA only)."""
    if precision == "tf32":
        return "tf32", "high"
    return precision, "highest"


def cache_key(device: torch.device, label: str, float32_matmul_precision: str) -> str:
    # device_name holds the CPU's thread count: a 1-thread peak is another peak
    return f"{device_name(device)} | torch {torch.__version__} | {label} | float32 matmul {float32_matmul_precision}"


def cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def read_cache(path: Path) -> dict[str, dict]:
    """The cached peaks by key; a missing, unreadable or older-format file is an empty cache (it is rewritten)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("peaks"), dict):
        return {}
    return {k: v for k, v in data["peaks"].items()
            if isinstance(v, dict) and isinstance(v.get("peak_flops"), (int, float)) and v["peak_flops"] > 0}


def _write_cache(path: Path, key: str, entry: dict) -> None:
    # Read-modify-write: two processes measuring at once may lose one entry, which is then measured again.
    peaks = {**read_cache(path), key: entry}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"version": CACHE_VERSION, "peaks": peaks}, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # a read-only cache costs a measurement per run, not the run


def peak_flops(device: torch.device, precision: str, *, remeasure: bool = False) -> dict:
    """The measured peak for `precision` (fp32 | tf32 | bf16 | fp16) on `device`: from this process, else from the cache
    unless `remeasure`, else measured now and cached. The entry says how and when, and `source`."""
    label, fmp = arithmetic(device, precision)
    key, path = cache_key(device, label, fmp), cache_path()
    if key in _MEASURED:
        return {**_MEASURED[key], "source": "measured now", "cache_file": str(path)}
    cached = read_cache(path).get(key)
    if cached is not None and not remeasure:
        return {**cached, "source": "cache", "cache_file": str(path)}
    entry = {"device": device_name(device), "torch": torch.__version__, "precision": label,
             "float32_matmul_precision": fmp, **measure_peak(device, label, fmp)}
    _MEASURED[key] = entry
    _write_cache(path, key, entry)
    return {**entry, "source": "measured now", "cache_file": str(path)}


# --- measuring ------------------------------------------------------------------------------------------------------

def measure_peak(device: torch.device, label: str, float32_matmul_precision: str) -> dict:
    """The best FLOP/s of n x n x n products of random `label` matrices over SIZES, in rounds until the best
    settles (the expensive part); on a CPU, one thread's best times the intra-op threads."""
    dtype = DTYPES["fp32" if label == "tf32" else label]
    kind = device.type if device.type in SIZES else "cuda"
    threads = torch.get_num_threads() if kind == "cpu" else 1
    load = _loadavg()
    by_size: dict[str, float] = {}
    sizes, rounds, best = list(SIZES[kind]), 0, 0.0
    with matmul_precision(float32_matmul_precision), num_threads(1 if kind == "cpu" else 0):
        while rounds < ROUNDS[1]:
            for i, n in enumerate(sizes):
                rate, too_slow = _best_rate(device, dtype, n, kind)
                by_size[str(n)] = max(rate, by_size.get(str(n), 0.0))
                if too_slow:  # its one product stands for it; later rounds stop below it
                    del sizes[i:]
                    break
            rounds += 1
            best, previous = max(by_size.values()), best
            if rounds >= ROUNDS[0] and best <= previous * (1 + SETTLED):
                break
    size = max(by_size, key=by_size.__getitem__)
    on = f", on 1 thread, times {threads} threads" if kind == "cpu" else ""
    return {"peak_flops": threads * by_size[size], "matmul_size": int(size), "by_size": by_size,
            "threads": threads, "rounds": rounds,
            "method": (f"the best sample (>= {SAMPLE_S[kind] * 1000:g} ms of back-to-back products each, "
                       f"{SIZE_BUDGET_S[kind]:g} s of samples per size and round, {rounds} rounds) of n x n x n "
                       f"{label} matmuls, n in {list(SIZES[kind])}{on}"),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg": load,
            "cpu_count": os.cpu_count()}


def _best_rate(device: torch.device, dtype: torch.dtype, n: int, kind: str) -> tuple[float, bool]:
    """(best FLOP/s of the samples at n, whether one product already took over MAX_PRODUCT_S)."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    flop = 2 * n**3
    one = time_steps(lambda: a @ b, steps=1, warmup=1, device=device)  # warm-up: kernel choice, thread pool
    if one > MAX_PRODUCT_S:
        return flop / one, True
    reps = max(1, math.ceil(SAMPLE_S[kind] / max(one, 1e-9)))
    best, samples, start = 0.0, 0, time.perf_counter()
    while samples < MIN_SAMPLES or time.perf_counter() - start < SIZE_BUDGET_S[kind]:
        best = max(best, flop * reps / time_steps(lambda: a @ b, steps=reps, warmup=0, device=device))
        samples += 1
    return best, False


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every OS
        return None


# --- the datasheets -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuSpec:
    name: str                  # e.g. "H100 SXM"
    pattern: str               # regex searched (case-insensitive) in torch.cuda.get_device_name()
    tflops: dict[str, float]   # dense TFLOP/s by arithmetic; a missing key: no such units on the card
    source: str


_HOPPER_SXM = {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}
_HOPPER_NVL = {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}
_NV = "NVIDIA {} datasheet, dense = half the 'with sparsity' figure"
_GA102 = "NVIDIA Ampere GA102 whitepaper, appendix A (tensor figures with fp32 accumulation, as torch runs them)"
_AD102 = "NVIDIA Ada Lovelace whitepaper, appendix A (tensor figures with fp32 accumulation, as torch runs them)"
_NO_TF32 = "; no TF32 units: TF32 requests run in fp32"
# Order matters: the first pattern that matches names the card (H100 PCIe before the H100 SXM catch-all).
DATASHEET = (
    GpuSpec("H100 PCIe", r"H100.*PCIe", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5},
            _NV.format("H100")),
    GpuSpec("H100 NVL", r"H100.*NVL", _HOPPER_NVL, _NV.format("H100")),
    GpuSpec("H100 SXM", r"H100", _HOPPER_SXM, _NV.format("H100")),  # "NVIDIA H100 80GB HBM3" is the SXM5 card
    GpuSpec("H200 NVL", r"H200.*NVL", _HOPPER_NVL, _NV.format("H200")),
    GpuSpec("H200 SXM", r"H200", _HOPPER_SXM, _NV.format("H200")),
    GpuSpec("A100", r"A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}, _NV.format("A100")),
    GpuSpec("A10", r"\bA10\b", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0}, _NV.format("A10")),
    GpuSpec("L40S", r"\bL40S\b", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0}, _NV.format("L40S")),
    GpuSpec("L40", r"\bL40\b", {"fp32": 90.5, "tf32": 90.5, "bf16": 181.0, "fp16": 181.0}, _NV.format("L40")),
    GpuSpec("L4", r"\bL4\b", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}, _NV.format("L4")),
    GpuSpec("V100S PCIe", r"V100S", {"fp32": 16.4, "tf32": 16.4, "fp16": 130.0}, _NV.format("V100") + _NO_TF32),
    GpuSpec("V100 PCIe", r"V100.*PCIE", {"fp32": 14.0, "tf32": 14.0, "fp16": 112.0}, _NV.format("V100") + _NO_TF32),
    GpuSpec("V100 SXM2", r"V100", {"fp32": 15.7, "tf32": 15.7, "fp16": 125.0}, _NV.format("V100") + _NO_TF32),
    GpuSpec("T4", r"\bT4\b", {"fp32": 8.1, "tf32": 8.1, "fp16": 65.0}, _NV.format("T4") + _NO_TF32),
    GpuSpec("RTX 4090", r"RTX 4090(?! Ti| D\b| Laptop)", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2},
            _AD102),
    GpuSpec("RTX 4080", r"RTX 4080(?! SUPER| Laptop)", {"fp32": 48.7, "tf32": 48.7, "bf16": 97.5, "fp16": 97.5},
            _AD102),
    GpuSpec("RTX 3090", r"RTX 3090(?! Ti| Laptop)", {"fp32": 35.6, "tf32": 35.6, "bf16": 71.0, "fp16": 71.0},
            _GA102),
    GpuSpec("RTX 3080", r"RTX 3080(?! Ti| Laptop)", {"fp32": 29.8, "tf32": 29.8, "bf16": 59.5, "fp16": 59.5},
            _GA102),
)


def datasheet_gpu(name: str) -> GpuSpec | None:
    """The datasheet entry for a CUDA device name ("NVIDIA H100 80GB HBM3" -> H100 SXM), None if unknown."""
    return next((gpu for gpu in DATASHEET if re.search(gpu.pattern, name, re.IGNORECASE)), None)


# --- MFU, or why there is none --------------------------------------------------------------------------------------

def utilisation(device: torch.device, precision: str, achieved: float, *, remeasure: bool = False) -> dict:
    """The peak-related fields of one bench result: the measured peak and where it came from, the MFU against
    it or why there is none, the emulation verdict on a CPU, and on CUDA the datasheet peak and its MFU."""
    peak = peak_flops(device, precision, remeasure=remeasure)
    label = peak["precision"]
    cpu16 = device.type == "cpu" and precision != "fp32"
    fp32 = peak_flops(device, "fp32", remeasure=remeasure)["peak_flops"] if cpu16 else None
    emulated = cpu16 and (not cpu_features().native_bf16 or fp32 > EMULATED_SLOWDOWN * peak["peak_flops"])
    reason: str | None
    if emulated:
        why = (f"{cpu_features().capability}, no AVX512-BF16 / AMX" if not cpu_features().native_bf16 else
               f"its matmuls measured {fp32 / peak['peak_flops']:.0f}x slower than fp32 although the CPU has "
               "bf16 units: oneDNN does not use them (ONEDNN_MAX_CPU_ISA?)")
        mfu, reason = None, f"{label} is emulated on this CPU ({why}): there is no hardware peak to measure it against"
    else:
        mfu, reason = _ratio(achieved, peak["peak_flops"], f"the measured {label} peak ({peak['source']})",
                             " (--remeasure-peak measures it again)")
    return {"peak_flops": peak["peak_flops"], "peak_precision": label, "peak_matmul_size": peak["matmul_size"],
            "float32_matmul_precision": peak["float32_matmul_precision"], "peak_source": peak["source"],
            "peak_measured_at": peak["measured_at"], "peak_loadavg": peak.get("loadavg"),
            "peak_method": peak["method"], "peak_cache_file": peak["cache_file"],
            "mfu": mfu, "mfu_reason": reason, "emulated": emulated, "fp32_peak_flops": fp32,
            "slowdown_vs_fp32": None if fp32 is None else fp32 / peak["peak_flops"],
            "datasheet": _datasheet(device, label, achieved)}


def _ratio(achieved: float, peak: float, what: str, hint: str = "") -> tuple[float | None, str | None]:
    if achieved > peak:
        return None, (f"achieved {achieved / 1e9:.1f} GFLOP/s exceed {what}, {peak / 1e9:.1f} GFLOP/s: that peak "
                      f"does not represent this precision on this device{hint}")
    return achieved / peak, None


def _datasheet(device: torch.device, label: str, achieved: float) -> dict | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    gpu = datasheet_gpu(name)
    if gpu is None or label not in gpu.tflops:
        return {"gpu": None if gpu is None else gpu.name, "peak_flops": None, "source": None, "mfu": None,
                "mfu_reason": f"no datasheet {label} figure for {name!r}"}
    flops = gpu.tflops[label] * 1e12
    mfu, reason = _ratio(achieved, flops, f"the {gpu.name} datasheet's dense {label} peak")
    return {"gpu": gpu.name, "peak_flops": flops, "source": gpu.source, "mfu": mfu, "mfu_reason": reason}
