"""Loaders that yield uint8 batches on the training device; augmentation happens there afterwards.

`DeviceLoader` holds a whole small dataset on the device once, as uint8 (Fashion-MNIST: 47 MB, CIFAR-10: 150 MB),
so a training step costs one gather instead of a Python pipeline per sample (the d2l data loader's bottleneck).
`FolderLoader` decodes image folders in worker processes and copies pinned batches without blocking.

Both share one notion of order, which exact resume and torchrun depend on:
* epoch e of seed s is the permutation `randperm(N)` from a CPU generator seeded by (s, e), the same on every
  device and every rank;
* step i takes the *global* batch `order[i*B : (i+1)*B]` and rank r keeps `global[r::world]`, so across ranks
  every sample is seen exactly once per epoch and all ranks run the same number of steps;
* evaluation does the same without shuffling and without dropping the remainder: every sample once.
"""

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from alexnet.base.errors import AlexNetError
from alexnet.runtime.seeding import derived_seed


class Loader(Protocol):
    """What the trainer and evaluation need of a loader (DeviceLoader, FolderLoader, PreparedLoader)."""
    order: "Order"

    def __len__(self) -> int: ...

    def batches(self, epoch: int, start: int = 0) -> Iterator["Batch"]: ...


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (b, C, H, W) on the device; b = this rank's share of the global batch
    labels: torch.Tensor  # int64 (b,)
    global_size: int      # images in the global batch (all ranks), the divisor of a mean loss


class Timed:
    """An iterator's items, with the seconds spent blocked in its `next()` summed in `waited`: the trainer's
    input wait. Host wall time only (two `perf_counter` calls per item): on CUDA it adds no device sync."""

    def __init__(self, items: Iterable):
        self.items, self.waited = iter(items), 0.0

    def __iter__(self) -> "Timed":
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self.items)
        finally:
            self.waited += time.perf_counter() - t0


class Order:
    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool, rank: int,
                 world_size: int):
        if batch_size < world_size and drop_last:
            raise AlexNetError(f"train.batch_size {batch_size} is smaller than the {world_size} ranks: "
                               "every rank needs at least one image per step")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(derived_seed(self.seed, stream=epoch))
        return torch.randperm(self.n, generator=g)

    def steps(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, int]]:
        """(this rank's indices, global batch size) for steps start, start + 1, ... of the epoch."""
        order = self.permutation(epoch)
        for step in range(start, len(self)):
            chunk = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield chunk[self.rank::self.world_size], len(chunk)


class DeviceLoader:
    """The whole dataset on `device` as uint8; `batches(epoch, start)` yields `Batch`es in the shared order."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, device, shuffle: bool,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        assert images.dtype == torch.uint8 and len(images) == len(labels)
        self.images = images.to(device)  # (N, C, H, W) uint8: stays uint8 until the augmentation step
        self.labels = labels.to(device)
        self.order = Order(len(images), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                            rank=rank, world_size=world_size)

    def __len__(self) -> int:
        return len(self.order)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        for idx, global_size in self.order.steps(epoch, start):
            idx = idx.to(self.images.device, non_blocking=True)
            yield Batch(self.images[idx], self.labels[idx], global_size)


class FolderLoader:
    """Image folders: worker processes decode + resize (uint8), pinned memory, non-blocking copies."""

    def __init__(self, dataset, *, batch_size: int, device, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, workers: int = 4):
        # no more worker processes than CPUs this process may use (torch warns, and they would only compete)
        self.dataset, self.device = dataset, torch.device(device)
        self.workers = min(workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
                           os.cpu_count() or 1)
        self.order = Order(len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                            rank=rank, world_size=world_size)

    def __len__(self) -> int:
        return len(self.order)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        steps = list(self.order.steps(epoch, start))
        # A rank's share of the last global batch is empty when that batch has fewer images than there are ranks;
        # collate cannot stack nothing, so the DataLoader gets only the non-empty shares.
        loader = iter(torch.utils.data.DataLoader(
            self.dataset, batch_sampler=[idx.tolist() for idx, _ in steps if len(idx)], num_workers=self.workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            prefetch_factor=4 if self.workers else None))
        for idx, global_size in steps:
            if len(idx):
                images, labels = next(loader)
            else:
                size = self.dataset.image_size
                images, labels = torch.empty(0, 3, size, size, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
            yield Batch(images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True),
                        global_size)
