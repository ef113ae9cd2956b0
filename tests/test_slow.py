"""Minutes-long checks on the real Fashion-MNIST (`make test-slow`): the main job meets its accuracy goal, and
every study runs at its `small` budget (what docs/experiments.md reports) with sane results. No timing asserts:
the times are reported in docs/, not tested."""

import json
import math

import pytest
import torch

from alexnet.experiments import list_studies, run_study

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quick_preset_reaches_its_goal(cli, fmnist_dir, tmp_path):
    out = tmp_path / "quick"
    code, stdout, err = cli("train", "--preset", "quick", "--out", out, "--data-dir", fmnist_dir,
                            "--device", "cpu", "--quiet")
    assert code == 0, err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert all(r["test_count"] == 10000 for r in records)
    assert records[-1]["test_acc"] >= 0.91  # the preset's goal (docs/results.md: 0.9159 with seed 0)
    for name in ("checkpoint.pt", "best.pt", "curves.png", "report.md", "config.yaml"):
        assert (out / name).stat().st_size > 0, name


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _rows(saved: dict) -> list[dict]:
    rows = saved["summary"]["rows"]
    assert rows and all(r["error"] is None for r in rows)
    return rows


@pytest.mark.parametrize("name", list_studies())
def test_study_at_small_budget(name, fmnist_dir, tmp_path):
    out = tmp_path / name
    result = run_study(name, out, "small", "cpu", str(fmnist_dir))
    for file in ("results.json", "results.md", "plot.png"):
        assert (out / file).stat().st_size > 0, file
    saved = json.loads((out / "results.json").read_text())
    assert saved["budget"] == "small" and saved["study"] == result["study"] == name
    summary = saved["summary"]
    if name == "relu-vs-tanh":
        # Each activation's fastest rate reaches 20% (best windowed errors 0.10 and 0.13 in docs/experiments.md); the
        # grids' highest rates may not (ReLU at 0.01 stays at chance), and the 1.2x gap between the two is too small
        # to assert on another CPU. The curve has a point per step (28 an epoch), not per epoch.
        fastest = {act: summary["arms"][arm] for act, arm in summary["fastest_arm"].items()}
        for arm in fastest.values():
            assert arm["steps_to_target"] is not None and arm["train_error"][-1] < arm["train_error"][0] - 0.2
            assert [step for step, _ in arm["curve"]] == list(range(20, 8 * 28 + 1))
        relu, tanh = fastest["relu"]["steps_to_target"], fastest["tanh"]["steps_to_target"]
        assert summary["steps_ratio_tanh_over_relu"] == round(tanh / relu, 2)
    elif name == "complexity":
        for model in summary["models"]:
            assert model["layer_params_sum"] == model["total_params"]
            assert sum(s["params"] for s in model["stages"]) == model["total_params"]
    elif name == "lenet":
        acc = {r["arm"]: r["test_acc"] for r in _rows(saved)}
        assert all(0.5 < a < 1 for a in acc.values())
        assert acc["relu"] > acc["lenet5"]  # 0.835 vs 0.683 in docs/experiments.md: far beyond seed noise
    elif name == "ablations":
        for row in _rows(saved):
            assert 0 < row["test_error"] < 0.5 and _finite(row["gap"]) and row["images_per_sec"] > 0
        err = {r["arm"]: r["test_error"] for r in _rows(saved)}
        assert err["mean-image-no-lrn"] > err["mean-image"] + 0.05  # 0.4395 vs 0.286 in docs/experiments.md
    elif name == "batch-size":
        rows = _rows(saved)
        assert [r["batch_size"] for r in rows] == [32, 64, 128, 256, 512]
        assert all(r["peak_memory_mib"] > 0 and r["images_per_sec"] > 0 for r in rows)
        assert all(0.1 < r["test_acc"] < 1 for r in rows)
    elif name == "simplify":
        rows = _rows(saved)
        assert all(r["images_per_sec"] > 0 and r["params"] > 0 for r in rows)
        assert all(0.5 < r["test_acc"] < 1 for r in rows if r["accuracy_meaningful"])
    else:
        pytest.fail(f"no checks for study {name!r}")
