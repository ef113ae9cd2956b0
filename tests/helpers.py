"""Helpers the tests share: one-line error checks, small files in the real on-disk formats, closeness in ulps."""

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from alexnet.data import idx as idx_mod


def one_line_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, f"{needle!r} not in {message!r}"
    return message


def write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> Path:
    blob = struct.pack(f">I{len(dims)}I", magic, *dims) + payload
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)
    return path


def write_fmnist(directory: Path, split="train", n=5, gz=True, label_offset=0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny split in the original format: image i is filled with i, except pixel (3, 4) = 200 + i."""
    images = np.repeat(np.arange(n, dtype=np.uint8), 28 * 28).reshape(n, 28, 28)
    images[:, 3, 4] = 200 + np.arange(n)
    labels = ((np.arange(n) + label_offset) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    img_stem, lbl_stem = idx_mod.FASHION_MNIST_FILES[split]
    write_idx(directory / f"{img_stem}{ext}", 0x803, (n, 28, 28), images.tobytes())
    write_idx(directory / f"{lbl_stem}{ext}", 0x801, (n,), labels.tobytes())
    return images, labels


def ulp_close(got, expected, ulps):
    """|got - expected| <= ulps * eps * |expected| elementwise, plus ulps * eps * max|expected| for values near 0;
    eps is got's (the coarser result's) unit roundoff."""
    eps = torch.finfo(got.dtype).eps
    torch.testing.assert_close(got, expected, rtol=ulps * eps, atol=ulps * eps * expected.abs().max().item())
