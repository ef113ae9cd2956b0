"""benchmarks/run_gpu.sh --smoke: every stage of the GPU proof at toy size on the CPU, so the script cannot rot
before the next GPU is lent. The numbers mean nothing; the files and their keys are what the real run writes."""

import importlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

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
    (tmp_path / "OUT").mkdir()  # --archive's folder must exist
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_gpu.sh"), "--smoke", "--out", str(tmp_path / "gpu"),
                           "--data-dir", str(tmp_path / "empty"), "--stages", "d2l_book,book_code", "--run", "run1",
                           "--archive", str(tmp_path / "OUT" / "run1.tgz")],
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHON": sys.executable})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "run_gpu: failed: d2l_book" in proc.stderr
    out = tmp_path / "gpu" / "run1"  # --run: a folder of its own
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_stages"] == ["d2l_book"] and "error" in summary["stages"]["d2l_book"]
    assert "skipped" in summary["stages"]["book_code"]  # the next stage ran (d2l is not installed here)
    assert "exit status 1" in (out / "tables.md").read_text()
    # a failed run is packed all the same: its summary, tables, stage files and log, as written
    with tarfile.open(tmp_path / "OUT" / "run1.tgz") as tar:
        names = set(tar.getnames())
        assert {"summary.json", "tables.md", "d2l_book.json", "book_code.json", "log.txt"} <= names
        assert tar.extractfile("summary.json").read() == (out / "summary.json").read_bytes()
    assert "[d2l_book]" in (out / "log.txt").read_text() and "[book_code]" in (out / "log.txt").read_text()
    unknown = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_gpu.py"), "--stages", "bogus"],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown stage bogus" in unknown.stderr


