"""What a run shows and logs while it trains (rank 0 only): the start-up banner, progress (a tqdm bar on a
terminal; a line every `train.log_every_steps` steps elsewhere; in Jupyter a live plot of the epochs, as d2l's
Animator), `steps.jsonl` (the training loss every N steps), optional TensorBoard event files, and one line per
epoch. Reading the loss is a host sync, so it happens only every N steps."""

import json
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from alexnet.base.errors import AlexNetError
from alexnet.base.files import append_line, atomic_write
from alexnet.config import Config
from alexnet.report.plots import DRAWING, curves_figure
from alexnet.run.layout import STEPS


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython is optional: without it, never)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def notebook_display() -> Callable:
    """Shows a matplotlib figure in place of the previous one (IPython.display)."""
    from IPython.display import clear_output, display

    def show(figure) -> None:
        clear_output(wait=True)
        display(figure)
    return show


class Monitor:
    def __init__(self, out: Path, cfg: Config, *, enabled: bool, quiet: bool, display: Callable | None = None):
        t = cfg.train
        self.out, self.epochs, self.every = Path(out), t.epochs, t.log_every_steps
        self.enabled, self.quiet = enabled, quiet or not enabled
        self.display = display if display is not None else (notebook_display() if in_notebook() else None)
        self.tty = sys.stderr.isatty()
        self.bar: tqdm | None = None
        self.tensorboard = _tensorboard(self.out) if t.tensorboard and enabled else None
        self.title = f"{cfg.preset}: {cfg.model.name} on {cfg.data.dataset}"

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def start_epoch(self, epoch: int, steps: int, start: int) -> None:
        if not self.quiet and self.tty and self.display is None:
            self.bar = tqdm(total=steps, initial=start, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                            leave=False, dynamic_ncols=True)

    def step(self, epoch: int, step_in_epoch: int, steps: int, global_step: int, read: Callable[[], dict]) -> None:
        """After optimizer step `global_step`; `read()` gives loss, acc, lr and images/s (a host sync)."""
        # every N steps, and the epoch's last (so a short run has a record too)
        logged = self.enabled and self.every and (global_step % self.every == 0 or step_in_epoch == steps)
        bar = self.bar if step_in_epoch % 10 == 0 or step_in_epoch == steps else None
        if not (logged or bar):
            return
        values = read()
        if bar is not None:
            bar.update(step_in_epoch - bar.n)
            bar.set_postfix(loss=f"{values['loss']:.3f}", acc=f"{values['acc']:.3f}",
                                 img_s=f"{values['images_per_sec']:.0f}")
        if not logged:
            return
        record = {"step": global_step, "epoch": epoch + 1, **values}
        append_line(self.out / STEPS, json.dumps(record))
        if self.tensorboard is not None:
            for key in ("loss", "acc", "lr"):
                self.tensorboard.add_scalar(f"train/{key}", values[key], global_step)
        if not self.quiet and not self.tty and self.display is None:
            print(f"epoch {epoch + 1}/{self.epochs} step {step_in_epoch}/{steps}  loss {values['loss']:.3f}  "
                  f"acc {values['acc']:.3f}  lr {values['lr']:.3g}  {values['images_per_sec']:.0f} img/s",
                  file=sys.stderr, flush=True)

    def end_epoch(self, record: dict, history: list[dict]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.tensorboard is not None:
            for key in ("train_loss", "train_acc", "val_acc", "test_acc", "lr"):
                if record.get(key) is not None:
                    self.tensorboard.add_scalar(f"epoch/{key}", record[key], record["epoch"])
            self.tensorboard.flush()
        if self.display is not None and not self.quiet:
            with DRAWING:  # the report's curves may be drawing in the writer's thread
                self.display(curves_figure(history, title=self.title))
        self.say(format_record(record, self.epochs))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AlexNetError("--tensorboard needs the tensorboard package: pip install 'alexnet[tensorboard]'") from None
    return SummaryWriter(str(out / "tensorboard"))


def trim_steps(path: Path, last_step: int) -> None:
    """On resume: keep the step records up to the checkpoint's step (a killed run may have logged past it, or
    left half a line), so the resumed log reads as an uninterrupted one."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("step", last_step + 1) <= last_step:
            kept.append(line + "\n")
    atomic_write(path, "".join(kept))


def format_record(r: dict, epochs: int) -> str:
    val = f"val acc {r['val_acc']:.3f}  " if r.get("val_acc") is not None else ""
    top5 = f"  top-5 {r['test_top5']:.3f}" if r.get("top_k", 5) else ""
    return (f"epoch {r['epoch']:>{len(str(epochs))}}/{epochs}  loss {r['train_loss']:.3f}  "
            f"train acc {r['train_acc']:.3f}  {val}test acc {r['test_acc']:.3f}{top5}  "
            f"lr {r['lr']:.3g}  {r['images_per_sec']:.0f} img/s  {r['wall_s']:.1f} s")
