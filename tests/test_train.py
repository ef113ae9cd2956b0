"""alexnet train: run folder, exact resume after SIGTERM / SIGKILL, atomic checkpoints, NaN guard, validation."""

import errno
import io
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from synthetic import write_fashion_mnist

from alexnet.base.errors import AlexNetError
from alexnet.config import apply_overrides, load_preset
from alexnet.run import checkpoint as ckpt_mod
from alexnet.training.run import train

TINY = ["--set", "model.width=8", "--set", "model.hidden=32", "--set", "train.eval_batch_size=64",
        "--batch-size", "32", "--epochs", "2", "--set", "model.init=xavier", "--set", "train.threads=2"]
RECORD_KEYS = {"epoch", "train_loss", "train_acc", "test_acc", "test_top5", "lr", "images_per_sec", "wall_s"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def run_cli(*args, env_extra=None, check=True):
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "alexnet", "train", "--preset", "quick", "--quiet", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def assert_bit_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_run_folder_has_every_file(tmp_path, data_dir):
    out = tmp_path / "run"
    cfg = apply_overrides(load_preset("quick"), {"data.data_dir": str(data_dir), "model.width": 8,
                                                  "model.hidden": 32, "train.batch_size": 32, "train.epochs": 2,
                                                  "model.init": "xavier"})
    history = train(cfg, out, quiet=True)
    for name in ("metrics.jsonl", "config.yaml", "checkpoint.pt", "best.pt", "curves.png", "report.md"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records == history
    assert all(set(r) >= RECORD_KEYS for r in records)
    assert records[-1]["test_count"] == 200 and records[-1]["test_acc"] > 0.5  # bars are easy to learn
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["model"] == {"name": "small", "width": 8, "hidden": 32, "dropout": 0.1, "init": "xavier"}
    assert resolved["train"]["batch_size"] == 32
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # no arbitrary unpickling
    assert {"model", "optimizer", "schedule", "scaler", "progress", "rng", "config", "classes", "stats"} <= set(state)
    assert {"python", "numpy", "torch", "cuda"} <= set(state["rng"])
    # 512 training images, a tenth held out for validation (stratified): 461 train, 14 full batches of 32
    assert state["progress"]["epoch"] == 2 and state["progress"]["global_step"] == 2 * (461 // 32)
    assert [r["val_count"] for r in records] == [51, 51] and all(0 <= r["val_acc"] <= 1 for r in records)
    runtime = resolved["runtime"]
    assert runtime["data_sizes"] == {"train": 461, "val": 51, "test": 200}
    assert runtime["data_sources"]["train"] == str(data_dir) and runtime["precision"] in ("fp32", "bf16")
    assert "![curves](curves.png)" in (out / "report.md").read_text()


@pytest.mark.timing
@pytest.mark.parametrize("fault,code,extra", [("step=5,signal=TERM", 143, []),
                                              ("step=7,signal=KILL", -9, ["--set", "train.checkpoint_every_steps=3"]),
                                              ("step=8,signal=INT", 130, [])])
def test_interrupted_run_resumes_bit_identical(tmp_path, data_dir, fault, code, extra):
    common = ["--data-dir", data_dir, *TINY, *extra]
    run_cli("--out", tmp_path / "straight", *common)
    broken = run_cli("--out", tmp_path / "broken", *common, env_extra={"ALEXNET_FAULT": fault}, check=False)
    assert broken.returncode == code, broken.stderr
    state = torch.load(tmp_path / "broken" / "checkpoint.pt", weights_only=True)
    if code == -9:  # killed without warning: the last periodic checkpoint (step 6) survives
        assert state["progress"]["global_step"] == 6
    else:           # the signal handler finished the step and checkpointed it
        assert state["progress"]["global_step"] == int(fault.split(",")[0].split("=")[1])
        assert "continue with --resume" in broken.stderr and broken.stderr.count("\n") == 1
    run_cli("--out", tmp_path / "broken", *common, "--resume")
    assert_bit_identical(weights(tmp_path / "straight"), weights(tmp_path / "broken"))
    straight = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    resumed = (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()
    timings = ("images_per_sec", "wall_s", "input_wait_s", "step_s")
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k not in timings}
    assert list(map(strip, straight)) == list(map(strip, resumed))


class FullDisk(io.FileIO):
    """A file on a disk that fills up after 100 bytes."""

    def write(self, data):
        super().write(bytes(data)[:100])
        raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_during_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt_mod.atomic_save({"model": {"w": torch.ones(3)}}, path)
    monkeypatch.setattr(ckpt_mod, "open", lambda file, mode: FullDisk(file, mode), raising=False)
    with pytest.raises(AlexNetError) as info:
        ckpt_mod.atomic_save({"model": {"w": torch.zeros(3)}}, path)
    assert str(info.value) == f"cannot write {path}: No space left on device"
    monkeypatch.undo()
    assert torch.equal(ckpt_mod.load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ckpt_mod.atomic_save({"model": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(AlexNetError, match="not a complete PyTorch zip archive") as info:
        ckpt_mod.load_checkpoint(path)
    assert "\n" not in str(info.value)


@pytest.mark.timing
def test_nan_loss_stops_within_a_step_and_keeps_the_checkpoint(tmp_path, data_dir):
    out = tmp_path / "run"
    common = ["--out", out, "--data-dir", data_dir, *TINY]
    run_cli(*common, "--epochs", "1")
    before = (out / "checkpoint.pt").read_bytes()
    proc = run_cli(*common, "--epochs", "2", "--resume", "--lr", "1e12",
                   check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "not finite at step" in proc.stderr and "--lr" in proc.stderr
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["--lr", "-1"], "optim.lr must be > 0"),
    (["--batch-size", "0"], "train.batch_size must be >= 1"),
    (["--epochs", "0"], "train.epochs must be >= 1"),
    (["--set", "optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
    (["--set", "optim.schedule=sometimes"], "optim.schedule must be one of"),
    (["--set", "model.dropout=2"], "dropout must be in [0, 1)"),
    (["--set", "model.depth=3"], "has no option depth"),
    (["--set", "data.train_augment=[{op: twirl}]"], "twirl"),
    (["--set", "train.precision=fp8"], "train.precision must be one of"),
    (["--set", "train.batch_size=lots"], "train.batch_size must be int"),
    (["--set", "data.eval_augment=[{op: hflip}]"], "data.eval_augment must be deterministic"),
    (["--device", "cuda:x"], "train.device must be auto, cpu, cuda or cuda:N"),
])
def test_config_errors_before_any_work(tmp_path, cli, args, message):
    out = tmp_path / "never"
    code, _, err = cli("train", "--preset", "quick", "--out", out, *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_unknown_preset(tmp_path, cli):
    code, _, err = cli("train", "--preset", "imagenet21k", "--out", tmp_path / "x")
    assert code == 2 and "unknown preset 'imagenet21k'; choose from cifar10, d2l, d2l-fast, fast, paper, quick" in err


def test_existing_run_needs_resume_and_same_config(tmp_path, data_dir, cli):
    out = tmp_path / "run"
    run_cli("--out", out, "--data-dir", data_dir, *TINY, "--epochs", "1")
    code, _, err = cli("train", "--preset", "quick", "--out", out, "--data-dir", data_dir)
    assert code == 2 and "already holds a run" in err
    code, _, err = cli("train", "--preset", "quick", "--out", out, "--data-dir", data_dir, *TINY,
                       "--set", "optim.momentum=0.5", "--resume")
    assert code == 2 and "cannot resume: optim.momentum is 0.5 but the run was started with 0.9" in err


def test_fewer_images_than_one_batch_is_an_error_not_an_empty_run(tmp_path, data_dir, cli):
    code, _, err = cli("train", "--preset", "quick", "--out", tmp_path / "run", "--data-dir", data_dir,
                       "--batch-size", "1024")
    assert code == 2 and err.count("\n") == 1
    assert "461 training images are fewer than one batch of 1024" in err  # 51 of 512 held out for validation
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.timing
def test_resume_rewrites_metrics_from_the_checkpoint(tmp_path, data_dir):
    # A kill after metrics.jsonl got an epoch's record but before checkpoint.pt (the commit point) did: the
    # resumed run repeats that epoch, and the record appears once.
    out = tmp_path / "run"
    run_cli("--out", out, "--data-dir", data_dir, *TINY, "--epochs", "1")
    metrics = out / "metrics.jsonl"
    first = metrics.read_text()
    metrics.write_text(first + first.replace('"epoch": 1', '"epoch": 2'))
    run_cli("--out", out, "--data-dir", data_dir, *TINY, "--resume")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and metrics.read_text().startswith(first)
    assert records == torch.load(out / "checkpoint.pt", weights_only=True)["progress"]["history"]


@pytest.mark.parametrize("text,message", [("", "a config is a mapping"), ("model: [1, 2]", "section model must be"),
                                          (": : :\n  - x", "not a readable YAML file")])
def test_a_broken_run_config_is_a_one_line_error(tmp_path, cli, text, message):
    (tmp_path / "config.yaml").write_text(text)
    code, _, err = cli("train", "--out", tmp_path, "--resume")
    assert code == 2 and err.count("\n") == 1 and message in err and str(tmp_path / "config.yaml") in err, err


def test_another_model_keeps_only_the_options_it_has():
    cfg = apply_overrides(load_preset("quick"), {"model.name": "d2l", "model.dropout": 0.3})
    assert (cfg.model.name, cfg.model.options) == ("d2l", {"dropout": 0.3, "init": "xavier"})


def test_resuming_a_finished_run_touches_nothing_and_the_record_is_absolute(data_dir, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(data_dir.parent)
    args = ["train", "--preset", "quick", "--out", tmp_path / "run", "--data-dir", data_dir.name, "--quiet", *TINY,
            "--epochs", "1"]
    assert cli(*args)[0] == 0
    record = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert record["data"]["data_dir"] == str(data_dir)  # given relative, recorded absolute
    files = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    code, _, err = cli(*args, "--resume", "--lr", "0.5")
    assert code == 0 and err == f"alexnet train: {tmp_path / 'run'} already finished its 1 epoch; raise --epochs " \
                                 f"to train it longer\n"
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == files
    monkeypatch.chdir(tmp_path)  # eval finds the data from elsewhere; a moved data folder is named, with the fix
    assert cli("eval", "--checkpoint", tmp_path / "run" / "best.pt", "--json")[0] == 0
    data_dir.rename(data_dir.parent / "moved")
    try:
        code, _, err = cli("eval", "--checkpoint", tmp_path / "run" / "best.pt")
        assert code == 2 and err.strip().endswith(f"the run's data folder {data_dir} is not there; pass --data-dir")
    finally:
        (data_dir.parent / "moved").rename(data_dir)


def test_a_net_that_does_not_learn_is_said_once(tmp_path, data_dir):
    """lr 1e-7 cannot move the net off chance: one warning (CLI: one `alexnet train: warning:` line), not one per
    epoch, and the run still finishes; batches of 4 make the first epoch long enough to say it (a run of fewer
    than 50 steps is not warned: it may not have started)."""
    proc = run_cli("--out", tmp_path / "run", "--data-dir", data_dir, *TINY, "--lr", "1e-7", "--set",
                   "train.estimate_steps=0", "--batch-size", "4")
    lines = [line for line in proc.stderr.splitlines() if "not learning" in line]
    assert len(lines) == 1 and lines[0].startswith("alexnet train: warning: epoch 1: training accuracy 0.")
    assert "is chance level (1/10)" in lines[0] and "Warning" not in proc.stderr
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    short = run_cli("--out", tmp_path / "short", "--data-dir", data_dir, *TINY, "--lr", "1e-7", "--set",
                    "train.estimate_steps=0")  # batches of 32: 14 steps an epoch
    assert "not learning" not in short.stderr
