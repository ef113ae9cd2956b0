"""What `alexnet eval` and `alexnet predict` do with a run's checkpoint (`best.pt` or `checkpoint.pt`): the
trained model (`alexnet.run.trained`) on the run's test split, or on a user's image files."""

from pathlib import Path

import torch

from alexnet.base.errors import AlexNetError
from alexnet.data.augment import grayscale
from alexnet.data.folder import IMAGE_EXTENSIONS, decode_rgb, resize_center_crop
from alexnet.data.run import load_split, make_loader
from alexnet.eval.evaluate import evaluate, image_side, ten_crop_size
from alexnet.eval.metrics import EvalResult
from alexnet.run.trained import Trained, load_trained
from alexnet.runtime.precision import resolve_precision


def evaluate_checkpoint(checkpoint: Path, *, data_dir: str | None = None, ten_crops: bool = False,
                        device: str = "auto", batch_size: int | None = None) -> tuple[EvalResult, Trained]:
    trained = load_trained(checkpoint, device)
    return evaluate_trained(trained, data_dir=data_dir, ten_crops=ten_crops, batch_size=batch_size), trained


def evaluate_trained(trained: Trained, *, data_dir: str | None = None, ten_crops: bool = False,
                     batch_size: int | None = None, download: bool = False) -> EvalResult:
    """The trained model on its run's test split (the run's own data section; `data_dir` elsewhere)."""
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
    precision = resolve_precision(cfg.train.precision, trained.device, cfg.train.channels_last)
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


@torch.no_grad()
def predict(trained: Trained, paths: list[Path], topk: int = 5, batch_size: int = 64) -> list[list[tuple[str, float]]]:
    """Top-k (class, probability) of each file, `batch_size` images per forward pass."""
    top: list[list[tuple[str, float]]] = []
    for start in range(0, len(paths), batch_size):
        images = torch.stack([load_image(trained, p) for p in paths[start:start + batch_size]]).to(trained.device)
        probs = trained.model(trained.pipeline(images)).float().softmax(-1)
        values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
        top += [[(trained.classes[i], v) for v, i in zip(vs.tolist(), ix.tolist(), strict=True)]
                for vs, ix in zip(values, indices, strict=True)]
    return top
