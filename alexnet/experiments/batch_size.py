"""d2l 7.1, exercise 3: "Modify the batch size, and observe the changes in accuracy and GPU memory."

One arm per batch size, everything else fixed, the learning rate included (the exercise changes one thing; with
a fixed number of epochs a larger batch therefore takes fewer steps of the same size). The evaluation batch
equals the training batch, as in d2l's loaders. Measured per arm: final test accuracy, training images/s (last
epoch) and peak memory:

* on a GPU, `torch.cuda.max_memory_allocated()` over the arm (reset before it): tensors only, not the allocator's
  cache or the CUDA context;
* on the CPU, the peak resident set size of a fresh process that trains only this arm, over its size once
  imports are done: the peak is reset through /proc/self/clear_refs (Linux), then read with
  `resource.getrusage(RUSAGE_SELF).ru_maxrss` at the end. It includes the dataset copy, the model, the optimizer
  state and the allocator's slack (the dataset copy counts on a GPU too, where the loader keeps it on the
  device). A fresh process per arm, because memory freed by an earlier arm stays in the allocator and would
  hide part of the next arm's growth.
"""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from alexnet.base.errors import AlexNetError
from alexnet.base.files import atomic_write
from alexnet.config import Config
from alexnet.experiments.common import (
    SMALL_RECIPE,
    TINY_RUNTIME,
    Arm,
    ArmRun,
    begin,
    error_rate,
    finish,
    read_metrics,
    run_arm,
    study_results,
)
from alexnet.report.plots import save_figure
from alexnet.run.layout import METRICS
from alexnet.runtime.device import pick_device
from alexnet.runtime.distributed import DistEnv
from alexnet.training.guards import Diverged

NAME = "batch-size"
TITLE = "Batch size against accuracy, throughput and peak memory (d2l 7.1, exercise 3)"
CLAIM = ("d2l 7.1, exercise 3: modify the batch size, and observe the changes in accuracy and GPU memory. The book "
         "gives no figure to compare with (its AlexNet trains at batch 128).")
MEMORY = "memory.json"  # in the arm's run folder: a re-run of the study keeps the measurement
SMALL = {**SMALL_RECIPE, "data.train_subset": 8000, "data.test_subset": 2000, "train.epochs": 2}
BUDGETS = {
    "tiny": {"preset": "quick", "batch_sizes": (16, 64),
             "common": {**SMALL, "data.train_subset": 512, "data.test_subset": 200, "train.epochs": 1,
                        "model.width": 8, "model.hidden": 32, **TINY_RUNTIME}},
    "small": {"preset": "quick", "batch_sizes": (32, 64, 128, 256, 512), "common": SMALL},
    # The book's setting: the d2l net at 224 px, plain SGD lr 0.01, 10 epochs; 1024 is where a 40 GB GPU is busy.
    "full": {"preset": "d2l", "batch_sizes": (32, 64, 128, 256, 512, 1024), "common": {}},
}


def arms(spec: dict) -> list[Arm]:
    return [Arm(f"batch-{b}", {"train.batch_size": b, "train.eval_batch_size": b}, label=f"batch {b}")
            for b in spec["batch_sizes"]]


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _reset_rss_peak() -> int:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0: "5" > /proc/self/clear_refs); without
    it the peak would still hold the imports' transient high-water mark. Returns the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(job: Path) -> None:
    """The fresh process: train the arm described in `job` (config + run folder), then write the history and the
    peak RSS growth, or the error, to job's `.result` file."""
    task = json.loads(job.read_text())
    try:
        baseline = _reset_rss_peak()
        history = run_arm(Config.from_dict(task["config"]), Path(task["run_dir"]))
        result = {"status": "ok", "history": history, "peak_bytes": _rss_peak_bytes() - baseline}
    except AlexNetError as exc:
        result = {"status": "diverged" if isinstance(exc, Diverged) else "error", "message": str(exc)}
    atomic_write(job.with_suffix(".result"), json.dumps(result))


