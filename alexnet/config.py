"""Typed run configuration: preset file (YAML) -> CLI overrides -> validated `Config`, dumped with the run.

A preset is a YAML file in `alexnet/presets/` with four sections (`model`, `data`, `optim`, `train`); every key
is a field below, except `model`, whose keys other than `name` are passed to `create_model` as options.
Overrides use dotted keys: `--set optim.lr=0.05 --set model.dropout=0.3` (values parsed as YAML).
"""

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from alexnet.base.errors import AlexNetError, one_line
from alexnet.base.files import atomic_write
from alexnet.models import create_model, min_input_size, model_options
from alexnet.runtime.device import DEVICE_PATTERN
from alexnet.runtime.precision import PRECISIONS

PRESET_DIR = Path(__file__).parent / "presets"
DATASETS = ("fashion-mnist", "cifar10", "folder")
CHANNELS = {"fashion-mnist": 1, "cifar10": 3, "folder": 3}  # input channels of each dataset's images
SCHEDULES = ("constant", "step", "plateau", "cosine", "onecycle")
NORMALIZATIONS = ("standardize", "mean_image")


@dataclass
class ModelConfig:
    name: str = "small"
    options: dict[str, Any] = field(default_factory=dict)  # keyword options of create_model(name, ...)


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"   # fashion-mnist | cifar10 | folder
    data_dir: str | None = None      # None: $ALEXNET_DATA, the user cache, Debian's dataset package
    download: bool = False           # fetch (checksummed) when not found
    input_size: int = 28             # side of the square image the model sees, px
    normalize: str = "standardize"   # standardize: (x - mean) / std per channel | mean_image: the paper's raw
                                     # 0-255 pixels minus the training set's mean image (section 2)
    train_augment: list[dict] = field(default_factory=list)  # on-device ops in order, see alexnet.data.augment
    eval_augment: list[dict] = field(default_factory=list)   # deterministic ops for evaluation (e.g. center_crop)
    image_size: int = 256            # folder datasets: decoded to image_size x image_size (the paper: 256)
    workers: int = 4                 # folder datasets: decoding processes
    skip_bad_files: bool = False     # folder datasets: skip undecodable files with a warning instead of failing
    train_subset: int = 0            # use only the first N training images (0 = all): quick tests, small budgets
    test_subset: int = 0             # likewise for the test set
    val_size: int = 5000             # training images held out for validation (best.pt, plateau; at most a tenth;
                                     # 0: none). An image folder with val/ and test/ validates on val/.


