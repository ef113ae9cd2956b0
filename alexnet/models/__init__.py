"""The AlexNet family and its relatives as pure `nn.Module`s (no device, dtype, print or I/O), behind one
registry: `create_model(name, **options)`, `list_models()`. `alexnet.py` holds the d2l, paper, torchvision and
small nets as their sources write them, `lenet.py` LeNet-5 and the paper's Fig. 1 net, `layers.py` what they
are written with, `lrn.py` the paper's local response normalisation. Imports nothing of the package but
`alexnet.base.errors`."""

from alexnet.models import alexnet, lenet  # noqa: F401  (registers the models)
from alexnet.models.layers import AlexNet, ConvNet, LeNet, initialise, out_size
from alexnet.models.lrn import LocalResponseNorm
from alexnet.models.registry import create_model, list_models, min_input_size, model_info, model_options, register_model

__all__ = ["AlexNet", "ConvNet", "LeNet", "LocalResponseNorm", "create_model", "initialise", "list_models",
           "min_input_size", "model_info", "model_options", "out_size", "register_model"]
