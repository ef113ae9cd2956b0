"""alexnet bench: the harness's figures are consistent (FLOPs equal the flop counter's, MFU = achieved / peak),
the d2l baseline reads torchvision's layout, time to accuracy picks the first epoch at the target, the batch
search finds the boundary, and bad input is one line with exit 2. No figure here is a speed: speeds are measured
by `benchmarks/run_cpu.sh`, never asserted."""

import gzip
import itertools
import json
import math
import os

import pytest
import torch

from alexnet.analysis.summary import training_flops
from alexnet.bench import BenchSpec, first_reaching, largest_fitting, peak_flops, run_bench, time_to_accuracy
from alexnet.bench import baseline as baseline_mod
from alexnet.bench import loader as loader_mod
from alexnet.bench import throughput
from alexnet.bench.baseline import d2l_dataset, torchvision_root
from alexnet.bench.throughput import flops_per_image, forever
from alexnet.runtime.settings import matmul_precision
from alexnet.config import apply_overrides, load_preset
from alexnet.base.errors import AlexNetError
from alexnet.models import create_model
from synthetic import IDX_FILES, write_fashion_mnist

D2L_TRAIN_FLOPS_224 = 5_561_132_544   # torch.utils.flop_counter, forward + backward, one 1x224x224 image
SMALL_TRAIN_FLOPS_28 = 111_264_768    # the same for `small` (width 32, hidden 256) at 1x28x28
TINY = dict(model="small", device="cpu", batch_size=16, steps=2, warmup=1)
FIGURES = ("train_images_per_sec", "infer_images_per_sec", "step_ms", "flops_per_image", "achieved_flops",
           "peak_flops", "mfu", "peak_memory_bytes")


@pytest.fixture(autouse=True)
def _small_peak_matmul(monkeypatch):
    # The peak's largest matmul (2048^3 on a CPU) is a benchmark's concern; 512^3 checks the same code faster.
    from alexnet.bench import throughput
    monkeypatch.setattr(throughput, "PEAK_MATMUL_SIZE", {"cpu": 512, "cuda": 512})
    monkeypatch.setattr(throughput, "_PEAKS", {})


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
    assert r["achieved_flops"] == pytest.approx(r["flops_per_image"] * r["train_images_per_sec"])
    assert r["mfu"] == pytest.approx(r["achieved_flops"] / r["peak_flops"], rel=1e-12)


def test_ours_and_baseline_on_a_tiny_model(gz_dir):
    spec = BenchSpec(**TINY, synthetic=True, synthetic_images=64)
    # The baseline over tests/synthetic.py's IDX files, decompressed into torchvision's FashionMNIST/raw layout.
    root = torchvision_root(gz_dir)
    for stem in IDX_FILES["train"] + IDX_FILES["test"]:
        assert (root / "FashionMNIST" / "raw" / stem).read_bytes() == gzip.open(gz_dir / f"{stem}.gz").read()
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


def test_d2l_flops_per_training_image():
    assert flops_per_image(BenchSpec(model="d2l", device="cpu")) == D2L_TRAIN_FLOPS_224


def test_peak_flops_is_the_best_matmul_size():
    peak = peak_flops(torch.device("cpu"), "fp32")
    assert peak["peak_flops"] > 0 and math.isfinite(peak["peak_flops"])
    assert peak["matmul_size"] in (256, 512)
    assert peak_flops(torch.device("cpu"), "fp32") is peak  # measured once per process, device and dtype


def test_peak_flops_runs_at_highest_matmul_precision(monkeypatch):
    seen = []

    def measure_peak(device, precision, repeats):
        seen.append(torch.get_float32_matmul_precision())
        return {"peak_flops": 1.0, "matmul_size": 256}
    monkeypatch.setattr(throughput, "_measure_peak", measure_peak)
    with matmul_precision("high"):  # what the trainer sets, process-wide, on CUDA
        peak = peak_flops(torch.device("cpu"), "fp32")
        assert torch.get_float32_matmul_precision() == "high"  # restored
    assert seen == ["highest"] and peak["float32_matmul_precision"] == "highest"
    tf32 = peak_flops(torch.device("cpu"), "fp32", float32_matmul_precision="high")
    assert seen == ["highest", "high"] and tf32["float32_matmul_precision"] == "high"  # not the cached "highest"


def test_baseline_runs_at_highest_matmul_precision(monkeypatch):
    seen = []

    def time_d2l(spec, dataset, workers, device):
        seen.append(torch.get_float32_matmul_precision())
        return 1.0, 1.0, 1, "fake"
    monkeypatch.setattr(baseline_mod, "_time_d2l", time_d2l)
    with matmul_precision("high"):
        baseline_mod.measure_baseline(BenchSpec(**TINY), dataset=list(range(16)))
        assert torch.get_float32_matmul_precision() == "high"
    assert seen == ["highest"]


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
    (["--model", "small", "--set", "model.width=4"], "--set does not apply to the throughput measurement"),
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
