"""Input throughput alone, no model.

`decode_throughput`: images/s of uint8 batches ready on the device, from a dataset written by `alexnet prepare`
(`PreparedLoader`: shard reads in background threads, the next batch decoded while the current one is handed
over, by nvImageCodec or nvJPEG on a GPU) or from a plain image folder (`FolderLoader`: decode + paper crop in
worker processes). The paper net needs ~7 GFLOP per training image, so a GPU that trains N images/s needs the
input path to deliver N as well.

`decode_backends`: the decode step alone, per backend and batch size, on the same JPEG bytes read into memory
first: torchvision's batched `decode_jpeg(list, device=...)` is the baseline, then each decoder choice of
`alexnet.data.decode` (nvjpeg, nvimgcodec with the hardware engines then CUDA, nvimgcodec-hw, nvimgcodec-gpu,
cpu), on 1 and on 2 CUDA streams (one thread and one decoder per stream). Each row says where its images were
actually decoded (`decoded_on`: a backend that fell back shows it) and how far its pixels are from the baseline's.

    decode_throughput("/data/imagenet-prepared", "cuda")   # then the source folder, for the ratio
    decode_backends("/data/imagenet-prepared", "cuda")
"""

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from alexnet.base.errors import AlexNetError, one_line
from alexnet.bench.timing import time_steps
from alexnet.data.datasets import load_dataset
from alexnet.data.decode import Decoder
from alexnet.data.loader import FolderLoader, Loader
from alexnet.data.prepared import PreparedDataset, PreparedLoader, is_prepared, read_manifest
from alexnet.runtime.device import device_name, pick_device, sync

FOLDER_WORKERS = 8  # the paper preset's data.workers
BATCH_SIZES = (64, 128, 256, 512)
CHOICES = ("nvjpeg", "nvimgcodec", "nvimgcodec-hw", "nvimgcodec-gpu", "cpu")
STREAMS = (1, 2)
BASELINE = "torchvision decode_jpeg(list)"


def decode_throughput(path: str | Path, device: str | torch.device = "auto", batch_size: int = 256, steps: int = 20,
                      warmup: int = 3, *, split: str = "train", image_size: int = 256,
                      workers: int = FOLDER_WORKERS, decoder: str | None = None,
                      overlap: bool | None = None) -> dict:
    """Images/s of `steps` training batches (shuffled, after `warmup` untimed ones) of the prepared dataset or
    image folder at `path`. `image_size` and `workers` apply to a plain folder only (a prepared one has its own
    size and needs no workers); `decoder` and `overlap` to a prepared one only (`PreparedLoader`). Keep
    (warmup + steps) * batch_size within one epoch: a folder loader restarts its workers at every epoch, and that
    cost would land in the timed window."""
    dev = pick_device(str(device))
    if is_prepared(path):
        image_size = read_manifest(path)["image_size"]
    data = load_dataset("folder", split, path, image_size=image_size)
    options: dict[str, Any] = dict(batch_size=batch_size, device=dev, shuffle=True, seed=0, drop_last=True)
    loader: Loader
    record: dict[str, Any] = {}
    if isinstance(data, PreparedDataset):
        loader = PreparedLoader(data, decoder=decoder, overlap=overlap, **options)
        what = "prepared JPEG shards, batch decoded on the device"
    else:
        loader, what = FolderLoader(data, workers=workers, **options), f"image folder, {workers} decode workers"
    if len(loader) == 0:
        raise AlexNetError(f"{path}: {len(data)} images are fewer than one batch of {batch_size}")
    batches = _endless(loader)
    seconds = time_steps(lambda: next(batches).images, steps=steps, warmup=warmup, device=dev)
    if isinstance(loader, PreparedLoader):
        record = {"decoder": loader.describe(), "decoded_on": loader.decoded_on}
    return {"path": str(path), "kind": "prepared" if isinstance(data, PreparedDataset) else "folder",
            "what": what, "device": device_name(dev), "split": split, "images": len(data),
            "image_size": image_size, "batch_size": batch_size, "steps": steps, "warmup": warmup,
            "seconds": seconds, "images_per_sec": batch_size * steps / seconds, **record}


def _endless(loader: PreparedLoader | FolderLoader):
    """Batches across epochs without end: the timed window may span an epoch boundary."""
    epoch = 0
    while True:
        yield from loader.batches(epoch)
        epoch += 1


