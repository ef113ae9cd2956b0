"""The largest training batch that fits in GPU memory, in a few tries of the trainer's own step on random uint8
batches (`alexnet bench --max-batch`):

1. measure: two small batches (PROBES), two steps each (the first makes the optimizer's state); the peak of the
   second step (`torch.cuda.max_memory_allocated`) is fixed + per_image * batch, the fixed part being the
   weights, their gradients and the optimizer's state;
2. refine: one step at REFINE of the batch that line predicts; the line through it and the larger probe is the
   estimate (a workspace or allocator rounding that the small batches do not show moves the first line's
   prediction by 10-15 %: on the H200 the d2l net's first try was 55,280 where 47,860 fitted and 52,647 did not);
3. estimate: the batch whose peak fills MARGIN of what this process may allocate (free memory plus what its own
   allocator holds);
4. confirm: one step at the estimate, then up or down by growing factors until a size that fits and one that
   does not bracket the limit, then bisection until the bracket is narrower than RESOLUTION of the batch or the
   time budget (counted from the start, the trainer's build included) is spent.

cuDNN's autotuning is off while it searches: each new size would run every candidate algorithm once at that
size. On the H200 (2026-12-04) the d2l net's command took 44.6 s for 2 probes and 3 large tries;
that autotuning took most of it is inferred (that run kept no per-try seconds; this one does). The heuristics'
choice of algorithms is no worse a test of fitting: with autotuning on, torch's convolutions skip any algorithm
whose workspace cannot be allocated and run the next, so the step that fits here fits in training too.

Every try is reported: the batch, whether it fitted, its seconds, its peak bytes or the error. A doubling search
from a fixed start (`largest_fitting`) took more than 81 s for the d2l net on an H200 (2026-12-04): each new
size paid cuDNN's autotuning, and doubling to ~10^4 then bisecting to one image is ~25 sizes.
"""

import dataclasses
import gc
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from alexnet.base.errors import AlexNetError, one_line
from alexnet.bench.throughput import BenchSpec, build_trainer, write_synthetic_fashion_mnist
from alexnet.data.loader import Batch
from alexnet.runtime.device import pick_device
from alexnet.runtime.settings import torch_settings

MAX_BATCH_LIMIT = 1 << 16  # stop searching here: 65,536 images per step is past any AlexNet recipe
PROBES = (16, 48)          # the two small batches whose peaks give the memory per image
MARGIN = 0.97              # the estimate fills this much of the memory: the confirmation steps up from there
RESOLUTION = 1 / 64        # stop bisecting when the bracket is narrower than this fraction of the batch
REFINE = 1 / 8             # the third probe, at this fraction of the batch the two small ones predict
BUDGET_S = 18.0            # seconds (from the start, build included) after which bisection stops
FIRST_STEP = 0.05          # the walk from the estimate grows by 5 %, then 10 %, 20 %, 40 % ...

PeakOf = Callable[[int], "int | str"]  # batch -> peak bytes of its training step, or why it did not fit


def largest_fitting(fits: Callable[[int], bool], start: int = 64, limit: int = MAX_BATCH_LIMIT) -> int:
    """The largest b in [1, limit] with fits(b), assuming fits is monotone (true up to a size, false above);
    0 when not even 1 fits. Doubles from `start` (halving first if `start` does not fit), then bisects."""
    good, bad = 0, None
    b = min(start, limit)
    while b >= 1:  # find a size that fits
        if fits(b):
            good = b
            break
        bad, b = b, b // 2
    if good == 0:
        return 0
    while bad is None and good < limit:  # double until one does not fit
        b = min(2 * good, limit)
        if fits(b):
            good = b
        else:
            bad = b
    if bad is None:
        return good
    while bad - good > 1:  # invariant: fits(good), not fits(bad)
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def linear_estimate(peaks: dict[int, int], capacity: int, margin: float = MARGIN) -> dict:
    """The line peak = fixed + per_image * batch through two measured (batch, peak bytes), and the batch at which
    it reaches `margin` of `capacity` bytes (at least 1)."""
    (b1, p1), (b2, p2) = sorted(peaks.items())
    per_image = max((p2 - p1) / (b2 - b1), 1.0)  # bytes; a flat line would send the search to the limit
    fixed = p1 - per_image * b1
    batch = max(1, math.floor((capacity * margin - fixed) / per_image))
    return {"per_image_bytes": per_image, "fixed_bytes": fixed, "capacity_bytes": capacity, "margin": margin,
            "batch": batch}


