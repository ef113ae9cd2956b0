"""The one timing rule of every measurement in `alexnet bench` (throughput, baseline, loader, peak): `warmup`
untimed calls (cuDNN autotuning, torch.compile, allocator growth, thread-pool start), then `steps` timed ones;
CUDA events between two synchronisations on a GPU, `perf_counter` on the CPU."""

import time
from collections.abc import Callable

import torch

from alexnet.runtime.device import sync


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
