"""Figures: training curves drawn as d2l's `train_ch6` draws them (train loss, train and test accuracy against
epochs on one axis), and a confusion matrix. Saved atomically (temp file, then rename). The backend is left to
matplotlib (Agg where there is no display; a notebook's own inline backend stays in place).

matplotlib is not thread-safe and the trainer writes its report in a background thread (alexnet.run.writer) while
a notebook may draw the live curves in the main one: both draw under `DRAWING`."""

import threading
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from alexnet.base.files import atomic_path

DRAWING = threading.RLock()


def save_figure(fig, path: Path) -> Path:
    try:
        with DRAWING, atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)  # a pyplot figure; a plain Figure is simply dropped
    return Path(path)


def curves_figure(history: list[dict], title: str = "") -> Figure:
    """Train loss, train accuracy, validation and test accuracy against epochs, on one axis as d2l draws them;
    markers, so that a single epoch shows as points."""
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(epochs, [r["train_loss"] for r in history], "-o", ms=3, label="train loss")
    ax.plot(epochs, [r["train_acc"] for r in history], "m--o", ms=3, label="train acc")
    if any(r.get("val_acc") is not None for r in history):
        val = [float("nan") if r.get("val_acc") is None else r["val_acc"] for r in history]
        ax.plot(epochs, val, "c:o", ms=3, label="val acc")
    ax.plot(epochs, [r["test_acc"] for r in history], "g-.o", ms=3, label="test acc")
    ax.set_xlabel("epoch")
    if epochs:
        ax.set_xlim(min(epochs) - 0.1 - (len(epochs) == 1) * 0.9, max(epochs) + 0.1 + (len(epochs) == 1) * 0.9)
    ax.grid(True, alpha=0.4)
    ax.legend()
    if title:
        ax.set_title(title)
    return fig


def plot_curves(history: list[dict], path: Path, title: str = "") -> Path:
    with DRAWING:
        return save_figure(curves_figure(history, title), path)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path) -> Path:
    n = len(classes)
    fig = Figure(figsize=(1 + 0.55 * n, 1 + 0.5 * n))  # no pyplot state: safe beside the writer's thread
    ax = fig.subplots()
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=60, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(row) for row in confusion) or 1
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(confusion[i][j]), ha="center", va="center", fontsize=7,
                        color="white" if confusion[i][j] > peak / 2 else "black")
    return save_figure(fig, path)
