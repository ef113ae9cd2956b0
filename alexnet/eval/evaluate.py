"""Evaluation: centre view (the eval pipeline) or the paper's ten views (section 4.1: "the four corner patches
and the center patch as well as their horizontal reflections ... averaging the predictions made by the
network's softmax layer on the ten patches")."""

import torch
import torch.nn.functional as F

from alexnet.base.errors import AlexNetError
from alexnet.config import Config
from alexnet.eval.metrics import EvalResult, Tally
from alexnet.runtime.precision import FP32, Precision

NATIVE_SIZE = {"fashion-mnist": 28, "cifar10": 32}  # the side of the images as stored (a folder: data.image_size)


def image_side(cfg: Config) -> int:
    return NATIVE_SIZE.get(cfg.data.dataset, cfg.data.image_size)


def ten_crop_size(cfg: Config) -> int:
    """The crop the paper's ten views are cut at: that of the run's random training crops, when those are
    smaller than the stored images (the paper: 224 of 256; the `paper` preset: 227 of 256). A net trained on
    whole images (Fashion-MNIST at 28, or resized to 224) or on padded translations (CIFAR-10's 32 of 32 + 4)
    never saw crops of its images: ten views would only show it something new, so they are refused."""
    side = image_side(cfg)
    for spec in cfg.data.train_augment:
        size = spec.get("size") or side
        if spec.get("op") == "random_crop" and not spec.get("padding") and size < side:
            return size
    raise AlexNetError(f"--ten-crop takes the paper's crops of a net trained on random crops smaller than its images "
                       f"(the paper: 224 of 256); this run trained on whole {side}x{side} images (its "
                       f"data.train_augment has no such random_crop), so ten crops would only lower its accuracy")


@torch.no_grad()
def evaluate(model, loader, pipeline, *, num_classes: int, precision: Precision = FP32,
             ten_crop: int | None = None) -> EvalResult:
    """Top-1, top-k, loss and confusion over every sample of `loader` (all ranks). With `ten_crop` (the
    training crop size, `ten_crop_size`), each image's softmax is averaged over the paper's ten views."""
    model.eval()
    device = next(model.parameters()).device
    tally = Tally(num_classes, device)
    fmt = precision.memory_format
    for batch in loader.batches(epoch=0):
        with precision.autocast(device):
            if ten_crop:
                views = pipeline.ten_views(batch.images, ten_crop)      # (10, b, C, S, S)
                logits = model(views.flatten(0, 1).contiguous(memory_format=fmt)).float()
                probs = logits.softmax(-1).view(10, len(batch.labels), num_classes).mean(0)
                logits = probs.clamp_min(1e-12).log()                   # log of the averaged softmax
            else:
                logits = model(pipeline(batch.images).contiguous(memory_format=fmt)).float()
        tally.update(logits, batch.labels, F.cross_entropy(logits, batch.labels, reduction="sum"))
    return tally.result()
