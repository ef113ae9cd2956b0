"""The data side of a run: a config's datasets -> statistics -> on-device pipelines -> loaders, for any rank,
and the checks of the data section that can run before any work starts."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alexnet.base.errors import AlexNetError
from alexnet.config import Config, check, dataset_channels
from alexnet.data.datasets import Dataset, load_dataset
from alexnet.data.folder import FolderDataset
from alexnet.data.loader import DeviceLoader, FolderLoader, Loader
from alexnet.data.pipeline import Pipeline, Stats, build_pipeline, compute_stats
from alexnet.data.prepared import PreparedDataset, PreparedLoader
from alexnet.data.splits import holdout_size, stratified_holdout
from alexnet.runtime import distributed
from alexnet.runtime.distributed import DistEnv

FOLDER_STATS_IMAGES = 2000  # decoded images sampled for a folder's mean / std / PCA (the paper used all 1.2 M)


SplitData = Dataset | FolderDataset | PreparedDataset  # one split: in memory, a folder, or prepared shards


@dataclass
class RunData:
    train: Loader
    val: Loader | None  # None: data.val_size 0, nothing held out
    test: Loader
    train_pipeline: Pipeline
    eval_pipeline: Pipeline
    classes: list[str]
    stats: Stats
    sizes: dict[str, int]     # images per split: train, val, test
    sources: dict[str, str]   # where each split was read from (the run's record)


def validate(cfg: Config, model_given: bool = False) -> Config:
    """Every check that can fail before any work starts, each failure one line: the config's fields and model
    (`alexnet.config.check`; not the model when the caller brings its own), then its data section."""
    check(cfg, model_given)
    check_data(cfg)
    return cfg


def check_data(cfg: Config) -> None:
    """The augmentation lists: op names, parameters, and evaluation ops that must be deterministic."""
    d, channels = cfg.data, dataset_channels(cfg)
    eye = tuple(tuple(float(i == j) for j in range(3)) for i in range(3))
    stats = Stats(mean=(0.5,) * channels, std=(0.5,) * channels,
                  eigval=(1.0,) * 3 if channels == 3 else None, eigvec=eye if channels == 3 else None)
    build_pipeline(d.train_augment, input_size=d.input_size, stats=stats, normalize=d.normalize)
    if build_pipeline(d.eval_augment, input_size=d.input_size, stats=stats, normalize=d.normalize).is_random:
        raise AlexNetError("data.eval_augment must be deterministic (resize, normalise, centre crop): evaluation "
                           "has no random generator; put random ops in data.train_augment")


def load_split(cfg: Config, split: str, env: DistEnv | None = None) -> SplitData:
    """One split of the files as the run sees it (`train`, `test`, or an image folder's `val`): the configured
    subset, and for image folders only decodable files. Under torchrun every rank must call it together: each
    decodes its share of a folder's files."""
    d, env = cfg.data, env or DistEnv()
    data = load_dataset(d.dataset, split, d.data_dir, d.download, image_size=d.image_size)
    limit = d.train_subset if split == "train" else d.test_subset if split == "test" else 0
    if limit and not isinstance(data, Dataset):
        # folders are listed class by class: a seeded random subset, not the first classes
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:limit].sort().values
        data = data.subset(pick)
    elif limit:
        data = data.subset(torch.arange(min(limit, len(data))))  # the first N: these files are not ordered by class
    if not isinstance(data, Dataset):
        # an undecodable file is an error now, not a crash in a worker mid-epoch
        bad = data.find_bad_files(env.rank, env.world_size, first_only=not d.skip_bad_files)
        pooled = [b for share in distributed.all_gather_object(bad) for b in share]
        data.drop_bad_files(pooled, d.skip_bad_files)
    return data


