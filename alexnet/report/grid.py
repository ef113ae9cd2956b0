"""The augmentation grid: a PNG with one row per training image, the original then several draws of the
configured `alexnet.data.pipeline.Pipeline`, to check by eye what the network is shown (the paper's section 4.1
augmentations, or a preset's)."""

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from alexnet.base.files import IMAGE_SUFFIXES, atomic_path, output_file
from alexnet.config import Config
from alexnet.data.datasets import Dataset, load_dataset
from alexnet.data.pipeline import Pipeline, compute_stats
from alexnet.data.run import FOLDER_STATS_IMAGES, run_pipeline

CELL_INCHES = 1.4  # each image drawn 1.4 x 1.4 inches (140 px at the default 100 dpi)


def _for_display(x: torch.Tensor):
    """(C, H, W) in [0, 1] -> a (H, W) or (H, W, 3) numpy array, as imshow wants."""
    x = x.detach().float().clamp(0, 1).cpu()
    return (x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)).numpy()


def augment_grid(images: torch.Tensor, pipeline: Pipeline, out: Path, *, samples: int = 8, variants: int = 5,
                 seed: int = 0, classes: Sequence[str] | None = None,
                 labels: torch.Tensor | Sequence[int] | None = None) -> Path:
    """Draw `samples` images (a seeded random choice from uint8 `images` (N, C, H, W)) and `variants`
    augmented versions of each, un-normalised with the pipeline's stats; write the PNG atomically to `out`."""
    out = output_file(out, IMAGE_SUFFIXES)
    n = images.shape[0]
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:min(samples, n)]
    originals = images[pick.to(images.device)]
    rows = originals.shape[0]

    # One pipeline call for every variant of every row: the batch is the rows repeated `variants` times.
    generator = torch.Generator(device=images.device).manual_seed(seed)
    batch = originals.repeat(variants, 1, 1, 1)  # (variants * rows, C, H, W), variant-major
    augmented = pipeline(batch, generator)
    stats = pipeline.stats
    mean = torch.tensor(stats.mean, device=augmented.device).view(1, -1, 1, 1)
    std = torch.tensor(stats.std, device=augmented.device).view(1, -1, 1, 1)
    # back to [0, 1] for display; after a mean-image subtraction and a crop, the per-channel mean stands in for
    # the mean image's pixels (close enough to look at)
    scale = 1 / 255 if pipeline.normalize == "mean_image" else std
    augmented = (augmented * scale + mean).view(variants, rows, *augmented.shape[1:])

    cols = variants + 1
    fig = Figure(figsize=(CELL_INCHES * cols, CELL_INCHES * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    gray = images.shape[1] == 1
    for r in range(rows):
        shown = [originals[r].float() / 255] + [augmented[v, r] for v in range(variants)]
        for c, img in enumerate(shown):
            ax = axes[r][c]
            ax.imshow(_for_display(img), cmap="gray" if gray else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"draw {c}", fontsize=8)
        if classes is not None and labels is not None:
            axes[r][0].set_ylabel(str(classes[int(labels[int(pick[r])])]), fontsize=8)

    # Atomic: a reader (or a crash mid-write) never sees half a PNG.
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def draw_augmentations(cfg: Config, out: Path, *, samples: int = 8, variants: int = 5, seed: int = 0) -> Pipeline:
    """The grid of `cfg`'s training augmentations on its training images; returns the pipeline drawn. An image
    folder is sampled (a seeded draw of decoded images for the statistics and the picture), not decoded whole."""
    out, d = output_file(out, IMAGE_SUFFIXES), cfg.data
    data = load_dataset(d.dataset, "train", d.data_dir, d.download, image_size=d.image_size)
    if not isinstance(data, Dataset):  # a folder: a seeded sample, decoded
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:FOLDER_STATS_IMAGES]
        images, labels = data.decode(pick.tolist()), data.labels[pick]
    else:
        images, labels = data.images, data.labels
    pipeline = run_pipeline(cfg, compute_stats(images), train=True)
    augment_grid(images, pipeline, out, samples=samples, variants=variants, seed=seed, classes=data.classes,
                 labels=labels)
    return pipeline