@dataclass
class OptimConfig:
    lr: float = 0.01                 # peak learning rate for `batch_size` images per step
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4       # L2 on all parameters, as the paper (biases included)
    schedule: str = "constant"       # constant | step | plateau | cosine | onecycle
    warmup_epochs: float = 0.0       # linear warm-up from 0 (cosine, onecycle, step, constant)
    step_epochs: int = 30            # step: divide by 10 every step_epochs
    plateau_patience: int = 1        # plateau: epochs without test-accuracy gain before dividing by 10
    plateau_max_drops: int = 3       # plateau: the paper divided the rate by 10 three times
    final_lr_fraction: float = 0.0   # cosine / onecycle: lr at the end as a fraction of the peak
    label_smoothing: float = 0.0
    grad_clip: float = 0.0           # max global gradient norm; 0 = off


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128            # global: split across ranks under torchrun
    eval_batch_size: int = 1000
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    precision: str = "auto"          # auto (the device's fastest, alexnet.runtime.precision) | fp32 | tf32 | bf16
                                     # | fp16
    channels_last: bool | str = "auto"  # NHWC model and inputs; auto: with bf16 / fp16
    compile: bool = False            # torch.compile the model
    accum_steps: int = 1             # micro-batches per optimizer step, their gradients summed: batch_size /
                                     # accum_steps images in memory at a time; the same arithmetic as that many
                                     # times more torchrun ranks (and their random numbers)
    cuda_graphs: bool | str = "auto"  # capture the training step as one CUDA graph (auto: where it applies,
                                      # alexnet.training.fast)
    space_to_depth: bool | str = "auto"  # conv1 as a 3x3 convolution over a 4x4-folded input, exact (auto: CUDA)
    pool_first: bool | str = "auto"  # ReLU -> max-pool run as max-pool -> ReLU, exact (auto: where the net has it)
    fused_lrn: bool | str = "auto"   # the paper's LRN as one Function, analytic backward (auto: unless compiled)
    fused_pool: bool | str = "auto"  # max-pool + ReLU as Triton kernels, int8 codes (auto: off, not yet measured)
    triton_lrn: bool | str = "auto"  # ReLU + LRN as Triton kernels, x saved only (auto: off, not yet measured)
    bias_after_pool: bool | str = "auto"  # conv -> ReLU -> max-pool run as conv -> max-pool -> + bias -> ReLU
                                          # (auto: off, not yet measured)
    deterministic: bool = False      # torch.use_deterministic_algorithms (slower on GPU)
    threads: int = 0                 # CPU intra-op threads; 0 = torch's default (one per core)
    checkpoint_every_steps: int = 0  # also checkpoint every N optimizer steps (0 = at epoch ends only)
    drop_last: bool = True           # drop the last incomplete training batch of each epoch
    log_every_steps: int = 50        # steps.jsonl, TensorBoard and (off a terminal) a progress line every N steps
    estimate_steps: int = 3          # timed warm-up steps for the start-up estimate, then undone (0 = none)
    tensorboard: bool = False        # also write TensorBoard event files to OUT/tensorboard (needs tensorboard)
    init_from: str | None = None     # start from these weights: a run's checkpoint or a torchvision state_dict


