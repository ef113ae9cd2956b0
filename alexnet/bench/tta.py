"""Time to accuracy: train a preset into a run folder and report the wall time at the first epoch whose test
accuracy reaches a target (the figure airbench and the DAWNBench rules rank by). The time is the trainer's own
`wall_s`, training and evaluation included, read from the run's metrics."""

from pathlib import Path

from alexnet.base.errors import AlexNetError
from alexnet.config import Config
from alexnet.training.run import train


def first_reaching(history: list[dict], target: float) -> dict | None:
    """The first epoch record with test_acc >= target, or None."""
    return next((r for r in history if r["test_acc"] >= target), None)


def time_to_accuracy(cfg: Config, target: float, out: Path, *, quiet: bool = True) -> dict:
    """Train `cfg` into `out` (all its epochs: cutting the run short would change the learning-rate schedule)
    and report when the test accuracy first reached `target`."""
    if not 0 < target <= 1:
        raise AlexNetError(f"--time-to-accuracy takes a test accuracy in (0, 1], got {target}")
    history = train(cfg, Path(out), quiet=quiet)
    hit = first_reaching(history, target)
    best = max(history, key=lambda r: r["test_acc"])
    return {"target": target, "reached": hit is not None,
            "epoch": None if hit is None else hit["epoch"],
            "wall_s": None if hit is None else hit["wall_s"],
            "test_acc": None if hit is None else hit["test_acc"],
            "best_acc": best["test_acc"], "best_epoch": best["epoch"], "epochs_run": len(history),
            "total_wall_s": history[-1]["wall_s"], "run_dir": str(out), "preset": cfg.preset}


def format_tta(result: dict) -> str:
    head = f"{result['preset']}: test accuracy {result['target']:.4f}"
    if result["reached"]:
        return (f"{head} reached at epoch {result['epoch']} after {result['wall_s']:.1f} s "
                f"(test acc {result['test_acc']:.4f}; wall time includes evaluation; run {result['run_dir']})")
    return (f"{head} not reached in {result['epochs_run']} epochs ({result['total_wall_s']:.1f} s); best "
            f"{result['best_acc']:.4f} at epoch {result['best_epoch']} (run {result['run_dir']})")
