"""Krizhevsky et al. 2012, sections 3 and 4, one ingredient at a time: each arm removes one thing from the baseline
and reports its test error and its train-test gap.

* dropout (section 4.2): "Without dropout, our network exhibits substantial overfitting."
* local response normalisation (3.3): "reduces our top-1 and top-5 error rates by 1.4% and 1.2%".
* overlapping pooling (3.4): 3x3 stride 2 instead of 2x2 stride 2 "reduces the top-1 and top-5 error rates by
  0.4% and 0.3%" and makes the net "slightly more difficult to overfit".
* augmentation (4.1): translations and reflections; without them "our network suffers from substantial
  overfitting". PCA lighting (4.1) "reduces the top-1 error rate by over 1%"; it needs RGB, so only the CIFAR-10
  (`full`) budget has that arm.
* depth (section 1, 7): "removing any of the middle layers results in a loss of about 2% for the top-1".

Train error is the final weights' accuracy on the training images in eval mode (no dropout, no augmentation);
gap = test error - train error. `small`: the `small` AlexNet on a Fashion-MNIST subset for a few epochs (too short
to overfit much, so regularisers can only cost there); `full`: the `cifar10` preset.
"""

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from alexnet.config import load_preset
from alexnet.experiments.common import (
    SMALL_RECIPE,
    TINY_RUNTIME,
    Arm,
    ArmRun,
    begin,
    error_rate,
    finish,
    study_results,
    train_set_accuracy,
)
from alexnet.report.plots import save_figure

NAME = "ablations"
TITLE = "Ablations of the paper's ingredients: test error and train-test gap"
CLAIM = ("Paper sections 3.3, 3.4, 4.1, 4.2 and 1 / 7, all on ImageNet: LRN lowers top-1 / top-5 error by 1.4 / 1.2 "
         "points, overlapping pooling (3x3/2 for 2x2/2) by 0.4 / 0.3; without dropout, and without translations and "
         "reflections, the net overfits substantially; PCA lighting lowers top-1 error by over 1 point; removing any "
         "middle conv layer costs about 2 points of top-1.")
CROP_FLIP = [{"op": "random_crop", "padding": 2}, {"op": "hflip"}]
# The paper's net in small: dropout 0.5 and LRN as the paper, 3x3/2 pools (the `small` default).
SMALL_BASE = {**SMALL_RECIPE, "model.dropout": 0.5, "model.lrn": True, "data.train_augment": CROP_FLIP}
MEAN_IMAGE_LR_DIVISOR = 25
BUDGETS = {
    "tiny": {"preset": "quick", "pca": False, "depth": (3,),
             "common": {**SMALL_BASE, "data.train_subset": 512, "data.test_subset": 200, "train.epochs": 2,
                        "train.batch_size": 64, "train.eval_batch_size": 200, "model.width": 8,
                        "model.hidden": 32, **TINY_RUNTIME}},
    "small": {"preset": "quick", "pca": False, "depth": (3,),
              "common": {**SMALL_BASE, "data.train_subset": 8000, "data.test_subset": 2000, "train.epochs": 3}},
    # The cifar10 preset already is the paper's recipe: LRN, dropout 0.5, crop + flip + PCA lighting, plateau lr.
    "full": {"preset": "cifar10", "pca": True, "depth": (3, 4), "common": {"train.epochs": 30}},
}


