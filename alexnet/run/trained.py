"""A trained model back from its run's checkpoint (`best.pt` or `checkpoint.pt`): the network rebuilt from the
config stored inside, with the normalisation statistics of its training set and its evaluation pipeline. What
eval, predict, export and the visualisations start from."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from alexnet.base.errors import AlexNetError, one_line
from alexnet.config import Config, build_model
from alexnet.data.pipeline import Pipeline, Stats
from alexnet.data.run import run_pipeline
from alexnet.run.checkpoint import load_checkpoint
from alexnet.runtime.device import pick_device
from alexnet.runtime.distributed import DistEnv

CUSTOM = "custom:"  # the model name a run of `alexnet.fit` records: custom:<class name>


@dataclass
class Trained:
    model: nn.Module        # in eval mode, on `device`
    cfg: Config
    classes: list[str]
    stats: Stats
    pipeline: Pipeline      # the evaluation pipeline of the run
    device: torch.device


def load_trained(checkpoint: Path, device: str = "auto", model: nn.Module | None = None) -> Trained:
    """The run's model with its weights, statistics and evaluation pipeline. A net trained through
    `alexnet.fit` is not in the registry: pass an instance of it as `model`."""
    state = load_checkpoint(checkpoint)
    missing = {"model", "config", "classes", "stats"} - set(state)
    if missing:
        raise AlexNetError(f"{checkpoint} is not an alexnet run checkpoint (no {', '.join(sorted(missing))})")
    cfg = Config.from_dict(state["config"])
    dev = pick_device(device, DistEnv())
    if model is None and cfg.model.name.startswith(CUSTOM):
        raise AlexNetError(f"{checkpoint} holds a net of your own ({cfg.model.name[len(CUSTOM):]}): pass an "
                           f"instance of it, e.g. alexnet.load({str(checkpoint)!r}, model=net)")
    if model is None:
        model = build_model(cfg, num_classes=len(state["classes"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:  # missing keys or a size mismatch: not the model its own config describes
        raise AlexNetError(f"{checkpoint}'s weights do not fit the {cfg.model.name} model its config describes "
                           f"({one_line(error)[:200]})") from None
    stats = Stats.from_dict(state["stats"])
    pipeline = run_pipeline(cfg, stats, train=False)
    return Trained(model.to(dev).eval(), cfg, list(state["classes"]), stats, pipeline, dev)


def load_weights(model: nn.Module, path: str | Path) -> str:
    """Start `model` from the weights in `path` (`train.init_from`): one of our checkpoints (`best.pt`,
    `checkpoint.pt`) or a bare state_dict file, such as torchvision's AlexNet weights. Every tensor must fit
    but the last layer's, which is left as initialised when the class count differs (a new head for the
    user's classes). Returns what was done, for the banner."""
    state = load_checkpoint(Path(path))
    weights = state.get("model", state.get("state_dict", state))  # ours, a {"state_dict": ...} wrapper, or bare
    own = model.state_dict()
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise AlexNetError(f"{path} holds no weights (neither a run checkpoint nor a state_dict)")
    missing, unknown = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unknown:
        raise AlexNetError(f"{path}'s weights do not fit this model: missing {', '.join(missing[:3]) or 'none'}; "
                           f"unknown {', '.join(unknown[:3]) or 'none'}")
    head = [key for key in own if key.startswith("classifier.")][-2:]  # the last Linear: weight, bias
    differ = [key for key in own if own[key].shape != weights[key].shape]
    if any(key not in head for key in differ):
        key = next(key for key in differ if key not in head)
        raise AlexNetError(f"{path}: {key} is {tuple(weights[key].shape)} there but {tuple(own[key].shape)} in "
                           f"this model")
    kept = {key: value for key, value in weights.items() if key not in differ}
    model.load_state_dict(kept, strict=False)
    if differ:
        return (f"from {path}, all but the last layer (a new head: {own[head[0]].shape[0]} classes instead of "
                f"{weights[head[0]].shape[0]})")
    return f"from {path}, every layer"
