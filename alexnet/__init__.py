"""alexnet: AlexNet (Krizhevsky, Sutskever, Hinton 2012) and d2l 7.1 as a fast, reproducible training stack."""

from alexnet.base.errors import AlexNetError
from alexnet.models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["AlexNetError", "create_model", "list_models", "__version__"]
