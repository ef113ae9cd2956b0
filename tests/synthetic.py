"""Small datasets written by the tests in the real on-disk formats, learnable in a few steps."""

import gzip
import struct
from pathlib import Path

import numpy as np

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def patterned(n: int, seed: int, classes: int = 10, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Class k: a bright horizontal bar at row 2 + 2k, on noise. Balanced labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, size, size), dtype=np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 + 2 * k: 4 + 2 * k, 4:size - 4] = 230
    return images, labels.astype(np.uint8)


def write_fashion_mnist(directory: Path, n_train: int = 512, n_test: int = 200) -> Path:
    """Four IDX .gz files (the format of the original Fashion-MNIST) with patterned images."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = patterned(n, seed)
        image_file, label_file = IDX_FILES[split]
        with gzip.open(directory / f"{image_file}.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        with gzip.open(directory / f"{label_file}.gz", "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + labels.tobytes())
    return directory