def load_splits(cfg: Config, env: DistEnv | None = None) -> tuple[SplitData, SplitData | None, SplitData]:
    """(train, validation or None, test) as `alexnet.data.splits` defines them."""
    env = env or DistEnv()
    train, test = load_split(cfg, "train", env), load_split(cfg, "test", env)
    if cfg.data.dataset == "folder" and has_val_folder(cfg):
        return train, load_split(cfg, "val", env), test
    n = holdout_size(len(train), cfg.data.val_size)
    if n == 0:
        return train, None, test
    keep, held = stratified_holdout(train.labels, n, cfg.train.seed)
    return train.subset(keep), train.subset(held), test


def has_val_folder(cfg: Config) -> bool:
    """An image folder whose `val/` is a validation split: one with a `test/` beside it."""
    root = Path(cfg.data.data_dir or "").expanduser()
    return (root / "val").is_dir() and (root / "test").is_dir()


def dataset_stats(data: SplitData) -> Stats:
    if not isinstance(data, Dataset):  # a folder: a seeded sample of decoded images
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(data), generator=g)[:FOLDER_STATS_IMAGES].tolist()
        return compute_stats(data.decode(pick))
    return compute_stats(data.images)


def make_loader(cfg: Config, data: SplitData, device: torch.device, *, train: bool, env: DistEnv | None = None,
                batch_size: int | None = None) -> Loader:
    """Training order (shuffled by seed and epoch, drop_last as configured) or evaluation order (every sample
    once), this rank's share of it."""
    t, env = cfg.train, env or DistEnv()
    options: dict[str, Any] = dict(batch_size=batch_size or (t.batch_size if train else t.eval_batch_size),
                                   device=device, shuffle=train, seed=t.seed, drop_last=train and t.drop_last,
                                   rank=env.rank, world_size=env.world_size)
    if isinstance(data, PreparedDataset):  # batches decoded on the device (nvJPEG on a GPU)
        return PreparedLoader(data, **options)
    if isinstance(data, FolderDataset):
        return FolderLoader(data, workers=cfg.data.workers, **options)
    return DeviceLoader(data.images, data.labels, **options)


def prepare_data(cfg: Config, env: DistEnv, device: torch.device, stats: Stats | None = None) -> RunData:
    # Rank 0 first: if it downloads, the others find the files afterwards instead of fetching them too. Image
    # folders (never downloaded) are loaded by all ranks at once: they check the files together.
    together = cfg.data.dataset == "folder" or not env.distributed
    if together or env.is_main:
        train, val, test = load_splits(cfg, env)
    if not together:
        distributed.barrier()
        if not env.is_main:
            train, val, test = load_splits(cfg, env)
    stats = stats or dataset_stats(train)
    train_loader = make_loader(cfg, train, device, train=True, env=env)
    if len(train_loader) == 0:
        raise AlexNetError(f"{len(train)} training images are fewer than one batch of {cfg.train.batch_size} "
                           f"(train.drop_last drops it): lower --batch-size")
    val_loader = None if val is None else make_loader(cfg, val, device, train=False, env=env)
    return RunData(train=train_loader, val=val_loader, test=make_loader(cfg, test, device, train=False, env=env),
                   train_pipeline=run_pipeline(cfg, stats, train=True),
                   eval_pipeline=run_pipeline(cfg, stats, train=False),
                   classes=list(train.classes), stats=stats,
                   sizes={"train": len(train), "val": 0 if val is None else len(val), "test": len(test)},
                   sources={"train": train.source, "val": _val_source(train, val, cfg), "test": test.source})


def run_pipeline(cfg: Config, stats: Stats, *, train: bool) -> Pipeline:
    """The run's training or evaluation pipeline, with the training set's statistics."""
    d = cfg.data
    return build_pipeline(d.train_augment if train else d.eval_augment, input_size=d.input_size, stats=stats,
                          normalize=d.normalize)


def _val_source(train, val, cfg: Config) -> str:
    if val is None:
        return "none (data.val_size 0): best.pt and the plateau schedule read the test split"
    if val.source != train.source:
        return val.source
    return f"{len(val)} images held out of {train.source} (stratified, seed {cfg.train.seed})"
