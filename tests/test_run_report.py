"""What a person reads about a run: report.md's state (finished, in progress, or interrupted by a signal, which
a run stopped with Ctrl-C must never be called "in progress"), and the start-up estimate's wording."""

import signal

import pytest
from synthetic import write_fashion_mnist

from alexnet.config import apply_overrides, load_preset
from alexnet.report.run_report import write_run_report
from alexnet.training.guards import Interrupted
from alexnet.training.run import _about, train

INFO = {"device": "cpu: test", "host": "h", "torch": "t", "precision": "fp32", "reason": "asked for",
        "data_sizes": {"train": 461, "val": 51, "test": 200}, "data_sources": {"train": "d", "val": "v"}}


def history(epochs: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5, "val_acc": 0.4 + e / 100, "test_acc": 0.4,
             "test_top5": 0.9, "top_k": 5, "lr": 0.1, "images_per_sec": 100.0, "wall_s": 2.0 * e}
            for e in range(1, epochs + 1)]


@pytest.mark.parametrize("done,info,state", [
    (4, {}, "finished"),
    (2, {}, "in progress (2 of 4)"),
    (2, {"interrupted": str(Interrupted(signal.SIGINT, 105))}, "interrupted after epoch 2 of 4"),
    (4, {"interrupted": str(Interrupted(signal.SIGINT, 105))}, "finished"),  # stopped after its last epoch
])
def test_the_report_names_the_runs_state(tmp_path, done, info, state):
    cfg = apply_overrides(load_preset("quick"), {"train.epochs": 4})
    text = write_run_report(tmp_path, cfg, history(done), ["a", "b"], {**INFO, **info}).read_text()
    assert text.splitlines()[0] == f"# Run report: quick ({state})"
    stopped = [line for line in text.splitlines() if line.startswith("**Interrupted:**")]
    if state.startswith("interrupted"):
        assert stopped == [f"**Interrupted:** stopped by SIGINT after step 105; checkpoint written, continue with "
                           f"--resume (`alexnet train --out {tmp_path} --resume`). The figures below are those of "
                           f"epoch 2, the last one finished."]
    else:
        assert stopped == []


def test_a_run_stopped_by_a_signal_says_interrupted_in_its_report(tmp_path, monkeypatch):
    """Ctrl-C (SIGINT) in epoch 2 of 3: the trainer checkpoints, rewrites report.md and raises Interrupted."""
    data = write_fashion_mnist(tmp_path / "data")
    cfg = apply_overrides(load_preset("quick"), {"data.data_dir": str(data), "model.width": 8, "model.hidden": 32,
                                                  "train.batch_size": 32, "train.threads": 1, "train.epochs": 3,
                                                  "train.estimate_steps": 0})
    monkeypatch.setenv("ALEXNET_FAULT", "step=20,signal=INT")  # 14 steps per epoch: in epoch 2
    with pytest.raises(Interrupted, match="stopped by SIGINT after step 20"):
        train(cfg, tmp_path / "run", quiet=True)
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.startswith("# Run report: quick (interrupted after epoch 1 of 3)\n")
    assert "**Interrupted:** stopped by SIGINT after step 20; checkpoint written" in report
    assert "in progress" not in report


@pytest.mark.parametrize("seconds,text", [(0.0, "< 1 s"), (0.4, "< 1 s"), (0.99, "< 1 s"), (1.0, "~1 s"),
                                          (42.4, "~42 s"), (600, "~10 min"), (9000, "~2.5 h")])
def test_the_start_up_estimate_of_a_short_run_never_says_0_s(seconds, text):
    assert _about(seconds) == text
