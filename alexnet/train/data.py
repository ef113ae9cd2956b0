"""The data side of a run: datasets -> statistics -> on-device pipelines -> loaders, for any rank."""

from dataclasses import dataclass

import torch

from alexnet.config import Config
from alexnet.data.pipeline import Pipeline, Stats, build_pipeline, compute_stats
from alexnet.data.datasets import load_dataset
from alexnet.data.loader import DeviceLoader, FolderLoader
from alexnet.train import distributed
from alexnet.train.distributed import DistEnv

FOLDER_STATS_IMAGES = 2000  # decoded images sampled for a folder's mean / std / PCA (the paper used all 1.2 M)


@dataclass
class RunData:
    train: DeviceLoader | FolderLoader
    test: DeviceLoader | FolderLoader
    train_pipeline: Pipeline
    eval_pipeline: Pipeline
    classes: list[str]
    stats: Stats


def load_split(cfg: Config, split: str):
    d = cfg.data
    data = load_dataset(d.dataset, split, d.data_dir, d.download, image_size=d.image_size,
                        skip_bad_files=d.skip_bad_files)
    limit = d.train_subset if split == "train" else d.test_subset
    if d.dataset == "folder":
        if limit:
            data.samples, data.labels = data.samples[:limit], data.labels[:limit]
        data.verify()  # an undecodable file is an error now, not a crash in a worker mid-epoch
    elif limit:
        # clone: a view would keep the whole dataset alive on the device
        data.images, data.labels = data.images[:limit].clone(), data.labels[:limit].clone()
    return data


def dataset_stats(data) -> Stats:
    if hasattr(data, "samples"):  # folder: a seeded sample of decoded images
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(data), generator=g)[:FOLDER_STATS_IMAGES].tolist()
        return compute_stats(torch.stack([data[i][0] for i in pick]))
    return compute_stats(data.images)


def prepare_data(cfg: Config, env: DistEnv, device: torch.device, stats: Stats | None = None) -> RunData:
    # Rank 0 first: if it downloads, the others find the files afterwards instead of fetching them too.
    if env.is_main:
        train, test = load_split(cfg, "train"), load_split(cfg, "test")
    distributed.barrier()
    if not env.is_main:
        train, test = load_split(cfg, "train"), load_split(cfg, "test")
    stats = stats or dataset_stats(train)
    d, t = cfg.data, cfg.train
    common = dict(device=device, rank=env.rank, world_size=env.world_size)
    if d.dataset == "folder":
        train_loader = FolderLoader(train, batch_size=t.batch_size, shuffle=True, seed=t.seed,
                                    drop_last=t.drop_last, workers=d.workers, **common)
        test_loader = FolderLoader(test, batch_size=t.eval_batch_size, shuffle=False, workers=d.workers, **common)
    else:
        train_loader = DeviceLoader(train.images, train.labels, batch_size=t.batch_size, shuffle=True,
                                    seed=t.seed, drop_last=t.drop_last, **common)
        test_loader = DeviceLoader(test.images, test.labels, batch_size=t.eval_batch_size, shuffle=False, **common)
    return RunData(train=train_loader, test=test_loader,
                   train_pipeline=build_pipeline(d.train_augment, input_size=d.input_size, stats=stats),
                   eval_pipeline=build_pipeline(d.eval_augment, input_size=d.input_size, stats=stats),
                   classes=list(train.classes), stats=stats)
