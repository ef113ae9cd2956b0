"""AlexNet model family: one registry, pure nn.Modules."""

from alexnet.models import variants  # noqa: F401  (registers the variants)
from alexnet.models import lenet  # noqa: F401  (registers lenet, cifar4)
from alexnet.models.alexnet import AlexNet, ConvSpec, initialise
from alexnet.models.lrn import LocalResponseNorm
from alexnet.models.registry import create_model, list_models, model_info, model_options, register_model

__all__ = ["AlexNet", "ConvSpec", "LocalResponseNorm", "create_model", "initialise", "list_models", "model_info",
           "model_options", "register_model"]
