"""What `alexnet eval` and `alexnet predict` do with a run's checkpoint (`best.pt` or `checkpoint.pt`): the
trained model (`alexnet.run.trained`) on the run's test split, or on a user's image files."""

from pathlib import Path

import torch

from alexnet.base.errors import AlexNetError
from alexnet.data.augment import grayscale
from alexnet.data.folder import decode_rgb, resize_center_crop
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
                     batch_size: int | None = None) -> EvalResult:
    """The trained model on its run's test split (the run's own data section; `data_dir` elsewhere)."""
    cfg = trained.cfg
    crop = ten_crop_size(cfg) if ten_crops else None  # refused before any work where it cannot apply
    if data_dir is not None:
        cfg.data.data_dir = data_dir
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


@torch.no_grad()
def predict(trained: Trained, paths: list[Path], topk: int = 5) -> list[list[tuple[str, float]]]:
    images = torch.stack([load_image(trained, p) for p in paths]).to(trained.device)
    probs = trained.model(trained.pipeline(images)).float().softmax(-1)
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [[(trained.classes[i], v) for v, i in zip(vs.tolist(), ix.tolist(), strict=True)]
            for vs, ix in zip(values, indices, strict=True)]
