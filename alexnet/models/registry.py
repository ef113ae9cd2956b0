"""Model registry in the style of timm: `@register_model` on a builder, `create_model(name, **options)`,
`list_models()`. The CLI's `--model` choices come from here. A builder takes one options dataclass; the
registry holds the model's defaults as an instance of it, and checks names and types of what a caller passes."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from alexnet.base.errors import AlexNetError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[[Any], nn.Module]
    input_shape: tuple[int, int, int]  # (C, H, W) the model is designed for
    options: Any                       # the builder's options dataclass, holding this model's defaults


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, input_shape: tuple[int, int, int], options: Any):
    def wrap(builder):
        _REGISTRY[name] = ModelInfo(name, builder, input_shape, options)
        return builder
    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise AlexNetError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    return _REGISTRY[name]


def model_options(name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(model_info(name).options)]


def create_model(name: str, **options) -> nn.Module:
    """Build a registered model; unknown names and options are a one-line `AlexNetError`."""
    info = model_info(name)
    unknown = sorted(set(options) - set(model_options(name)))
    if unknown:
        raise AlexNetError(f"model {name!r} has no option {', '.join(unknown)}; "
                           f"options: {', '.join(model_options(name))}")
    for key, value in options.items():
        _check_type(name, key, value, getattr(info.options, key))
    return info.builder(dataclasses.replace(info.options, **options))


def min_input_size(name: str, **options) -> int | None:
    """The smallest square input (px) the model takes with these options, or None if none up to 4096 does.
    Built on the meta device (nothing allocated); a bisection, since a larger input never makes a map vanish."""
    def fits(size: int) -> bool:
        try:
            with torch.device("meta"):
                create_model(name, **{**options, "input_size": size})
        except AlexNetError:
            return False
        return True
    low, high = 0, 4096  # invariant: low does not fit (0 never does), high does
    if not fits(high):
        return None
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    return high


def _check_type(model: str, key: str, value, default) -> None:
    """Options come from YAML and the command line: catch `lrn=maybe`, `dropout=high`, `width=-1` or an empty
    `lrn=` before building. Every integer option (classes, channels, sizes, widths, a layer index) is >= 1."""
    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if default is None:  # remove_conv: None or a layer index
        ok, expected = value is None or is_int(value) and value >= 1, "None or an int >= 1"
    elif key == "input_size":
        sizes = list(value) if isinstance(value, (tuple, list)) else [value, value]
        ok, expected = len(sizes) == 2 and all(is_int(v) and v >= 1 for v in sizes), "an int >= 1 or [H, W]"
    elif is_int(default):
        ok, expected = is_int(value) and value >= 1, "an int >= 1"
    elif isinstance(default, float):
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        ok, expected = isinstance(value, type(default)), type(default).__name__
    if not ok:
        raise AlexNetError(f"model {model!r}: option {key} must be {expected}, got {value!r}")