def bracket_search(fits: Callable[[int], bool], estimate: int, *, limit: int = MAX_BATCH_LIMIT,
                   resolution: float = RESOLUTION, out_of_time: Callable[[], bool] = lambda: False
                   ) -> tuple[int, int | None]:
    """(good, bad): good the largest size found to fit (0: not even 1), bad the smallest found not to (None:
    `limit` fits). From `estimate`, up or down by factors 1 + FIRST_STEP * 2^k until the limit is bracketed
    (always, however wrong the estimate: the factors grow), then bisection while the bracket is wider than
    `resolution` of good and time is left. `fits` must be monotone."""
    good, bad = 0, None
    b, grow = min(max(estimate, 1), limit), FIRST_STEP
    while True:
        if fits(b):
            good = b
        else:
            bad = b
        if (good and bad) or (bad is None and good == limit) or bad == 1:
            break
        if bad is None:  # it fits: up
            b = min(limit, max(good + 1, int(good * (1 + grow))))
        else:            # it does not: down
            b = max(1, min(bad - 1, int(bad / (1 + grow))))
        grow *= 2
    while bad is not None and good and bad - good > max(1, int(good * resolution)) and not out_of_time():
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good, bad


def search_max_batch(peak_of: PeakOf, capacity: Callable[[], int], *, probes: tuple[int, int] = PROBES,
                     limit: int = MAX_BATCH_LIMIT, resolution: float = RESOLUTION, budget_s: float = BUDGET_S,
                     clock: Callable[[], float] = time.perf_counter, started: float | None = None) -> dict:
    """The search of the module docstring, on any device: `peak_of(b)` runs the steps at batch b and returns
    their peak bytes, or a string saying why they did not fit; `capacity()` is the bytes this process may
    allocate, read after the probes. The budget counts from `started` (default: now) on `clock`. Returns
    max_batch, the bracket, the estimate, every trial, and `stopped_early`: None where the bracket was narrowed
    to `resolution` (or nothing fits), "budget" where the time budget ran out first (max_batch is then a lower
    bound, the limit below smallest_not_fitting), "limit" where `limit` itself fits (larger was not tried)."""
    start = clock()
    budget_from = start if started is None else started
    trials: list[dict[str, Any]] = []
    seen: dict[int, dict[str, Any]] = {}  # batch -> its trial

    def fits(b: int) -> bool:
        if b not in seen:
            t0 = clock()
            peak = peak_of(b)
            ok = not isinstance(peak, str)
            trials.append({"batch": b, "fits": ok, "seconds": clock() - t0, "peak_bytes": peak if ok else None,
                           "error": None if ok else peak})
            seen[b] = trials[-1]
        return seen[b]["fits"]

    def line(*sizes: int) -> dict:
        return linear_estimate({b: seen[b]["peak_bytes"] for b in sizes}, capacity())

    estimate = first = None
    if all(b <= limit and fits(b) for b in probes):
        estimate = first = line(*probes)
        middle = int(min(first["batch"], limit) * REFINE)  # also when the first line runs past the limit
        if middle > 2 * probes[-1]:  # worth a step of its own
            estimate = line(probes[-1], middle) if fits(middle) else {**first, "batch": middle}
        good, bad = bracket_search(fits, estimate["batch"], limit=limit, resolution=resolution,
                                   out_of_time=lambda: clock() - budget_from > budget_s)
    else:  # a probe did not fit (a huge model, a tiny limit): halve from it, then bisect, without an estimate
        good = largest_fitting(fits, start=min(probes[0], limit), limit=limit)
        bad = min((b for b, t in seen.items() if not t["fits"] and b > good), default=None)
    # a bracket wider than the resolution: bisection stopped for the budget (largest_fitting bisects to 1)
    stopped = ("limit" if bad is None and good >= limit else
               "budget" if bad is not None and good and bad - good > max(1, int(good * resolution)) else None)
    return {"max_batch": good, "smallest_not_fitting": bad, "stopped_early": stopped, "budget_s": budget_s,
            "limit": limit, "resolution": resolution, "estimate": estimate, "first_estimate": first,
            "trials": trials, "tried": {b: seen[b]["fits"] for b in sorted(seen)},
            "search_seconds": clock() - start}


