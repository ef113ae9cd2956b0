"""benchmarks/run_gpu.sh --smoke: every stage of the GPU proof at toy size on the CPU, so the script cannot rot
before the next GPU is lent. The numbers mean nothing; the files and their keys are what the real run writes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"tests": {"passed", "failed", "exit_status"}, "profile": {"plain", "fast", "goals"},
        "d2l_book": {"test_acc", "wall_s", "images_per_sec", "goals"}, "d2l_fast": {"test_acc", "epochs", "wall_s"},
        "bench": {"images_per_sec", "mfu", "baseline_images_per_sec", "ratio", "variants"},
        "time_to_090": {"wall_s", "preset", "goals"},
        "folder": {"images_per_sec", "decode_images_per_sec", "step_images_per_sec"}, "book_code": set()}


@pytest.mark.skipif(sys.platform != "linux", reason="a bash script for the Linux GPU machines")
def test_the_smoke_run_writes_every_stage(tmp_path):
    from synthetic import write_fashion_mnist

    data = write_fashion_mnist(tmp_path / "fmnist", n_train=512, n_test=256)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_gpu.sh"), "--smoke", "--out", str(tmp_path / "gpu"),
                           "--data-dir", str(data)], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "gpu"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"device", "torch", "smoke", "stages"} and summary["smoke"] is True
    assert list(summary["stages"]) == ["tests", "profile", "bench", "d2l_book", "time_to_090", "d2l_fast", "folder",
                                       "max_batch", "book_code"]
    assert summary["exit_status"] == 0 and summary["failed_stages"] == []
    for stage, keys in KEYS.items():
        result = summary["stages"][stage]
        assert "error" not in result, (stage, result.get("error"))
        assert keys <= set(result), (stage, sorted(result))
        assert json.loads((out / f"{stage}.json").read_text()) == result
    # no CUDA here: the largest-batch search says so, per model, and the script went on
    assert "needs a CUDA device" in summary["stages"]["max_batch"]["d2l"]["error"]
    assert summary["stages"]["tests"]["failed"] == 0
    tables = (out / "tables.md").read_text()
    assert "SMOKE RUN" in tables and all(f"| {stage} |" in tables for stage in summary["stages"])
    assert "| d2l_book | test acc after the book's 10 epochs |" in tables  # each goal, met or missed
    # the fast paths are their own rows; fp32 is IEEE fp32, its peak fp32's
    assert summary["stages"]["bench"]["variants"]["fp32"]["peak_precision"] == "fp32"
    assert (out / "profile-fast.txt").read_text().startswith("profile: d2l @80, batch 4")


@pytest.mark.skipif(sys.platform != "linux", reason="a bash script for the Linux GPU machines")
def test_a_failing_stage_makes_the_run_exit_non_zero(tmp_path):
    """No Fashion-MNIST where --data-dir points: the stage errors, the next one still runs, and the script fails."""
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_gpu.sh"), "--smoke", "--out", str(tmp_path / "gpu"),
                           "--data-dir", str(tmp_path / "empty"), "--stages", "d2l_book,book_code"],
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHON": sys.executable})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "run_gpu: failed: d2l_book" in proc.stderr
    summary = json.loads((tmp_path / "gpu" / "summary.json").read_text())
    assert summary["failed_stages"] == ["d2l_book"] and "error" in summary["stages"]["d2l_book"]
    assert "skipped" in summary["stages"]["book_code"]  # the next stage ran (d2l is not installed here)
    assert "exit status 1" in (tmp_path / "gpu" / "tables.md").read_text()
    unknown = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_gpu.py"), "--stages", "bogus"],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown stage bogus" in unknown.stderr


def test_an_error_anywhere_in_a_stage_fails_the_run():
    """A bench variant's or a study's error, however deep, fails its stage; a smoke run's "needs a CUDA device"
    (the CPU saying what it cannot do) does not."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_gpu
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    stages = {"bench": {"images_per_sec": 1.0, "variants": {"tf32": {"error": "timed out"}}},
              "studies": {"lenet": {"rows": {"relu": {"error": "diverged"}}}},
              "max_batch": {"goals": [], "d2l": {"error": "--max-batch needs a CUDA device (--device cuda)"}},
              "tests": {"passed": 3, "failed": 0}}
    assert run_gpu.failed({"smoke": False, "stages": stages}) == ["bench", "studies", "max_batch"]
    assert run_gpu.failed({"smoke": True, "stages": stages}) == ["bench", "studies"]
