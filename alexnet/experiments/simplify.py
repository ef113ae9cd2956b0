"""d2l 7.1, exercise 2: "AlexNet may be too complex for the Fashion-MNIST dataset. Try simplifying the model to make
the training faster, while ensuring that the accuracy does not drop significantly. Design a better model that
works directly on 28x28 images."

Arms: the book's net (`d2l`, 28 px images resized to 224), a shallower d2l (conv3 removed), and the AlexNet-shaped
`small` net at native 28x28 at three widths and with a conv layer removed. All share one recipe; measured: test
accuracy, training images/s (last epoch), parameters and forward FLOPs per image.

`small`: the d2l net at 224 px trains at a few images/s on two CPU cores, so in this budget its arm is
throughput only (one epoch of 256 images: its accuracy there means nothing and the table says so); the 28x28
nets train on a Fashion-MNIST subset. `full` trains every arm on all of Fashion-MNIST.
"""

from pathlib import Path

import matplotlib.pyplot as plt

from alexnet.analysis.summary import summarize
from alexnet.config import build_model, dataset_channels
from alexnet.experiments.common import SMALL_RECIPE, TINY_RUNTIME, Arm, ArmRun, begin, finish, study_results
from alexnet.report.plots import save_figure

NAME = "simplify"
TITLE = "Simpler AlexNets on Fashion-MNIST: accuracy against throughput (d2l 7.1, exercise 2)"
CLAIM = ("d2l 7.1, exercise 2: AlexNet may be too complex for Fashion-MNIST; simplify it to train faster without a "
         "significant drop in accuracy, and design a net for 28x28 images. The book's figure for its AlexNet: test "
         "accuracy 0.883 after 10 epochs at 3,942 images/s on its GPU; none for a simpler net.")
D2L: dict[str, dict] = {"model": {"name": "d2l"}, "overrides": {"data.input_size": 224}}


def _small(width: int, hidden: int, **options) -> dict:
    return {"name": "small", "width": width, "hidden": hidden, "init": "xavier", **options}


# (arm, model, label) of the native 28x28 family: three widths, then one conv layer fewer.
NATIVE = [("small-w32", _small(32, 256), "small, width 32, hidden 256"),
          ("small-w16", _small(16, 128), "small, width 16, hidden 128"),
          ("small-w8", _small(8, 64), "small, width 8, hidden 64"),
          ("small-w16-no-conv4", _small(16, 128, remove_conv=4), "small, width 16, conv4 removed")]
# Throughput only: a few steps of the 224 px net, evaluated on a few images.
PROBE = {"data.train_subset": 256, "data.test_subset": 256, "train.epochs": 1, "train.eval_batch_size": 128}
SMALL = {**SMALL_RECIPE, "data.train_subset": 8000, "data.test_subset": 2000, "train.epochs": 2}
BUDGETS = {
    "tiny": {"preset": "quick", "d2l": [], "native": NATIVE[1:3],
             "common": {**SMALL, "data.train_subset": 512, "data.test_subset": 200, "train.epochs": 1,
                        "train.batch_size": 64, "train.eval_batch_size": 200, **TINY_RUNTIME}},
    "small": {"preset": "quick", "d2l": [("d2l-224", {}, "d2l at 224 px (throughput only)", PROBE)],
              "native": NATIVE, "common": SMALL},
    "full": {"preset": "d2l-fast", "native": NATIVE, "common": {"train.epochs": 10},
             "d2l": [("d2l-224", {}, "d2l at 224 px", {}),
                     ("d2l-224-no-conv3", {"remove_conv": 3}, "d2l at 224 px, conv3 removed", {})]},
}


def arms(spec: dict) -> list[Arm]:
    out = [Arm(name, {**D2L["overrides"], **extra}, model={**D2L["model"], **options}, label=label)
           for name, options, label, extra in spec["d2l"]]
    out += [Arm(name, {"data.input_size": 28}, model=model, label=label) for name, model, label in spec["native"]]
    return out


def cost(run: ArmRun) -> tuple[int, int]:
    """(parameters, forward FLOPs for one image) of the arm's model."""
    cfg = run.cfg
    shape = (dataset_channels(cfg), cfg.data.input_size, cfg.data.input_size)
    s = summarize(build_model(cfg), shape)
    return s.total_params, s.total_flops


def measure(runs: list[ArmRun], probes: set[str]) -> list[dict]:
    rows = []
    for run in runs:
        params, flops = cost(run)
        last = run.last
        rows.append({"arm": run.arm.name, "label": run.arm.label, "input": run.cfg.data.input_size,
                     "params": params, "mflops": round(flops / 1e6, 1), "test_acc": last.get("test_acc"),
                     "accuracy_meaningful": run.arm.name not in probes,
                     "images_per_sec": round(last["images_per_sec"], 1) if last else None,
                     "epochs": len(run.history), "error": run.error})
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["images_per_sec"] is None or r["test_acc"] is None:
            continue
        if not r["accuracy_meaningful"]:  # its accuracy is not a result: mark its throughput only
            ax.axvline(r["images_per_sec"], color="grey", ls=":", lw=1)
            ax.annotate(f"{r['arm']} (throughput only)", (r["images_per_sec"], 0.5), xycoords=("data", "axes fraction"),
                        rotation=90, fontsize=7, xytext=(3, 0), textcoords="offset points", va="center")
            continue
        ax.scatter(r["images_per_sec"], r["test_acc"])
        ax.annotate(r["arm"], (r["images_per_sec"], r["test_acc"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("training images/s (log)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.4)
    save_figure(fig, path)


def run(out: Path, budget: str = "small", device: str = "auto", data_dir: str | None = None) -> dict:
    spec, out, t0, info, runs = begin(NAME, out, budget, device, data_dir, BUDGETS, arms)
    rows = measure(runs, {name for name, _, _, extra in spec["d2l"] if extra is PROBE})
    cfg = runs[-1].cfg
    plot(rows, out / "plot.png", f"Fashion-MNIST, {cfg.data.train_subset or 'all'} training images, "
                                 f"{cfg.train.epochs} epochs")
    notes = [f"recipe: preset `{spec['preset']}` with {spec['common']}",
             "images/s: training throughput of the last epoch (augmentation and the resize to the input size "
             "included)"]
    if any(not r["accuracy_meaningful"] for r in rows):
        notes.append("throughput-only arms trained one epoch on 256 images: their accuracy is not a result")
    results = study_results(info, CLAIM, TITLE, t0, notes, {"rows": rows}, out=out, runs=runs,
                            dataset=cfg.data.dataset)
    columns = ["arm", "model", "input px", "params", "MFLOPs / image", "test accuracy", "images/s"]
    table = [[r["arm"], r["error"] or r["label"], r["input"], r["params"], r["mflops"],
              r["test_acc"] if r["accuracy_meaningful"] else "(not trained)", r["images_per_sec"]] for r in rows]
    return finish(out, results, columns, table)
