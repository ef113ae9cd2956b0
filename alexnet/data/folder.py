"""ImageNet-style image folders, `root/train/<class>/*` and `root/val/<class>/*` (the layout of torchvision's
`ImageFolder` and pytorch/examples `imagenet/main.py`), with the paper's preprocessing (Krizhevsky et al. 2012,
section 2): rescale so the shorter side is 256, then take the central 256x256 patch."""

import copy
import os
import threading
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import read_file
from torchvision.transforms.v2 import functional as F

from alexnet.base.errors import AlexNetError, one_line
from alexnet.data.decode import decode_bytes

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})  # compared lower-cased
# ImageNet calls its held-out split `val`: the test split is `test/` when there is one, else `val/`; the validation
# split is `val/` only beside a `test/` (alexnet.data.splits).
SPLIT_FOLDERS = {"train": ("train",), "val": ("val",), "test": ("test", "val")}
VERIFY_BLOCK = 1024  # files in flight while checking a folder: bounds memory on ImageNet's 1.28M files
MAX_PIXELS = 64_000_000  # an 8000 x 8000 photo; larger JPEGs are decoded reduced, anything else refused
_PIL_LIMIT_LOCK = threading.Lock()  # Pillow's bomb limit is a global: set aside one header read at a time


def decode_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """uint8 (3, H, W) RGB; greyscale, palette, alpha and 16-bit images are converted. AlexNetError names a bad
    file. An image over `max_pixels` is decoded at 1/2, 1/4 or 1/8 of its size where it is a JPEG (libjpeg
    scales while decoding, so the full image is never in memory), else refused."""
    width, height, kind = _header(path)
    if width * height > max_pixels:
        return _decode_reduced(path, width, height, kind, max_pixels)
    try:
        data = read_file(str(path))
    except RuntimeError as e:  # unreadable (permissions, vanished): torchvision says so with a RuntimeError
        raise AlexNetError(f"{path}: cannot read image ({one_line(e)})") from None
    return decode_bytes(data, str(path))


