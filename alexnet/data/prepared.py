"""Reading a dataset that `alexnet prepare` (`alexnet.data.prepare`) wrote: the paper's 256x256 crops (section 2),
re-encoded as JPEG and stored back to back in shards, so a training step reads a few hundred small slices of
memory-mapped files and decodes the whole batch at once on the training device (nvJPEG on a GPU).

    DST/manifest.json       format and version, source folder, classes, image size, JPEG quality, shard size,
                            `complete`, and per split folder (train/, and val/ or test/ as the source has them):
                            source count, listing hash, skipped files, and its shards: file names, image and byte
                            counts, the sha256 of the data and of the index
    DST/train/00000.jpegs   the shard's JPEGs back to back (no header, no padding)
    DST/train/00000.json    its index: per image the source file (relative to SRC/train), byte offset, length, label
    DST/val/00000.jpegs     ... and so on for every split folder

`PreparedDataset` has the interface the rest of the code uses of `FolderDataset`; `PreparedLoader` yields the same
`Batch`es in the same order as `FolderLoader` (`alexnet.data.loader.Order`). The shards' sha256 are checked on the
first load, and again whenever a shard's size or modification time changes (`.verified.json` records what was
checked); `verify` checks them all, always.
"""

import contextlib
import copy
import hashlib
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from alexnet.base.errors import AlexNetError, one_line
from alexnet.base.files import atomic_write
from alexnet.data.decode import decode_batch
from alexnet.data.folder import SPLIT_FOLDERS
from alexnet.data.loader import Batch, Order

MANIFEST = "manifest.json"
VERIFIED = ".verified.json"  # what the last full check saw: shard sizes and modification times
FORMAT, VERSION = "alexnet-jpeg-shards", 1
PREFETCH = 2  # batches whose bytes a background thread reads ahead of the decode
HASH_BLOCK = 1 << 22  # bytes per read while hashing (4 MiB)