def test_the_archive_holds_the_text_results_and_no_data(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_gpu
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = tmp_path / "run2"
    files = {"summary.json": b"{}", "profile-fast.txt": b"x", "runs/d2l/metrics.jsonl": b"{}\n",
             "runs/d2l/checkpoint.pt": b"weights", "folder/source/train/a.jpg": b"jpeg",
             "fmnist-1/usr/train-images-idx3-ubyte.gz": b"idx", "huge.json": b"0" * (run_gpu.ARCHIVED_MAX_BYTES + 1),
             "runs/d2l/config.yaml": b"runtime: {}\n", "fmnist-1/usr/share/doc/baselines.json": b"{}",
             "folder/prepared/manifest.json": b"{}", "folder.json": b"{}", "fmnist-notes.txt": b"x"}
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    assert run_gpu.archive(out, tmp_path / "OUT" / "run2.tgz") == 6
    with tarfile.open(tmp_path / "OUT" / "run2.tgz") as tar:  # the folder stage's result, not its folder's data
        assert sorted(tar.getnames()) == ["fmnist-notes.txt", "folder.json", "profile-fast.txt",
                                          "runs/d2l/config.yaml", "runs/d2l/metrics.jsonl", "summary.json"]


def test_bad_run_and_archive_arguments_are_refused_before_any_stage(tmp_path, capsys):
    """--run takes one plain folder name, never a path; --archive a file whose folder exists and takes files.
    Anything else is a one-line error, exit status 2, before a stage runs or the results folder is made (found at
    the end, after every stage, it cost the GPU's time)."""
    run_gpu = benchmark_module("run_gpu")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    if run_gpu.archive_problem(ro / "run.tgz") is None:  # root writes where chmod forbids: not in /sys
        ro = Path("/sys")
    (tmp_path / "OUT" / "run.tgz").mkdir(parents=True)
    out = tmp_path / "gpu"
    bad = {("--run", ".."): "--run '..': not one plain folder name",
           ("--run", "."): "--run '.': not one plain folder name",
           ("--run", ""): "--run '': not one plain folder name",
           ("--run", "a/b"): "--run 'a/b': not one plain folder name",
           ("--run", "../up"): "--run '../up': not one plain folder name",
           ("--run", str(tmp_path / "abs")): f"--run '{tmp_path / 'abs'}': not one plain folder name",
           ("--run", "run 1"): "--run 'run 1': not one plain folder name",
           ("--archive", str(tmp_path / "no" / "run.tgz")): f"its folder {tmp_path / 'no'} does not exist",
           ("--archive", str(ro / "run.tgz")): f"its folder {ro} is not writable (",
           ("--archive", str(tmp_path / "OUT" / "run.tgz")): "run.tgz: is a folder, not a file"}
    for argv, message in bad.items():
        with pytest.raises(SystemExit) as exit_:
            run_gpu.main(["--smoke", "--out", str(out), "--stages", "book_code", *argv])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err, (argv, err)
        assert err.splitlines()[-1].startswith("benchmarks/run_gpu.sh: error: --")  # argparse's one line
    assert not out.exists() and not (tmp_path / "abs").exists()  # nothing ran, nothing was made
    assert all(run_gpu.plain_folder_name(name) for name in ("run1", "run-2", "r_3.a", "...", "A9"))


def test_the_archive_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """The .tgz is written beside itself and renamed over the old one: an error while packing leaves the previous
    archive as it was and no partial file."""
    import tarfile

    run_gpu = benchmark_module("run_gpu")
    out, target = tmp_path / "run1", tmp_path / "OUT" / "run1.tgz"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    assert run_gpu.archive(out, target) == 1
    before = target.read_bytes()
    (out / "log.txt").write_text("[tests] done\n")

    def broken(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "add", broken)
    with pytest.raises(OSError, match="No space left"):
        run_gpu.archive(out, target)
    assert target.read_bytes() == before and os.listdir(target.parent) == ["run1.tgz"]
    monkeypatch.undo()
    assert run_gpu.archive(out, target) == 2 and os.listdir(target.parent) == ["run1.tgz"]
    with tarfile.open(target) as tar:
        assert sorted(tar.getnames()) == ["log.txt", "summary.json"]


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


def benchmark_module(name: str):
    """A module of benchmarks/ (not a package: run_gpu.py runs as a script, its stage modules beside it)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_the_d2l_fast_candidates_are_chosen_by_validation(tmp_path):
    """Stage d2l_fast_candidates at toy size after d2l_fast: every candidate trained with its overrides (read back
    from the run's config.yaml), the preset's own run beside them, the best by validation accuracy; one that would
    not fit the budget is skipped and said, which fails nothing."""
    from synthetic import write_fashion_mnist

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_gpu
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    data = write_fashion_mnist(tmp_path / "fmnist", n_train=96, n_test=64)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_gpu.py"), "--smoke", "--out",
                           str(tmp_path / "gpu"), "--data-dir", str(data), "--stages", "d2l_fast,d2l_fast_candidates"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu" / "summary.json").read_text())
    found = summary["stages"]["d2l_fast_candidates"]
    rows = found["candidates"]
    assert set(rows) == {*run_gpu.D2L_FAST_CANDIDATES, "preset"} and summary["failed_stages"] == []
    assert rows["preset"] == {k: v for k, v in summary["stages"]["d2l_fast"].items() if k != "goals"}
    assert found["best_by_val"] == max(rows, key=lambda k: rows[k]["val_acc"])
    config = yaml.safe_load((Path(rows["erasing_lr_0.04"]["run"]) / "config.yaml").read_text())
    assert config["optim"]["lr"] == 0.04 and config["data"]["train_augment"][-1]["op"] == "random_erasing"
    assert "best by validation" in (tmp_path / "gpu" / "tables.md").read_text()

    runner = run_gpu.Runner(tmp_path / "again", str(data), smoke=True, budget=1.0)  # no time for a second run
    runner.train = lambda name, preset, *overrides: {"val_acc": 0.5, "test_acc": 0.5, "wall_s": 60.0, "run": name}
    found = run_gpu.stage_d2l_fast_candidates(runner)  # no d2l_fast in this run: no preset row, whatever lies in out
    skipped = found["candidates"]
    assert "preset" not in skipped and found["best_by_val"] == "erasing"
    assert "val_acc" in skipped["erasing"] and "budget" in skipped["erasing_lr_0.04"]["skipped"]
    assert run_gpu.failed({"smoke": True, "stages": {"d2l_fast_candidates": {"candidates": skipped}}}) == []
    runner = run_gpu.Runner(tmp_path / "tie", str(data), smoke=True, budget=600.0)
    runner.train = lambda name, preset, *overrides: {"val_acc": 0.5, "test_acc": 0.6, "wall_s": 1.0, "run": name}
    runner.results["d2l_fast"] = {"val_acc": 0.5, "test_acc": 0.4, "wall_s": 1.0, "goals": []}
    assert run_gpu.stage_d2l_fast_candidates(runner)["best_by_val"] == "preset"  # a tie keeps the preset


def test_the_d2l_book_candidates_are_the_fastest_that_keep_the_books_accuracy(tmp_path):
    """Stage d2l_book_candidates (runs faked: what it passes and how it chooses): each candidate's overrides on the
    d2l preset; the fastest run at test acc >= 0.88 wins, a faster one below it does not, the preset on a tie."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_gpu
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    calls = []

    def train(name, preset, *overrides, acc=0.885, wall=20.0):
        calls.append((name, preset, overrides))
        return {"val_acc": None, "test_acc": acc, "wall_s": wall, "run": name}

    runner = run_gpu.Runner(tmp_path / "a", None, smoke=False, budget=600.0)
    runner.train = train
    runner.results["d2l_book"] = {"test_acc": 0.89, "wall_s": 30.0, "goals": []}
    found = run_gpu.stage_d2l_book_candidates(runner)
    assert calls == [("d2l_book_fused_pool", "d2l", ("--set", "train.fused_pool=true")),
                     ("d2l_book_bias_after_pool", "d2l", ("--set", "train.bias_after_pool=true"))]
    assert found["fastest"] == "fused_pool" and found["candidates"]["preset"]["wall_s"] == 30.0  # the first of a tie
    walls = iter([25.0, 22.0])
    runner.train = lambda *a: train(*a, wall=next(walls))
    assert run_gpu.stage_d2l_book_candidates(runner)["fastest"] == "bias_after_pool"
    runner.train = lambda *a: train(*a, acc=0.87, wall=10.0)  # faster, but below the book's accuracy
    assert run_gpu.stage_d2l_book_candidates(runner)["fastest"] == "preset"
    runner.train = lambda *a: train(*a, wall=30.0)
    assert run_gpu.stage_d2l_book_candidates(runner)["fastest"] == "preset"  # a tie keeps the preset
    assert "fastest at >= 0.88: preset" in run_gpu._cells("d2l_book_candidates",
                                                          run_gpu.stage_d2l_book_candidates(runner))


@pytest.mark.distributed
@pytest.mark.skipif(sys.platform != "linux", reason="a bash script for the Linux GPU machines")
def test_the_ddp_stage_records_scaling_under_torchrun(tmp_path):
    """Stage ddp at toy size: torchrun with gloo, 1 and 2 processes on the CPU. What it records is read back from
    each run's own files: the ranks, the steady-state rate (epochs after the first) and the efficiency from the
    rates as written."""
    from synthetic import write_fashion_mnist

    data = write_fashion_mnist(tmp_path / "fmnist", n_train=64, n_test=32)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_gpu.sh"), "--smoke", "--out", str(tmp_path / "gpu"),
                           "--data-dir", str(data), "--stages", "ddp"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu" / "summary.json").read_text())
    assert list(summary["stages"]) == ["ddp"] and summary["failed_stages"] == []
    ddp = summary["stages"]["ddp"]
    assert (ddp["backend"], ddp["device"], ddp["counts"]) == ("gloo", "cpu", [1, 2]) and "smoke" in ddp["note"]
    runs = {run["k"]: run for run in ddp["runs"]}
    assert sorted(runs) == [1, 2]
    for k, run in runs.items():
        folder = Path(run["run"])
        assert run["world_size"] == k == json.loads((folder / "ranks.json").read_text())["world_size"]
        assert run["global_batch"] == 8 * k and f"--nproc-per-node {k} " in run["command"]
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["images_per_sec"] for r in records] == run["epoch_images_per_sec"] and len(records) == 2
        assert run["steady_epochs"] == 1 and run["images_per_sec"] == pytest.approx(records[1]["images_per_sec"])
        assert run["images_per_sec"] > 0 and run["images_per_sec_per_gpu"] == pytest.approx(run["images_per_sec"] / k)
        assert run["efficiency"] == pytest.approx(run["images_per_sec"] / (k * runs[1]["images_per_sec"]))
    assert runs[1]["efficiency"] == 1.0
    table = next(line for line in (tmp_path / "gpu" / "tables.md").read_text().splitlines()
                 if line.startswith("| ddp |"))
    assert "k = 1: " in table and "k = 2: " in table and "efficiency" in table


def test_the_ddp_stage_uses_every_visible_gpu_and_says_when_there_is_one(monkeypatch):
    """Without a GPU: N GPUs give k = 1, 2, 4, ... and N; one GPU gives k = 1 only, said in the result and the
    table; an error in any k fails the stage; the efficiency is rate_k / (k x rate_1)."""
    import torch

    ddp, run_gpu = benchmark_module("run_gpu_ddp"), benchmark_module("run_gpu")
    assert [ddp.gpu_counts(n) for n in (1, 2, 3, 6, 8, 12)] == [[1], [1, 2], [1, 2, 3], [1, 2, 4, 6], [1, 2, 4, 8],
                                                                [1, 2, 4, 8, 12]]
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        ddp.plan(False, 0)
    runner = type("Runner", (), {"smoke": False, "left": lambda self: 500.0})()
    rates = {1: 30_000.0, 2: 57_000.0, 4: 108_000.0, 6: 150_000.0}
    monkeypatch.setattr(ddp, "run_k", lambda r, k, p, timeout: {"k": k, "images_per_sec": rates[k]})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 6)
    result = ddp.stage_ddp(runner)
    assert (result["visible_gpus"], result["counts"], result["backend"], result["note"]) == (6, [1, 2, 4, 6], "nccl",
                                                                                           None)
    assert [run["efficiency"] for run in result["runs"]] == pytest.approx([1.0, 0.95, 0.9, 150 / 180])
    assert [run["images_per_sec_per_gpu"] for run in result["runs"]] == [30_000, 28_500, 27_000, 25_000]
    assert "k = 6: 150,000 img/s (25,000 per GPU, efficiency 83%)" in ddp.ddp_cells(result)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    one = ddp.stage_ddp(runner)
    assert one["counts"] == [1] and [run["k"] for run in one["runs"]] == [1]
    assert "only one GPU was visible" in one["note"] and "no scaling measured" in one["note"]
    assert "only one GPU was visible" in ddp.ddp_cells(one) and run_gpu.failed({"smoke": False,
                                                                                "stages": {"ddp": one}}) == []
    broken = {**result, "runs": [*result["runs"][:1], {"k": 2, "error": "k = 2: torchrun exited 1"}]}
    assert run_gpu.failed({"smoke": False, "stages": {"ddp": broken}}) == ["ddp"]
    assert "k = 2: error" in ddp.ddp_cells(broken)