def arms(spec: dict) -> list[Arm]:
    base_augment = spec["common"].get("data.train_augment", load_preset(spec["preset"]).data.train_augment)
    out = [Arm("baseline", label="the paper's ingredients"),
           Arm("no-dropout", {"model.dropout": 0.0}, label="dropout 0.5 -> 0"),
           Arm("no-lrn", {"model.lrn": False}, label="LRN off"),
           Arm("non-overlapping-pool", {"model.overlapping_pool": False}, label="pool 3x3/2 -> 2x2/2"),
           Arm("no-augment", {"data.train_augment": []}, label="no augmentation")]
    if spec["pca"]:
        no_pca = [op for op in base_augment if op["op"] != "pca_lighting"]
        out.append(Arm("no-pca-lighting", {"data.train_augment": no_pca}, label="crop + flip, no PCA lighting"))
    out += [Arm(f"no-conv{i}", {"model.remove_conv": i}, label=f"conv{i} removed") for i in spec["depth"]]
    # The paper's input scaling (section 2): 0-255 pixels minus the mean image. Its inputs are ~60x larger than
    # standardised ones, so the learning rate is divided by MEAN_IMAGE_LR_DIVISOR (the baseline's diverged); LRN,
    # whose constants were chosen for these inputs, is measured again under it.
    lr = spec["common"].get("optim.lr", load_preset(spec["preset"]).optim.lr) / MEAN_IMAGE_LR_DIVISOR
    paper_inputs = {"data.normalize": "mean_image", "optim.lr": lr}
    out += [Arm("mean-image", paper_inputs, label=f"inputs: pixels - mean image, lr {lr:g}"),
            Arm("mean-image-no-lrn", {**paper_inputs, "model.lrn": False},
                label=f"inputs: pixels - mean image, lr {lr:g}, LRN off")]
    return out


def measure(runs: list[ArmRun]) -> list[dict]:
    rows: list[dict[str, Any]] = []
    for run in runs:
        train_acc = train_set_accuracy(run)
        test_err, train_err = error_rate(run.last.get("test_acc")), error_rate(train_acc)
        gap = None if test_err is None or train_err is None else round(test_err - train_err, 4)
        rows.append({"arm": run.arm.name, "change": run.arm.label, "test_error": test_err,
                     "train_error_eval": train_err, "gap": gap, "error": run.error,
                     "images_per_sec": round(run.last["images_per_sec"]) if run.last else None})
    base = rows[0]["test_error"]
    for row in rows:
        known = row["test_error"] is not None and base is not None
        row["delta_test_error"] = round(row["test_error"] - base, 4) if known else None
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    names = [r["arm"] for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(rows), 3.8))
    ax.bar([i - 0.2 for i in x], [r["test_error"] or 0 for r in rows], 0.4, label="test error")
    ax.bar([i + 0.2 for i in x], [r["train_error_eval"] or 0 for r in rows], 0.4, label="train error (eval mode)")
    ax.axhline(rows[0]["test_error"] or 0, color="grey", lw=0.8, ls=":", label="baseline test error")
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylabel("error")
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="y", alpha=0.4)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def run(out: Path, budget: str = "small", device: str = "auto", data_dir: str | None = None) -> dict:
    spec, out, t0, info, runs = begin(NAME, out, budget, device, data_dir, BUDGETS, arms)
    rows = measure(runs)
    dataset = runs[0].cfg.data.dataset
    plot(rows, out / "plot.png", f"{runs[0].cfg.model.name} on {dataset}, {runs[0].cfg.train.epochs} epochs")
    notes = [f"dataset: {dataset}, {runs[0].cfg.data.train_subset or 'all'} training images, "
             f"{runs[0].cfg.train.epochs} epochs; model `{runs[0].cfg.model.name}` {runs[0].cfg.model.options}"]
    if not spec["pca"]:
        notes.append("PCA lighting needs RGB images: no PCA arm on Fashion-MNIST (the `full` budget, on "
                     "CIFAR-10, has it)")
    results = study_results(info, CLAIM, TITLE, t0, notes, {"rows": rows}, out=out, runs=runs, dataset=dataset)
    columns = ["arm", "change", "test error", "train error (eval)", "gap", "test error - baseline", "images/s"]
    table = [[r["arm"], r["error"] or r["change"], r["test_error"], r["train_error_eval"], r["gap"],
              r["delta_test_error"], r["images_per_sec"]] for r in rows]
    return finish(out, results, columns, table)
