"""Model registry in the style of timm: `@register_model` on a builder, `create_model(name, **options)`,
`list_models()`. The CLI's `--model` choices come from here."""

import inspect
from dataclasses import dataclass
from typing import Callable

from torch import nn

from alexnet.errors import AlexNetError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]  # (C, H, W) the model is designed for
    description: str


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, input_shape: tuple[int, int, int]):
    def wrap(builder):
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelInfo(name, builder, input_shape, doc[0] if doc else "")
        return builder
    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise AlexNetError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    return _REGISTRY[name]


def model_options(name: str) -> list[str]:
    return [p for p in inspect.signature(model_info(name).builder).parameters]


def create_model(name: str, **options) -> nn.Module:
    """Build a registered model; unknown names and options are a one-line `AlexNetError`."""
    info = model_info(name)
    unknown = sorted(set(options) - set(model_options(name)))
    if unknown:
        raise AlexNetError(f"model {name!r} has no option {', '.join(unknown)}; "
                           f"options: {', '.join(model_options(name))}")
    params = inspect.signature(info.builder).parameters
    for key, value in options.items():
        _check_type(name, key, value, params[key].default)
    return info.builder(**options)


def _check_type(model: str, key: str, value, default) -> None:
    """Options come from YAML and the command line: catch `lrn=maybe` or `dropout=high` before building."""
    if value is None or default is None or isinstance(default, (tuple, list)):
        return
    expected = type(default)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int and isinstance(default, int) and isinstance(value, (tuple, list)):
        ok = True  # input_size given as (H, W)
    if not ok:
        raise AlexNetError(f"model {model!r}: option {key} must be {expected.__name__}, got {value!r}")
