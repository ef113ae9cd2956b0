"""Data delivery alone, no model: images/s of batches ready on the device for the d2l recipe (28 -> 224).

Ours: Fashion-MNIST held on the device as uint8 (`DeviceLoader`), then one batched call of the on-device pipeline
(the `d2l-fast` augmentations: random crop with padding, horizontal flip, then normalise and resize to 224).
d2l: `torchvision.datasets.FashionMNIST` + `Resize(224)` + `ToTensor` per image in a 4-worker `DataLoader`, then
`.to(device)` (no augmentation at all). Same batch size, device and timing rules as the training benchmark.
"""

import tempfile
import warnings
from pathlib import Path

import torch

from alexnet.bench.baseline import D2L_WORKERS, d2l_dataset, torchvision_root
from alexnet.bench.throughput import SYNTHETIC_IMAGES, forever, write_synthetic_fashion_mnist
from alexnet.bench.timing import time_steps
from alexnet.config import load_preset
from alexnet.data.datasets import load_dataset
from alexnet.data.loader import DeviceLoader
from alexnet.data.pipeline import build_pipeline, compute_stats
from alexnet.runtime.device import device_name, pick_device

AUGMENT_PRESET = "d2l-fast"  # ours runs this preset's training augmentations


def measure_loader(*, batch_size: int = 128, input_size: int = 224, device: str = "auto", steps: int = 20,
                   warmup: int = 3, data_dir: str | None = None, synthetic: bool = False,
                   workers: int = D2L_WORKERS) -> dict:
    dev = pick_device(device)
    augment = load_preset(AUGMENT_PRESET).data.train_augment
    with tempfile.TemporaryDirectory(prefix="alexnet-loader-") as scratch:
        if synthetic:
            # Fashion-MNIST's size, and at least every warm-up and timed step within the first epoch: an epoch
            # boundary (where the d2l DataLoader respawns its workers) must not fall in the timed window.
            n = max(SYNTHETIC_IMAGES, (warmup + steps) * batch_size)
            data_dir = str(write_synthetic_fashion_mnist(Path(scratch), n))
        train = load_dataset("fashion-mnist", "train", data_dir)
        loader = DeviceLoader(train.images, train.labels, batch_size=batch_size, device=dev, shuffle=True,
                              drop_last=True)
        pipeline = build_pipeline(augment, input_size=input_size, stats=compute_stats(train.images))
        generator = torch.Generator(device=dev).manual_seed(0)
        batches = forever(loader.batches)
        ours_s = time_steps(lambda: pipeline(next(batches).images, generator), steps=steps, warmup=warmup,
                            device=dev)
        root = Path(data_dir) if synthetic and data_dir else torchvision_root(data_dir)
        with warnings.catch_warnings():  # "4 workers on a 2-core machine": that is the recipe being measured
            warnings.simplefilter("ignore", UserWarning)
            d2l = torch.utils.data.DataLoader(d2l_dataset(root, input_size), batch_size=batch_size, shuffle=True,
                                              num_workers=workers, drop_last=True)
            images = forever(lambda _epoch: iter(d2l))
            d2l_s = time_steps(lambda: next(images)[0].to(dev), steps=steps, warmup=warmup, device=dev)
    ours, baseline = batch_size * steps / ours_s, batch_size * steps / d2l_s
    return {"device": device_name(dev), "batch_size": batch_size, "input_size": input_size, "steps": steps,
            "ours": {"images_per_sec": ours, "augment": augment, "what": "DeviceLoader + on-device pipeline"},
            "baseline": {"images_per_sec": baseline, "workers": workers,
                         "what": "torchvision FashionMNIST + Resize + ToTensor, DataLoader"},
            "ratio": ours / baseline}


def format_loader(r: dict) -> str:
    return (f"data delivery, batch {r['batch_size']}, 28 -> {r['input_size']} px, {r['device']}\n"
            f"  ours (on-device crop + flip + resize): {r['ours']['images_per_sec']:10.0f} images/s\n"
            f"  d2l ({r['baseline']['workers']}-worker DataLoader, no augmentation): "
            f"{r['baseline']['images_per_sec']:10.0f} images/s\n"
            f"  ratio {r['ratio']:.1f}x")
