"""Input throughput alone, no model: images/s of uint8 batches ready on the device, from a dataset written by
`alexnet prepare` (`PreparedLoader`: shard reads in a background thread, the whole batch decoded at once, by nvJPEG
on a GPU) or from a plain image folder (`FolderLoader`: decode + paper crop in worker processes). The paper net
needs ~7 GFLOP per training image, so a GPU that trains N images/s needs the input path to deliver N as well.

    decode_throughput("/data/imagenet-prepared", "cuda")   # then the source folder, for the ratio
"""

from pathlib import Path
from typing import Any

import torch

from alexnet.base.errors import AlexNetError
from alexnet.bench.timing import time_steps
from alexnet.data.datasets import load_dataset
from alexnet.data.loader import FolderLoader, Loader
from alexnet.data.prepared import PreparedDataset, PreparedLoader, is_prepared, read_manifest
from alexnet.runtime.device import device_name, pick_device

FOLDER_WORKERS = 8  # the paper preset's data.workers


def decode_throughput(path: str | Path, device: str | torch.device = "auto", batch_size: int = 256, steps: int = 20,
                      warmup: int = 3, *, split: str = "train", image_size: int = 256,
                      workers: int = FOLDER_WORKERS) -> dict:
    """Images/s of `steps` training batches (shuffled, after `warmup` untimed ones) of the prepared dataset or
    image folder at `path`. `image_size` and `workers` apply to a plain folder only (a prepared one has its own
    size and needs no workers). Keep (warmup + steps) * batch_size within one epoch: a folder loader restarts its
    workers at every epoch, and that cost would land in the timed window."""
    dev = pick_device(str(device))
    if is_prepared(path):
        image_size = read_manifest(path)["image_size"]
    data = load_dataset("folder", split, path, image_size=image_size)
    options: dict[str, Any] = dict(batch_size=batch_size, device=dev, shuffle=True, seed=0, drop_last=True)
    loader: Loader
    if isinstance(data, PreparedDataset):
        loader, what = PreparedLoader(data, **options), "prepared JPEG shards, batch decoded on the device"
    else:
        loader, what = FolderLoader(data, workers=workers, **options), f"image folder, {workers} decode workers"
    if len(loader) == 0:
        raise AlexNetError(f"{path}: {len(data)} images are fewer than one batch of {batch_size}")
    batches = _endless(loader)
    seconds = time_steps(lambda: next(batches).images, steps=steps, warmup=warmup, device=dev)
    return {"path": str(path), "kind": "prepared" if isinstance(data, PreparedDataset) else "folder",
            "what": what, "device": device_name(dev), "split": split, "images": len(data),
            "image_size": image_size, "batch_size": batch_size, "steps": steps, "warmup": warmup,
            "seconds": seconds, "images_per_sec": batch_size * steps / seconds}


def _endless(loader: PreparedLoader | FolderLoader):
    """Batches across epochs without end: the timed window may span an epoch boundary."""
    epoch = 0
    while True:
        yield from loader.batches(epoch)
        epoch += 1
