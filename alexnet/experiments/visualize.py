"""What a trained net learned, as the paper shows it (Krizhevsky et al. 2012, section 6.1):

* `filters`: Fig. 3, the first convolutional layer's kernels as a grid of small images (RGB for 3 input
  channels, grey otherwise: the mean over the input channels), each scaled to its own [min, max]; drawn with
  crisp, enlarged pixels (a small net's 3x3 kernels too) under a title that names the model and the layer.
* `neighbours`: Fig. 4 (right), test images and the training images whose last hidden layer activations (the
  input of the final Linear layer) are nearest in Euclidean distance.

Both read a run's checkpoint (`best.pt` or `checkpoint.pt`) and write a PNG atomically.
"""

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from alexnet.base.errors import AlexNetError
from alexnet.base.files import IMAGE_SUFFIXES, atomic_path, output_file
from alexnet.data.run import load_split
from alexnet.models import ConvNet
from alexnet.report.plots import save_figure
from alexnet.run.trained import Trained, load_trained

PAD = 1            # px of background between tiles
MIN_TILE_PX = 32   # kernel pixels are drawn as s x s blocks, s >= 4, so that a tile is at least this wide
MIN_SIDE_PX = 480  # and the mosaic's longer side at least this (a small net's 8 kernels of 3x3 are 9x17 px)
TITLE_PX = 32      # the band above the mosaic that names the model and the layer


def first_conv(model: nn.Module) -> nn.Conv2d:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise AlexNetError(f"{type(model).__name__} has no convolutional layer")


def filter_mosaic(weight: torch.Tensor) -> tuple[np.ndarray, int, int]:
    """(out, in, k, k) kernels -> (H, W, 3) float image in [0, 1] with one tile per kernel, rows x cols."""
    n, c, kh, kw = weight.shape
    w = weight.detach().float().cpu()
    w = w if c == 3 else w.mean(1, keepdim=True).expand(n, 3, kh, kw)  # grey: the same value in R, G, B
    lo = w.flatten(1).min(1).values.view(n, 1, 1, 1)
    hi = w.flatten(1).max(1).values.view(n, 1, 1, 1)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    cols = math.ceil(math.sqrt(n * 4 / 3))  # a 4:3 grid; the paper's 96 kernels come out 12 x 8
    rows = math.ceil(n / cols)
    mosaic = np.ones((rows * (kh + PAD) + PAD, cols * (kw + PAD) + PAD, 3), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = PAD + r * (kh + PAD), PAD + q * (kw + PAD)
        mosaic[top:top + kh, left:left + kw] = w[i].permute(1, 2, 0).numpy()
    return mosaic, rows, cols


def title_band(text: str, width: int) -> np.ndarray:
    """(TITLE_PX, width, 3) float image in [0, 1]: `text` centred in black on white (matplotlib's text)."""
    fig = Figure(figsize=(width / 100, TITLE_PX / 100), dpi=100, facecolor="white")
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    band = np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float32) / 255  # (h, w, 3); h, w may round
    out = np.ones((TITLE_PX, width, 3), dtype=np.float32)
    h, w = min(TITLE_PX, band.shape[0]), min(width, band.shape[1])
    out[:h, :w] = band[:h, :w]
    return out


