"""argparse value types shared by the `alexnet` subcommands: each rejects a bad value with a one-line usage
error (exit code 2)."""

import argparse

import yaml

from alexnet.base.errors import one_line


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