def _header(path: str | Path) -> tuple[int, int, str]:
    """(width, height, format) from the file's header alone; Pillow's own decompression-bomb check (warnings,
    then an error at 179 Mpx) is replaced by `max_pixels`."""
    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as im:
                return im.size[0], im.size[1], im.format or ""
        except Exception as e:  # not an image Pillow knows: torchvision or the error below will say
            if isinstance(e, OSError) and not isinstance(e, Image.UnidentifiedImageError):
                raise AlexNetError(f"{path}: cannot read image ({one_line(e)})") from None
            return 0, 0, ""
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _decode_reduced(path: str | Path, width: int, height: int, kind: str, max_pixels: int) -> torch.Tensor:
    megapixels = f"{width}x{height} = {width * height / 1e6:.0f} Mpx"
    scale = next((s for s in (2, 4, 8) if (width // s) * (height // s) <= max_pixels), None)
    if kind != "JPEG" or scale is None:
        raise AlexNetError(f"{path}: {megapixels}, over the limit of {max_pixels / 1e6:.0f} Mpx; shrink it first")
    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as im:
                im.draft("RGB", (-(-width // scale), -(-height // scale)))  # decode at 1 / scale
                array = np.asarray(im.convert("RGB"))
        except Exception as e:
            raise AlexNetError(f"{path}: cannot decode image ({one_line(e)})") from e
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to `size` (antialiased bilinear), then the central `size` x `size` patch; uint8 stays uint8."""
    image = F.resize(image, [size], antialias=True)  # a one-element size means "shorter side"
    return F.center_crop(image, [size, size]).contiguous()


class FolderDataset(torch.utils.data.Dataset):
    """Images decoded lazily (in DataLoader workers). `find_bad_files` and `drop_bad_files` find the undecodable
    files before training does (`alexnet.data.run.load_split`, every rank its share)."""

    name = "folder"

    def __init__(self, root: str | Path, split: str = "train", image_size: int = 256):
        self.root = Path(root)
        self.split = split
        self.image_size = image_size
        self.directory = _split_directory(self.root, split)
        self.source = str(self.directory)  # what was read, for the run's record
        self.classes = _class_names(self.root, self.directory)
        # str paths, not Path: with 1.28M samples they are smaller, and fork()ed workers share them more cheaply.
        self.samples: list[tuple[str, int]] = _list_samples(self.directory, self.classes)
        self.labels = _labels(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return resize_center_crop(decode_rgb(path), self.image_size), label

    def subset(self, indices: torch.Tensor) -> "FolderDataset":
        """The samples at `indices`, in that order, as a new dataset over the same folder."""
        part = copy.copy(self)
        part.samples = [self.samples[i] for i in indices.tolist()]
        part.labels = self.labels[indices]
        return part

    def decode(self, indices: Iterable[int]) -> torch.Tensor:
        """The samples at `indices`, in that order, decoded into one uint8 (len(indices), 3, S, S) tensor."""
        indices = [int(i) for i in indices]
        out = torch.empty(len(indices), 3, self.image_size, self.image_size, dtype=torch.uint8)
        for row, index in enumerate(indices):
            out[row] = self[index][0]
        return out

    @property
    def images(self) -> torch.Tensor:
        """Every sample decoded into one uint8 (N, 3, S, S) tensor: N * 3 * S * S bytes, so small folders only."""
        return self.decode(range(len(self)))

    def find_bad_files(self, rank: int = 0, world_size: int = 1, *, first_only: bool = False) -> list[tuple[str, str]]:
        """(path, problem) of the undecodable files among every `world_size`-th sample from `rank`: under torchrun
        each rank checks its share and the ranks pool what they found."""
        bad = []
        for path, problem in _decode_problems([p for p, _ in self.samples][rank::world_size]):
            if problem is not None:
                bad.append((path, problem))
                if first_only:
                    break
        return bad

    def drop_bad_files(self, bad: list[tuple[str, str]], skip: bool) -> list[str]:
        """Raise on the first of `bad` (sorted), or with `skip` drop them all with a warning; returns their paths."""
        bad = sorted(bad)
        if bad and not skip:
            raise AlexNetError(f"{bad[0][1]}; delete the file or skip bad files (--set data.skip_bad_files=true)")
        for _, problem in bad:
            warnings.warn(f"skipping {problem}", stacklevel=3)
        if bad:
            dropped = {path for path, _ in bad}
            self.samples = [s for s in self.samples if s[0] not in dropped]
            self.labels = _labels(self.samples)
            if not self.samples:
                raise AlexNetError(f"{self.directory}: none of the images could be decoded")
        return [path for path, _ in bad]


def _split_directory(root: Path, split: str) -> Path:
    if split not in SPLIT_FOLDERS:
        raise AlexNetError(f"unknown split {split!r}; choose from {', '.join(SPLIT_FOLDERS)}")
    if not root.is_dir():
        raise AlexNetError(f"image folder {root} does not exist")
    for folder in SPLIT_FOLDERS[split]:
        if (root / folder).is_dir():
            return root / folder
    wanted = " or ".join(f"{root / f}" for f in SPLIT_FOLDERS[split])
    raise AlexNetError(f"no {split} images: expected {wanted} with one folder per class")


def _class_folders(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_names(root: Path, directory: Path) -> list[str]:
    """Class list from `train/` whenever it exists, so a held-out split gets the labels the model was trained with
    even when it lacks a class; a held-out class unknown to `train/` is an error rather than a silent shift."""
    present = _class_folders(directory)
    train = root / "train"
    classes = _class_folders(train) if train.is_dir() and train != directory else present
    if not classes:
        raise AlexNetError(f"{directory}: no class folders (expected {directory}/<class>/<image files>)")
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise AlexNetError(f"{directory}: class folders {', '.join(unknown)} are not in {train}")
    return classes


def _list_samples(directory: Path, classes: list[str]) -> list[tuple[str, int]]:
    samples, ignored = [], []
    for label, name in enumerate(classes):
        class_dir = directory / name
        if not class_dir.is_dir():
            continue  # a held-out split may lack a class
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames.sort()  # os.walk order is the filesystem's; sorting makes sample order reproducible
            for filename in sorted(filenames):
                if filename.startswith("."):
                    continue  # .DS_Store and friends are not data
                path = os.path.join(dirpath, filename)
                if os.path.splitext(filename)[1].lower() in IMAGE_EXTENSIONS:
                    samples.append((path, label))
                else:
                    ignored.append(path)
    if ignored:
        warnings.warn(f"ignoring {len(ignored)} non-image file(s) under {directory}, e.g. {ignored[0]} "
                      f"(image extensions: {' '.join(sorted(IMAGE_EXTENSIONS))})", stacklevel=3)
    if not samples:
        raise AlexNetError(f"{directory}: no image files in the class folders {', '.join(classes[:5])}"
                           f"{' ...' if len(classes) > 5 else ''}")
    return samples


def _labels(samples: list[tuple[str, int]]) -> torch.Tensor:
    return torch.tensor([label for _, label in samples], dtype=torch.int64)


def _decode_problem(path: str) -> str | None:
    try:
        decode_rgb(path)
    except AlexNetError as e:
        return str(e)
    except (OSError, RuntimeError, ValueError) as e:  # unreadable file (permissions, vanished)
        return f"{path}: cannot read image ({one_line(e)})"
    return None


def _decode_problems(paths: list[str]):
    """Yield (path, problem or None) in order. The decoders release the GIL, so threads use every core; blocks
    keep the number of queued futures bounded and let an early error stop the scan quickly."""
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        for start in range(0, len(paths), VERIFY_BLOCK):
            block = paths[start:start + VERIFY_BLOCK]
            yield from zip(block, pool.map(_decode_problem, block), strict=True)
