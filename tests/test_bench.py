"""alexnet bench: the harness's figures are consistent (FLOPs equal the flop counter's, MFU = achieved / peak),
the peak is measured once and then read from the cache, no MFU is printed above the peak or for an emulated
precision, the datasheet peak is found by GPU name, the d2l baseline reads torchvision's layout, time to accuracy
picks the first epoch at the target, the batch search finds the boundary, and bad input is one line with exit 2.
No figure here is a speed: speeds are measured by `benchmarks/run_cpu.sh`, never asserted."""

import copy
import gzip
import itertools
import json
import math
import os
import re
from types import SimpleNamespace

import pytest
import torch
from synthetic import IDX_FILES, write_fashion_mnist
from test_summary import conv_flops

from alexnet.analysis.summary import training_flops
from alexnet.base.errors import AlexNetError
from alexnet.bench import (
    BenchSpec,
    datasheet_gpu,
    first_reaching,
    largest_fitting,
    peak_flops,
    run_bench,
    time_to_accuracy,
)
from alexnet.bench import baseline as baseline_mod
from alexnet.bench import loader as loader_mod
from alexnet.bench import peak as peak_mod
from alexnet.bench import timing as timing_mod
from alexnet.bench.baseline import d2l_dataset, torchvision_root
from alexnet.bench.compare import format_bench
from alexnet.bench.throughput import (
    CUDA_PEAK,
    RSS_PHASE,
    RSS_PROCESS,
    flops_per_image,
    forever,
    peak_memory,
    reset_peak_memory,
    step_stats,
)
from alexnet.bench.timing import StepTimes, time_steps
from alexnet.config import apply_overrides, load_preset
from alexnet.models import create_model
from alexnet.runtime.device import CpuFeatures
from alexnet.runtime.settings import matmul_precision, num_threads

D2L_TRAIN_FLOPS_224 = 5_561_132_544   # torch.utils.flop_counter, forward + backward, one 1x224x224 image
SMALL_TRAIN_FLOPS_28 = 111_264_768    # the same for `small` (width 32, hidden 256) at 1x28x28
TINY = dict(model="small", device="cpu", batch_size=16, steps=2, warmup=1)
FIGURES = ("train_images_per_sec", "infer_images_per_sec", "step_ms", "flops_per_image", "achieved_flops",
           "peak_flops", "peak_memory_bytes")


@pytest.fixture(autouse=True)
def _fast_peak(fast_peak):
    pass  # conftest's fast_peak for every test here


@pytest.fixture
def fake_peaks(monkeypatch):
    """`measure_peak` replaced by a table of FLOP/s by precision; `.calls` lists (precision, fp32 matmul precision)
    per measurement, and a remeasurement of one precision gives a new figure (the table's times the count)."""
    fake = SimpleNamespace(calls=[], table={"fp32": 100e9, "tf32": 400e9, "bf16": 1e12, "fp16": 1e12})

    def measure_peak(device, label, float32_matmul_precision):
        fake.calls.append((label, float32_matmul_precision))
        flops = fake.table[label] * sum(c[0] == label for c in fake.calls)
        return {"peak_flops": flops, "matmul_size": 128, "by_size": {"128": flops}, "method": "fake",
                "measured_at": f"2026-01-0{len(fake.calls)}T00:00:00Z", "loadavg": [0.1, 0.1, 0.1], "cpu_count": 2}
    monkeypatch.setattr(peak_mod, "measure_peak", measure_peak)
    return fake


def new_process(monkeypatch):
    """What a second `alexnet bench` process sees: the cache file, not this process's measurements."""
    monkeypatch.setattr(peak_mod, "_MEASURED", {})


@pytest.fixture(scope="module")
def gz_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"))  # 512 train, 200 test images


@pytest.fixture
def bench(cli):
    return lambda *argv: cli("bench", *argv)


def check_figures(r: dict, spec: BenchSpec) -> None:
    for key in FIGURES:
        assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    assert r["step_ms"] == pytest.approx(1000 * spec.batch_size / r["train_images_per_sec"])
    s = r["step_ms_stats"]  # every timed step, the mean among them
    assert s["steps"] == spec.steps and s["min"] <= s["p25"] <= s["median"] <= s["p75"] <= s["max"]
    assert s["min"] <= r["step_ms"] * (1 + 1e-9) and r["step_ms"] <= s["max"] * (1 + 1e-9)
    assert r["achieved_flops"] == pytest.approx(r["flops_per_image"] * r["train_images_per_sec"])
    if r["mfu"] is None:  # the tiny test peak (64^3, 128^3) may be below what the model achieved
        assert r["achieved_flops"] > r["peak_flops"] or r["emulated"], r
        assert r["mfu_reason"]
    else:
        assert r["mfu"] == pytest.approx(r["achieved_flops"] / r["peak_flops"], rel=1e-12)
        assert r["mfu_reason"] is None


