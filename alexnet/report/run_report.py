"""The run folder's human side: `curves.png` and `report.md` (configuration, final figures, every epoch)."""

from pathlib import Path

from alexnet.base.files import atomic_write
from alexnet.config import Config
from alexnet.report.plots import plot_curves


def write_run_report(out: Path, cfg: Config, history: list[dict], classes: list[str]) -> Path:
    out = Path(out)
    if not history:
        return out
    plot_curves(history, out / "curves.png", title=f"{cfg.preset}: {cfg.model.name} on {cfg.data.dataset}")
    last = history[-1]
    best = max(history, key=lambda r: r["test_acc"])
    rows = "\n".join(
        f"| {r['epoch']} | {r['train_loss']:.4f} | {r['train_acc']:.4f} | {r['test_acc']:.4f} | "
        f"{r['test_top5']:.4f} | {r['lr']:.3g} | {r['images_per_sec']:.0f} | {r['wall_s']:.1f} |" for r in history)
    text = f"""# Run report: {cfg.preset}

Model `{cfg.model.name}` {cfg.model.options or ''} on `{cfg.data.dataset}` ({len(classes)} classes),
input {cfg.data.input_size}x{cfg.data.input_size}, batch {cfg.train.batch_size}, {cfg.train.epochs} epochs,
SGD lr {cfg.optim.lr} ({cfg.optim.schedule}), momentum {cfg.optim.momentum}, weight decay {cfg.optim.weight_decay},
precision {cfg.train.precision}, seed {cfg.train.seed}. Full configuration: `config.yaml`.

**Final:** test accuracy {last['test_acc']:.4f} (top-5 {last['test_top5']:.4f}), train accuracy
{last['train_acc']:.4f}, train loss {last['train_loss']:.4f}, after {last['wall_s']:.1f} s of training and
evaluation. **Best:** test accuracy {best['test_acc']:.4f} at epoch {best['epoch']} (`best.pt`).

![curves](curves.png)

| epoch | train loss | train acc | test acc | test top-5 | lr | images/s | wall s |
|---|---|---|---|---|---|---|---|
{rows}
"""
    return atomic_write(out / "report.md", text)
