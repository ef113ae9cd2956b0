"""Krizhevsky et al. 2012, section 3.1 and Fig. 1: "A four-layer convolutional neural network with ReLUs (solid
line) reaches a 25% training error rate on CIFAR-10 six times faster than an equivalent network with tanh
neurons (dashed line). The learning rates for each network were chosen independently to make training as fast as
possible. No regularization of any kind was employed."

Arms: the `cifar4` net (alexnet.models.lenet) with ReLU and with tanh, plain SGD with momentum 0.9, fp32, no
weight decay, dropout or augmentation; a few learning rates per activation, and for each activation the fastest
of its learning rates counts, as in the paper.

Measured: training error against optimizer steps, as Fig. 1 plots it. The trainer logs its epoch-so-far training
accuracy after every step (`steps.jsonl`, `train.log_every_steps`); differences of those running sums give each
step's batch accuracy, and the error over the last `window` steps' batches (a running window, not the epoch's
average) is the curve. Reported per arm: the first step at which the windowed error is <= the target (a run that
never gets there says so, with its best windowed error), and per activation the tanh / ReLU ratio of those steps.

Budgets: `full` is the paper's setting (CIFAR-10, 25%). `small` stands in for it on Fashion-MNIST, which is
offline on the development machine, at a 20% target; `tiny` is the test suite's, on its synthetic images.
"""

import json
from pathlib import Path

import matplotlib.pyplot as plt

from alexnet.experiments.common import TINY_RUNTIME, Arm, ArmRun, begin, error_rate, finish, study_results
from alexnet.report.plots import save_figure
from alexnet.run.layout import STEPS

NAME = "relu-vs-tanh"
TITLE = "ReLU vs tanh: optimizer steps to a target training error (paper Fig. 1)"
CLAIM = ("Paper section 3.1, Fig. 1: a four-layer CNN with ReLUs reaches 25% training error on CIFAR-10 six times "
         "faster than the same net with tanh units (each net at its own fastest learning rate, no regularisation).")
ACTIVATIONS = ("relu", "tanh")
# Fig. 1 trains without regularisation; momentum 0.9 as the rest of the paper. The paper's inputs (section 2: raw
# pixels minus the mean image, no other scaling) and initialisation (section 5: weights N(0, 0.01)), under which
# tanh units saturate and ReLUs do not: the mechanism section 3.1 names. fp32 as the paper (and so that a CPU with
# bf16 units trains the same nets as one without). A steps.jsonl record after every step: the curve.
RECIPE = {"data.normalize": "mean_image", "optim.schedule": "constant", "optim.momentum": 0.9,
          "optim.nesterov": False, "optim.weight_decay": 0.0, "optim.label_smoothing": 0.0,
          "optim.warmup_epochs": 0.0, "data.train_augment": [], "train.batch_size": 128,
          "train.channels_last": False, "train.precision": "fp32", "train.log_every_steps": 1}
# lrs: per activation, as the paper chose each net's for speed; each grid brackets that net's fastest rate (the
# rates on either side of it are slower or stall). `tiny` is the test suite's: one rate for both, where the gap is
# large (tests/test_experiments.py).
BUDGETS = {
    "tiny": {"preset": "quick", "target": 0.2, "lrs": {"relu": (0.001,), "tanh": (0.001,)}, "window": 5,
             "dataset": "fashion-mnist",
             "common": {**RECIPE, "data.train_subset": 512, "data.test_subset": 200, "train.epochs": 4,
                        "train.batch_size": 32, "train.eval_batch_size": 200, **TINY_RUNTIME}},
    "small": {"preset": "quick", "target": 0.2, "lrs": {"relu": (0.001, 0.003, 0.01), "tanh": (0.01, 0.03, 0.1)},
              "window": 20, "dataset": "fashion-mnist",
              "common": {**RECIPE, "data.train_subset": 4000, "data.test_subset": 2000, "train.epochs": 8,
                         "train.eval_batch_size": 1000}},
    # 45,000 training images (5,000 held out) / 128 = 351 steps an epoch; a record every 5 steps keeps the host
    # syncs of a GPU run rare, and the 50-step window spans 10 of them. CIFAR-10's 3 channels give conv1 three
    # times the fan-in of Fashion-MNIST's, so the grids reach a step lower.
    "full": {"preset": "cifar10", "target": 0.25, "window": 50, "dataset": "cifar10",
             "lrs": {"relu": (0.0003, 0.001, 0.003, 0.01), "tanh": (0.003, 0.01, 0.03, 0.1)},
             "common": {**RECIPE, "train.epochs": 40, "train.log_every_steps": 5}},
}