def format_max_batch(result: dict) -> str:
    """The search's outcome in words: the largest batch, said to be a lower bound, with the bracket left and
    why, where the search stopped before narrowing it to its resolution."""
    good, bad = result["max_batch"], result["smallest_not_fitting"]
    if result.get("stopped_early") == "budget":
        return (f"largest training batch >= {good} (bracket {good}..{bad} not narrowed: the "
                f"{result['budget_s']:g} s budget ran out; {bad} does not fit)")
    if result.get("stopped_early") == "limit":
        return f"largest training batch >= {good} (the search's limit: larger batches were not tried)"
    return f"largest training batch {good}" + (" (not even 1 fits)" if good == 0 else "")


def max_batch(spec: BenchSpec, probes: tuple[int, int] = PROBES, budget_s: float = BUDGET_S) -> dict:
    """Largest training batch of `spec`'s model, precision and memory format on a CUDA device."""
    device = pick_device(spec.device)
    if device.type != "cuda":
        raise AlexNetError("--max-batch measures GPU memory and needs a CUDA device (--device cuda)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="alexnet-maxbatch-") as scratch, \
            torch_settings(device, threads=spec.threads, precision=spec.precision):
        torch.backends.cudnn.benchmark = False  # no autotuning per size (module docstring); torch_settings restores it
        data = write_synthetic_fashion_mnist(Path(scratch) / "data", max(spec.batch_size, 1000), n_test=100)
        # eager steps: a captured graph would keep its memory pool reserved across the sizes tried
        trainer = build_trainer(dataclasses.replace(spec, cuda_graphs=False), str(data), Path(scratch) / "run")
        build_s = time.perf_counter() - t0
        baseline = torch.cuda.memory_allocated(device)  # the weights (and the data set on the device)
        result = search_max_batch(_peak_of(trainer, device, probes), lambda: _capacity(device), probes=probes,
                                  budget_s=budget_s, started=t0)
        precision = trainer.precision
    return {**result, "model": spec.model, "model_options": spec.model_options, "input_size": spec.input_size,
            "precision": precision.name,
            "channels_last": precision.channels_last, "device": torch.cuda.get_device_name(device),
            "total_memory_bytes": torch.cuda.get_device_properties(device).total_memory,
            "baseline_bytes": baseline, "build_seconds": build_s, "seconds": time.perf_counter() - t0}


def _peak_of(trainer, device: torch.device, probes: tuple[int, ...]) -> PeakOf:
    """Peak bytes of the trainer's step at batch b: at a probe size two steps and the second one's peak (the
    first makes the optimizer's state), otherwise one (the state exists by then)."""
    def peak_of(b: int) -> int | str:
        images = labels = None
        try:
            images = torch.randint(0, 256, (b, 1, 28, 28), dtype=torch.uint8, device=device)
            labels = torch.randint(0, 10, (b,), device=device)
            for step in range(2 if b in probes else 1):
                if step == 1 or b not in probes:
                    torch.cuda.synchronize(device)
                    torch.cuda.reset_peak_memory_stats(device)
                trainer.train_step(Batch(images, labels, b))
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device)
        except torch.cuda.OutOfMemoryError:
            return "out of memory"
        except RuntimeError as e:  # a kernel refusing a tensor this large (32-bit indexing) does not fit either
            return one_line(e)[:300]
        finally:
            del images, labels
            trainer.optimizer.zero_grad(set_to_none=True)  # an OOM mid-backward leaves some gradients
            gc.collect()
            torch.cuda.empty_cache()
    return peak_of


def _capacity(device: torch.device) -> int:
    """Bytes this process may allocate: the device's free memory plus what its caching allocator holds."""
    gc.collect()
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device)
