"""benchmarks/run_gpu.sh --smoke: every stage of the GPU proof at toy size on the CPU, so the script cannot rot
before the next GPU is lent. The numbers mean nothing; the files and their keys are what the real run writes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"tests": {"passed", "failed"}, "d2l_book": {"test_acc", "wall_s", "images_per_sec"},
        "d2l_fast": {"test_acc", "epochs", "wall_s"},
        "bench": {"images_per_sec", "mfu", "baseline_images_per_sec", "ratio"},
        "time_to_090": {"wall_s", "preset"},
        "folder": {"images_per_sec", "decode_images_per_sec", "step_images_per_sec"}}


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
    assert list(summary["stages"]) == ["tests", "d2l_book", "d2l_fast", "bench", "time_to_090", "folder", "max_batch"]
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
