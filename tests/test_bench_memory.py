"""The largest-batch search of `alexnet bench --max-batch` (alexnet.bench.memory), on the CPU against fake GPUs
whose memory is a known function of the batch: it ends at the true limit within its resolution, in a few tries,
however wrong the linear estimate, and reports every try. (The CUDA side, `max_batch`, is a GPU test.)"""

import json
import math

import pytest
import torch

from alexnet.base.errors import AlexNetError
from alexnet.bench.memory import (
    BUDGET_S,
    MARGIN,
    PROBES,
    REFINE,
    RESOLUTION,
    bracket_search,
    format_max_batch,
    largest_fitting,
    linear_estimate,
    max_batch,
    search_max_batch,
)
from alexnet.bench.throughput import BenchSpec

GIB = 1 << 30


class FakeGPU:
    """peak(b) = fixed + per_image * b + extra(b) bytes; a step fits when its peak is within `capacity`. Each
    step takes `seconds(b)` on a fake clock."""

    def __init__(self, capacity, fixed, per_image, extra=lambda b: 0, seconds=lambda b: 0.1 + b * 1e-4):
        self.capacity, self.fixed, self.per_image, self.extra, self.seconds = capacity, fixed, per_image, extra, seconds
        self.now, self.calls = 0.0, []

    def peak(self, b):
        return self.fixed + self.per_image * b + self.extra(b)

    def peak_of(self, b):
        self.calls.append(b)
        self.now += self.seconds(b)
        return self.peak(b) if self.peak(b) <= self.capacity else "out of memory"

    def clock(self):
        return self.now

    def largest(self):
        return max(b for b in range(1, 1 << 16 + 1) if self.peak(b) <= self.capacity) if self.peak(1) <= \
            self.capacity else 0


def search(gpu, **kwargs):
    return search_max_batch(gpu.peak_of, lambda: gpu.capacity, clock=gpu.clock, **kwargs)


def assert_found(result, gpu):
    true = gpu.largest()
    good, bad = result["max_batch"], result["smallest_not_fitting"]
    assert good <= true and gpu.peak(good) <= gpu.capacity  # what it reports fits
    assert bad is not None and bad > true                   # ... and the next size it names does not
    assert bad - good <= max(1, int(good * RESOLUTION))     # within the resolution of the true limit
    assert result["stopped_early"] is None                  # ... and said to be: not a lower bound


@pytest.mark.parametrize("per_image_mib", [3.0, 9.5, 40.0])
def test_a_linear_memory_is_found_in_a_few_tries(per_image_mib):
    """An H200-sized GPU, memory linear in the batch: the estimate lands within MARGIN of the limit."""
    gpu = FakeGPU(capacity=140 * GIB, fixed=2 * GIB, per_image=int(per_image_mib * (1 << 20)))
    result = search(gpu)
    assert_found(result, gpu)
    first = result["first_estimate"]["batch"]
    assert gpu.calls[:3] == [*PROBES, int(first * REFINE)]  # two probes, then a step at an eighth of their estimate
    assert len(gpu.calls) <= 7  # ... the estimate, the bracket, two bisections
    estimate = result["estimate"]
    assert estimate["per_image_bytes"] == gpu.per_image and estimate["fixed_bytes"] == gpu.fixed
    assert estimate["batch"] == math.floor((gpu.capacity * MARGIN - gpu.fixed) / gpu.per_image)
    assert [t["batch"] for t in result["trials"]] == gpu.calls  # every try, in order, with its outcome
    assert all(t["fits"] == (gpu.peak(t["batch"]) <= gpu.capacity) for t in result["trials"])
    assert all(t["seconds"] == pytest.approx(gpu.seconds(t["batch"])) for t in result["trials"])
    assert all((t["peak_bytes"] is None) == (t["error"] == "out of memory") for t in result["trials"])
    assert result["tried"] == {t["batch"]: t["fits"] for t in result["trials"]}
    assert result["search_seconds"] == pytest.approx(sum(t["seconds"] for t in result["trials"]))


