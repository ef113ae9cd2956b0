"""What `alexnet eval` and `alexnet predict` do with a run's checkpoint (`best.pt` or `checkpoint.pt`): the
trained model (`alexnet.run.trained`) on the run's test split, or on a user's image files, at a precision resolved
on the evaluation device (`eval_precision`)."""

from collections.abc import Iterator
from pathlib import Path

import torch

from alexnet.base.errors import AlexNetError
from alexnet.data.augment import grayscale
from alexnet.data.folder import IMAGE_EXTENSIONS, decode_rgb, resize_center_crop
from alexnet.data.run import load_split, make_loader
from alexnet.eval.evaluate import evaluate, image_side, ten_crop_size
from alexnet.eval.metrics import EvalResult
from alexnet.run.trained import Trained, load_trained
from alexnet.runtime.precision import FP32, Precision, resolve_precision

Top = list[tuple[str, float]]  # (class, probability), most probable first


def evaluate_checkpoint(checkpoint: Path, *, data_dir: str | None = None, ten_crops: bool = False,
                        device: str = "auto", batch_size: int | None = None) -> tuple[EvalResult, Trained]:
    trained = load_trained(checkpoint, device)
    return evaluate_trained(trained, data_dir=data_dir, ten_crops=ten_crops, batch_size=batch_size), trained


def eval_precision(trained: Trained, requested: str | None = None) -> Precision:
    """The precision to evaluate at on the trained model's device: `requested` (a name of PRECISIONS), or the
    run's own `train.precision` when None; `auto` is resolved for this device, which may not be the training one."""
    name = trained.cfg.train.precision if requested is None else requested
    try:
        return resolve_precision(name, trained.device, trained.cfg.train.channels_last)
    except ValueError as error:
        raise AlexNetError(str(error)) from None


def evaluate_trained(trained: Trained, *, data_dir: str | None = None, ten_crops: bool = False,
                     batch_size: int | None = None, download: bool = False,
                     precision: Precision | None = None) -> EvalResult:
    """The trained model on its run's test split (the run's own data section; `data_dir` elsewhere), at
    `precision` (default: `eval_precision(trained)`)."""
    cfg = trained.cfg
    crop = ten_crop_size(cfg) if ten_crops else None  # refused before any work where it cannot apply
    cfg.data.download = cfg.data.download or download
    if data_dir is not None:
        cfg.data.data_dir = data_dir
    elif cfg.data.data_dir and not Path(cfg.data.data_dir).expanduser().is_dir():
        raise AlexNetError(f"the run's data folder {cfg.data.data_dir} is not there; pass --data-dir")
    test = load_split(cfg, "test")
    if list(test.classes) != trained.classes:
        raise AlexNetError(f"the test data has {len(test.classes)} classes ({', '.join(test.classes[:5])}"
                           f"{' ...' if len(test.classes) > 5 else ''}) but the model was trained on "
                           f"{len(trained.classes)} ({', '.join(trained.classes[:5])}"
                           f"{' ...' if len(trained.classes) > 5 else ''}); evaluate it on its own dataset")
    # ten crops put ten views of every image through the model at once: keep the memory of a plain evaluation
    size = batch_size or (max(1, cfg.train.eval_batch_size // 10) if ten_crops else None)
    loader = make_loader(cfg, test, trained.device, train=False, batch_size=size)
    precision = precision or eval_precision(trained)
    return evaluate(trained.model.to(memory_format=precision.memory_format), loader, trained.pipeline,
                    num_classes=len(trained.classes), precision=precision, ten_crop=crop)


def load_image(trained: Trained, path: Path) -> torch.Tensor:
    """uint8 (C, H, W) as the run's test images look before the eval pipeline."""
    if not Path(path).is_file():
        raise AlexNetError(f"{path}: no such file")
    image = decode_rgb(path)                                     # (3, H, W) uint8
    if trained.stats.channels == 1:                              # Fashion-MNIST: grey, as torchvision's weights
        image = grayscale(image[None].float()).round().clamp(0, 255).to(torch.uint8)[0]
    return resize_center_crop(image, image_side(trained.cfg))


def image_files(paths: list[Path]) -> list[Path]:
    """The files as given; a folder stands for the images below it (any depth, sorted by path; hidden files and
    folders, such as macOS's `._photo.jpg`, are not images)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not found:
            raise AlexNetError(f"{path} holds no images (extensions: {' '.join(sorted(IMAGE_EXTENSIONS))})")
        files += found
    return files


def predict(trained: Trained, paths: list[Path], topk: int = 5, batch_size: int = 64,
            precision: Precision = FP32) -> list[Top]:
    """Top-k (class, probability) of each file, `batch_size` images per forward pass; a bad file stops it."""
    top: list[Top] = []
    for _, result in predict_each(trained, paths, topk=topk, batch_size=batch_size, precision=precision):
        if isinstance(result, AlexNetError):
            raise result
        top.append(result)
    return top


@torch.no_grad()
def predict_each(trained: Trained, paths: list[Path], *, topk: int = 5, batch_size: int = 64,
                 precision: Precision = FP32) -> Iterator[tuple[Path, Top | AlexNetError]]:
    """(file, its top-k) in the order given, `batch_size` files per forward pass; a file that cannot be read or
    decoded comes with its one-line error instead, and the others go on."""
    model = trained.model.to(memory_format=precision.memory_format)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        loaded: list[torch.Tensor | AlexNetError] = []
        for path in chunk:
            try:
                loaded.append(load_image(trained, path))
            except AlexNetError as error:
                loaded.append(error)
        good = [x for x in loaded if isinstance(x, torch.Tensor)]
        tops = iter(_top_k(trained, model, torch.stack(good), topk, precision) if good else [])
        for path, x in zip(chunk, loaded, strict=True):
            yield path, (x if isinstance(x, AlexNetError) else next(tops))


def _top_k(trained: Trained, model, images: torch.Tensor, topk: int, precision: Precision) -> list[Top]:
    x = trained.pipeline(images.to(trained.device)).contiguous(memory_format=precision.memory_format)
    with precision.autocast(trained.device):
        probs = model(x).float().softmax(-1)                    # (b, classes)
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [[(trained.classes[i], v) for v, i in zip(vs.tolist(), ix.tolist(), strict=True)]
            for vs, ix in zip(values, indices, strict=True)]
