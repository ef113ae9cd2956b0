"""The AlexNet family as one configurable module.

One `AlexNet` class builds every variant from a list of `ConvSpec`s and the widths of the hidden FC layers:

* d2l (Dive into Deep Learning, section 7.1): 1x224x224 Fashion-MNIST net, Conv 11/4/1 96 ... Linear 6400-4096-4096-10.
* paper (Krizhevsky, Sutskever, Hinton 2012, section 3): 3x227x227, LRN after conv1/conv2, overlapping pooling,
  optional two-column (two-GPU) connectivity as grouped convolutions, N(0, 0.01) initialisation.
* torchvision (`torchvision.models.alexnet`, after "One weird trick", Krizhevsky 2014): 64/192/384/256/256 with
  an adaptive 6x6 average pool; the state_dict keys and layout match torchvision's exactly.
* small: the same 5-conv + 3-FC shape for native 28x28 / 32x32 input (d2l 7.1, exercise 2).

The model is pure: no device, dtype or I/O. `features` -> `avgpool` -> `flatten` -> `classifier`, as torchvision.
"""

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from alexnet.errors import AlexNetError
from alexnet.models.lrn import LocalResponseNorm

ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
INITS = ("paper", "xavier", "kaiming", "default")


@dataclass(frozen=True)
class ConvSpec:
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    pool: bool = False         # max-pool after this layer (conv1, conv2, conv5 in every variant)
    lrn_slot: bool = False     # LRN goes after this layer's activation when LRN is on (paper: conv1, conv2)
    column_split: bool = False # sees only its own column in the paper's two-GPU net (conv2, conv4, conv5)
    bias_one: bool = False     # the paper initialises this layer's bias to 1 (conv2, conv4, conv5)


def _pool_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class AlexNet(nn.Module):
    """Five convolutions and three fully connected layers.

    Options (all keyword): `num_classes`, `in_channels`, `input_size` (H, W, used to size the first FC layer),
    `activation` (relu | tanh | sigmoid), `lrn` (LocalResponseNorm after the `lrn_slot` layers), `dropout` (p of
    the two hidden-FC dropouts), `overlapping_pool` (3x3 stride 2 as in the paper, else 2x2 stride 2),
    `two_column` (groups=2 on the `column_split` layers), `remove_conv` (1-based index of a conv layer to drop,
    its pooling kept: the paper's depth ablation), `init` (paper | xavier | kaiming | default).
    """

    def __init__(self, convs: Sequence[ConvSpec], hidden: Sequence[int], *, num_classes: int, in_channels: int,
                 input_size: tuple[int, int], activation: str = "relu", lrn: bool = False, dropout: float = 0.5,
                 overlapping_pool: bool = True, pool_padding: int = 0, two_column: bool = False,
                 remove_conv: int | None = None, adaptive_pool: int | None = None, dropout_first: bool = False,
                 init: str = "default", name: str = "alexnet"):
        super().__init__()
        _check_options(name, convs, num_classes, in_channels, activation, dropout, init, remove_conv)
        kernel, stride, pad = (3, 2, pool_padding) if overlapping_pool else (2, 2, 0)
        layers: list[nn.Module] = []
        channels, (h, w) = in_channels, input_size
        for index, spec in enumerate(convs, start=1):
            if index != remove_conv:
                groups = 2 if two_column and spec.column_split else 1
                if channels % groups or spec.out_channels % groups:
                    raise AlexNetError(f"{name}: two_column needs even channel counts at conv{index}")
                conv = nn.Conv2d(channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding,
                                 groups=groups)
                layers += [conv, ACTIVATIONS[activation]()]
                conv.paper_bias = 1.0 if spec.bias_one else 0.0  # read by initialise(..., "paper")
                if lrn and spec.lrn_slot:
                    layers.append(LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))
                channels = spec.out_channels
                h = (h + 2 * spec.padding - spec.kernel_size) // spec.stride + 1
                w = (w + 2 * spec.padding - spec.kernel_size) // spec.stride + 1
            if spec.pool:
                layers.append(nn.MaxPool2d(kernel, stride, pad))
                h, w = _pool_out(h, kernel, stride, pad), _pool_out(w, kernel, stride, pad)
            if h < 1 or w < 1:
                raise AlexNetError(f"{name}: input {in_channels}x{input_size[0]}x{input_size[1]} is too small, "
                                   f"the feature map vanishes at conv{index}")
        self.features = nn.Sequential(*layers)
        if adaptive_pool:  # torchvision: any input >= 63 px gives a 6x6 map
            self.avgpool: nn.Module = nn.AdaptiveAvgPool2d((adaptive_pool, adaptive_pool))
            h = w = adaptive_pool
        else:
            self.avgpool = nn.Identity()
        self.flatten = nn.Flatten()
        self.num_features = channels * h * w
        head: list[nn.Module] = []
        width = self.num_features
        for out in hidden:
            linear = nn.Linear(width, out)
            linear.paper_bias = 1.0  # the paper: bias 1 in the hidden FC layers
            block = [linear, ACTIVATIONS[activation](), nn.Dropout(dropout)]
            head += block[-1:] + block[:-1] if dropout_first else block
            width = out
        head.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*head)
        initialise(self, init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_features)
        return self.flatten(self.avgpool(self.features(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:  # (B, num_features) -> (B, num_classes)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def initialise(model: nn.Module, init: str) -> None:
    """`paper`: weights ~ N(0, 0.01), biases 1 in conv2, conv4, conv5 and the hidden FC layers, else 0 (section 5).
    `xavier`: Xavier-uniform weights, as d2l's `train_ch6` does (biases keep PyTorch's default).
    `kaiming`: He-normal weights for ReLU (fan_out, as torchvision's VGG), zero biases: keeps the activation scale
    through a deep plain net, which PyTorch's default (a variance-shrinking uniform) does not.
    `default`: PyTorch's own initialisation, as torchvision's AlexNet."""
    for module in model.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if init == "paper":
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            nn.init.constant_(module.bias, getattr(module, "paper_bias", 0.0))
        elif init == "xavier":
            nn.init.xavier_uniform_(module.weight)
        elif init == "kaiming":
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)


def square(size) -> tuple[int, int]:
    """An `input_size` option, int or (H, W), as (H, W)."""
    return (size, size) if isinstance(size, int) else tuple(size)


def check_common_options(name, num_classes, in_channels, activation, dropout, init) -> None:
    """The options every registered family shares; one-line errors."""
    if activation not in ACTIVATIONS:
        raise AlexNetError(f"{name}: unknown activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
    if init not in INITS:
        raise AlexNetError(f"{name}: unknown init {init!r}; choose from {', '.join(INITS)}")
    if not 0.0 <= dropout < 1.0:
        raise AlexNetError(f"{name}: dropout must be in [0, 1), got {dropout}")
    if num_classes < 1 or in_channels < 1:
        raise AlexNetError(f"{name}: num_classes and in_channels must be >= 1")


def _check_options(name, convs, num_classes, in_channels, activation, dropout, init, remove_conv) -> None:
    check_common_options(name, num_classes, in_channels, activation, dropout, init)
    if remove_conv is not None and not 1 <= remove_conv <= len(convs):
        raise AlexNetError(f"{name}: remove_conv must be in 1..{len(convs)}, got {remove_conv}")
