"""`load_dataset(name, split)`: Fashion-MNIST (the d2l chapter 7.1 setting), CIFAR-10, or an ImageNet-style folder
(the paper's setting), found on disk or downloaded with a checksum on request.

Where: an explicit `data_dir` is the only place looked in (a typo must be an error, not a silent fall-through to
other files). Without one: `$ALEXNET_DATA`, the user cache (`$ALEXNET_CACHE`, else `~/.cache/alexnet`), then for
Fashion-MNIST Debian's `dataset-fashion-mnist` package. Downloads go to `data_dir` when given, else the cache.
Every dataset records the folder or archive it was read from (`source`)."""

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alexnet.base.errors import AlexNetError
from alexnet.config import DATASETS
from alexnet.data import cifar, idx
from alexnet.data.download import download as fetch
from alexnet.data.folder import FolderDataset
from alexnet.data.prepared import PreparedDataset, is_prepared

SPLITS = ("train", "val", "test")  # val: an image folder's own val/ (alexnet.data.splits)
DEBIAN_FASHION_MNIST = idx.DEBIAN_FASHION_MNIST  # installed by `apt-get install dataset-fashion-mnist`
FASHION_MNIST_SUBDIRS = ("", "fashion-mnist", "FashionMNIST/raw")  # our layout, then torchvision's


@dataclass
class Dataset:
    """A whole split held in memory: small enough (Fashion-MNIST 47 MB, CIFAR-10 150 MB) to live on the GPU."""
    images: torch.Tensor  # uint8 (N, C, H, W), contiguous, CPU
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]    # class names, index = label
    name: str             # "fashion-mnist" | "cifar10" | "folder"
    split: str            # "train" | "test"
    source: str = ""      # the folder or archive the files were read from

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> "Dataset":
        """The samples at `indices`, in that order, as a new dataset (a copy: the rest can be freed)."""
        return dataclasses.replace(self, images=self.images[indices], labels=self.labels[indices])


def cache_dir() -> Path:
    """Where downloads go: `$ALEXNET_CACHE`, else `~/.cache/alexnet`."""
    return Path(os.environ.get("ALEXNET_CACHE") or Path.home() / ".cache" / "alexnet").expanduser()


def search_roots(data_dir: str | Path | None) -> list[Path]:
    """The user-chosen places, in priority order: `data_dir` alone when given (it must be a folder), else
    `$ALEXNET_DATA` if set."""
    if data_dir is not None and str(data_dir) != "":
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise AlexNetError(f"data folder {root} " + ("is a file" if root.exists() else "does not exist"))
        return [root]
    env = os.environ.get("ALEXNET_DATA")
    return [Path(env).expanduser()] if env else []


