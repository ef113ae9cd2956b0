"""What `alexnet eval` and `alexnet predict` do with a run's checkpoint (`best.pt` or `checkpoint.pt`): rebuild
the model from the config stored inside, with the normalisation statistics of its training set."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from alexnet.config import Config, build_model
from alexnet.data.augment import grayscale
from alexnet.data.folder import decode_rgb, resize_center_crop
from alexnet.data.pipeline import Pipeline, Stats, build_pipeline
from alexnet.errors import AlexNetError
from alexnet.eval.evaluate import evaluate
from alexnet.eval.metrics import EvalResult
from alexnet.train.checkpoint import load_checkpoint
from alexnet.train.distributed import DistEnv, pick_device

NATIVE_SIZE = {"fashion-mnist": 28, "cifar10": 32}  # what a user's image is brought to before the eval pipeline


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


def evaluate_checkpoint(checkpoint: Path, *, data_dir: str | None = None, ten_crops: bool = False,
                        device: str = "auto", batch_size: int | None = None) -> tuple[EvalResult, Trained]:
    from alexnet.train.data import load_split, make_loader

    trained = load_trained(checkpoint, device)
    cfg = trained.cfg
    if data_dir is not None:
        cfg.data.data_dir = data_dir
    test = load_split(cfg, "test")
    if list(test.classes) != trained.classes:
        raise AlexNetError(f"the test data's classes ({', '.join(test.classes)}) are not the ones the model was "
                           f"trained on ({', '.join(trained.classes)})")
    # ten crops put ten views of every image through the model at once: keep the memory of a plain evaluation
    size = batch_size or (max(1, cfg.train.eval_batch_size // 10) if ten_crops else None)
    loader = make_loader(cfg, test, trained.device, train=False, batch_size=size)
    result = evaluate(trained.model, loader, trained.pipeline, num_classes=len(trained.classes),
                      precision=cfg.train.precision, ten_crops=ten_crops)
    return result, trained


def load_image(trained: Trained, path: Path) -> torch.Tensor:
    """uint8 (C, H, W) as the run's test images look before the eval pipeline."""
    if not Path(path).is_file():
        raise AlexNetError(f"{path}: no such file")
    image = decode_rgb(path)                                     # (3, H, W) uint8
    if trained.stats.channels == 1:                              # Fashion-MNIST: grey, as torchvision's weights
        image = grayscale(image[None].float()).round().clamp(0, 255).to(torch.uint8)[0]
    size = NATIVE_SIZE.get(trained.cfg.data.dataset, trained.cfg.data.image_size)
    return resize_center_crop(image, size)


@torch.no_grad()
def predict(trained: Trained, paths: list[Path], topk: int = 5) -> list[list[tuple[str, float]]]:
    images = torch.stack([load_image(trained, p) for p in paths]).to(trained.device)
    probs = trained.model(trained.pipeline(images)).float().softmax(-1)
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [[(trained.classes[i], v) for v, i in zip(vs.tolist(), ix.tolist())] for vs, ix in zip(values, indices)]
