"""Krizhevsky et al. 2012, section 3.1 and Fig. 1: "A four-layer convolutional neural network with ReLUs (solid
line) reaches a 25% training error rate on CIFAR-10 six times faster than an equivalent network with tanh
neurons (dashed line). The learning rates for each network were chosen independently to make training as fast as
possible. No regularization of any kind was employed."

Arms: the `cifar4` net (alexnet.models.lenet) with ReLU and with tanh, plain SGD with momentum, no weight decay,
dropout or augmentation; one learning rate per arm, and for each activation the fastest of its learning rates
counts. Measured: epochs and optimizer steps until the training error (averaged over an epoch while training)
first falls to the target, and their tanh / ReLU ratio.

Budgets: `full` is the paper's setting (CIFAR-10, 25%). `small` runs on Fashion-MNIST, which is offline on the
development machine, and a 20% target both nets reach within the budget.
"""

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from alexnet.experiments.common import Arm, ArmRun, begin, error_rate, finish, study_results
from alexnet.report.plots import save_figure

NAME = "relu-vs-tanh"
TITLE = "ReLU vs tanh: epochs to a target training error (paper Fig. 1)"
ACTIVATIONS = ("relu", "tanh")
# Fig. 1 trains without regularisation; momentum 0.9 as the rest of the paper.
RECIPE = {"optim.schedule": "constant", "optim.momentum": 0.9, "optim.nesterov": False, "optim.weight_decay": 0.0,
          "optim.label_smoothing": 0.0, "optim.warmup_epochs": 0.0, "data.train_augment": [],
          "train.batch_size": 128, "train.channels_last": False}
BUDGETS = {
    "tiny": {"preset": "quick", "target": 0.5, "lrs": (0.01,), "dataset": "fashion-mnist",
             "common": {**RECIPE, "data.train_subset": 512, "data.test_subset": 200, "train.epochs": 3,
                        "train.batch_size": 64, "train.eval_batch_size": 200, "train.threads": 1}},
    "small": {"preset": "quick", "target": 0.2, "lrs": (0.01,), "dataset": "fashion-mnist",
              "common": {**RECIPE, "data.train_subset": 4000, "data.test_subset": 2000, "train.epochs": 8,
                         "train.eval_batch_size": 1000}},
    "full": {"preset": "cifar10", "target": 0.25, "lrs": (0.005, 0.01, 0.02, 0.05), "dataset": "cifar10",
             "common": {**RECIPE, "train.epochs": 40}},
}


def arms(spec: dict) -> list[Arm]:
    return [Arm(f"{act}-lr{lr:g}", {"optim.lr": lr}, model={"name": "cifar4", "activation": act},
                label=f"{act}, lr {lr:g}") for act in ACTIVATIONS for lr in spec["lrs"]]


def time_to_target(history: list[dict], target: float) -> tuple[int | None, int | None]:
    """(epochs, optimizer steps) until the epoch's training error first is <= target; None if never."""
    for record in history:
        if 1.0 - record["train_acc"] <= target:
            return record["epoch"], record["step"]
    return None, None


def summarize_runs(runs: list[ArmRun], target: float) -> dict:
    per_arm: dict[str, dict] = {}
    best: dict[str, tuple] = {}
    for run in runs:
        epochs, steps = time_to_target(run.history, target)
        errors = [round(1.0 - r["train_acc"], 4) for r in run.history]
        per_arm[run.arm.name] = {"activation": run.cfg.model.options["activation"], "lr": run.cfg.optim.lr,
                                 "epochs_to_target": epochs, "steps_to_target": steps, "train_error": errors,
                                 "error": run.error}
        act = per_arm[run.arm.name]["activation"]
        key = (steps is None, steps or 0, errors[-1] if errors else 1.0)  # reached first, then fastest
        if act not in best or key < best[act][0]:
            best[act] = (key, run.arm.name)
    chosen = {act: name for act, (_, name) in best.items()}
    relu, tanh = (per_arm[chosen[a]]["steps_to_target"] if a in chosen else None for a in ACTIVATIONS)
    return {"target_train_error": target, "arms": per_arm, "fastest_arm": chosen,
            "steps_ratio_tanh_over_relu": round(tanh / relu, 3) if relu and tanh else None}


def plot(runs: list[ArmRun], target: float, path: Path, dataset: str) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for run in runs:
        act = run.cfg.model.options["activation"]
        ax.plot([r["epoch"] for r in run.history], [1.0 - r["train_acc"] for r in run.history],
                "-" if act == "relu" else "--", marker="o", ms=3, label=run.arm.label)
    ax.axhline(target, color="grey", lw=0.8, ls=":", label=f"target {target:.0%}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training error (epoch average)")
    ax.set_title(f"cifar4 on {dataset}: ReLU (solid) vs tanh (dashed)")
    ax.grid(True, alpha=0.4)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def run(out: Path, budget: str = "small", device: str = "auto", data_dir: str | None = None) -> dict:
    spec, out, t0, info, runs = begin(NAME, out, budget, device, data_dir, BUDGETS, arms)
    summary = summarize_runs(runs, spec["target"])
    plot(runs, spec["target"], out / "plot.png", spec["dataset"])
    rows = []
    for run_ in runs:
        s, last = summary["arms"][run_.arm.name], run_.last
        rows.append([s["activation"], s["lr"], s["epochs_to_target"], s["steps_to_target"],
                     s["train_error"][0] if s["train_error"] else None,
                     s["train_error"][-1] if s["train_error"] else None, error_rate(last.get("test_acc")),
                     round(last["images_per_sec"]) if last else None])
    notes = [f"dataset: {spec['dataset']}" + ("" if spec["dataset"] == "cifar10" else
                                              " (the paper's Fig. 1 is CIFAR-10; this budget stands in for it)"),
             f"target training error {spec['target']:.0%}; training error is the average over each epoch, "
             f"measured while training",
             f"steps to target, tanh / ReLU (each activation's fastest learning rate): "
             f"{summary['steps_ratio_tanh_over_relu']} (the paper: about 6 on CIFAR-10)",
             "net: cifar4, our reconstruction of the paper's unspecified four-layer CNN; SGD momentum 0.9, "
             "no weight decay, dropout or augmentation"]
    results = study_results(info, __doc__, TITLE, t0, notes, summary, out=out, runs=runs, dataset=spec["dataset"])
    columns = ["activation", "lr", "epochs to target", "steps to target", "train err epoch 1", "final train err",
               "final test err", "images/s"]
    return finish(out, results, columns, rows)
