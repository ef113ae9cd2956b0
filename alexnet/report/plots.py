"""Figures: training curves drawn as d2l's `train_ch6` draws them (train loss, train acc, test acc against
epochs on one axis), and a confusion matrix. Saved atomically (temp file, then rename)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from alexnet.base.files import atomic_path  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def plot_curves(history: list[dict], path: Path, title: str = "") -> Path:
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, [r["train_loss"] for r in history], "-", label="train loss")
    ax.plot(epochs, [r["train_acc"] for r in history], "m--", label="train acc")
    ax.plot(epochs, [r["test_acc"] for r in history], "g-.", label="test acc")
    ax.set_xlabel("epoch")
    ax.set_xlim(min(epochs) - 0.1, max(epochs) + 0.1)
    ax.grid(True, alpha=0.4)
    ax.legend()
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path) -> Path:
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1 + 0.55 * n, 1 + 0.5 * n))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=60, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(row) for row in confusion) or 1
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, confusion[i][j], ha="center", va="center", fontsize=7,
                        color="white" if confusion[i][j] > peak / 2 else "black")
    return save_figure(fig, path)