def test_the_steady_rate_leaves_the_first_epoch_out():
    ddp = benchmark_module("run_gpu_ddp")
    records = [{"step": 10, "images_per_sec": 100.0}, {"step": 20, "images_per_sec": 400.0},
               {"step": 30, "images_per_sec": 200.0}]
    rate, epochs = ddp.steady_rate(records, batch=8)  # 80 images in 0.2 s, then 80 in 0.4 s
    assert epochs == 2 and rate == pytest.approx(160 / 0.6)
    with pytest.raises(RuntimeError, match="no steady state"):
        ddp.steady_rate(records[:1], batch=8)


def test_the_paper_profile_stage_writes_the_paper_nets_table(tmp_path):
    """Stage paper_profile (on request), smoke: the paper net's profile at toy size on the CPU, where the Triton
    candidate does not apply and is not run; its table row names each profile's step time."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_gpu.py"), "--smoke", "--out",
                           str(tmp_path / "gpu"), "--stages", "paper_profile"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu" / "summary.json").read_text())
    found = summary["stages"]["paper_profile"]
    assert list(found) == ["default"] and summary["failed_stages"] == []
    assert found["default"]["step"]["wall_ms"] > 0
    assert (tmp_path / "gpu" / "profile-paper-default.txt").read_text().startswith("profile: paper @67, batch 2")
    assert f"| paper_profile | default: step {found['default']['step']['wall_ms']:.2f} ms |" in \
        (tmp_path / "gpu" / "tables.md").read_text()