def decode_backends(path: str | Path, device: str | torch.device = "auto", *,
                    batch_sizes: Sequence[int] = BATCH_SIZES, choices: Sequence[str] = CHOICES,
                    streams: Sequence[int] = STREAMS, images: int = 4096, split: str = "train") -> dict:
    """Decode images/s per (backend, batch size, streams) on the first `images` JPEGs of a shuffled prepared
    split, against torchvision's batched decode_jpeg on the same bytes. On a CPU only `cpu` runs (the others
    need CUDA, and say so) and only on one stream."""
    dev = pick_device(str(device))
    if not is_prepared(path):
        raise AlexNetError(f"{path}: not a dataset written by `alexnet prepare`")
    data = PreparedDataset(path, split)
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:images]
    blobs = data.read(pick.tolist())  # in memory: only decoding is timed
    cuda = dev.type == "cuda"
    rows, skipped = [], {} if cuda else {c: "needs a CUDA device" for c in choices if c != "cpu"}
    made: dict[tuple[str, int], Decoder] = {}
    for size in batch_sizes:
        batches = [blobs[i:i + size] for i in range(0, len(blobs) - size + 1, size)]
        if not batches:
            skipped[f"batch {size}"] = f"{len(blobs)} images are fewer than one batch"
            continue
        reference = _torchvision(batches[0], dev)
        torchvision = functools.partial(_torchvision, dev=dev)
        base = _measure([torchvision], batches, dev)
        rows.append(_row(BASELINE, size, 1, base, None, reference, reference))
        for n in (s for s in streams if s > 1 and cuda):
            rate = _measure([torchvision] * n, batches, dev)
            rows.append(_row(BASELINE, size, n, rate, base, reference, reference))
        for choice in (c for c in choices if c not in skipped):
            for n in (s for s in streams if (s == 1 or cuda and choice != "cpu")):
                rows.append(_choice_row(choice, batches, dev, n, base, reference, made))
    return {"path": str(path), "device": device_name(dev), "split": split, "images": len(blobs),
            "image_size": data.image_size, "baseline": BASELINE, "rows": rows, "skipped": skipped,
            "best": max((r for r in rows if r["images_per_sec"]), key=lambda r: r["images_per_sec"], default=None)}


def _choice_row(choice: str, batches: list, dev: torch.device, n: int, base: float, reference: torch.Tensor,
                made: dict[tuple[str, int], Decoder]) -> dict:
    """One (choice, batch size, streams) row; `made` keeps each (choice, thread)'s decoder across rows (an
    nvImageCodec decoder takes a while to start)."""
    size = len(batches[0])
    try:
        for t in range(n):
            if (choice, t) not in made:
                made[(choice, t)] = Decoder(dev, choice)
        decoders = [made[(choice, t)] for t in range(n)]
        if choice.startswith("nvimgcodec") and decoders[0].backend != "nvimgcodec":  # not installed, or failed
            return {"decoder": choice, "batch_size": size, "streams": n, "images_per_sec": None,
                    "backend": decoders[0].backend, "error": decoders[0].note or decoders[0].describe()["fallbacks"]}
        before = [d.decoded_on for d in decoders]
        first = decoders[0].decode_batch(batches[0], _name)
        rate = _measure([functools.partial(d.decode_batch, name=_name) for d in decoders], batches, dev)
    except Exception as e:  # a backend that cannot run here is a row that says why, not a lost benchmark
        return {"decoder": choice, "batch_size": size, "streams": n, "images_per_sec": None, "error": one_line(e)}
    row = _row(choice, size, n, rate, base, first, reference)
    row["backend"] = decoders[0].backend  # what the choice resolved to; `decoded_on` says where images went
    row["decoded_on"] = {k: sum(d.decoded_on[k] - b[k] for d, b in zip(decoders, before, strict=True))
                         for k in before[0]}
    row["fallbacks"] = [d.describe()["fallbacks"] for d in decoders if d.fallbacks]
    return row


def _name(i: int) -> str:
    return f"image {i} of a benchmark batch"


def _row(name: str, size: int, streams: int, rate: float, base: float | None, images: torch.Tensor,
         reference: torch.Tensor) -> dict:
    diff = (images.to(reference.device).int() - reference.int()).abs()
    return {"decoder": name, "batch_size": size, "streams": streams, "images_per_sec": rate,
            "ratio_to_baseline": None if base is None else rate / base,
            "mean_abs_diff": diff.float().mean().item(), "max_abs_diff": int(diff.max())}


def _torchvision(batch: list[torch.Tensor], dev: torch.device) -> torch.Tensor:
    return torch.stack(decode_jpeg(batch, mode=ImageReadMode.RGB, device=dev))


def _measure(decoders: Sequence[Callable], batches: list, dev: torch.device) -> float:
    """Images/s of decoding every batch once, round-robin over one thread per decode function in `decoders`,
    each (on CUDA) with a stream of its own; one warm-up batch per thread is not timed. Wall time between two
    device synchronisations: the streams overlap, so per-stream events would not add up."""
    streams = len(decoders)
    work = [(decoders[t], batches[t::streams]) for t in range(streams)]
    cuda_streams = [torch.cuda.Stream(dev) if dev.type == "cuda" else None for _ in range(streams)]
    errors: list[BaseException] = []

    def run(t: int, warm: bool) -> None:
        decode, mine = work[t]
        try:
            with torch.cuda.stream(cuda_streams[t]) if cuda_streams[t] is not None else contextlib.nullcontext():
                for batch in mine[:1] if warm else mine:
                    decode(batch)
        except BaseException as e:  # re-raised in the caller's thread below
            errors.append(e)

    for warm in (True, False):
        sync(dev)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=run, args=(t, warm)) for t in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sync(dev)
        seconds = time.perf_counter() - t0
        if errors:
            raise errors[0]
    return sum(len(b) for b in batches) / seconds
