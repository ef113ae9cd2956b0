"""Fashion-MNIST reader for the original IDX files (Xiao, Rasul, Vollgraf 2017, arXiv:1708.07747; format from
LeCun's MNIST page): a big-endian header `magic, dim_0 .. dim_{n-1}` (uint32 each) followed by the uint8 payload.
Mirror, file names and MD5 sums as in torchvision's `datasets/mnist.py` `FashionMNIST`."""

import gzip
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alexnet.base.errors import AlexNetError, one_line
from alexnet.data.download import download as fetch

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_MIRRORS = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
# (images, labels) file stems per split; each may be on disk raw or with `.gz`.
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# MD5 of the official `.gz` downloads. Only downloads are checked: Debian's package recompresses the same
# payload, so its `.gz` files hash differently and are validated by parsing instead.
FASHION_MNIST_MD5 = {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                     "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                     "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}

# Debian's package of the same files (`apt-get install dataset-fashion-mnist`), where it installs them.
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

IMAGES_MAGIC = 0x00000803  # 0x08 = unsigned byte, 0x03 = three dimensions (N, rows, cols)
LABELS_MAGIC = 0x00000801  # unsigned byte, one dimension (N,)
IMAGE_SIDE = 28  # pixels


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """The raw file if present (torchvision's `raw/` keeps both; raw skips a decompression), else `stem.gz`."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut-off stream is an EOFError
        raise AlexNetError(f"{path}: cannot read IDX file ({one_line(e)})") from e


def _parse(path: Path, magic: int, tail_dims: tuple[int, ...]) -> np.ndarray:
    """Check the header against `magic` and the per-item dims, and the payload length against the header."""
    data = _read_bytes(path)
    ndim = 1 + len(tail_dims)
    header_len = 4 * (1 + ndim)  # bytes
    if len(data) < header_len:
        raise AlexNetError(f"{path}: truncated IDX header ({len(data)} bytes, expected {header_len})")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise AlexNetError(f"{path}: bad IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    if dims[1:] != tail_dims:
        raise AlexNetError(f"{path}: IDX dimensions {'x'.join(map(str, dims))}, "
                           f"expected Nx{'x'.join(map(str, tail_dims))}")
    expected = int(np.prod(dims))
    payload = len(data) - header_len
    if payload != expected:
        problem = "truncated" if payload < expected else "has trailing bytes"
        raise AlexNetError(f"{path}: IDX payload {problem}: {payload} bytes, header says {expected}")
    # `.copy()` makes the array writable (frombuffer over `bytes` is read-only, which torch warns about).
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 (N, 28, 28) from an IDX3 image file."""
    return _parse(path, IMAGES_MAGIC, (IMAGE_SIDE, IMAGE_SIDE))


def read_idx_labels(path: Path, num_classes: int = 10) -> np.ndarray:
    """uint8 (N,) from an IDX1 label file; every label must be < `num_classes`."""
    labels = _parse(path, LABELS_MAGIC, ())
    if labels.size and int(labels.max()) >= num_classes:
        raise AlexNetError(f"{path}: label {int(labels.max())} out of range 0..{num_classes - 1}")
    return labels


def read_fashion_mnist(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of one split from `directory`."""
    paths = []
    for stem in FASHION_MNIST_FILES[split]:
        path = find_idx_file(directory, stem)
        if path is None:
            raise AlexNetError(f"{directory}: missing {stem} (or {stem}.gz)")
        paths.append(path)
    images, labels = read_idx_images(paths[0]), read_idx_labels(paths[1])
    if len(images) != len(labels):
        raise AlexNetError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels")
    return images, labels


def has_fashion_mnist(directory: Path, split: str) -> bool:
    return all(find_idx_file(directory, stem) is not None for stem in FASHION_MNIST_FILES[split])


def locate_fashion_mnist(split: str, candidates: Sequence[Path], download_to: Path | None, *,
                         only_here: bool = False) -> Path | None:
    """Where `split` is: the first of `candidates` holding both its files, and then nothing is downloaded, even
    when a download is allowed. Otherwise, with `download_to` (`--download`), that folder once its missing files
    are fetched (checksummed, a progress bar on stderr); without it, None (the caller says where it looked).
    A failed download is one line: why, and how to get the files without one (`only_here`: `download_to` is an
    explicit data folder, the only place looked in, so Debian's package and $ALEXNET_DATA would not be found)."""
    found = next((d for d in candidates if has_fashion_mnist(d, split)), None)
    if found is not None or download_to is None:
        return found
    try:
        for stem in FASHION_MNIST_FILES[split]:
            if find_idx_file(download_to, stem) is None:  # a file already there is not fetched again
                file = f"{stem}.gz"
                fetch([mirror + file for mirror in FASHION_MNIST_MIRRORS], download_to / file,
                      FASHION_MNIST_MD5[file])
    except AlexNetError as error:
        if isinstance(error.__cause__, KeyboardInterrupt):  # the user stopped it: no advice needed
            raise
        every = ", ".join(FASHION_MNIST_MD5)  # both splits: a run reads train and test
        instead = (f"put {every} into {download_to}" if only_here else
                   f"`apt-get install {DEBIAN_PACKAGE}` (Debian; installs them under {DEBIAN_FASHION_MNIST}/), "
                   f"or put {every} into {download_to} or into $ALEXNET_DATA")
        raise AlexNetError(f"{error}; to train without downloading, {instead}") from None
    return download_to