def test_ours_and_baseline_on_a_tiny_model(gz_dir):
    spec = BenchSpec(**TINY, synthetic=True, synthetic_images=64)
    # The baseline over tests/synthetic.py's IDX files, decompressed into torchvision's FashionMNIST/raw layout.
    root = torchvision_root(gz_dir)
    for stem in IDX_FILES["train"] + IDX_FILES["test"]:
        with gzip.open(gz_dir / f"{stem}.gz") as f:
            assert (root / "FashionMNIST" / "raw" / stem).read_bytes() == f.read()
    assert sorted(os.listdir(root / "FashionMNIST" / "raw")) == sorted(IDX_FILES["train"] + IDX_FILES["test"])
    dataset = d2l_dataset(root, spec.input_size)
    image, label = dataset[0]
    assert len(dataset) == 512 and image.shape == (1, 28, 28) and image.dtype == torch.float32

    result = run_bench(spec, baseline=True, baseline_dataset=dataset)
    ours, base = result["ours"], result["baseline"]
    check_figures(ours, spec)
    check_figures(base, spec)
    independent = training_flops(create_model("small", in_channels=1, input_size=28, num_classes=10), (1, 28, 28))
    assert ours["flops_per_image"] == base["flops_per_image"] == independent == SMALL_TRAIN_FLOPS_28
    assert result["ratio"] == pytest.approx(ours["train_images_per_sec"] / base["train_images_per_sec"])
    assert result["device"].startswith("cpu") and result["torch"] == torch.__version__
    assert result["config"]["model"] == "small" and result["config"]["input_size"] == 28


def side(precision: str, images_per_sec: float, peak: tuple[str, float], steps_ms: list[float], memory_mib: int,
         memory_kind: str = CUDA_PEAK) -> dict:
    """One row of a bench result as `summarise` writes it, with figures chosen to read off the table."""
    achieved = 1e9 * images_per_sec  # 1 GFLOP per training image
    stats = step_stats(StepTimes([ms / 1000 for ms in steps_ms]))
    return {"precision": precision, "train_images_per_sec": images_per_sec, "infer_images_per_sec": 3 * images_per_sec,
            "step_ms": sum(steps_ms) / len(steps_ms), "step_ms_stats": stats, "flops_per_image": 10**9,
            "achieved_flops": achieved, "peak_precision": peak[0], "peak_flops": peak[1], "mfu": achieved / peak[1],
            "mfu_reason": None, "peak_source": "cache", "peak_loadavg": None, "peak_matmul_size": 8192,
            "peak_cache_file": "peaks.json", "peak_measured_at": "2026-01-01T00:00:00Z", "peak_method": "matmuls",
            "float32_matmul_precision": "highest", "emulated": False, "slowdown_vs_fp32": None, "datasheet": None,
            "peak_memory_bytes": memory_mib * 2**20, "peak_memory_kind": memory_kind,
            "peak_memory_per_phase": memory_kind != RSS_PROCESS, "channels_last": True, "precision_reason": "auto"}


def bench_result(ours: dict, baseline: dict | None, steps: int) -> dict:
    return {"ours": ours, "baseline": baseline, "device": "cuda: NVIDIA H200", "torch": "2.9",
            "ratio": None if baseline is None else ours["train_images_per_sec"] / baseline["train_images_per_sec"],
            "config": {"model": "d2l", "input_size": 224, "batch_size": 128, "compile": False, "synthetic": True,
                       "steps": steps, "warmup": 3}}


