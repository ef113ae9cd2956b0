"""Datasets (Fashion-MNIST IDX, CIFAR-10 batches, image folders), device-resident loaders, batched augmentation,
and the data side of a run (`run`). Imports `config`, `runtime` and `base`."""

from alexnet.data.datasets import Dataset, load_dataset
from alexnet.data.folder import FolderDataset
from alexnet.data.loader import Batch, DeviceLoader, FolderLoader
from alexnet.data.pipeline import Pipeline, Stats, build_pipeline, compute_stats, list_ops

__all__ = ["Batch", "Dataset", "DeviceLoader", "FolderDataset", "FolderLoader", "Pipeline", "Stats",
           "build_pipeline", "compute_stats", "list_ops", "load_dataset"]
