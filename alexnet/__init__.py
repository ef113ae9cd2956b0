"""alexnet: AlexNet (Krizhevsky, Sutskever, Hinton 2012) and d2l 7.1 as a fast, reproducible training stack.

The Python API (`alexnet.api`): `train`, `fit`, `load`, `evaluate`, `predict`, `summary`; the model registry:
`create_model`, `list_models`. The package's layers, lowest first: base, runtime / models, config,
data / analysis, run / report, eval / export, training, bench / experiments, api, cli.

The API's names load on first use (PEP 562 `__getattr__`): `import alexnet` alone does not import torch, so
that the `alexnet` command, which imports this package first, answers `--help` at once.
"""

import importlib
from typing import TYPE_CHECKING

from alexnet.base.errors import AlexNetError
from alexnet.base.version import __version__

if TYPE_CHECKING:  # what the type checker sees; at run time `__getattr__` below imports them
    from alexnet.api import Run, evaluate, fit, load, predict, summary, train
    from alexnet.models import create_model, list_models

LAZY = {**dict.fromkeys(("Run", "evaluate", "fit", "load", "predict", "summary", "train"), "alexnet.api"),
        **dict.fromkeys(("create_model", "list_models"), "alexnet.models")}  # name -> the module that holds it

__all__ = ["AlexNetError", "Run", "create_model", "evaluate", "fit", "list_models", "load", "predict", "summary",
           "train", "__version__"]


def __getattr__(name: str):
    """`alexnet.train` and `from alexnet import train`: the module that holds the name is imported now, once."""
    if name not in LAZY:
        raise AttributeError(f"module 'alexnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(LAZY[name]), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(LAZY))