def _save_image(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        plt.imsave(tmp, array)


def filters(checkpoint: Path, out_png: Path) -> dict:
    """Draw the first conv layer's kernels under a title; returns {"tiles", "rows", "cols", "kernel", "scale",
    "layer", "title", "path", "pixels"} ("pixels": [height, width] of the PNG, the title band included)."""
    out_png = output_file(out_png, IMAGE_SUFFIXES)
    trained = load_trained(checkpoint, "cpu")
    conv = first_conv(trained.model)
    layer = next(name for name, module in trained.model.named_modules() if module is conv)
    mosaic, rows, cols = filter_mosaic(conv.weight)
    scale = max(4, math.ceil(MIN_TILE_PX / conv.weight.shape[-1]),  # an 11x11 kernel: 44 px, a 3x3 one: 33 px
                math.ceil(MIN_SIDE_PX / max(mosaic.shape[:2])))
    big = mosaic.repeat(scale, axis=0).repeat(scale, axis=1)  # nearest-neighbour upscaling: crisp kernel pixels
    n, c, kh, kw = conv.weight.shape
    title = (f"{trained.cfg.model.name}, {layer}: {n} filters of {c}x{kh}x{kw}"
             + ("" if c == 3 else " (grey)" if c == 1 else " (grey: mean of the input channels)"))
    picture = np.concatenate([title_band(title, big.shape[1]), big])
    _save_image(picture, out_png)
    return {"tiles": n, "rows": rows, "cols": cols, "kernel": [c, kh, kw], "scale": scale, "layer": layer,
            "title": title, "path": str(out_png), "pixels": [picture.shape[0], picture.shape[1]]}


@torch.no_grad()
def hidden_features(trained: Trained, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, D) activations of the last hidden layer (input of the final Linear)."""
    model = trained.model
    if not isinstance(model, ConvNet):
        raise AlexNetError(f"{type(model).__name__} has no classifier to take hidden features from")
    head = model.classifier[:-1]  # eval mode: dropout is the identity
    out = []
    for chunk in images.split(batch_size):
        x = trained.pipeline(chunk.to(trained.device))
        out.append(head(model.forward_features(x)).float().cpu())
    return torch.cat(out)


def neighbours(checkpoint: Path, out_png: Path, n_queries: int = 5, k: int = 6, *, split: str = "test",
               data_dir: str | None = None, train_limit: int | None = None, seed: int = 0,
               device: str = "auto") -> dict:
    """Pick `n_queries` random images of `split` and draw each with its `k` nearest training images (by the
    Euclidean distance of their last-hidden-layer activations). The training images are the run's own training
    set (its `data.train_subset` included), or its first `train_limit`. Returns the indices drawn."""
    out_png = output_file(out_png, IMAGE_SUFFIXES)
    if n_queries < 1 or k < 1:
        raise AlexNetError(f"n_queries and k must be >= 1, got {n_queries} and {k}")
    if split not in ("train", "test"):
        raise AlexNetError(f"split must be train or test, got {split!r}")
    trained = load_trained(checkpoint, device)
    if not hasattr(trained.model, "forward_features"):
        raise AlexNetError(f"{type(trained.model).__name__} has no forward_features")
    if trained.cfg.data.dataset == "folder":
        raise AlexNetError("neighbours reads in-memory datasets (fashion-mnist, cifar10), not image folders")
    if data_dir is not None:
        trained.cfg.data.data_dir = data_dir
    train = load_split(trained.cfg, "train")
    train_images, train_labels = train.images[:train_limit], train.labels[:train_limit]
    query = train if split == "train" else load_split(trained.cfg, "test")
    if n_queries > len(query.labels) or k > len(train_labels):
        raise AlexNetError(f"asked for {n_queries} queries and {k} neighbours, but the sets hold "
                           f"{len(query.labels)} and {len(train_labels)} images")
    picks = torch.randperm(len(query.labels), generator=torch.Generator().manual_seed(seed))[:n_queries]
    q = hidden_features(trained, query.images[picks])
    bank = hidden_features(trained, train_images)
    # the direct form: the matmul form (|a|^2 + |b|^2 - 2ab) cancels badly when an image is its own neighbour
    distances = torch.cdist(q, bank, compute_mode="donot_use_mm_for_euclid_dist")
    distances, nearest = distances.topk(k, dim=1, largest=False)  # (n_queries, k), nearest first
    _draw_neighbours(query.images[picks], train_images[nearest.flatten()], query.labels[picks],
                     train_labels[nearest.flatten()], train.classes, k, out_png)
    return {"split": split, "queries": picks.tolist(), "neighbours": nearest.tolist(),
            "distances": distances.tolist(), "path": str(out_png)}


def _draw_neighbours(queries, found, query_labels, found_labels, classes, k: int, path: Path) -> None:
    n = len(queries)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.3 * (k + 1), 1.4 * n), squeeze=False)
    for i in range(n):
        row = [(queries[i], query_labels[i], "query")] + \
              [(found[i * k + j], found_labels[i * k + j], f"#{j + 1}") for j in range(k)]
        for ax, (image, label, tag) in zip(axes[i], row, strict=True):
            picture = image.permute(1, 2, 0).numpy()
            ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{tag}: {classes[int(label)]}", fontsize=6, color="C3" if tag == "query" else "black")
            ax.axis("off")
    save_figure(fig, path)