def test_the_bench_table_says_what_each_row_divides_by():
    """Each row names its precision and its MFU's peak; a speed-up column; per-phase memory; the steps' spread,
    and notes where the figures are rough: too few steps, or a row whose steps ranged widely."""
    ours = side("bf16", 5000.0, ("bf16", 800e12), [25.0, 25.2, 25.6, 24.9, 26.0], 2048)
    base = side("tf32", 1250.0, ("tf32", 400e12), [100.0, 98.0, 150.0, 101.0, 102.0], 3000)
    lines = format_bench(bench_result(ours, base, steps=5)).splitlines()
    assert lines[1:4] == [
        "          precision  train img/s  speed-up  step ms  (min-max)     infer img/s      achieved   MFU  "
        "of peak              peak mem",
        "ours      bf16            5000.0     4.00x     25.2  (24.9-26.0)       15000.0  5.00 TFLOP/s  0.6%  "
        "bf16 800.00 TFLOP/s  2048 MiB",
        "baseline  tf32            1250.0     1.00x    101.0  (98.0-150.0)       3750.0  1.25 TFLOP/s  0.3%  "
        "tf32 400.00 TFLOP/s  3000 MiB"]
    assert lines[5:8] == [
        "MFU: achieved FLOP/s / the measured matmul peak of the arithmetic the row runs in: ours bf16 (800.00 "
        "TFLOP/s), baseline tf32 (400.00 TFLOP/s)",
        "  the rows divide by different peaks: compare them by img/s, not by MFU",
        f"peak mem: {CUDA_PEAK}"]
    assert lines[8:10] == [
        "NOTE: only 5 timed steps (20 or more for a steady figure): treat these figures as rough; raise --steps",
        "NOTE: baseline: the steps ranged 98.0-150.0 ms, 51% of their 101.0 ms median (other work on the machine, "
        "clock changes or a stalling input pipeline); rerun or raise --steps"]
    assert lines[10:12] == ["ours: bf16 + channels_last (auto)",
                            "FLOPs per training image: 1,000,000,000 (forward + backward, torch.utils.flop_counter)"]
    assert lines[12].startswith("peak (bf16): 800.00 TFLOP/s at 8192^3, from the cache (peaks.json, measured")

    # ours alone, 20 steady steps on a CPU whose RSS high-water mark cannot be reset: no notes, no memory column
    alone = side("fp32", 100.0, ("fp32", 2e12), [10.0] * 19 + [10.5], 900, memory_kind=RSS_PROCESS)
    lines = format_bench(bench_result(alone, None, steps=20)).splitlines()
    assert lines[1:3] == ["      precision  train img/s  step ms  (min-max)    infer img/s       achieved   MFU  "
                          "of peak",
                          "ours  fp32             100.0     10.0  (10.0-10.5)        300.0  100.0 GFLOP/s  5.0%  "
                          "fp32 2.00 TFLOP/s"]
    assert lines[3:6] == [
        "step ms: the median timed step (fastest-slowest); img/s and achieved FLOP/s: over all of them",
        "MFU: achieved FLOP/s / the measured matmul peak of the arithmetic the row runs in: ours fp32 (2.00 TFLOP/s)",
        f"memory: not shown: this machine gives only {RSS_PROCESS}, the same for every row"]
    assert not any(line.startswith("NOTE") for line in lines)


def test_every_timed_step_is_stamped(monkeypatch):
    clock = iter([10.0, 10.5, 11.0, 13.0, 13.25])  # perf_counter at the start and after each of 4 steps
    monkeypatch.setattr(timing_mod.time, "perf_counter", lambda: next(clock))
    calls = []
    seconds = time_steps(lambda: calls.append(1), steps=4, warmup=2, device=torch.device("cpu"))
    assert seconds == 3.25 and seconds.each == (0.5, 0.5, 2.0, 0.25) and len(calls) == 6
    assert step_stats(seconds) == {"steps": 4, "median": 500.0, "p25": 437.5, "p75": 875.0, "min": 250.0,
                                   "max": 2000.0}
    assert copy.deepcopy(seconds).each == seconds.each and 2 * seconds == 6.5  # still a plain float to its callers
    assert step_stats(StepTimes([0.002])) == {"steps": 1, "median": 2.0, "p25": 2.0, "p75": 2.0, "min": 2.0,
                                              "max": 2.0}
    assert step_stats(1.5) is None  # a total alone (a test's fake timing) has no spread


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="Linux's resettable RSS high-water mark")
def test_cpu_memory_is_each_phases_own_peak():
    device = torch.device("cpu")
    reset_peak_memory(device)
    big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    during, kind = peak_memory(device)
    del big
    reset_peak_memory(device)
    after, _ = peak_memory(device)
    assert kind == RSS_PHASE and during - after >= 60 * 2**20  # the next phase does not inherit this one's peak


def test_d2l_flops_per_training_image():
    assert flops_per_image(BenchSpec(model="d2l", device="cpu")) == D2L_TRAIN_FLOPS_224


