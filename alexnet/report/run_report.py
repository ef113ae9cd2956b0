"""The run folder's human side: `curves.png` and `report.md` (where it ran, configuration, final figures, every
epoch), rewritten after every epoch so that a run in progress can be read, and once more when a signal stops
the run (`info["interrupted"]`: what stopped it), so that the report never calls a stopped run in progress."""

from pathlib import Path

from alexnet.base.errors import plural
from alexnet.base.files import atomic_write
from alexnet.config import Config
from alexnet.report.plots import plot_curves
from alexnet.runtime.precision import describe


def write_run_report(out: Path, cfg: Config, history: list[dict], classes: list[str], info: dict) -> Path:
    """`info`: what the run resolved (device, torch, host, precision and why, split sizes and sources), and
    `interrupted` (the `Interrupted` message) when a signal stopped it."""
    out = Path(out)
    if not history:
        return out
    plot_curves(history, out / "curves.png", title=f"{cfg.preset}: {cfg.model.name} on {cfg.data.dataset}")
    last = history[-1]
    chooser = "val_acc" if last.get("val_acc") is not None else "test_acc"
    best = max(history, key=lambda r: r[chooser])
    top5 = last.get("top_k", 5) is not None  # None with 5 classes or fewer: their top-5 is always 1
    final_top5 = f" (top-5 {last['test_top5']:.4f})" if top5 else ""
    rows = "\n".join(
        f"| {r['epoch']} | {r['train_loss']:.4f} | {r['train_acc']:.4f} | {_acc(r.get('val_acc'))} | "
        f"{r['test_acc']:.4f} | {_acc(r['test_top5'] if top5 else None)} | {r['lr']:.3g} | {r['images_per_sec']:.0f} | "
        f"{r['wall_s']:.1f} |" for r in history)
    sizes, sources = info.get("data_sizes", {}), info.get("data_sources", {})
    state = "finished" if last["epoch"] == cfg.train.epochs else f"in progress ({last['epoch']} of {cfg.train.epochs})"
    stopped = ""
    if info.get("interrupted") and last["epoch"] < cfg.train.epochs:
        state = f"interrupted after epoch {last['epoch']} of {cfg.train.epochs}"
        stopped = (f"\n**Interrupted:** {info['interrupted']} (`alexnet train --out {out} --resume`). The figures "
                   f"below are those of epoch {last['epoch']}, the last one finished.\n")
    precision = describe(info.get("precision", cfg.train.precision), bool(info.get("channels_last")),
                         info.get("reason", ""))
    text = f"""# Run report: {cfg.preset} ({state})
{stopped}
Model `{cfg.model.name}` {cfg.model.options or ''} on `{cfg.data.dataset}` ({len(classes)} classes),
input {cfg.data.input_size}x{cfg.data.input_size}, batch {cfg.train.batch_size}, {plural(cfg.train.epochs, 'epoch')},
SGD lr {cfg.optim.lr} ({cfg.optim.schedule}), momentum {cfg.optim.momentum}, weight decay {cfg.optim.weight_decay},
seed {cfg.train.seed}. Full configuration: `config.yaml`.

Ran on {info.get('device', '?')} (host {info.get('host', '?')}, torch {info.get('torch', '?')}), precision
{precision}. Data: {sources.get('train', '?')}; train {sizes.get('train', 0):,}, validation {sizes.get('val', 0):,},
test {sizes.get('test', 0):,} images; validation: {sources.get('val', '?')}.

**Final:** test accuracy {last['test_acc']:.4f}{final_top5}, validation accuracy
{_acc(last.get('val_acc'))}, train accuracy {last['train_acc']:.4f}, train loss {last['train_loss']:.4f}, after
{last['wall_s']:.1f} s of training and evaluation. **Best** by {chooser.replace('_acc', '')} accuracy: epoch
{best['epoch']} (`best.pt`: validation {_acc(best.get('val_acc'))}, test {best['test_acc']:.4f}).

![curves](curves.png)

| epoch | train loss | train acc | val acc | test acc | test top-5 | lr | images/s | wall s |
|---|---|---|---|---|---|---|---|---|
{rows}
"""
    return atomic_write(out / "report.md", text)


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
