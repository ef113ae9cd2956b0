"""The Python API, for notebooks and scripts: what the CLI does, as functions that return data.

    import alexnet
    run = alexnet.train("quick", epochs=1)                 # a preset into a run folder -> Run
    run = alexnet.fit(net, "fashion-mnist", input_size=28)  # your own nn.Module, as d2l's train_ch6(net, ...)
    model, preprocess = alexnet.load(run.out / "best.pt")
    alexnet.predict(run.out / "best.pt", ["shoe.png"])      # [[(class, probability), ...]]
    alexnet.evaluate(run.out / "best.pt").top1
    alexnet.summary("d2l").total_params

Overrides take the dotted keys of `alexnet train --set`, as a dict (`overrides={"optim.lr": 0.05}`) or as
keywords with `__` for the dot (`train__epochs=2`); `epochs`, `lr`, `batch_size`, `device` and `seed` are
shortcuts. A folder that already holds a run is continued with `resume=True` or replaced with `overwrite=True`;
without `out`, every call gets a new folder. In Jupyter, training draws its curves after every epoch (as d2l's
Animator) instead of a progress bar, and a `Summary` shows as its table.
"""

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from alexnet.analysis.summary import Summary, summarize
from alexnet.base.errors import AlexNetError, one_line
from alexnet.base.files import write_error
from alexnet.config import Config, apply_overrides, load_config, load_preset
from alexnet.data.folder import resize_center_crop
from alexnet.eval.checkpoint import evaluate_trained, image_files, load_image
from alexnet.eval.checkpoint import predict as predict_paths
from alexnet.eval.evaluate import image_side
from alexnet.eval.metrics import EvalResult
from alexnet.models import create_model, model_info
from alexnet.run.layout import CHECKPOINT, CONFIG, METRICS
from alexnet.run.lock import RunLock
from alexnet.run.trained import CUSTOM, Trained, load_trained
from alexnet.training.run import train as train_run

# The advice in the trainer's errors, in the words of this API (`alexnet train`'s flags -> keywords).
FLAG_KEYWORDS = [("with --resume", "with resume=True"), ("another --out", "another out="),
                 ("raise --epochs", "raise epochs="), ("lower --batch-size", "lower batch_size="),
                 ("--lr ", "lr="), ("use --device cpu", "use device='cpu'")]
SHORTCUTS = {"epochs": "train.epochs", "lr": "optim.lr", "batch_size": "train.batch_size", "device": "train.device",
             "seed": "train.seed", "input_size": "data.input_size", "data_dir": "data.data_dir"}


@dataclass
class Run:
    """A finished run: its folder, its per-epoch records and its final model (in eval mode)."""
    out: Path
    history: list[dict]
    model: nn.Module
    config: Config

    @property
    def best(self) -> Path:
        """The checkpoint of the epoch with the best validation accuracy."""
        return self.out / "best.pt"


def train(preset: str | None = None, out: str | Path | None = None, *, resume: bool = False,
          overwrite: bool = False, quiet: bool = False, overrides: dict | None = None, **keywords) -> Run:
    """Train a preset (`alexnet train --preset`; default quick) into `out` and return the Run. Without `out`, a
    new folder runs/<preset>-<time>. A folder that holds a run is refused unless `resume=True` (continue it as
    `alexnet train --resume` does: from its checkpoint, with its own config when no preset is named; `epochs`
    counts them all) or `overwrite=True` (train anew beside it, then put the new run in its place: the old one
    stays whole until the new one has finished)."""
    out = _out_folder(out, preset or "quick", resume=resume, overwrite=overwrite)
    own = preset is None and resume and (out / CONFIG).exists()  # the run's config, as --resume without --preset
    cfg = apply_overrides(load_config(out / CONFIG) if own else load_preset(preset or "quick"),
                          _overrides(overrides, keywords))
    history = _train_into(out, overwrite, lambda folder: train_run(cfg, folder, resume=resume, quiet=quiet))
    model = load_trained(out / CHECKPOINT, cfg.train.device).model
    return Run(out, history, model, cfg)


