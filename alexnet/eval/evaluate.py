"""Evaluation: centre view (the eval pipeline) or the paper's ten views (section 4.1: "the four corner patches
and the center patch as well as their horizontal reflections ... averaging the predictions made by the
network's softmax layer on the ten patches")."""

import torch
import torch.nn.functional as F

from alexnet.data.augment import normalize, resize, ten_crop
from alexnet.eval.metrics import EvalResult, Tally
from alexnet.runtime.precision import FP32, Precision

TEN_CROP_PCT = 0.875  # 224 / 256: images no larger than the input are resized to input / 0.875 first


@torch.no_grad()
def evaluate(model, loader, pipeline, *, num_classes: int, precision: Precision = FP32,
             ten_crops: bool = False) -> EvalResult:
    model.eval()
    device = next(model.parameters()).device
    tally = Tally(num_classes, device)
    fmt = precision.memory_format
    for batch in loader.batches(epoch=0):
        with precision.autocast(device):
            if ten_crops:
                views = _ten_views(batch.images, pipeline)              # (10, b, C, S, S)
                logits = model(views.flatten(0, 1).contiguous(memory_format=fmt)).float()
                probs = logits.softmax(-1).view(10, len(batch.labels), num_classes).mean(0)
                logits = probs.clamp_min(1e-12).log()                   # log of the averaged softmax
            else:
                logits = model(pipeline(batch.images).contiguous(memory_format=fmt)).float()
        tally.update(logits, batch.labels, F.cross_entropy(logits, batch.labels, reduction="sum"))
    return tally.result()


def _ten_views(images: torch.Tensor, pipeline) -> torch.Tensor:
    size = pipeline.input_size
    x = images.float().div_(255)
    if min(x.shape[-2:]) <= size:
        x = resize(x, round(size / TEN_CROP_PCT))
    views = ten_crop(x, size)
    return normalize(views.flatten(0, 1), pipeline.stats.mean, pipeline.stats.std).view_as(views)
