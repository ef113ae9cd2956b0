"""The one timing rule of every measurement in `alexnet bench` (throughput, baseline, loader, peak): `warmup`
untimed calls (cuDNN autotuning, torch.compile, allocator growth, thread-pool start), then `steps` timed ones;
CUDA events between two synchronisations on a GPU, `perf_counter` on the CPU. Every step is stamped (an event
recorded after it on a GPU: no synchronisation, a few microseconds of launch), so that the spread of the steps
can be reported beside their total."""

import time
from collections.abc import Callable, Sequence

import torch

from alexnet.runtime.device import sync


class StepTimes(float):
    """Seconds taken by the timed steps (a float, what the callers divide by), with each step's own seconds in
    `.each`: on a GPU the time between the events recorded after consecutive steps, queueing gaps included."""
    each: tuple[float, ...]

    def __new__(cls, each: Sequence[float], total: float | None = None) -> "StepTimes":
        times = super().__new__(cls, sum(each) if total is None else total)
        times.each = tuple(each)
        return times

    def __getnewargs__(self) -> tuple:  # copy and pickle rebuild it through __new__
        return (self.each, float(self))


def time_steps(step: Callable[[], object], *, steps: int, warmup: int, device: torch.device) -> StepTimes:
    """Seconds taken by `steps` calls of `step` after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    sync(device)  # the warm-up's queued kernels must not land in the timed window
    if device.type == "cuda":
        with torch.cuda.device(device):  # events on the device's current stream, where the steps run
            events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
            events[0].record()
            for event in events[1:]:
                step()
                event.record()
            events[-1].synchronize()
        each = [a.elapsed_time(b) / 1000 for a, b in zip(events, events[1:], strict=False)]  # ms -> s
        return StepTimes(each, events[0].elapsed_time(events[-1]) / 1000)
    stamps = [time.perf_counter()]
    for _ in range(steps):
        step()
        stamps.append(time.perf_counter())
    return StepTimes([b - a for a, b in zip(stamps, stamps[1:], strict=False)], stamps[-1] - stamps[0])