def measured_run(cfg: Config, run_dir: Path) -> list[dict]:
    """`run_arm` with the arm's peak memory written to run_dir/memory.json. A finished arm is not trained again
    and keeps the measurement it has (none if it finished without one)."""
    if len(read_metrics(run_dir / METRICS)) >= cfg.train.epochs:
        return run_arm(cfg, run_dir)
    device = pick_device(cfg.train.device, DistEnv())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        history = run_arm(cfg, run_dir)
        peak, kind = torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    else:
        history, peak = _in_fresh_process(cfg, run_dir)
        kind = "peak RSS growth of a fresh process (ru_maxrss after a peak reset, minus RSS at the start)"
    atomic_write(run_dir / MEMORY, json.dumps({"peak_bytes": peak, "kind": kind}))
    return history


# The fresh process's program. Not `python -m alexnet.experiments.batch_size`: the package imports this module
# before runpy runs it again as __main__ (a RuntimeWarning on every arm, and two copies of the module).
CHILD = ("import sys; from pathlib import Path; from alexnet.experiments.batch_size import _child; "
         "_child(Path(sys.argv[1]))")


def _in_fresh_process(cfg: Config, run_dir: Path) -> tuple[list[dict], int]:
    """A new interpreter (not multiprocessing: its spawn re-runs the caller's main module, fork inherits this
    process's peak) that runs `_child`; AlexNetErrors (divergence) come back as such."""
    run_dir.mkdir(parents=True, exist_ok=True)
    job = run_dir / ".memory-job.json"
    job.with_suffix(".result").unlink(missing_ok=True)
    atomic_write(job, json.dumps({"config": cfg.to_dict(), "run_dir": str(run_dir)}))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(job)],
                          stdout=subprocess.DEVNULL, check=False)  # its progress goes to stderr
    result_file = job.with_suffix(".result")
    if proc.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"the process training {run_dir.name} failed with exit code {proc.returncode}")
    result = json.loads(result_file.read_text())
    job.unlink()
    result_file.unlink()
    if result["status"] != "ok":  # the parent's run_arms records a divergence and goes on with the next arm
        raise (Diverged if result["status"] == "diverged" else AlexNetError)(result["message"])
    return result["history"], result["peak_bytes"]


def measure(runs: list[ArmRun]) -> list[dict]:
    rows = []
    for run in runs:
        memory = run.run_dir / MEMORY
        mem = json.loads(memory.read_text()) if memory.exists() else {}
        rows.append({"batch_size": run.cfg.train.batch_size, "lr": run.cfg.optim.lr,
                     "steps": run.last.get("step"), "test_acc": run.last.get("test_acc"),
                     "test_error": error_rate(run.last.get("test_acc")),
                     "images_per_sec": round(run.last["images_per_sec"], 1) if run.last else None,
                     "peak_memory_mib": round(mem["peak_bytes"] / 2**20, 1) if mem else None,
                     "memory_kind": mem.get("kind"), "error": run.error})
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    b = [r["batch_size"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    for ax, key, label in zip(axes, ("test_acc", "images_per_sec", "peak_memory_mib"),
                              ("test accuracy", "training images/s", "peak memory, MiB"), strict=True):
        ax.plot(b, [r[key] if r[key] is not None else float("nan") for r in rows], "o-")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_title(label, fontsize=9)
        ax.grid(True, alpha=0.4)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def run(out: Path, budget: str = "small", device: str = "auto", data_dir: str | None = None) -> dict:
    spec, out, t0, info, runs = begin(NAME, out, budget, device, data_dir, BUDGETS, arms, runner=measured_run)
    rows = measure(runs)
    cfg = runs[0].cfg
    plot(rows, out / "plot.png", f"{cfg.model.name} on {cfg.data.dataset}, {cfg.train.epochs} epochs, "
                                 f"lr {cfg.optim.lr:g} at every batch size")
    notes = [f"dataset: {cfg.data.dataset}, {cfg.data.train_subset or 'all'} training images, "
             f"{cfg.train.epochs} epochs, lr {cfg.optim.lr:g} ({cfg.optim.schedule}) at every batch size",
             f"memory: {rows[0]['memory_kind']}"]
    results = study_results(info, CLAIM, TITLE, t0, notes, {"rows": rows}, out=out, runs=runs,
                            dataset=cfg.data.dataset)
    columns = ["batch size", "steps", "test accuracy", "images/s", "peak memory MiB"]
    table = [[r["batch_size"], r["steps"], r["test_acc"], r["images_per_sec"],
              r["peak_memory_mib"]] for r in rows]
    return finish(out, results, columns, table)