@dataclass
class Config:
    preset: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = {"name": self.model.name, **self.model.options}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        if not isinstance(d, dict):
            raise AlexNetError(f"a config is a mapping of sections (model, data, optim, train), got {d!r:.60}")
        d = dict(d)
        for section in ("model", "data", "optim", "train"):
            if not isinstance(d.get(section) or {}, dict):
                raise AlexNetError(f"config section {section} must be a mapping, got {d[section]!r:.60}")
        d.pop("runtime", None)  # a run's record of what it resolved, not configuration
        unknown = set(d) - {"preset", "model", "data", "optim", "train"}
        if unknown:
            raise AlexNetError(f"unknown config section {', '.join(sorted(unknown))}; "
                               "sections: model, data, optim, train")
        model = dict(d.get("model") or {})
        cfg = cls(preset=str(d.get("preset", "custom")),
                  model=ModelConfig(name=model.pop("name", "small"), options=model))
        for section in ("data", "optim", "train"):
            for key, value in (d.get(section) or {}).items():
                _assign(cfg, f"{section}.{key}", value)
        return cfg


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> Config:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        close = difflib.get_close_matches(name, list_presets(), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise AlexNetError(f"unknown preset {name!r}; {hint}choose from {', '.join(list_presets())}")
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise AlexNetError(f"{path}: a preset is a mapping of sections (model, data, optim, train)")
    data["preset"] = name
    return Config.from_dict(data)


def read_yaml(path: Path):
    """A YAML file through the safe loader (no Python tags); a parse error is one line naming the file."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise AlexNetError(f"{path}: not a readable YAML file ({one_line(e)[:200]})") from None


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Apply dotted-key overrides (`optim.lr`, `model.dropout`) in place and return cfg."""
    for key, value in overrides.items():
        if key.startswith("model."):
            option = key.split(".", 1)[1]
            if option == "name":  # another model keeps only the options it has (dropout, init, ...)
                cfg.model.name = str(value)
                kept = model_options(cfg.model.name)
                cfg.model.options = {k: v for k, v in cfg.model.options.items() if k in kept}
            else:
                cfg.model.options[option] = value
        else:
            _assign(cfg, key, value)
    return cfg


def _assign(cfg: Config, key: str, value: Any) -> None:
    section_name, _, name = key.partition(".")
    section = getattr(cfg, section_name, None) if section_name in ("data", "optim", "train") else None
    fields = {f.name: f for f in dataclasses.fields(section)} if section is not None else {}
    if name not in fields:
        valid = [f"{s}.{f.name}" for s in ("data", "optim", "train") for f in dataclasses.fields(getattr(cfg, s))]
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise AlexNetError(f"unknown config key {key!r}; {hint}keys: model.<option>, {', '.join(valid)}")
    setattr(section, name, _coerce(key, value, fields[name].type, getattr(section, name)))


def _coerce(key: str, value: Any, annotation, current: Any) -> Any:
    """YAML and the command line give strings for some numbers ('5e-4' is a string in YAML 1.1)."""
    text = getattr(annotation, "__name__", None) or str(annotation)  # int -> "int", str | None -> "str | None"
    if value is None and "None" in text:
        return None
    try:
        if text.startswith("bool"):
            if isinstance(value, bool) or ("str" in text and value == "auto"):  # bool | str: true, false, auto
                return value
            raise ValueError
        if text.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if text.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if text.startswith("str"):
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if text.startswith("list"):
            if not isinstance(value, list):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    expected = "true, false or auto" if text == "bool | str" else text.split("[")[0].replace(" | None", "")
    raise AlexNetError(f"{key} must be {expected}, got {value!r}")


def check(cfg: Config, model_given: bool = False) -> Config:
    """Every check of the config itself and of its model (the data section's augmentations and files are checked
    by `alexnet.data.run.check_data`); each failure is one line."""
    d, o, t = cfg.data, cfg.optim, cfg.train
    checks = [
        (d.dataset in DATASETS, f"data.dataset must be one of {', '.join(DATASETS)}, got {d.dataset!r}"),
        (d.input_size >= 1, f"data.input_size must be >= 1, got {d.input_size}"),
        (d.image_size >= 1, f"data.image_size must be >= 1, got {d.image_size}"),
        (d.workers >= 0, f"data.workers must be >= 0, got {d.workers}"),
        (d.train_subset >= 0 and d.test_subset >= 0, "data.train_subset / test_subset must be >= 0"),
        (d.val_size >= 0, f"data.val_size must be >= 0, got {d.val_size}"),
        (d.normalize in NORMALIZATIONS, f"data.normalize must be one of {', '.join(NORMALIZATIONS)}, got "
                                        f"{d.normalize!r}"),
        (o.lr > 0, f"optim.lr must be > 0, got {o.lr}"),
        (0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}"),
        (o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}"),
        (o.schedule in SCHEDULES, f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {o.schedule!r}"),
        (o.warmup_epochs >= 0, f"optim.warmup_epochs must be >= 0, got {o.warmup_epochs}"),
        (o.step_epochs >= 1, f"optim.step_epochs must be >= 1, got {o.step_epochs}"),
        (o.plateau_patience >= 0 and o.plateau_max_drops >= 0, "optim.plateau_* must be >= 0"),
        (0 <= o.final_lr_fraction <= 1, f"optim.final_lr_fraction must be in [0, 1], got {o.final_lr_fraction}"),
        (0 <= o.label_smoothing < 1, f"optim.label_smoothing must be in [0, 1), got {o.label_smoothing}"),
        (o.grad_clip >= 0, f"optim.grad_clip must be >= 0, got {o.grad_clip}"),
        (not o.nesterov or o.momentum > 0, "optim.nesterov needs optim.momentum > 0"),
        (t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}"),
        (t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}"),
        (t.accum_steps >= 1, f"train.accum_steps must be >= 1, got {t.accum_steps}"),
        (t.batch_size >= t.accum_steps, f"train.batch_size {t.batch_size} is smaller than train.accum_steps "
                                        f"{t.accum_steps}: every micro-batch needs an image"),
        (t.eval_batch_size >= 1, f"train.eval_batch_size must be >= 1, got {t.eval_batch_size}"),
        (t.seed >= 0, f"train.seed must be >= 0, got {t.seed}"),
        (t.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}"),
        (t.threads >= 0, f"train.threads must be >= 0, got {t.threads}"),
        (t.checkpoint_every_steps >= 0, "train.checkpoint_every_steps must be >= 0"),
        (t.log_every_steps >= 0 and t.estimate_steps >= 0, "train.log_every_steps / estimate_steps must be >= 0"),
        (t.init_from is None or Path(t.init_from).expanduser().is_file(),
         f"train.init_from: {t.init_from} is a folder, not a weights file"
         if t.init_from is not None and Path(t.init_from).expanduser().is_dir()
         else f"train.init_from: no such file {t.init_from}"),
        (re.fullmatch(DEVICE_PATTERN, t.device) is not None,
         f"train.device must be auto, cpu, cuda or cuda:N, got {t.device!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise AlexNetError(message)
    for reserved in ("input_size", "in_channels", "num_classes"):
        if reserved in cfg.model.options:
            raise AlexNetError(f"model.{reserved} follows the data section (data.input_size, data.dataset and "
                               f"its classes)")
    if model_given:  # `alexnet.fit` brings its own module: nothing of the registry to check
        return cfg
    try:
        build_model(cfg, _probe=True)  # unknown model, option or a too-small input fail here
    except AlexNetError as error:
        if "too small" not in str(error):
            raise
        smallest = min_input_size(cfg.model.name, in_channels=dataset_channels(cfg), **cfg.model.options)
        raise AlexNetError(f"data.input_size {cfg.data.input_size} is too small for {cfg.model.name} (the smallest "
                           f"input it takes is {smallest} px): {error}") from None
    return cfg


def dataset_channels(cfg: Config) -> int:
    return CHANNELS[cfg.data.dataset]


def build_model(cfg: Config, num_classes: int | None = None, _probe: bool = False):
    """The model a config describes; input channels and size follow the data section."""
    options = {"in_channels": dataset_channels(cfg), "input_size": cfg.data.input_size, **cfg.model.options}
    if num_classes is not None:
        options.setdefault("num_classes", num_classes)
    elif cfg.data.dataset in ("fashion-mnist", "cifar10"):
        options.setdefault("num_classes", 10)
    if _probe:  # validation only: the meta device allocates nothing, even for the 60 M-parameter paper net
        with torch.device("meta"):
            return create_model(cfg.model.name, **options)
    return create_model(cfg.model.name, **options)


def save_config(cfg: Config, path: Path, runtime: dict | None = None) -> None:
    """The resolved config as YAML; `runtime` (what the run resolved: device, precision and why, the files
    read) goes in a `runtime` section that loading ignores and resuming never compares."""
    data = cfg.to_dict() | ({"runtime": runtime} if runtime else {})
    atomic_write(path, yaml.safe_dump(data, sort_keys=False))


def resolve(preset: str | None, overrides: dict[str, Any], out: Path | None = None,
            resume: bool = False) -> Config:
    """Preset file, or the run folder's own config when resuming without a preset, then the overrides."""
    if preset is None and resume and out is not None and (Path(out) / "config.yaml").exists():
        cfg = load_config(Path(out) / "config.yaml")
    elif preset is None:
        raise AlexNetError("name a preset with --preset (" + ", ".join(list_presets()) + ")")
    else:
        cfg = load_preset(preset)
    return apply_overrides(cfg, overrides)


def load_config(path: Path) -> Config:
    data = read_yaml(path)
    try:
        return Config.from_dict(data)
    except AlexNetError as e:
        raise AlexNetError(f"{path}: {e}") from None
