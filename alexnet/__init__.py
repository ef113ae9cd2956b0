"""alexnet: AlexNet (Krizhevsky, Sutskever, Hinton 2012) and d2l 7.1 as a fast, reproducible training stack.

The Python API (`alexnet.api`): `train`, `fit`, `load`, `evaluate`, `predict`, `summary`; the model registry:
`create_model`, `list_models`. The package's layers, lowest first: base, runtime / models, config,
data / analysis, run / report, eval / export, training, bench / experiments, api, cli.
"""

from alexnet.api import Run, evaluate, fit, load, predict, summary, train
from alexnet.base.errors import AlexNetError
from alexnet.base.version import __version__
from alexnet.models import create_model, list_models

__all__ = ["AlexNetError", "Run", "create_model", "evaluate", "fit", "list_models", "load", "predict", "summary",
           "train", "__version__"]