def is_prepared(root: str | Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AlexNetError(f"{path}: cannot read the manifest ({one_line(e)})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise AlexNetError(f"{path}: not a manifest of `alexnet prepare` (format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise AlexNetError(f"{path}: format version {manifest.get('version')!r}, this alexnet reads {VERSION}; "
                           "prepare the dataset again")
    return manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def shard_problem(root: Path, shard: dict) -> str | None:
    """What is wrong with one shard's data or index file (missing, wrong size, wrong sha256), or None."""
    for name, size, digest in [(shard["data"], shard["bytes"], shard["sha256"]),
                               (shard["index"], None, shard["index_sha256"])]:
        path = root / name
        if not path.is_file():
            return f"{path}: missing"
        if size is not None and path.stat().st_size != size:
            return f"{path}: {path.stat().st_size} bytes, the manifest says {size}"
        if (actual := sha256_file(path)) != digest:
            return f"{path}: sha256 {actual[:16]}... does not match the manifest's {digest[:16]}..."
    return None


def verify(root: str | Path, manifest: dict | None = None) -> dict:
    """Hash every shard against the manifest; the first damaged one is a one-line AlexNetError."""
    root = Path(root)
    manifest = manifest or read_manifest(root)
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            if problem := shard_problem(root, shard):
                raise AlexNetError(f"{problem}: the file is damaged; run `alexnet prepare "
                                   f"{manifest['source']} {root}` again to rewrite it")
    return manifest


def _verify_once(root: Path, manifest: dict) -> None:
    """`verify`, unless the last full check saw the same manifest and shard files (size, modification time)."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    seen = {"manifest_sha256": digest,
            "shards": {s["data"]: _stat(root / s["data"]) for e in manifest["splits"].values() for s in e["shards"]}}
    try:
        if json.loads((root / VERIFIED).read_text()) == seen:
            return
    except (OSError, ValueError):
        pass
    verify(root, manifest)
    with contextlib.suppress(AlexNetError, OSError):  # a read-only copy: it is checked again next time
        atomic_write(root / VERIFIED, json.dumps(seen))


def _stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


class PreparedDataset(torch.utils.data.Dataset):
    """One split of a prepared dataset, read from the folder `FolderDataset` would read it from (`test`: `test/`,
    else `val/`). `samples` are (source path, label), in the order `FolderDataset` lists the source."""

    name = "folder"

    def __init__(self, root: str | Path, split: str = "train", image_size: int | None = None, *,
                 check: bool = True):
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if not manifest.get("complete"):
            raise AlexNetError(f"{self.root}: preparation did not finish; run `alexnet prepare "
                               f"{manifest['source']} {self.root}` again to complete it")
        if image_size is not None and image_size != manifest["image_size"]:
            raise AlexNetError(f"{self.root} holds {manifest['image_size']}x{manifest['image_size']} images but "
                               f"data.image_size is {image_size}: set data.image_size={manifest['image_size']} or "
                               f"prepare again with --size {image_size}")
        folder = next((f for f in SPLIT_FOLDERS.get(split, ()) if f in manifest["splits"]), None)
        if folder is None:
            raise AlexNetError(f"{self.root}: no {split} split (it holds {', '.join(manifest['splits'])}/)")
        if check:
            _verify_once(self.root, manifest)
        entry = manifest["splits"][folder]
        self.split, self.image_size, self.classes = split, int(manifest["image_size"]), list(manifest["classes"])
        self.directory = self.root / entry["folder"]
        self.source = str(self.directory)  # what was read, for the run's record
        self.shard_files = [self.root / s["data"] for s in entry["shards"]]
        self._maps: list[np.memmap | None] = [None] * len(self.shard_files)
        # int64 (N, 4) rows: (shard, byte offset, length, label) per sample; samples: (source path, label)
        self.rows, self.samples = _read_indices(self.root, entry, Path(manifest["source"]) / entry["folder"])
        self.labels = torch.from_numpy(self.rows[:, 3].copy())  # int64 (N,)

    def subset(self, indices: torch.Tensor) -> "PreparedDataset":
        """The samples at `indices`, in that order, as a new dataset over the same shards."""
        part = copy.copy(self)
        part.samples = [self.samples[i] for i in indices.tolist()]
        part.labels = self.labels[indices]
        part.rows = self.rows[indices.cpu().numpy()]
        return part

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, indices: Iterable[int]) -> list[torch.Tensor]:
        """The encoded bytes of the samples at `indices`: uint8 (n,) CPU tensors, copied out of the shard maps."""
        out = []
        for index in indices:
            shard, offset, length = (int(v) for v in self.rows[index, :3])
            out.append(torch.from_numpy(np.array(self._map(shard)[offset:offset + length])))
        return out

    def describe(self, index: int) -> str:
        """Where sample `index` lives, for error messages."""
        shard, offset = (int(v) for v in self.rows[index, :2])
        return f"{self.shard_files[shard]} at byte {offset} (from {self.samples[index][0]})"

    def decode(self, indices: Iterable[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """The samples at `indices`, in that order, as one uint8 (len(indices), 3, S, S) tensor on `device`."""
        indices = [int(i) for i in indices]
        if not indices:
            return torch.empty(0, 3, self.image_size, self.image_size, dtype=torch.uint8, device=device)
        return decode_batch(self.read(indices), device, lambda row: self.describe(indices[row]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.decode([index])[0], int(self.rows[index, 3])

    @property
    def images(self) -> torch.Tensor:
        return self.decode(range(len(self)))

    def find_bad_files(self, rank: int = 0, world_size: int = 1, *, first_only: bool = False) -> list:
        return []  # `alexnet prepare` decoded every image once, and the shards are checksummed

    def drop_bad_files(self, bad: list, skip: bool) -> list[str]:
        return []

    def _map(self, shard: int) -> np.memmap:
        mapped = self._maps[shard]
        if mapped is None:  # opened on first use: a split's shards hold one fd each
            mapped = self._maps[shard] = np.memmap(self.shard_files[shard], dtype=np.uint8, mode="r")
        return mapped


def _read_indices(root: Path, entry: dict, source: Path) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """int64 (N, 4) rows (shard, offset, length, label) and the (source path, label) samples of a split."""
    rows, samples = [], []
    for number, shard in enumerate(entry["shards"]):
        path = root / shard["index"]
        try:
            raw = path.read_bytes()
            index = json.loads(raw)
        except (OSError, ValueError) as e:
            raise AlexNetError(f"{path}: cannot read the shard index ({one_line(e)})") from e
        if hashlib.sha256(raw).hexdigest() != shard["index_sha256"]:
            raise AlexNetError(f"{path}: sha256 does not match the manifest: the file is damaged; run `alexnet "
                               f"prepare` again to rewrite it")
        n = len(index["labels"])
        rows.append(np.stack([np.full(n, number), index["offsets"], index["lengths"], index["labels"]], axis=1)
                    .astype(np.int64).reshape(n, 4))
        samples += [(os.path.join(source, f), label) for f, label in zip(index["files"], index["labels"], strict=True)]
    return (np.concatenate(rows) if rows else np.zeros((0, 4), np.int64)), samples


class PreparedLoader:
    """A prepared dataset's batches, decoded on `device`: a background thread reads the next batches' bytes while
    the current one decodes (nvJPEG on a GPU, CPU threads otherwise). Order and rank shares as `FolderLoader`."""

    def __init__(self, dataset: PreparedDataset, *, batch_size: int, device, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1):
        self.dataset, self.device = dataset, torch.device(device)
        self.order = Order(len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
                            world_size=world_size)

    def __len__(self) -> int:
        return len(self.order)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        steps = list(self.order.steps(epoch, start))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="alexnet-read") as reader:
            pending = deque(reader.submit(self.dataset.read, idx.tolist()) for idx, _ in steps[:PREFETCH])
            for step, (idx, global_size) in enumerate(steps):
                if step + PREFETCH < len(steps):
                    pending.append(reader.submit(self.dataset.read, steps[step + PREFETCH][0].tolist()))
                blobs = pending.popleft().result()
                yield Batch(self._decode(blobs, idx), self.dataset.labels[idx].to(self.device, non_blocking=True),
                            global_size)

    def _decode(self, blobs: list[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        if not blobs:  # a rank's empty share of a last global batch smaller than the number of ranks
            size = self.dataset.image_size
            return torch.empty(0, 3, size, size, dtype=torch.uint8, device=self.device)
        return decode_batch(blobs, self.device, lambda row: self.dataset.describe(int(idx[row])))