def test_model_options_reach_the_net_and_its_flops(bench):
    """`--set model.two_column=true`: the paper's grouped conv2/4/5 halve their FLOPs (forward and both gradients),
    and the output names the option."""
    dense = flops_per_image(BenchSpec(model="paper", device="cpu"))
    grouped = flops_per_image(BenchSpec(model="paper", device="cpu", model_options={"two_column": True}))
    halved = conv_flops(96, 256, 5, 27, groups=2) + conv_flops(384, 384, 3, 13, groups=2) + \
        conv_flops(384, 256, 3, 13, groups=2)
    assert dense - grouped == 3 * halved
    code, out, err = bench("--model", "paper", "--input-size", "67", "--batch-size", "2", "--steps", "1",
                           "--warmup", "0", "--synthetic", "--device", "cpu", "--set", "model.two_column=true",
                           "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["config"]["model_options"] == {"two_column": True}
    small_grouped = flops_per_image(BenchSpec(model="paper", input_size=67, model_options={"two_column": True}))
    assert result["ours"]["flops_per_image"] == small_grouped < flops_per_image(BenchSpec(model="paper",
                                                                                          input_size=67))


def test_peak_flops_is_the_best_sample_over_the_sizes(monkeypatch):
    measured = []
    real = peak_mod.measure_peak
    monkeypatch.setattr(peak_mod, "measure_peak", lambda *a: measured.append(a) or real(*a))
    peak = peak_flops(torch.device("cpu"), "fp32")
    assert peak["peak_flops"] > 0 and math.isfinite(peak["peak_flops"])
    # on a CPU: one thread's best sample, times the threads
    assert set(peak["by_size"]) == {"64", "128"} and peak["threads"] == torch.get_num_threads()
    assert peak["peak_flops"] == peak["threads"] * max(peak["by_size"].values())
    assert peak["peak_flops"] == peak["threads"] * peak["by_size"][str(peak["matmul_size"])]
    assert peak["source"] == "measured now" and peak["precision"] == "fp32" and 3 <= peak["rounds"] <= 6
    again = peak_flops(torch.device("cpu"), "fp32", remeasure=True)  # ours and the baseline share one remeasure
    assert len(measured) == 1 and again["peak_flops"] == peak["peak_flops"]


def test_peak_is_cached_reused_and_remeasured(monkeypatch, fake_peaks, tmp_path):
    cpu = torch.device("cpu")
    first = peak_flops(cpu, "fp32")
    assert first["source"] == "measured now" and first["peak_flops"] == 100e9 and fake_peaks.calls == [
        ("fp32", "highest")]
    new_process(monkeypatch)
    second = peak_flops(cpu, "fp32")  # another process: read from the cache, not measured
    assert second["source"] == "cache" and second["peak_flops"] == 100e9 and len(fake_peaks.calls) == 1
    assert second["cache_file"] == str(tmp_path / "cache" / "peaks.json")
    new_process(monkeypatch)
    third = peak_flops(cpu, "fp32", remeasure=True)
    assert third["source"] == "measured now" and third["peak_flops"] == 200e9 and len(fake_peaks.calls) == 2
    new_process(monkeypatch)
    assert peak_flops(cpu, "fp32")["peak_flops"] == 200e9  # the remeasurement replaced the cached figure
    # The file says what, how and when, keyed by device (with its thread count), torch, precision, matmul precision
    data = json.loads((tmp_path / "cache" / "peaks.json").read_text())
    assert data["version"] == 1 and list(data["peaks"]) == [peak_mod.cache_key(cpu, "fp32", "highest")]
    entry = data["peaks"][peak_mod.cache_key(cpu, "fp32", "highest")]
    assert entry["peak_flops"] == 200e9 and entry["method"] == "fake" and entry["measured_at"] == "2026-01-02T00:00:00Z"
    assert entry["torch"] == torch.__version__ and entry["device"].startswith("cpu: ") and "threads" in entry["device"]
    assert entry["precision"] == "fp32" and entry["float32_matmul_precision"] == "highest"


def test_a_broken_cache_is_measured_again(fake_peaks, tmp_path):
    path = tmp_path / "cache" / "peaks.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert peak_flops(torch.device("cpu"), "bf16")["source"] == "measured now"
    assert list(json.loads(path.read_text())["peaks"]) == [peak_mod.cache_key(torch.device("cpu"), "bf16", "highest")]


def test_the_real_cache_file_says_how_and_when(tmp_path):
    peak_flops(torch.device("cpu"), "fp32")
    (entry,) = json.loads((tmp_path / "cache" / "peaks.json").read_text())["peaks"].values()
    assert "best sample" in entry["method"] and "[64, 128]" in entry["method"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["measured_at"])
    assert len(entry["loadavg"]) == 3 and entry["cpu_count"] == os.cpu_count()


@pytest.mark.parametrize("rates, rounds", [
    ([5, 5, 5, 5, 5, 5, 5], 3),        # settled from the start: the minimum of 3 rounds
    ([1, 1, 2, 5, 5, 5, 5], 5),        # a slow spell for 3 rounds, outlived: stop once a round adds < 2 %
    ([1, 2, 3, 4, 5, 6, 7], 6),        # still rising: stop at the cap
])
def test_peak_rounds_run_until_the_best_settles(monkeypatch, rates, rounds):
    calls = []

    def best_rate(device, dtype, n, kind):  # both sizes of round r give rates[r]
        calls.append(n)
        return float(rates[(len(calls) - 1) // 2]), False
    monkeypatch.setattr(peak_mod, "_best_rate", best_rate)
    with num_threads(1):
        peak = peak_mod.measure_peak(torch.device("cpu"), "fp32", "highest")
    assert peak["rounds"] == rounds and len(calls) == 2 * rounds and peak["peak_flops"] == max(rates[:rounds])


def test_peak_stops_growing_at_a_size_whose_one_product_is_too_slow(monkeypatch):
    calls = []  # an emulated bf16 matmul: 128^3 already takes longer than MAX_PRODUCT_S

    def best_rate(device, dtype, n, kind):
        calls.append(n)
        return (2.0, False) if n == 64 else (1.0, True)
    monkeypatch.setattr(peak_mod, "_best_rate", best_rate)
    with num_threads(1):
        peak = peak_mod.measure_peak(torch.device("cpu"), "bf16", "highest")
    assert calls == [64, 128, 64, 64] and peak["by_size"] == {"64": 2.0, "128": 1.0} and peak["matmul_size"] == 64


def test_peak_runs_at_the_matmul_precision_of_its_arithmetic(monkeypatch):
    seen = []

    def best_rate(device, dtype, n, kind):
        seen.append((dtype, torch.get_float32_matmul_precision(), torch.get_num_threads()))
        return 1.0, False
    monkeypatch.setattr(peak_mod, "_best_rate", best_rate)
    with matmul_precision("high"), num_threads(2):  # "high": what the trainer sets, process-wide, on CUDA
        peak = peak_flops(torch.device("cpu"), "fp32")
        assert torch.get_float32_matmul_precision() == "high" and torch.get_num_threads() == 2  # restored
    # 3 rounds (none raised the best) over the 2 sizes, each on 1 thread; the peak counts both threads
    assert seen == [(torch.float32, "highest", 1)] * 6 and peak["float32_matmul_precision"] == "highest"
    assert peak["peak_flops"] == 2.0 and peak["rounds"] == 3
    # the name says what runs: fp32 is IEEE fp32 on CUDA too (TF32 off), tf32 is timed with TF32 products
    assert peak_mod.arithmetic(torch.device("cuda"), "fp32") == ("fp32", "highest")
    assert peak_mod.arithmetic(torch.device("cuda"), "tf32") == ("tf32", "high")
    assert peak_mod.arithmetic(torch.device("cuda"), "bf16") == ("bf16", "highest")
    assert peak_mod.arithmetic(torch.device("cpu"), "fp32") == ("fp32", "highest")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # torch's default changes nothing of it
    assert peak_mod.arithmetic(torch.device("cuda"), "fp32") == ("fp32", "highest")


@pytest.fixture
def tiny_cli(bench, gz_dir):
    """`alexnet bench` on the small net over the 512 test images: one step of 8, no warm-up (about a second)."""
    return lambda *argv: bench("--model", "small", "--data-dir", gz_dir, "--device", "cpu", "--batch-size", "8",
                               "--steps", "1", "--warmup", "0", *argv)


def test_cli_reuses_the_cached_peak_and_remeasures_on_request(tiny_cli, monkeypatch, fake_peaks):
    code, out, err = tiny_cli("--precision", "fp32", "--json")
    assert code == 0, err
    first = json.loads(out)["ours"]
    assert first["peak_source"] == "measured now" and first["peak_flops"] == 100e9 and len(fake_peaks.calls) == 1
    new_process(monkeypatch)  # each `alexnet bench` is its own process
    code, out, err = tiny_cli("--precision", "fp32")
    assert code == 0 and len(fake_peaks.calls) == 1, err
    assert "peak (fp32): 100.0 GFLOP/s at 128^3, from the cache (" in out and "peaks.json" in out, out
    assert f"measured {first['peak_measured_at']} at load average 0.1; --remeasure-peak" in out
    assert "  how: fake (float32 matmul precision 'highest')" in out
    new_process(monkeypatch)
    code, out, err = tiny_cli("--precision", "fp32", "--json", "--remeasure-peak")
    assert code == 0, err
    third = json.loads(out)["ours"]
    assert third["peak_source"] == "measured now" and third["peak_flops"] == 200e9 and len(fake_peaks.calls) == 2
    assert third["peak_measured_at"] != first["peak_measured_at"]
    new_process(monkeypatch)
    assert peak_flops(torch.device("cpu"), "fp32")["peak_flops"] == 200e9  # it replaced the cached one


def test_no_mfu_above_the_peak(tiny_cli, fake_peaks):
    fake_peaks.table["fp32"] = 1e6  # 1 MFLOP/s: any real step achieves more
    code, out, err = tiny_cli("--precision", "fp32", "--json")
    assert code == 0, err
    r = json.loads(out)["ours"]
    assert r["mfu"] is None and r["achieved_flops"] > r["peak_flops"] == 1e6
    assert "exceed the measured fp32 peak" in r["mfu_reason"] and "--remeasure-peak" in r["mfu_reason"]
    code, out, err = tiny_cli("--precision", "fp32")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("ours "))
    assert re.search(r" [MGT]FLOP/s +-  fp32 1\.0 MFLOP/s", row) and "%" not in row, row  # no MFU, and its peak
    assert "ours: no MFU: achieved" in out and "does not represent this precision on this device" in out


def test_bf16_on_a_cpu_without_native_bf16_is_named_emulated(tiny_cli, monkeypatch, fake_peaks):
    monkeypatch.setattr(peak_mod, "cpu_features", lambda: CpuFeatures("an AVX2 CPU", "AVX2", False, False))
    fake_peaks.table["bf16"] = 1e9  # 100x slower than fp32's 100 GFLOP/s
    code, out, err = tiny_cli("--precision", "bf16", "--json")
    assert code == 0, err
    r = json.loads(out)["ours"]
    assert r["emulated"] is True and r["slowdown_vs_fp32"] == pytest.approx(100.0)
    assert r["fp32_peak_flops"] == 100e9 and r["mfu"] is None and "emulated" in r["mfu_reason"]
    code, out, err = tiny_cli("--precision", "bf16")
    assert code == 0, err
    assert "ours: bf16 is EMULATED on this CPU" in out and "100.0x slower than fp32 (1.0 vs 100.0 GFLOP/s)" in out


def test_bf16_on_a_cpu_with_native_bf16_is_not_emulated(monkeypatch, fake_peaks):
    monkeypatch.setattr(peak_mod, "cpu_features", lambda: CpuFeatures("an AMX CPU", "AVX512", True, True))
    r = peak_mod.utilisation(torch.device("cpu"), "bf16", 100e9)
    assert r["emulated"] is False and r["slowdown_vs_fp32"] == pytest.approx(0.1) and r["mfu"] == pytest.approx(0.1)
    assert r["datasheet"] is None  # no datasheet on a CPU


def test_bf16_measured_far_slower_than_fp32_is_emulated_whatever_cpuid_says(monkeypatch, fake_peaks):
    # ONEDNN_MAX_CPU_ISA=AVX2 on an AMX CPU: CPUID reports bf16 units, oneDNN does not use them
    monkeypatch.setattr(peak_mod, "cpu_features", lambda: CpuFeatures("an AMX CPU", "AVX2", True, True))
    fake_peaks.table["bf16"] = 1e9
    r = peak_mod.utilisation(torch.device("cpu"), "bf16", 5e9)
    assert r["emulated"] is True and r["mfu"] is None and "oneDNN does not use them" in r["mfu_reason"]
    assert r["slowdown_vs_fp32"] == pytest.approx(100.0)


@pytest.mark.parametrize("name, gpu", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"), ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA A100 80GB PCIe", "A100"),
    ("NVIDIA A10", "A10"), ("NVIDIA A10G", None), ("NVIDIA L4", "L4"), ("NVIDIA L40S", "L40S"), ("NVIDIA L40", "L40"),
    ("Tesla T4", "T4"), ("Tesla V100-SXM2-16GB", "V100 SXM2"), ("Tesla V100-PCIE-32GB", "V100 PCIe"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"), ("NVIDIA GeForce RTX 3090", "RTX 3090"),
    ("NVIDIA GeForce RTX 3090 Ti", None), ("NVIDIA GeForce RTX 4090 Laptop GPU", None), ("Quadro T4000", None),
    ("Radeon Instinct MI300X", None),
])
def test_datasheet_is_found_by_device_name(name, gpu):
    found = datasheet_gpu(name)
    assert (found and found.name) == gpu


# The tensor-core figures NVIDIA's datasheets print "with sparsity" (2:4 structured sparsity doubles the rate), in
# TFLOP/s: H100 and H200 datasheets (SXM, PCIe, NVL columns), A100 datasheet, and fp32, which has no sparse rate.
PUBLISHED_SPARSE = {
    "NVIDIA H100 80GB HBM3": {"tf32": 989, "bf16": 1979, "fp16": 1979},
    "NVIDIA H100 PCIe": {"tf32": 756, "bf16": 1513, "fp16": 1513},
    "NVIDIA H100 NVL": {"tf32": 835, "bf16": 1671, "fp16": 1671},
    "NVIDIA H200": {"tf32": 989, "bf16": 1979, "fp16": 1979},
    "NVIDIA H200 NVL": {"tf32": 835, "bf16": 1671, "fp16": 1671},
    "NVIDIA A100-SXM4-40GB": {"tf32": 312, "bf16": 624, "fp16": 624},
}
PUBLISHED_FP32 = {"NVIDIA H100 80GB HBM3": 67, "NVIDIA H100 PCIe": 51, "NVIDIA H100 NVL": 60, "NVIDIA H200": 67,
                  "NVIDIA H200 NVL": 60, "NVIDIA A100-SXM4-40GB": 19.5}


@pytest.mark.parametrize("name", list(PUBLISHED_SPARSE))
def test_datasheet_figures_are_dense(name):
    """MFU divides by the dense peak (PaLM, appendix B): half of each published "with sparsity" figure."""
    tflops = datasheet_gpu(name).tflops
    assert {k: tflops[k] for k in PUBLISHED_SPARSE[name]} == {k: v / 2 for k, v in PUBLISHED_SPARSE[name].items()}
    assert tflops["fp32"] == PUBLISHED_FP32[name]


def test_no_datasheet_figure_without_the_units():
    """Turing and Volta have no bf16 units: no figure, so no datasheet MFU; tensor-core fp16 beats plain fp32."""
    for name in ("Tesla T4", "Tesla V100-SXM2-16GB"):
        tflops = datasheet_gpu(name).tflops
        assert "bf16" not in tflops and tflops["fp16"] > 4 * tflops["fp32"]


def test_mfu_against_the_datasheet_on_cuda(monkeypatch, fake_peaks):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    fake_peaks.table.update(bf16=1000e12, tf32=500e12)  # the measured peaks
    cuda = torch.device("cuda")
    r = peak_mod.utilisation(cuda, "bf16", 494.75e12)
    assert r["mfu"] == pytest.approx(0.49475) and r["peak_precision"] == "bf16"
    sheet = r["datasheet"]
    assert sheet["gpu"] == "H100 SXM" and sheet["peak_flops"] == 989.5e12 and sheet["mfu"] == pytest.approx(0.5)
    assert "datasheet" in sheet["source"]
    tf32 = peak_mod.utilisation(cuda, "tf32", 247.25e12)  # tf32: TF32's peaks, measured and datasheet
    assert tf32["peak_precision"] == "tf32" and tf32["datasheet"]["mfu"] == pytest.approx(0.5)
    fake_peaks.table.update(fp32=50e12)
    fp32 = peak_mod.utilisation(cuda, "fp32", 33.5e12)  # IEEE fp32: fp32's peaks (the datasheet's 67 TFLOP/s)
    assert fp32["peak_precision"] == "fp32" and fp32["datasheet"]["mfu"] == pytest.approx(0.5)
    assert fake_peaks.calls == [("bf16", "highest"), ("tf32", "high"), ("fp32", "highest")]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    t4 = peak_mod.utilisation(cuda, "bf16", 1e12)
    assert t4["datasheet"]["mfu"] is None and "no datasheet bf16 figure" in t4["datasheet"]["mfu_reason"]


def test_baseline_runs_at_highest_matmul_precision(monkeypatch):
    seen = []

    def time_d2l(spec, dataset, workers, device):
        seen.append((torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32))
        return 1.0, 1.0, 1, "fake"
    monkeypatch.setattr(baseline_mod, "_time_d2l", time_d2l)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # as ours sets it for fp32
    with matmul_precision("high"):
        result = baseline_mod.measure_baseline(BenchSpec(**TINY), dataset=list(range(16)))
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32 is False
    # torch's defaults, as the book runs: fp32 matmuls, cuDNN's TF32 convolutions (so "tf32" on CUDA)
    assert seen == [("highest", True)] and result["precision"] == "fp32"  # TINY runs on the CPU


def test_forever_crosses_epochs_and_refuses_an_empty_one():
    assert list(itertools.islice(forever(lambda epoch: iter([epoch, epoch])), 5)) == [0, 0, 1, 1, 2]
    empty = forever(lambda epoch: iter([]))
    with pytest.raises(AlexNetError, match="fewer images than one batch"):
        next(empty)


@pytest.mark.parametrize("mode", [["--loader"], ["--model", "small"]])
def test_cli_fewer_images_than_one_batch(bench, gz_dir, mode):
    code, out, err = bench(*mode, "--data-dir", gz_dir, "--device", "cpu", "--batch-size", "1024", "--steps", "1",
                           "--warmup", "0")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "fewer" in err and "one batch" in err and "--batch-size" in err, err


def tiny_quick(data_dir, **extra):
    return apply_overrides(load_preset("quick"), {
        "data.data_dir": str(data_dir), "model.width": 8, "model.hidden": 32, "train.batch_size": 32,
        "train.eval_batch_size": 64, "train.epochs": 2, "model.init": "xavier", **extra})


def test_time_to_accuracy_reached(tmp_path, gz_dir):
    result = time_to_accuracy(tiny_quick(gz_dir), 0.3, tmp_path / "run")
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in history if r["test_acc"] >= 0.3)  # the bars are learnt within two epochs
    assert result["reached"] and result["epoch"] == first["epoch"]
    assert result["wall_s"] == first["wall_s"] and result["test_acc"] == first["test_acc"]
    assert result["epochs_run"] == 2 and result["best_acc"] == max(r["test_acc"] for r in history)


