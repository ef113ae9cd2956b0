"""argparse value types shared by the `alexnet` subcommands: each rejects a bad value with a one-line usage
error (exit code 2). And the checks of names whose lists live in torch-importing registries (models, studies,
precisions): made after parsing, so that `--help` never loads torch, with a "did you mean" for a near miss."""

import argparse
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from alexnet.base.errors import AlexNetError, one_line

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"  # alexnet.config.PRESET_DIR, without torch


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W as three positive integers, got {text!r}")
    return shape


def parse_option(text: str) -> tuple[str, object]:
    """KEY=VALUE, the value read as YAML with the safe loader (numbers, booleans, lists, mappings; no tags)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise argparse.ArgumentTypeError(
            f"{key.strip()}: {value!r} is not valid YAML ({one_line(error)[:160]})") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def preset_names() -> list[str]:
    """The presets, as `alexnet.config.list_presets` lists them, for help texts (no torch import)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def choose(value: str, choices: Sequence[str], what: str) -> str:
    """`value` if it is one of `choices`, else a one-line error in the registries' words ("unknown model 'x';
    choose from ...") that names the nearest choice too."""
    if value in choices:
        return value
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise AlexNetError(f"unknown {what} {value!r}; {hint}choose from {', '.join(choices)}")


def choose_model(name: str) -> str:
    from alexnet.models import list_models
    return choose(name, list_models(), "model")


def choose_precision(name: str) -> str:
    from alexnet.runtime.precision import PRECISIONS
    return choose(name, PRECISIONS, "precision")


def resolve_config(preset: str | None, overrides: dict[str, Any], out: Path | None = None, resume: bool = False):
    """`alexnet.config.resolve`, with a "did you mean" for a misspelt `--set model.name`."""
    from alexnet.config import resolve
    if "model.name" in overrides:
        choose_model(str(overrides["model.name"]))
    return resolve(preset, overrides, out, resume)