@pytest.mark.parametrize("extra", [
    lambda b: 3 * GIB if b > 64 else 0,               # a workspace that appears above the probes: estimate high
    lambda b: -(b * (1 << 20)) // 2 if b > 64 else 0,  # memory that grows slower above them: estimate low
    lambda b: (b // 1000) * GIB,                       # steps of a GiB every 1000 images
])
def test_a_wrong_estimate_still_ends_at_the_limit(extra):
    gpu = FakeGPU(capacity=80 * GIB, fixed=GIB, per_image=5 << 20, extra=extra)
    result = search(gpu)
    assert_found(result, gpu)
    assert len(gpu.calls) <= 14  # the walk's factors grow: the bracket is found in logarithmically many tries


def h200_d2l(b):
    """Memory the two small probes misjudge, as the d2l net's did on the H200 (2026-12-04: their line predicted
    55,280 images where 47,860 fitted and 52,647 did not): allocator rounding that is a large share of a small
    batch's peak, and workspaces that grow with the batch only past the probes' sizes."""
    return 40 << 20 if b <= 64 else b * (400 << 10)


def test_the_third_probe_corrects_what_the_small_ones_misjudge():
    """The first line's prediction is 10-15 % off; the refined one lands the first large try within MARGIN, and
    the search steps through about four times the largest batch's images in all (the time of a large step
    grows with its images), where the first line's estimate alone costs 6.3x here."""
    gpu = FakeGPU(capacity=140 * GIB, fixed=GIB, per_image=2_300 << 10, extra=h200_d2l,
                  seconds=lambda b: 0.3 + b / 35_000)  # an eager d2l step on the H200, without autotuning
    result = search(gpu)
    assert_found(result, gpu)
    true, first = gpu.largest(), result["first_estimate"]["batch"]
    assert first > 1.10 * true  # the probes alone: more than 10 % too many images (a failed first try)
    assert 0.95 * true <= result["estimate"]["batch"] <= true  # refined: fits, within 5 %
    large = [b for b in gpu.calls if b > true / 2]
    assert len(large) <= 4 and gpu.peak(large[0]) <= gpu.capacity  # the first large try fits
    assert sum(gpu.calls) <= 4.5 * true and result["search_seconds"] < 15.0  # bisected to RESOLUTION in time


def test_the_third_probe_only_where_it_is_worth_a_step():
    small = FakeGPU(capacity=4 * GIB, fixed=GIB, per_image=10 << 20)  # ~300 images: an eighth is near the probes
    result = search(small)
    assert_found(result, small)
    assert result["estimate"] == result["first_estimate"] and small.calls[2] == result["estimate"]["batch"]
    huge = FakeGPU(capacity=140 * GIB, fixed=GIB, per_image=1 << 10)
    result = search(huge, limit=4096)
    assert huge.calls == [*PROBES, 4096 // 8, 4096] and result["max_batch"] == 4096  # refined below the limit


def test_a_third_probe_that_does_not_fit_walks_down_from_itself():
    """Memory that explodes past the probes (an estimate 8x too high): the walk starts at the refining size."""
    gpu = FakeGPU(capacity=80 * GIB, fixed=GIB, per_image=5 << 20, extra=lambda b: 0 if b <= 64 else b * (80 << 20))
    result = search(gpu)
    assert_found(result, gpu)
    middle = gpu.calls[2]
    assert not result["tried"][middle] and result["estimate"]["batch"] == middle
    assert gpu.calls[3] == int(middle / 1.05)


def test_the_budget_counts_from_the_start_given():
    """The trainer's build is part of the command's time: a budget spent before the search leaves the bracket
    as the walk found it, without bisection."""
    gpu = FakeGPU(capacity=140 * GIB, fixed=GIB, per_image=4 << 20, extra=lambda b: 2 * GIB if b > 64 else 0)
    gpu.now = 100.0
    early = search(FakeGPU(140 * GIB, GIB, 4 << 20, extra=lambda b: 2 * GIB if b > 64 else 0), resolution=0.0)
    late = search(gpu, resolution=0.0, budget_s=10.0, started=90.0)
    assert late["smallest_not_fitting"] - late["max_batch"] > early["smallest_not_fitting"] - early["max_batch"]
    assert gpu.peak(late["max_batch"]) <= gpu.capacity < gpu.peak(late["smallest_not_fitting"])
    assert late["search_seconds"] == pytest.approx(sum(t["seconds"] for t in late["trials"]))


def test_the_time_budget_stops_bisection_and_the_bracket_says_how_close():
    gpu = FakeGPU(capacity=140 * GIB, fixed=GIB, per_image=4 << 20, extra=lambda b: 2 * GIB if b > 64 else 0,
                  seconds=lambda b: 10.0)
    result = search(gpu, budget_s=25.0, resolution=0.0)
    good, bad = result["max_batch"], result["smallest_not_fitting"]
    assert gpu.peak(good) <= gpu.capacity < gpu.peak(bad)  # a true bracket, however wide
    # the probes, the refining step and the walk run whatever the clock says; bisection only within the budget
    assert len(gpu.calls) <= 6 and result["search_seconds"] <= 25.0 + 4 * 10.0


def test_a_search_stopped_by_its_budget_says_so():
    """Out of time before the bracket is narrowed to the resolution: max_batch is only a lower bound, and the result
    (stopped_early) and the text both say so, with the bracket left; given the time, the same GPU is bisected to
    the resolution and neither says it."""
    def slow_gpu():  # 10 s a step: the probes, the refining step and the walk spend the 25 s budget
        return FakeGPU(capacity=140 * GIB, fixed=GIB, per_image=4 << 20, extra=lambda b: 2 * GIB if b > 64 else 0,
                       seconds=lambda b: 10.0)

    gpu = slow_gpu()
    stopped = search(gpu, budget_s=25.0)
    good, bad = stopped["max_batch"], stopped["smallest_not_fitting"]
    assert (good, bad, gpu.largest()) == (32_355, 35_590, 35_072)  # the true limit lies inside, 9 % above
    assert bad - good > good * RESOLUTION and stopped["stopped_early"] == "budget" and stopped["budget_s"] == 25.0
    assert format_max_batch(stopped) == ("largest training batch >= 32355 (bracket 32355..35590 not narrowed: the "
                                         "25 s budget ran out; 35590 does not fit)")
    done = search(slow_gpu(), budget_s=600.0)
    assert_found(done, gpu)
    assert (done["max_batch"], done["stopped_early"], done["budget_s"]) == (34_781, None, 600.0)
    assert format_max_batch(done) == "largest training batch 34781"
    default = search(slow_gpu())
    assert default["budget_s"] == BUDGET_S and default["stopped_early"] == "budget"
    assert f"the {BUDGET_S:g} s budget ran out" in format_max_batch(default)


def test_the_cli_prints_and_records_a_search_stopped_early(cli, monkeypatch):
    """`alexnet bench --max-batch`: the text says the figure is a lower bound and why; --json carries
    stopped_early. (The search is faked: max_batch itself needs CUDA.)"""
    import alexnet.bench

    gpu = FakeGPU(capacity=140 * GIB, fixed=GIB, per_image=4 << 20, extra=lambda b: 2 * GIB if b > 64 else 0,
                  seconds=lambda b: 10.0)
    result = {**search(gpu, budget_s=25.0), "device": "Fake H200"}
    monkeypatch.setattr(alexnet.bench, "max_batch", lambda spec: result)
    argv = ["bench", "--max-batch", "--model", "d2l", "--input-size", "224", "--device", "cpu"]
    code, out, err = cli(*argv)
    assert (code, err) == (0, "")
    assert out.startswith("d2l @224, auto: largest training batch >= 32355 (bracket 32355..35590 not narrowed: the "
                          "25 s budget ran out; 35590 does not fit) on Fake H200 (tried {16: True, ")
    code, out, err = cli(*argv, "--json")
    recorded = json.loads(out)
    assert (code, recorded["stopped_early"], recorded["max_batch"], recorded["smallest_not_fitting"]) == (
        0, "budget", 32_355, 35_590)


def test_when_even_a_probe_does_not_fit_it_halves():
    gpu = FakeGPU(capacity=10 * GIB, fixed=GIB, per_image=GIB)  # 9 images fit
    result = search(gpu)
    assert result["max_batch"] == 9 and result["estimate"] is None and result["smallest_not_fitting"] == 10
    assert gpu.calls[0] == PROBES[0] and result["stopped_early"] is None  # bisected to one image, whatever the budget
    nothing = FakeGPU(capacity=GIB, fixed=2 * GIB, per_image=1)
    result = search(nothing)
    assert result["max_batch"] == 0 and result["stopped_early"] is None
    assert format_max_batch(result) == "largest training batch 0 (not even 1 fits)"


def test_the_limit_caps_the_search():
    gpu = FakeGPU(capacity=140 * GIB, fixed=GIB, per_image=1 << 10)  # millions would fit
    result = search(gpu, limit=4096)
    assert result["max_batch"] == 4096 and result["smallest_not_fitting"] is None
    assert max(gpu.calls) == 4096
    assert (result["stopped_early"], result["limit"]) == ("limit", 4096)  # a lower bound: larger was not tried
    assert format_max_batch(result) == ("largest training batch >= 4096 (the search's limit: larger batches were not "
                                        "tried)")


def test_linear_estimate_and_bracket_search_alone():
    assert linear_estimate({16: 1000 + 16 * 10, 48: 1000 + 48 * 10}, capacity=10_000, margin=1.0) == {
        "per_image_bytes": 10.0, "fixed_bytes": 1000.0, "capacity_bytes": 10_000, "margin": 1.0, "batch": 900}
    for true in (1, 2, 7, 100, 999, 1000, 5000):
        for estimate in (1, true // 3 + 1, true, true + 1, 3 * true, 60_000):
            good, bad = bracket_search(lambda b, t=true: b <= t, estimate, resolution=0.0)
            assert (good, bad) == (true, true + 1), (true, estimate)
    assert bracket_search(lambda b: False, 50) == (0, 1)
    assert largest_fitting(lambda b: b <= 100, start=64, limit=4096) == 100  # the blind search is kept


def test_max_batch_needs_cuda():
    with pytest.raises(AlexNetError, match="needs a CUDA device"):
        max_batch(BenchSpec(model="small", device="cpu"))


@pytest.mark.gpu
def test_max_batch_on_cuda_reports_its_tries(monkeypatch):
    """The real search, on a net small enough that the limit itself fits: three probes and one try, each without
    cuDNN's autotuning, which is back as it was afterwards."""
    import alexnet.bench.memory as memory

    autotuning, plain = [], memory._peak_of

    def recorded(*args):
        peak_of = plain(*args)
        return lambda b: autotuning.append(torch.backends.cudnn.benchmark) or peak_of(b)

    monkeypatch.setattr(memory, "_peak_of", recorded)
    before = torch.backends.cudnn.benchmark
    result = max_batch(BenchSpec(model="small", input_size=28, device="cuda"))
    assert autotuning == [False] * 4
    assert result["max_batch"] == 1 << 16 and result["smallest_not_fitting"] is None
    assert [t["batch"] for t in result["trials"]] == [*PROBES, 1 << 13, 1 << 16]  # the third probe: limit / 8
    assert all(t["fits"] for t in result["trials"])
    assert 0 < result["build_seconds"] < result["seconds"] and torch.backends.cudnn.benchmark == before
    estimate = result["estimate"]
    assert 0 < estimate["per_image_bytes"] < 1 << 20 and estimate["capacity_bytes"] <= result["total_memory_bytes"]
    assert all(t["peak_bytes"] > result["baseline_bytes"] for t in result["trials"])