def fit(net: nn.Module, data: str = "fashion-mnist", *, out: str | Path | None = None, init: str | None = "xavier",
        resume: bool = False, overwrite: bool = False, quiet: bool = False, overrides: dict | None = None,
        **keywords) -> Run:
    """Train your own `net` with this trainer, on `data` (fashion-mnist, cifar10, or folder with data_dir=...),
    with the book's recipe as `d2l.train_ch6(net, train_iter, test_iter, num_epochs, lr, device)` runs it:
    plain SGD, a constant rate, Xavier-initialised weights (`init=None` keeps yours), the net trained in place.
    The images are resized to `input_size` (default 224, as the book's AlexNet; 28 for LeNet). `out`, `resume`
    and `overwrite` as in `train` (resumed, the net takes the run's last weights before training on)."""
    cfg = load_preset("d2l")
    cfg.preset, cfg.data.dataset = "fit", data
    cfg.model.name, cfg.model.options = f"{CUSTOM}{type(net).__name__}", {}
    cfg.data.val_size = Config().data.val_size  # model choices on a held-out split, not the test set
    cfg = apply_overrides(cfg, _overrides(overrides, keywords))
    if init == "xavier":  # what train_ch6 does to the net first
        for module in net.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(module.weight)
    elif init is not None:
        raise AlexNetError(f"init must be 'xavier' or None, got {init!r}")
    _check_net(net, cfg)
    out = _out_folder(out, f"fit-{type(net).__name__}", resume=resume, overwrite=overwrite)
    history = _train_into(out, overwrite, lambda folder: train_run(cfg, folder, resume=resume, quiet=quiet,
                                                                   model=net))
    return Run(out, history, net.eval(), cfg)


def load(checkpoint: str | Path, device: str = "auto", model: nn.Module | None = None
         ) -> tuple[nn.Module, Callable[..., torch.Tensor]]:
    """(model in eval mode, preprocess): `preprocess(images)` turns image files, or uint8 (C, H, W) / (B, C, H, W)
    tensors, into the normalised batch the model takes, on its device, as the run evaluated its test images."""
    trained = load_trained(Path(checkpoint), device, model)
    return trained.model, Preprocess(trained)


class Preprocess:
    def __init__(self, trained: Trained):
        self.trained = trained

    def __call__(self, images: str | Path | torch.Tensor | Sequence) -> torch.Tensor:
        t = self.trained
        if isinstance(images, (str, Path)):
            images = [images]
        if isinstance(images, torch.Tensor):
            batch = images[None] if images.dim() == 3 else images
            side = image_side(t.cfg)
            batch = torch.stack([resize_center_crop(image, side) for image in batch.cpu()])
        else:
            batch = torch.stack([load_image(t, Path(p)) for p in images])
        return t.pipeline(batch.to(t.device))


def evaluate(checkpoint: str | Path, *, data_dir: str | None = None, ten_crop: bool = False, device: str = "auto",
             batch_size: int | None = None, model: nn.Module | None = None) -> EvalResult:
    """Top-1, top-5, loss, per-class accuracy (with the class names: `result.accuracy_by_class()`) and confusion
    matrix on the run's test split."""
    trained = load_trained(Path(checkpoint), device, model)
    result = evaluate_trained(trained, data_dir=data_dir, ten_crops=ten_crop, batch_size=batch_size)
    return dataclasses.replace(result, classes=list(trained.classes))


def predict(checkpoint: str | Path, images: str | Path | Sequence[str | Path], *, topk: int = 5, device: str = "auto",
            model: nn.Module | None = None) -> list[list[tuple[str, float]]]:
    """The top-k classes, with probabilities, of each image file (a folder: the images below it, sorted)."""
    trained = load_trained(Path(checkpoint), device, model)
    paths = [images] if isinstance(images, (str, Path)) else images  # one file or folder, or a list of them
    return predict_paths(trained, image_files([Path(p) for p in paths]), topk=topk)


def summary(model: str = "d2l", input: tuple[int, int, int] | None = None, **options) -> Summary:
    """Per-layer output shapes, parameters, FLOPs and activation memory of a registered model (data, not text:
    `alexnet.analysis.format_summary` prints it)."""
    shape = input or model_info(model).input_shape
    net = create_model(model, **{"in_channels": shape[0], "input_size": (shape[1], shape[2]), **options})
    return summarize(net, shape, name=model)


