"""What a run says and records while it trains (alexnet.training.run, alexnet.training.monitor): the start-up
banner with an estimate, progress off a terminal, steps.jsonl, the report after every epoch, the live plot of a
notebook, TensorBoard; and that the timed warm-up behind the estimate changes nothing."""

import json
import os
import subprocess
import sys

import pytest
import torch
from matplotlib.figure import Figure
from synthetic import write_fashion_mnist
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from alexnet.base.errors import AlexNetError
from alexnet.config import apply_overrides, load_preset
from alexnet.training.run import train

TINY = {"model.width": 8, "model.hidden": 32, "train.batch_size": 32, "train.threads": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def config(data_dir, **overrides):
    return apply_overrides(load_preset("quick"), {**TINY, "data.data_dir": str(data_dir), **overrides})


def test_banner_names_device_precision_data_and_an_estimate(tmp_path, data_dir, capsys):
    train(config(data_dir, **{"train.epochs": 1}), tmp_path / "run")
    out = capsys.readouterr().out
    banner = out.split("epoch 1/1")[0]
    assert f"alexnet train: quick -> {tmp_path / 'run'}" in banner
    assert "device     cpu: " in banner and f"torch {torch.__version__}" in banner
    assert "precision  " in banner and ("auto: the CPU has" in banner)  # the choice and why
    assert "train 461 | val 51 | test 200" in banner and "51 images held out of" in banner
    assert "14 steps per epoch, 1 epoch\n" in banner
    assert "estimate   " in banner and "s per step (3 timed)" in banner and "for the run" in banner


def test_no_validation_split_is_a_warning_even_when_quiet(tmp_path, data_dir, capsys):
    train(config(data_dir, **{"train.epochs": 1, "data.val_size": 0, "optim.schedule": "plateau",
                              "train.estimate_steps": 0}), tmp_path / "run", quiet=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert ("alexnet train: warning: no validation split (data.val_size 0): best.pt and the plateau schedule follow "
            "the test split") in captured.err.splitlines()


def test_the_timed_warmup_changes_nothing(tmp_path, data_dir):
    for steps in (0, 3):
        train(config(data_dir, **{"train.epochs": 1, "train.estimate_steps": steps}), tmp_path / f"s{steps}",
              quiet=True)
    a, b = (torch.load(tmp_path / f"s{n}" / "checkpoint.pt", weights_only=True) for n in (0, 3))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def test_steps_log_reports_and_the_notebook_plot_follow_every_epoch(tmp_path, data_dir):
    shown = []
    history = train(config(data_dir, **{"train.epochs": 2, "train.log_every_steps": 5}), tmp_path / "run",
                    quiet=False, display=shown.append)
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    # every 5th step and each epoch's last (14 steps per epoch)
    assert [r["step"] for r in steps] == [5, 10, 14, 15, 20, 25, 28]
    assert all({"loss", "acc", "lr", "images_per_sec", "epoch"} <= set(r) for r in steps)
    assert len(shown) == 2 and all(isinstance(f, Figure) for f in shown)  # one live plot per epoch
    assert len(shown[0].axes[0].lines[0].get_xdata()) == 1 and len(shown[1].axes[0].lines[0].get_xdata()) == 2
    report = (tmp_path / "run" / "report.md").read_text()
    assert "(finished)" in report and "host" in report and history[-1]["host"] in report


@pytest.mark.timing
def test_report_and_curves_exist_while_the_run_is_in_progress(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("ALEXNET_FAULT", "step=20,signal=TERM")  # stopped in epoch 2 of 3
    from alexnet.training.guards import Interrupted
    with pytest.raises(Interrupted):
        train(config(data_dir, **{"train.epochs": 3}), tmp_path / "run", quiet=True)
    assert "(interrupted after epoch 1 of 3)" in (tmp_path / "run" / "report.md").read_text()  # not "in progress"
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000


@pytest.mark.timing
def test_resume_trims_the_steps_log_to_the_checkpoint(tmp_path, data_dir):
    out = tmp_path / "run"
    train(config(data_dir, **{"train.epochs": 1, "train.log_every_steps": 5}), out, quiet=True)
    with open(out / "steps.jsonl", "a") as f:  # what a kill after the checkpoint could leave: later steps, half a line
        f.write(json.dumps({"step": 99, "loss": 1.0}) + "\n" + '{"step": 10')
    train(config(data_dir, **{"train.epochs": 2, "train.log_every_steps": 5}), out, resume=True, quiet=True)
    steps = [json.loads(line)["step"] for line in (out / "steps.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 14, 15, 20, 25, 28]


@pytest.mark.timing
def test_progress_lines_off_a_terminal(tmp_path, data_dir):
    proc = subprocess.run([sys.executable, "-m", "alexnet", "train", "--preset", "quick", "--out", str(tmp_path / "r"),
                           "--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "32", "--set", "model.width=8",
                           "--set", "model.hidden=32", "--set", "train.log_every_steps=5"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("epoch 1/1 step")]
    assert [line.split()[3] for line in lines] == ["5/14", "10/14", "14/14"]
    assert "done: val acc" in proc.stdout


def test_quiet_prints_nothing(tmp_path, data_dir, cli):
    code, out, err = cli("train", "--preset", "quick", "--out", tmp_path / "r", "--data-dir", data_dir, "--quiet",
                         "--epochs", "1", "--batch-size", "32", "--set", "model.width=8", "--set", "model.hidden=32")
    assert (code, out, err) == (0, "", "")


def test_tensorboard_events_hold_the_logged_values(tmp_path, data_dir):
    cfg = config(data_dir, **{"train.epochs": 2, "train.tensorboard": True, "train.log_every_steps": 5})
    out = tmp_path / "run"
    history = train(cfg, out, quiet=True)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == [5, 10, 14, 15, 20, 25, 28]  # every 5th step and each epoch's last
    for key in ("loss", "acc", "lr"):  # float32 in the event file
        logged = [(e.step, e.value) for e in events.Scalars(f"train/{key}")]
        assert logged == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in steps], key
    assert [r["epoch"] for r in history] == [1, 2]
    for key in ("train_loss", "train_acc", "val_acc", "test_acc", "lr"):
        logged = [(e.step, e.value) for e in events.Scalars(f"epoch/{key}")]
        assert logged == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in history], key


def test_tensorboard_not_installed_says_what_to_install(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what `import` finds without the package
    cfg = config(data_dir, **{"train.epochs": 1, "train.tensorboard": True})
    with pytest.raises(AlexNetError) as excinfo:
        train(cfg, tmp_path / "run", quiet=True)
    assert str(excinfo.value) == "--tensorboard needs the tensorboard package: pip install 'alexnet[tensorboard]'"


def test_init_from_a_checkpoint_keeps_every_layer_or_replaces_the_head(tmp_path, data_dir):
    from alexnet.models import create_model
    from alexnet.run.trained import load_weights

    first = tmp_path / "first"
    train(config(data_dir, **{"train.epochs": 1}), first, quiet=True)
    weights = torch.load(first / "best.pt", weights_only=True)["model"]
    same = create_model("small", width=8, hidden=32)
    assert load_weights(same, first / "best.pt").endswith("every layer")
    assert all(torch.equal(same.state_dict()[k], v) for k, v in weights.items())
    other = create_model("small", width=8, hidden=32, num_classes=3)
    assert "a new head: 3 classes instead of 10" in load_weights(other, first / "best.pt")
    assert torch.equal(other.state_dict()["classifier.0.weight"], weights["classifier.0.weight"])
    with pytest.raises(AlexNetError, match="do not fit"):
        load_weights(create_model("lenet"), first / "best.pt")