def test_time_to_accuracy_not_reached(tmp_path, gz_dir):
    cfg = tiny_quick(gz_dir, **{"train.epochs": 1, "optim.lr": 1e-7})  # cannot learn 10 classes to 0.9
    result = time_to_accuracy(cfg, 0.9, tmp_path / "run")
    assert not result["reached"] and result["epoch"] is None and result["wall_s"] is None
    assert 0 <= result["best_acc"] < 0.9 and result["epochs_run"] == 1


def test_cli_time_to_accuracy_json(bench, tmp_path, gz_dir):
    sets = [f"data.data_dir={gz_dir}", "model.width=8", "model.hidden=32", "train.batch_size=32",
            "train.eval_batch_size=64", "train.epochs=1"]
    code, out, err = bench("--time-to-accuracy", "0.99", "--out", tmp_path / "run", "--json",
                           *[a for s in sets for a in ("--set", s)])
    assert code == 0, err
    result = json.loads(out)  # stdout is the JSON alone, nothing the trainer printed
    assert result["epochs_run"] == 1 and result["preset"] == "quick" and result["target"] == 0.99
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["test_acc"] == result["best_acc"]
    assert result["reached"] == (result["best_acc"] >= 0.99)


def test_first_reaching_takes_the_first_epoch_at_or_above():
    history = [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.9}, {"epoch": 3, "test_acc": 0.95}]
    assert first_reaching(history, 0.9)["epoch"] == 2
    assert first_reaching(history, 0.91)["epoch"] == 3
    assert first_reaching(history, 0.96) is None


