"""Reading a dataset that `alexnet prepare` (`alexnet.data.prepare`) wrote: the paper's 256x256 crops (section 2),
re-encoded as JPEG and stored back to back in shards, so a training step reads a few hundred small slices of
memory-mapped files and decodes the whole batch at once on the training device (on a GPU: nvImageCodec's hardware
JPEG engines or nvJPEG, `alexnet.data.decode`), while the previous batch trains.

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
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from alexnet.base.errors import AlexNetError, one_line
from alexnet.base.files import atomic_write
from alexnet.data.decode import Decoder, decode_batch
from alexnet.data.folder import SPLIT_FOLDERS
from alexnet.data.loader import Batch, Order

MANIFEST = "manifest.json"
VERIFIED = ".verified.json"  # what the last full check saw: shard sizes and modification times
FORMAT, VERSION = "alexnet-jpeg-shards", 1
READ_AHEAD = 4  # batches whose shard bytes are read ahead of the one being decoded
READ_THREADS = 2  # threads reading them (memory-mapped slices: page faults on a cold cache, not CPU)
OVERLAP_ENV = "ALEXNET_LOADER_OVERLAP"  # 0: read and decode in the caller's thread, one batch at a time
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
    """A prepared dataset's batches, decoded on `device`, in `Order` (as `FolderLoader`: ranks, resume).

    Overlapped (the default; ALEXNET_LOADER_OVERLAP=0 or `overlap=False` turns it off): READ_THREADS background
    threads read the shard bytes of the next READ_AHEAD batches, and one decoding thread decodes batch n+1 while
    the caller trains on batch n. On CUDA that thread decodes on a CUDA stream of its own and records an event;
    the caller's stream waits on the event (on the GPU: no host sync), and the batch is marked as used on the
    caller's stream (`record_stream`) so that the allocator does not hand its memory back to the decoding stream
    early. The batches are a function of (seed, epoch, step) alone, whatever the threads' timing: each is decoded
    from its own indices, and they are handed over in step order. `decoder` picks the decode backend
    (`alexnet.data.decode`; default $ALEXNET_DECODER, else auto); `decoded_on` counts where images went."""

    def __init__(self, dataset: PreparedDataset, *, batch_size: int, device, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, decoder: str | None = None,
                 overlap: bool | None = None):
        self.dataset, self.device = dataset, torch.device(device)
        self.order = Order(len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
                            world_size=world_size)
        self.decoder = Decoder(self.device, decoder)
        self.overlap = os.environ.get(OVERLAP_ENV, "1") != "0" if overlap is None else overlap
        self._stream: torch.cuda.Stream | None = None  # the decoding thread's, made on first use

    def __len__(self) -> int:
        return len(self.order)

    @property
    def decoded_on(self) -> dict[str, int]:
        """Images decoded so far per backend (nvimgcodec, nvjpeg, cpu), by this loader."""
        return self.decoder.decoded_on

    def describe(self) -> dict:
        """The decoder's record (`Decoder.describe`) and whether decoding overlaps training."""
        return {**self.decoder.describe(), "overlap": self.overlap}

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        steps = list(self.order.steps(epoch, start))
        if not self.overlap:  # the plain order of work: read, decode, hand over, in the caller's thread
            for idx, global_size in steps:
                yield Batch(self._decode(self.dataset.read(idx.tolist()), idx),
                            self.dataset.labels[idx].to(self.device, non_blocking=True), global_size)
            return
        readers = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="alexnet-read")
        decoding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alexnet-next")  # in step order
        try:
            reads = {i: readers.submit(self.dataset.read, steps[i][0].tolist())
                     for i in range(min(READ_AHEAD, len(steps)))}
            decoded = deque([decoding.submit(self._job, reads.pop(0), steps[0][0])] if steps else [])
            for step, (_, global_size) in enumerate(steps):
                if (ahead := step + READ_AHEAD) < len(steps):
                    reads[ahead] = readers.submit(self.dataset.read, steps[ahead][0].tolist())
                if (ahead := step + 1) < len(steps):  # batch n + 1 decodes while the caller trains on batch n
                    decoded.append(decoding.submit(self._job, reads.pop(ahead), steps[ahead][0]))
                yield self._hand_over(*decoded.popleft().result(), global_size)
        finally:  # also when the caller stops early: nothing is left running behind it
            readers.shutdown(wait=True, cancel_futures=True)
            decoding.shutdown(wait=True, cancel_futures=True)

    def _job(self, read: Future, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.cuda.Event | None]:
        """The decoding thread's work for one batch: (images, labels, event marking them ready or None)."""
        blobs, labels = read.result(), self.dataset.labels[idx]
        if self.device.type != "cuda":
            return self._decode(blobs, idx), labels, None
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._stream):  # this thread's current stream: the decode and copies queue here
            images = self._decode(blobs, idx)
            labels = labels.pin_memory().to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self._stream)
        return images, labels, ready

    def _hand_over(self, images: torch.Tensor, labels: torch.Tensor, ready: torch.cuda.Event | None,
                   global_size: int) -> Batch:
        if ready is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(ready)  # the GPU waits for the decode, the host does not
            images.record_stream(consumer)
            labels.record_stream(consumer)
        return Batch(images, labels, global_size)

    def _decode(self, blobs: list[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        if not blobs:  # a rank's empty share of a last global batch smaller than the number of ranks
            size = self.dataset.image_size
            return torch.empty(0, 3, size, size, dtype=torch.uint8, device=self.device)
        return self.decoder.decode_batch(blobs, lambda row: self.dataset.describe(int(idx[row])))
