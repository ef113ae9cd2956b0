"""`prepare(src, dst)`: the paper's preprocessing (Krizhevsky et al. 2012, section 2: shorter side rescaled to 256,
then the central 256x256 patch, exactly `resize_center_crop(decode_rgb(path), 256)`) done once for the `train/`
and `val/` (or `test/`) splits of an ImageNet-style folder, into JPEG shards that load fast (the format is
described in `alexnet.data.prepared`, which reads it).

Resumable: shards are written one after another, each atomically (temp file, then rename), and the manifest is
rewritten after each, so a killed run loses at most the shard it was writing; a re-run checks every shard the
manifest lists against its sha256, keeps the good ones and writes the rest. The output is a function of the source
and the options alone (no timestamps), so an interrupted and resumed run ends with the same files as one that was
never interrupted.
"""

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torchvision.io import encode_jpeg
from tqdm import tqdm

from alexnet.base.errors import AlexNetError, one_line
from alexnet.base.files import atomic_path, atomic_write, sweep_temp_files
from alexnet.data.folder import SPLIT_FOLDERS, FolderDataset, decode_rgb, resize_center_crop
from alexnet.data.prepared import FORMAT, MANIFEST, VERSION, read_manifest, shard_problem

SHARD_IMAGES = 10_000  # images per shard: ~300 MB at 256 px and quality 90, so ImageNet's 1.28M make ~130 files
CPU_THREADS = min(16, os.cpu_count() or 1)  # decode, resize and encode release the GIL: threads use every core


def prepare(src: str | Path, dst: str | Path, *, size: int = 256, quality: int = 90,
            shard_size: int = SHARD_IMAGES, workers: int = CPU_THREADS, skip_bad_files: bool = False,
            progress: bool = True) -> dict:
    """Write (or complete) the prepared dataset `dst` from the image folder `src`; returns the manifest. A bad
    source image is a one-line AlexNetError naming it, or with `skip_bad_files` a warning and one image fewer."""
    _check_options(size, quality, shard_size, workers)
    src, dst = Path(src).absolute(), Path(dst).absolute()
    if dst == src:
        raise AlexNetError(f"{dst}: the prepared dataset needs a folder of its own, not the source folder")
    splits = _source_splits(src, size)
    manifest = _start(dst, src, splits, image_size=size, quality=quality, shard_size=shard_size)
    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)  # parallel over images, not inside one image's resize: no oversubscribed cores
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alexnet-prepare") as pool, \
                tqdm(total=sum(len(ds) for ds in splits.values()), unit="img", desc=f"prepare {dst.name}",
                     disable=not progress, dynamic_ncols=True) as bar:
            for folder, ds in splits.items():
                _prepare_split(ds, manifest, manifest["splits"][folder], dst, pool, bar, skip_bad_files)
    finally:
        torch.set_num_threads(threads)
    if not manifest["complete"]:
        manifest["complete"] = True
        _write_manifest(dst, manifest)
    return manifest


