"""The data side of a run: a config's datasets -> statistics -> on-device pipelines -> loaders, for any rank,
and the checks of the data section that can run before any work starts."""

from dataclasses import dataclass

import torch

from alexnet.base.errors import AlexNetError
from alexnet.config import Config, check, dataset_channels
from alexnet.data.datasets import load_dataset
from alexnet.data.loader import DeviceLoader, FolderLoader
from alexnet.data.pipeline import Pipeline, Stats, build_pipeline, compute_stats
from alexnet.runtime import distributed
from alexnet.runtime.distributed import DistEnv

FOLDER_STATS_IMAGES = 2000  # decoded images sampled for a folder's mean / std / PCA (the paper used all 1.2 M)


@dataclass
class RunData:
    train: DeviceLoader | FolderLoader
    test: DeviceLoader | FolderLoader
    train_pipeline: Pipeline
    eval_pipeline: Pipeline
    classes: list[str]
    stats: Stats


def validate(cfg: Config) -> Config:
    """Every check that can fail before any work starts, each failure one line: the config's fields and model
    (`alexnet.config.check`), then its data section."""
    check(cfg)
    check_data(cfg)
    return cfg


def check_data(cfg: Config) -> None:
    """The augmentation lists: op names, parameters, and evaluation ops that must be deterministic."""
    d, channels = cfg.data, dataset_channels(cfg)
    eye = tuple(tuple(float(i == j) for j in range(3)) for i in range(3))
    stats = Stats(mean=(0.5,) * channels, std=(0.5,) * channels,
                  eigval=(1.0,) * 3 if channels == 3 else None, eigvec=eye if channels == 3 else None)
    build_pipeline(d.train_augment, input_size=d.input_size, stats=stats)
    if build_pipeline(d.eval_augment, input_size=d.input_size, stats=stats).is_random:
        raise AlexNetError("data.eval_augment must be deterministic (resize, normalise, centre crop): evaluation "
                           "has no random generator; put random ops in data.train_augment")


def load_split(cfg: Config, split: str, env: DistEnv | None = None):
    """One split as the run sees it: the configured subset, and for image folders only decodable files. Under
    torchrun every rank must call it together: each decodes its share of a folder's files."""
    d, env = cfg.data, env or DistEnv()
    data = load_dataset(d.dataset, split, d.data_dir, d.download, image_size=d.image_size)
    limit = d.train_subset if split == "train" else d.test_subset
    if d.dataset == "folder":
        if limit:  # the files are listed class by class: a seeded random subset, not the first classes
            keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:limit].sort().values
            data.samples, data.labels = [data.samples[i] for i in keep.tolist()], data.labels[keep]
        # an undecodable file is an error now, not a crash in a worker mid-epoch
        bad = data.find_bad_files(env.rank, env.world_size, first_only=not d.skip_bad_files)
        pooled = [b for share in distributed.all_gather_object(bad) for b in share]
        data.drop_bad_files(pooled, d.skip_bad_files)
    elif limit:
        # the first N (these files are not ordered by class); a clone, as a view would keep all of it alive
        data.images, data.labels = data.images[:limit].clone(), data.labels[:limit].clone()
    return data


def dataset_stats(data) -> Stats:
    if hasattr(data, "samples"):  # folder: a seeded sample of decoded images
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(data), generator=g)[:FOLDER_STATS_IMAGES].tolist()
        return compute_stats(data.decode(pick))
    return compute_stats(data.images)


def make_loader(cfg: Config, data, device: torch.device, *, train: bool, env: DistEnv | None = None,
                batch_size: int | None = None) -> DeviceLoader | FolderLoader:
    """Training order (shuffled by seed and epoch, drop_last as configured) or evaluation order (every sample
    once), this rank's share of it."""
    t, env = cfg.train, env or DistEnv()
    options = dict(batch_size=batch_size or (t.batch_size if train else t.eval_batch_size), device=device,
                   shuffle=train, seed=t.seed, drop_last=train and t.drop_last, rank=env.rank,
                   world_size=env.world_size)
    if cfg.data.dataset == "folder":
        return FolderLoader(data, workers=cfg.data.workers, **options)
    return DeviceLoader(data.images, data.labels, **options)


def prepare_data(cfg: Config, env: DistEnv, device: torch.device, stats: Stats | None = None) -> RunData:
    # Rank 0 first: if it downloads, the others find the files afterwards instead of fetching them too. Image
    # folders (never downloaded) are loaded by all ranks at once: they check the files together.
    together = cfg.data.dataset == "folder" or not env.distributed
    if together or env.is_main:
        train, test = load_split(cfg, "train", env), load_split(cfg, "test", env)
    if not together:
        distributed.barrier()
        if not env.is_main:
            train, test = load_split(cfg, "train", env), load_split(cfg, "test", env)
    stats = stats or dataset_stats(train)
    d = cfg.data
    train_loader = make_loader(cfg, train, device, train=True, env=env)
    if len(train_loader) == 0:
        raise AlexNetError(f"{len(train)} training images are fewer than one batch of {cfg.train.batch_size} "
                           f"(train.drop_last drops it): lower --batch-size")
    return RunData(train=train_loader, test=make_loader(cfg, test, device, train=False, env=env),
                   train_pipeline=build_pipeline(d.train_augment, input_size=d.input_size, stats=stats),
                   eval_pipeline=build_pipeline(d.eval_augment, input_size=d.input_size, stats=stats),
                   classes=list(train.classes), stats=stats)
