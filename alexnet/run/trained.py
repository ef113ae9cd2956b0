"""A trained model back from its run's checkpoint (`best.pt` or `checkpoint.pt`): the network rebuilt from the
config stored inside, with the normalisation statistics of its training set and its evaluation pipeline. What
eval, predict, export and the visualisations start from."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from alexnet.base.errors import AlexNetError
from alexnet.config import Config, build_model
from alexnet.data.pipeline import Pipeline, Stats, build_pipeline
from alexnet.run.checkpoint import load_checkpoint
from alexnet.runtime.device import pick_device
from alexnet.runtime.distributed import DistEnv


@dataclass
class Trained:
    model: nn.Module        # in eval mode, on `device`
    cfg: Config
    classes: list[str]
    stats: Stats
    pipeline: Pipeline      # the evaluation pipeline of the run
    device: torch.device


def load_trained(checkpoint: Path, device: str = "auto") -> Trained:
    state = load_checkpoint(checkpoint)
    missing = {"model", "config", "classes", "stats"} - set(state)
    if missing:
        raise AlexNetError(f"{checkpoint} is not an alexnet run checkpoint (no {', '.join(sorted(missing))})")
    cfg = Config.from_dict(state["config"])
    dev = pick_device(device, DistEnv())
    model = build_model(cfg, num_classes=len(state["classes"]))
    model.load_state_dict(state["model"])
    stats = Stats.from_dict(state["stats"])
    pipeline = build_pipeline(cfg.data.eval_augment, input_size=cfg.data.input_size, stats=stats)
    return Trained(model.to(dev).eval(), cfg, list(state["classes"]), stats, pipeline, dev)