@pytest.mark.parametrize("largest", [0, 1, 5, 63, 64, 65, 100, 1000, 4096])
def test_batch_search_finds_the_boundary(largest):
    calls = []

    def fits(b):
        calls.append(b)
        return b <= largest
    assert largest_fitting(fits, start=64, limit=4096) == largest
    assert len(calls) <= 2 * 12 + 2  # doubling + bisection: logarithmic in the limit, never a linear scan


def test_cli_json(bench):
    code, out, err = bench("--model", "small", "--synthetic", "--device", "cpu", "--batch-size", "8",
                           "--steps", "1", "--warmup", "0", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"ours", "baseline", "ratio", "device", "torch", "config"}
    assert data["baseline"] is None and data["ratio"] is None
    assert data["ours"]["flops_per_image"] == SMALL_TRAIN_FLOPS_28
    assert data["config"]["batch_size"] == 8 and data["config"]["synthetic"] is True
    ours = data["ours"]  # the peak says what it is and where it came from; no datasheet on a CPU
    assert ours["peak_source"] == "measured now" and ours["peak_cache_file"].endswith("peaks.json")
    assert ours["precision"] in ("fp32", "bf16") and ours["peak_precision"] == ours["precision"]
    assert ours["datasheet"] is None and data["config"]["remeasure_peak"] is False


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "small", "--steps", "0"], "--steps must be >= 1"),
    (["--model", "small", "--warmup", "-1"], "--warmup must be >= 0"),
    (["--model", "small", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["--model", "small", "--precision", "fp8"], "--precision must be one of"),
    (["--model", "small", "--compile", "--warmup", "0"], "--compile needs --warmup >= 1"),
    (["--model", "d2l", "--input-size", "16"], "too small"),
    (["--max-batch", "--model", "small", "--device", "cpu"], "needs a CUDA device"),
    (["--time-to-accuracy", "1.5", "--set", "data.data_dir=/nonexistent"], "in (0, 1]"),
    (["--baseline", "--max-batch"], "--baseline goes with the throughput"),
    (["--time-to-accuracy", "0.9", "--preset", "nope"], "unknown preset 'nope'"),
    (["--time-to-accuracy", "0.9", "--batch-size", "256"], "--batch-size does not apply to --time-to-accuracy"),
    (["--loader", "--model", "small"], "--model does not apply to --loader"),
    (["--model", "small", "--set", "train.lr=1"], "--set train.lr: outside --time-to-accuracy, --set takes model"),
    (["--loader", "--set", "model.width=4"], "--set does not apply to --loader"),
    (["--loader", "--input-size", "0"], "--input-size must be >= 1"),
])
def test_cli_errors_are_one_line(bench, argv, message):
    code, out, err = bench(*argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("alexnet bench: error: ") and message in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cli_cuda_without_a_gpu(bench):
    code, _, err = bench("--model", "small", "--device", "cuda", "--synthetic")
    assert code == 2 and err.count("\n") == 1 and "no CUDA device" in err


def test_spec_rejects_what_the_cli_rejects():
    with pytest.raises(AlexNetError, match="unknown model"):
        BenchSpec(model="nope")
    assert BenchSpec(model="d2l").input_size == 224 and BenchSpec(model="small").input_size == 28


def test_loader_benchmark_reports_both_pipelines(bench):
    code, out, err = bench("--loader", "--synthetic", "--device", "cpu", "--batch-size", "16", "--input-size", "64",
                           "--steps", "3", "--warmup", "1", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["batch_size"] == 16 and r["input_size"] == 64
    for side in ("ours", "baseline"):
        assert math.isfinite(r[side]["images_per_sec"]) and r[side]["images_per_sec"] > 0
    assert r["ratio"] == pytest.approx(r["ours"]["images_per_sec"] / r["baseline"]["images_per_sec"])
    assert r["ours"]["augment"] == [{"op": "random_crop", "padding": 2}, {"op": "hflip"}]
    assert r["ours"]["augment"] == load_preset("d2l-fast").data.train_augment


def test_loader_benchmark_times_within_one_epoch(monkeypatch):
    # Without Fashion-MNIST's size as a floor, the synthetic set holds exactly the warm-up and timed batches:
    # neither side may start a second epoch (the d2l DataLoader would respawn its workers in the timed window).
    monkeypatch.setattr(loader_mod, "SYNTHETIC_IMAGES", 0)
    epochs = []

    def counting_forever(batches_of_epoch):
        def batches(epoch):
            epochs.append(epoch)
            return batches_of_epoch(epoch)
        return forever(batches)
    monkeypatch.setattr(loader_mod, "forever", counting_forever)
    r = loader_mod.measure_loader(batch_size=64, input_size=32, device="cpu", steps=16, warmup=1, synthetic=True)
    assert epochs == [0, 0] and r["steps"] == 16  # ours, then d2l: epoch 0 only, 17 batches of 64 each