def _out_folder(out: str | Path | None, stem: str, *, resume: bool, overwrite: bool) -> Path:
    """`out`, checked against `resume` / `overwrite`; without it a folder runs/<stem>-<time> that does not exist
    yet (-2, -3 ... after it when one call follows another within the second)."""
    if resume and overwrite:
        raise AlexNetError("resume=True continues the run in out= and overwrite=True replaces it: choose one")
    if out is not None:
        out = Path(out)
        if not (resume or overwrite) and _holds_run(out):
            raise AlexNetError(f"{out} already holds a run; continue it with resume=True, replace it with "
                               f"overwrite=True, or pass another out=")
        return out
    if resume:
        raise AlexNetError("resume=True continues a run: name its folder with out=")
    first = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = first, 1
    while out.exists():
        n += 1
        out = first.with_name(f"{first.name}-{n}")
    return out


def _holds_run(out: Path) -> bool:
    return (out / CHECKPOINT).exists() or (out / METRICS).exists()


def _train_into(out: Path, overwrite: bool, run: Callable[[Path], list[dict]]) -> list[dict]:
    """`run(folder)` into `out`; with `overwrite` and a run already there, into a new folder beside it that then
    takes its place, so that a failed or interrupted run leaves the old one whole (and removes its own)."""
    try:
        if not (overwrite and _holds_run(out)):
            return run(out)
        with RunLock(out):  # refused now, not after the training, if another process trains in `out`
            pass
        try:
            new = Path(tempfile.mkdtemp(prefix=f".{out.name}.overwrite-", dir=out.parent))
        except OSError as e:
            raise write_error(out.parent, e) from None
        try:
            history = run(new)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        _replace(out, new)
        return history
    except AlexNetError as error:  # the training's advice names the CLI's flags; here they are keywords
        raise AlexNetError(_keywords(str(error))) from None


def _replace(out: Path, new: Path) -> None:
    """The finished run in `new` takes the place of the one in `out`, under `out`'s lock (which leaves with it).
    Two renames: a crash between them leaves both runs whole, the old one in .<name>.replaced-*."""
    old = new.with_name(f".{out.name}.replaced-" + new.name.removeprefix(f".{out.name}.overwrite-"))
    try:
        with RunLock(out):
            os.replace(out, old)
            os.replace(new, out)
    except AlexNetError as error:
        raise AlexNetError(f"{error}; the new run is kept in {new}") from None
    except OSError as e:
        if old.exists() and not out.exists():
            os.replace(old, out)  # the first rename went through, the second not: the old run back in place
        raise AlexNetError(f"cannot put the new run {new} in place of {out}: {e.strerror or e}") from None
    shutil.rmtree(old, ignore_errors=True)


def _keywords(message: str) -> str:
    for flag, keyword in FLAG_KEYWORDS:
        message = message.replace(flag, keyword)
    return message


def _overrides(overrides: dict | None, keywords: dict) -> dict:
    if overrides is not None and not isinstance(overrides, Mapping):
        raise AlexNetError(f"overrides must be a dict of dotted keys, e.g. {{'optim.lr': 0.05}}; got {overrides!r}")
    merged = dict(overrides or {})
    for key, value in keywords.items():
        merged[SHORTCUTS.get(key, key.replace("__", "."))] = value
    return merged


def _check_net(net: nn.Module, cfg: Config) -> None:
    """One forward pass of a zero batch, so that a net that cannot take the data fails now, in one line."""
    channels = {"fashion-mnist": 1}.get(cfg.data.dataset, 3)
    size = cfg.data.input_size
    try:
        with torch.no_grad():
            was = net.training
            out = net.eval()(torch.zeros(2, channels, size, size, device=next(net.parameters()).device))
            net.train(was)
    except (RuntimeError, StopIteration) as error:
        raise AlexNetError(f"{type(net).__name__} cannot take {channels}x{size}x{size} images "
                           f"({one_line(error)[:160]}); set input_size=") from None
    if out.dim() != 2:
        raise AlexNetError(f"{type(net).__name__} returns {tuple(out.shape)}, not (batch, classes) logits")
    if cfg.data.dataset in ("fashion-mnist", "cifar10") and out.shape[1] != 10:
        raise AlexNetError(f"{type(net).__name__} has {out.shape[1]} outputs but {cfg.data.dataset} has 10 classes")