def _check_options(size: int, quality: int, shard_size: int, workers: int) -> None:
    for name, value, low, high in [("size", size, 1, None), ("quality", quality, 1, 100),
                                   ("shard size", shard_size, 1, None), ("workers", workers, 1, None)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            bounds = f"{low}..{high}" if high else f">= {low}"
            raise AlexNetError(f"prepare: {name} must be an integer {bounds}, got {value!r}")


def _source_splits(src: Path, size: int) -> dict[str, FolderDataset]:
    """Every split folder of the source (`train/`, and `val/`, `test/` where present), by folder name, listed as
    `FolderDataset` lists it. The reader maps a split to a folder as `FolderDataset` does (test: `test/`, else
    `val/`), so a folder two splits can read is prepared once."""
    splits = {}
    for split, folders in SPLIT_FOLDERS.items():
        folder = next((f for f in folders if (src / f).is_dir()), None)  # the one FolderDataset reads
        if (folder is not None or split == "train") and folder not in splits:
            ds = FolderDataset(src, split, image_size=size)  # without train/: a one-line error
            splits[ds.directory.name] = ds
    return splits


def _listing_sha256(ds: FolderDataset) -> str:
    """Identifies the source listing: a re-run continues only where the same files map to the same shards."""
    digest = hashlib.sha256()
    for path, label in ds.samples:
        digest.update(f"{os.path.relpath(path, ds.directory)}\t{label}\n".encode())
    return digest.hexdigest()


def _start(dst: Path, src: Path, splits: dict[str, FolderDataset], **options) -> dict:
    """The manifest to continue from: `dst`'s own when it was prepared from the same source with the same options,
    else a new one (written before the first shard, so every run leaves a manifest behind)."""
    fresh = {"format": FORMAT, "version": VERSION, "source": str(src), **options,
             "classes": splits["train"].classes, "complete": False,
             "splits": {folder: {"folder": folder, "sources": len(ds), "listing_sha256": _listing_sha256(ds),
                                "shards_planned": -(-len(ds) // options["shard_size"]), "images": 0, "skipped": [],
                                "shards": []}
                        for folder, ds in splits.items()}}
    if (dst / MANIFEST).is_file():
        manifest = read_manifest(dst)
        for key in ("source", "image_size", "quality", "shard_size", "classes"):
            if manifest.get(key) != fresh.get(key):
                raise AlexNetError(f"{dst} was prepared with {key} {manifest.get(key)!r}, not {fresh.get(key)!r}: "
                                   "use an empty folder, or the options of the first run")
        for folder, entry in fresh["splits"].items():
            old = manifest["splits"].get(folder, {})
            if old.get("listing_sha256") != entry["listing_sha256"]:
                raise AlexNetError(f"{dst}: the files of {src / entry['folder']} changed since the preparation "
                                   "started: use an empty folder")
        return manifest
    if dst.exists() and not dst.is_dir():
        raise AlexNetError(f"{dst} is a file, not a folder")
    if dst.exists() and any(dst.iterdir()):
        raise AlexNetError(f"{dst} is not empty and holds no {MANIFEST}: prepare into an empty or new folder")
    dst.mkdir(parents=True, exist_ok=True)
    _write_manifest(dst, fresh)
    return fresh


def _write_manifest(dst: Path, manifest: dict) -> None:
    atomic_write(dst / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _prepare_split(ds: FolderDataset, manifest: dict, entry: dict, dst: Path, pool: ThreadPoolExecutor, bar: tqdm,
                   skip_bad_files: bool) -> None:
    (dst / entry["folder"]).mkdir(exist_ok=True)
    sweep_temp_files(dst / entry["folder"])  # the half-written shard of a killed run
    size, size_of_shard = manifest["image_size"], manifest["shard_size"]
    for number in range(entry["shards_planned"]):
        chunk = ds.samples[number * size_of_shard:(number + 1) * size_of_shard]
        done = entry["shards"][number] if number < len(entry["shards"]) else None
        if done is not None and shard_problem(dst, done) is None:
            bar.update(len(chunk))
            continue
        if manifest["complete"]:  # a damaged shard of a finished dataset: unfinished until it is rewritten
            manifest["complete"] = False
            _write_manifest(dst, manifest)
        shard = _write_shard(dst, f"{entry['folder']}/{number:05d}", chunk, ds.directory, pool, bar,
                             size=size, quality=manifest["quality"], skip_bad_files=skip_bad_files)
        entry["shards"][number:number + 1] = [shard]
        entry["images"] = sum(s["images"] for s in entry["shards"])
        entry["skipped"] = [problem for s in entry["shards"] for problem in s["skipped"]]
        _write_manifest(dst, manifest)  # the shard counts as done from here on


def _write_shard(dst: Path, stem: str, chunk: list[tuple[str, int]], directory: Path, pool: ThreadPoolExecutor,
                 bar: tqdm, *, size: int, quality: int, skip_bad_files: bool) -> dict:
    """Encode `chunk`'s images and write the shard's data, then its index, each atomically; returns its manifest
    entry. Images are written as they come back from the pool, in order, so a shard never sits in memory."""
    index: dict[str, list] = {"files": [], "offsets": [], "lengths": [], "labels": []}
    skipped, digest, offset = [], hashlib.sha256(), 0
    with atomic_path(dst / f"{stem}.jpegs") as tmp, open(tmp, "wb") as out:
        encoded = pool.map(lambda s: _encode(s[0], size, quality), chunk)
        for (path, label), (blob, problem) in zip(chunk, encoded, strict=True):
            bar.update(1)
            if blob is None:  # then `problem` says why
                if not skip_bad_files:
                    raise AlexNetError(f"{problem}; delete the file or pass --skip-bad-files")
                warnings.warn(f"skipping {problem}", stacklevel=2)
                skipped.append(problem)
                continue
            out.write(blob)
            digest.update(blob)
            for key, value in zip(index, (os.path.relpath(path, directory), offset, len(blob), label), strict=True):
                index[key].append(value)
            offset += len(blob)
    index_bytes = (json.dumps(index) + "\n").encode()
    atomic_write(dst / f"{stem}.json", index_bytes)
    return {"data": f"{stem}.jpegs", "index": f"{stem}.json", "images": len(index["labels"]), "bytes": offset,
            "sha256": digest.hexdigest(), "index_sha256": hashlib.sha256(index_bytes).hexdigest(),
            "skipped": skipped}


def _encode(path: str, size: int, quality: int) -> tuple[bytes | None, str | None]:
    """(the image's `size` x `size` centre crop as JPEG bytes, None) or (None, what is wrong with the file)."""
    try:
        image = resize_center_crop(decode_rgb(path), size)
    except AlexNetError as e:
        return None, str(e)
    except (OSError, RuntimeError, ValueError) as e:  # unreadable file (permissions, vanished)
        return None, f"{path}: cannot read image ({one_line(e)})"
    return encode_jpeg(image, quality=quality).numpy().tobytes(), None