def arms(spec: dict) -> list[Arm]:
    return [Arm(f"{act}-lr{lr:g}", {"optim.lr": lr}, model={"name": "cifar4", "activation": act, "init": "paper"},
                label=f"{act}, lr {lr:g}") for act in ACTIVATIONS for lr in spec["lrs"][act]]


# --- the curve ----------------------------------------------------------------------------------------------------

def read_steps(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / STEPS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def blocks(steps: list[dict], history: list[dict]) -> list[tuple[int, int, float]]:
    """(last step, batches, correct in units of a batch) of each interval between two step records.

    A record's `acc` is the accuracy over its epoch so far, so acc x batches-so-far is the number of correct
    predictions so far in units of a batch (every training batch has the same size: the loader drops the last
    partial one); the difference between two records of one epoch is the interval's. Records of an epoch whose
    start is unknown (its previous epoch is not in `history`) are skipped."""
    start = {1: 0, **{h["epoch"] + 1: h["step"] for h in history}}  # epoch -> global step before its first
    out: list[tuple[int, int, float]] = []
    epoch, done, correct = None, 0, 0.0
    for r in steps:
        if r["epoch"] not in start:
            continue
        if r["epoch"] != epoch:
            epoch, done, correct = r["epoch"], 0, 0.0
        n = r["step"] - start[epoch]
        if n > done:
            out.append((r["step"], n - done, r["acc"] * n - correct))
            done, correct = n, r["acc"] * n
    return out


def windowed_error(intervals: list[tuple[int, int, float]], window: int) -> list[tuple[int, float]]:
    """(step, training error over the batches of the last `window` steps) at every record once `window` steps
    are behind it; the window is the trailing intervals that first reach `window` batches."""
    curve = []
    for i, (step, _, _) in enumerate(intervals):
        batches, correct, j = 0, 0.0, i
        while j >= 0 and batches < window:
            batches, correct, j = batches + intervals[j][1], correct + intervals[j][2], j - 1
        if batches >= window:
            curve.append((step, round(1.0 - correct / batches, 4)))
    return curve


def reach(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first step at which the windowed error is <= target; None if it never is."""
    return next((step for step, err in curve if err <= target), None)


# --- the summary --------------------------------------------------------------------------------------------------

def measure(run: ArmRun, target: float, window: int) -> dict:
    curve = windowed_error(blocks(read_steps(run.run_dir), run.history), window)
    steps = reach(curve, target)
    per_epoch = run.history[0]["step"] if run.history else None
    best = min(curve, key=lambda p: (p[1], p[0]), default=(None, None))
    return {"activation": run.cfg.model.options["activation"], "lr": run.cfg.optim.lr, "steps_to_target": steps,
            "epochs_to_target": round(steps / per_epoch, 2) if steps and per_epoch else None,
            "best_window_error": best[1], "best_at_step": best[0],
            "final_window_error": curve[-1][1] if curve else None, "steps_per_epoch": per_epoch,
            "steps_run": run.history[-1]["step"] if run.history else 0, "curve": curve,
            "train_error": [round(1.0 - r["train_acc"], 4) for r in run.history],  # epoch averages
            "error": run.error}


def fastest(per_arm: dict[str, dict]) -> dict[str, str]:
    """Per activation, the arm that reached the target in the fewest steps (else the lowest best error)."""
    chosen: dict[str, tuple] = {}
    for name, a in per_arm.items():
        best = a["best_window_error"] if a["best_window_error"] is not None else 1.0
        key = (a["steps_to_target"] is None, a["steps_to_target"] or 0, best)
        if a["activation"] not in chosen or key < chosen[a["activation"]][0]:
            chosen[a["activation"]] = (key, name)
    return {act: name for act, (_, name) in chosen.items()}


def summarize_runs(runs: list[ArmRun], target: float, window: int) -> dict:
    per_arm = {run.arm.name: measure(run, target, window) for run in runs}
    chosen = fastest(per_arm)
    relu, tanh = (per_arm[chosen[a]] if a in chosen else None for a in ACTIVATIONS)
    ratio = bound = None
    if relu and tanh and relu["steps_to_target"]:
        if tanh["steps_to_target"]:
            ratio = round(tanh["steps_to_target"] / relu["steps_to_target"], 2)
        else:  # tanh never got there: it needs more than every step it ran
            bound = round(tanh["steps_run"] / relu["steps_to_target"], 2)
    return {"target_train_error": target, "window_steps": window, "arms": per_arm, "fastest_arm": chosen,
            "steps_ratio_tanh_over_relu": ratio, "steps_ratio_lower_bound": bound,
            "verdict": verdict(relu, tanh, ratio, bound, target)}


def verdict(relu: dict | None, tanh: dict | None, ratio: float | None, bound: float | None, target: float) -> str:
    def said(a: dict) -> str:
        if a["steps_to_target"] is not None:
            return f"{a['activation']} (lr {a['lr']:g}) at step {a['steps_to_target']}"
        return (f"{a['activation']} never did in {a['steps_run']} steps (best {a['best_window_error']} at step "
                f"{a['best_at_step']})")
    if relu is None or tanh is None:
        return "one activation has no arm"
    text = f"first to {target:.0%} windowed training error: {said(relu)}; {said(tanh)}"
    if ratio is not None:
        return f"{text}. tanh / ReLU = {ratio:g} (the paper: about 6)"
    if bound is not None:
        return f"{text}. tanh / ReLU > {bound:g} (the paper: about 6)"
    return f"{text}. No ratio: ReLU did not reach the target"


# --- the plot and the table ---------------------------------------------------------------------------------------

def plot(summary: dict, labels: dict[str, str], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    target = summary["target_train_error"]
    for i, (name, a) in enumerate(summary["arms"].items()):
        if not a["curve"]:
            continue
        steps, errors = zip(*a["curve"], strict=True)
        style = "-" if a["activation"] == "relu" else "--"
        line, = ax.plot(steps, errors, style, lw=1.2, color=f"C{i}", label=labels[name])
        if a["steps_to_target"] is not None:
            ax.plot([a["steps_to_target"]], [dict(a["curve"])[a["steps_to_target"]]], "o", color=line.get_color())
    ax.axhline(target, color="grey", lw=0.8, ls=":", label=f"target {target:.0%}")
    per_epoch = next((a["steps_per_epoch"] for a in summary["arms"].values() if a["steps_per_epoch"]), None)
    ax.set_xlabel("optimizer step" + (f" ({per_epoch} steps an epoch)" if per_epoch else ""))
    ax.set_ylabel(f"training error, last {summary['window_steps']} steps")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.4)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def run(out: Path, budget: str = "small", device: str = "auto", data_dir: str | None = None) -> dict:
    spec, out, t0, info, runs = begin(NAME, out, budget, device, data_dir, BUDGETS, arms)
    summary = summarize_runs(runs, spec["target"], spec["window"])
    cfg = runs[0].cfg
    plot(summary, {r.arm.name: r.arm.label for r in runs}, out / "plot.png",
         f"cifar4 on {spec['dataset']}, batch {cfg.train.batch_size}: ReLU (solid) vs tanh (dashed)")
    rows = []
    for run_ in runs:
        s, last = summary["arms"][run_.arm.name], run_.last
        rows.append([s["activation"], s["lr"], s["steps_to_target"] if s["steps_to_target"] else "not reached",
                     s["epochs_to_target"], s["best_window_error"], s["final_window_error"],
                     error_rate(last.get("test_acc")), round(last["images_per_sec"]) if last else None])
    per_epoch = next((a["steps_per_epoch"] for a in summary["arms"].values() if a["steps_per_epoch"]), None)
    notes = [f"dataset: {spec['dataset']}, {cfg.data.train_subset or 'all'} training images less the validation "
             f"hold-out: {per_epoch} steps of {cfg.train.batch_size} an epoch"
             + ("" if spec["dataset"] == "cifar10" else "; the paper's Fig. 1 is CIFAR-10, this budget stands in"),
             f"training error: the error on the batches of the last {spec['window']} optimizer steps (measured "
             f"while training, batch {cfg.train.batch_size}); target {spec['target']:.0%}",
             "net: cifar4, our reconstruction of the paper's unspecified four-layer CNN, on the paper's inputs "
             "(pixels minus the mean image) with its init (weights N(0, 0.01), biases 0); SGD momentum 0.9, fp32, "
             "no weight decay, dropout or augmentation; for each activation its fastest learning rate counts"]
    results = study_results(info, CLAIM, TITLE, t0, notes, summary, out=out, runs=runs, dataset=spec["dataset"])
    columns = ["activation", "lr", "steps to target", "epochs to target", "best window err", "final window err",
               "final test err", "images/s"]
    return finish(out, results, columns, rows, verdict=summary["verdict"])