def fashion_mnist_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Every directory `load_dataset("fashion-mnist", ...)` looks in, in order."""
    dirs = [root / sub for root in search_roots(data_dir) for sub in FASHION_MNIST_SUBDIRS]
    if data_dir is not None and str(data_dir) != "":
        return dirs
    return dirs + [cache_dir() / sub for sub in FASHION_MNIST_SUBDIRS[1:]] + [DEBIAN_FASHION_MNIST]


def download_dir(data_dir: str | Path | None) -> Path:
    """Where a download goes: the explicit data folder, else the user cache."""
    return Path(data_dir).expanduser() if data_dir is not None and str(data_dir) != "" else cache_dir()


def load_dataset(name: str, split: str, data_dir: str | Path | None = None, download: bool = False, *,
                 image_size: int = 256) -> Dataset | FolderDataset | PreparedDataset:
    """Load one split. `image_size` applies to image folders only (which are never downloaded); a folder's files
    are decoded lazily (`alexnet.data.run.load_split` checks them before training)."""
    if name not in DATASETS:
        raise AlexNetError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if split not in SPLITS or (split == "val" and name != "folder"):
        known = SPLITS if name == "folder" else ("train", "test")
        raise AlexNetError(f"unknown split {split!r}; choose from {', '.join(known)}")
    if name == "fashion-mnist":
        return _load_fashion_mnist(split, data_dir, download)
    if name == "cifar10":
        return _load_cifar10(split, data_dir, download)
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise AlexNetError(f"image_size must be a positive number of pixels, got {image_size!r}")
    roots = search_roots(data_dir)
    if not roots:
        raise AlexNetError("dataset 'folder' needs --data-dir DIR (or $ALEXNET_DATA) holding train/ and val/")
    if is_prepared(roots[0]):  # written by `alexnet prepare`: JPEG shards of the paper's crops
        return PreparedDataset(roots[0], split, image_size=image_size)
    return FolderDataset(roots[0], split, image_size=image_size)


def _load_fashion_mnist(split: str, data_dir, download: bool) -> Dataset:
    target = download_dir(data_dir) / ("" if data_dir else "fashion-mnist") if download else None
    directory = idx.locate_fashion_mnist(split, fashion_mnist_dirs(data_dir), target, only_here=bool(data_dir))
    if directory is None and data_dir:
        raise AlexNetError(f"{Path(data_dir).expanduser()} holds no Fashion-MNIST {split} files (looked for "
                           f"{idx.FASHION_MNIST_FILES[split][0]}[.gz] in it and its fashion-mnist/ and "
                           f"FashionMNIST/raw/ subfolders); pass --download to fetch them there")
    if directory is None:
        looked = ", ".join(str(r) for r in search_roots(data_dir) + [cache_dir()])
        raise AlexNetError(f"Fashion-MNIST {split} files not found (looked in {looked}, their fashion-mnist/ and "
                           f"FashionMNIST/raw/ subfolders, and {DEBIAN_FASHION_MNIST}); pass --download to fetch "
                           f"them into {cache_dir() / 'fashion-mnist'}, or `apt-get install dataset-fashion-mnist`, "
                           f"or point --data-dir at a folder holding {idx.FASHION_MNIST_FILES[split][0]}[.gz]")
    images, labels = idx.read_fashion_mnist(directory, split)
    # (N, 28, 28) -> (N, 1, 28, 28): one grey channel; unsqueeze of a contiguous tensor stays contiguous.
    return Dataset(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long(),
                   list(idx.FASHION_MNIST_CLASSES), "fashion-mnist", split, str(directory))


def _cifar_sources(data_dir) -> list[Path]:
    """Candidate batch folders and archives, best first within each root (unpacked batches load fastest)."""
    explicit = data_dir is not None and str(data_dir) != ""
    sources = []
    for root in search_roots(data_dir) + ([] if explicit else [cache_dir()]):
        sources += [root / cifar.CIFAR_DIR, root, root / cifar.CIFAR_ARCHIVE]
    return sources


def _is_cifar_source(path: Path, split: str) -> bool:
    if path.name == cifar.CIFAR_ARCHIVE:
        return path.is_file()
    return path.is_dir() and cifar.has_cifar_dir(path, split)


def _load_cifar10(split: str, data_dir, download: bool) -> Dataset:
    source = next((s for s in _cifar_sources(data_dir) if _is_cifar_source(s, split)), None)
    if source is None and download:
        source = fetch([cifar.CIFAR_URL], download_dir(data_dir) / cifar.CIFAR_ARCHIVE, cifar.CIFAR_MD5)
    if source is None and data_dir:
        raise AlexNetError(f"{Path(data_dir).expanduser()} holds no CIFAR-10 (looked for {cifar.CIFAR_DIR}/, the "
                           f"batch files, or {cifar.CIFAR_ARCHIVE} in it); pass --download to fetch it there")
    if source is None:
        looked = ", ".join(str(r) for r in search_roots(data_dir) + [cache_dir()])
        raise AlexNetError(f"CIFAR-10 not found (looked for {cifar.CIFAR_DIR}/ or {cifar.CIFAR_ARCHIVE} in {looked}); "
                           f"pass --download to fetch it into {cache_dir()}, or --data-dir DIR holding either")
    read = cifar.read_cifar_dir if source.is_dir() else cifar.read_cifar_tar
    images, labels, classes = read(source, split)
    return Dataset(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), classes, "cifar10", split,
                   str(source))

