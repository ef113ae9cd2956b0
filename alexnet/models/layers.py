"""What every net of the family is written with: `ConvNet` (torchvision's split `features` -> `avgpool` ->
`flatten` -> `classifier`, with timm's `forward_features` / `forward_head`), `Layers` (writes a net top to
bottom as its source does, and applies the options the studies need), and `initialise`.

`Layers` keeps the running channel count and feature-map size, so a net is written with what its source writes
(out channels, kernel, stride, padding) and nothing is computed by hand. Its methods return a module, or None
where an option leaves the layer out (no LRN, a removed conv layer); `build` drops the Nones. Options:
`activation` (relu | tanh | sigmoid), `lrn` (the `lrn()` slots), `dropout` (p), `overlapping_pool` (3x3
stride 2, as the paper, else 2x2 stride 2), `two_column` (groups=2 on the layers written `column=True`: the
paper's two-GPU connectivity), `remove_conv` (k: conv k and its activation and LRN are left out, its pooling
kept: the paper's depth ablation), `pooling` (max | avg), `init`.
"""

import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar, overload

import torch
from torch import nn

from alexnet.base.errors import AlexNetError
from alexnet.models.lrn import LocalResponseNorm

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": lambda: nn.ReLU(inplace=True), "tanh": nn.Tanh,
                                                   "sigmoid": nn.Sigmoid}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
INITS = ("paper", "xavier", "kaiming", "default")
# Section 5: "We initialized the neuron biases in the second, fourth, and fifth convolutional layers, as well as
# in the fully-connected hidden layers, with the constant 1 ... the remaining layers with the constant 0."
PAPER_BIAS_ONE = frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"})


def out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output side of a convolution or pooling window (floor mode), px."""
    return (size + 2 * padding - kernel) // stride + 1


def square(size) -> tuple[int, int]:
    """An `input_size` option, int or (H, W), as (H, W)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ConvNet(nn.Module):
    """Convolutional features, an optional pooling to a fixed size, then fully connected layers. Iterating
    yields every layer in order, so the book's shape loop works:

        for layer in net:
            X = layer(X)
            print(layer.__class__.__name__, 'output shape:\t', X.shape)

    and, as on the book's `nn.Sequential`, `len(net)` counts those layers and `net[i]` is one of them (`net[0]`
    the first Conv2d, `net[-1]` the last Linear); a slice is an `nn.Sequential` of the same modules (shared,
    not copied). The modules keep their names (`features.0`, `classifier.6`): the state_dict is unchanged.
    """

    def __init__(self, features: list[nn.Module], classifier: list[nn.Module], num_features: int,
                 avgpool: nn.Module | None = None):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.avgpool = avgpool or nn.Identity()
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(*classifier)
        self.num_features = num_features  # what forward_features returns per image

    def __iter__(self) -> Iterator[nn.Module]:
        yield from self.features
        if not isinstance(self.avgpool, nn.Identity):
            yield self.avgpool
        yield self.flatten
        yield from self.classifier

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @overload
    def __getitem__(self, index: int) -> nn.Module: ...
    @overload
    def __getitem__(self, index: slice) -> nn.Sequential: ...

    def __getitem__(self, index: int | slice) -> nn.Module:
        layers = list(self)
        if isinstance(index, slice):
            return nn.Sequential(*layers[index])
        if not -len(layers) <= operator.index(index) < len(layers):
            raise IndexError(f"layer index {index} is out of range for {len(layers)} layers")
        return layers[index]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_features)
        return self.flatten(self.avgpool(self.features(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:  # (B, num_features) -> (B, num_classes)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


Net = TypeVar("Net", bound=ConvNet)


class AlexNet(ConvNet):
    """Five convolutions and three fully connected layers (Krizhevsky et al. 2012, d2l 7.1, torchvision)."""


class LeNet(ConvNet):
    """Convolutions with pooling, then fully connected layers (LeCun et al. 1998, d2l 6.6)."""


@dataclass(frozen=True)
class Options:
    """Every option a net of the family takes; a registered builder declares its defaults (the registry checks
    names and types, `Layers` the values)."""
    num_classes: int = 1000
    in_channels: int = 3
    input_size: int | tuple[int, int] = 224
    activation: str = "relu"
    lrn: bool = False
    dropout: float = 0.5
    overlapping_pool: bool = True
    two_column: bool = False
    remove_conv: int | None = None
    init: str = "default"


@dataclass(frozen=True)
class SmallOptions(Options):
    width: int = 32    # conv1's channels; the others are 2x, 4x, 4x, 2x
    hidden: int = 256  # units of each hidden FC layer


@dataclass(frozen=True)
class LeNetOptions:
    num_classes: int = 10
    in_channels: int = 1
    input_size: int | tuple[int, int] = 28
    activation: str = "sigmoid"
    pooling: str = "avg"
    dropout: float = 0.0
    init: str = "xavier"


class Layers:
    """Writes one net; see the module docstring."""

    def __init__(self, name: str, o: Options | LeNetOptions, *, pool_padding: int = 0):
        _check(name, o)
        self.name, self.o = name, o
        self.channels, self.input_size = o.in_channels, square(o.input_size)
        self.h, self.w = self.input_size
        self.width: int | None = None  # units entering the next Linear layer, once past the features
        self.convs = self.linears = 0  # written so far, a removed conv layer included (so conv5 stays conv5)
        self.skipping = False          # inside a removed conv layer: its activation and LRN go too
        self.named: dict[str, nn.Module] = {}  # conv1 .. conv5, fc6 .. fc8: the source's names for the layers
        overlapping = getattr(o, "overlapping_pool", True)
        self.pool_window = (3, 2, pool_padding) if overlapping else (2, 2, 0)
        self.pool_type = POOLS[getattr(o, "pooling", "max")]

    def conv(self, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0, *,
             column: bool = False) -> nn.Conv2d | None:
        self.convs += 1
        name = f"conv{self.convs}"
        self.skipping = self.convs == getattr(self.o, "remove_conv", None)
        if self.skipping:
            return None
        groups = 2 if column and getattr(self.o, "two_column", False) else 1
        if self.channels % groups or out_channels % groups:
            raise AlexNetError(f"{self.name}: two_column needs even channel counts at {name}")
        layer = nn.Conv2d(self.channels, out_channels, kernel_size, stride, padding, groups=groups)
        self.named[name] = layer
        self.channels = out_channels
        self._shrink(kernel_size, stride, padding, name)
        return layer

    def act(self) -> nn.Module | None:
        return None if self.skipping else ACTIVATIONS[self.o.activation]()

    def lrn(self) -> LocalResponseNorm | None:
        """The paper's LRN (section 3.3: k = 2, n = 5, alpha = 1e-4, beta = 0.75) when the `lrn` option is on."""
        if self.skipping or not getattr(self.o, "lrn", False):
            return None
        return LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)

    def pool(self, kernel_size: int | None = None, stride: int | None = None,
             padding: int | None = None) -> nn.Module:
        """Max (or the `pooling` option's) pooling; the window defaults to the `overlapping_pool` option's."""
        default = self.pool_window
        k, s, p = (kernel_size or default[0], stride or default[1], default[2] if padding is None else padding)
        self.skipping = False
        self._shrink(k, s, p, f"the pooling after conv{self.convs}")
        return self.pool_type(k, s, p)

    def adaptive_pool(self, size: int) -> nn.AdaptiveAvgPool2d:
        self.h = self.w = size
        return nn.AdaptiveAvgPool2d((size, size))

    @property
    def num_features(self) -> int:
        return self.channels * self.h * self.w

    def linear(self, out_features: int) -> nn.Linear:
        self.linears += 1
        layer = nn.Linear(self.width or self.num_features, out_features)
        self.named[f"fc{self.convs + self.linears}"] = layer
        self.width = out_features
        return layer

    def dropout(self) -> nn.Dropout:
        return nn.Dropout(self.o.dropout)

    def build(self, cls: type[Net], features: list, classifier: list, avgpool: nn.Module | None = None,
              *, bias_one: frozenset[str] = PAPER_BIAS_ONE) -> Net:
        remove = getattr(self.o, "remove_conv", None)
        if remove is not None and remove > self.convs:
            raise AlexNetError(f"{self.name}: remove_conv must be in 1..{self.convs}, got {remove}")
        features = [layer for layer in features if layer is not None]
        num_features = self.num_features
        net = cls(features, [layer for layer in classifier if layer is not None], num_features, avgpool)
        initialise(net, self.o.init, bias_one=[m for n, m in self.named.items() if n in bias_one])
        return net

    def _shrink(self, kernel: int, stride: int, padding: int, where: str) -> None:
        """The map after a window of `kernel`; a window larger than the map it slides over (padding aside)
        would see mostly padding: the input is too small for this net."""
        if self.h < kernel or self.w < kernel:
            c, (h, w) = self.o.in_channels, self.input_size
            raise AlexNetError(f"{self.name}: input {c}x{h}x{w} is too small: {where}'s {kernel}x{kernel} window is "
                               f"larger than its {self.h}x{self.w} input")
        self.h, self.w = out_size(self.h, kernel, stride, padding), out_size(self.w, kernel, stride, padding)


def initialise(model: nn.Module, init: str, bias_one: Sequence[nn.Module] = ()) -> None:
    """`paper`: weights ~ N(0, 0.01), biases 1 in `bias_one` (conv2, conv4, conv5 and the hidden FC layers),
    else 0 (section 5). `xavier`: Xavier-uniform weights, as d2l's `train_ch6` does (biases keep PyTorch's
    default). `kaiming`: He-normal weights for ReLU (fan_out, as torchvision's VGG), zero biases: keeps the
    activation scale through a deep plain net, which PyTorch's default (a variance-shrinking uniform) does not.
    `default`: PyTorch's own initialisation, as torchvision's AlexNet (drawn when the layers were built, in
    their order, so the same seed gives torchvision's weights)."""
    ones = {id(m) for m in bias_one}
    for module in model.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if init == "paper":
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                nn.init.constant_(module.bias, 1.0 if id(module) in ones else 0.0)
        elif init == "xavier":
            nn.init.xavier_uniform_(module.weight)
        elif init == "kaiming":
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _check(name: str, o) -> None:
    """The values of the options (their types are the registry's); one-line errors."""
    if o.activation not in ACTIVATIONS:
        raise AlexNetError(f"{name}: unknown activation {o.activation!r}; choose from {', '.join(ACTIVATIONS)}")
    if o.init not in INITS:
        raise AlexNetError(f"{name}: unknown init {o.init!r}; choose from {', '.join(INITS)}")
    if not 0.0 <= o.dropout < 1.0:
        raise AlexNetError(f"{name}: dropout must be in [0, 1), got {o.dropout}")
    if getattr(o, "pooling", "max") not in POOLS:
        raise AlexNetError(f"{name}: unknown pooling {o.pooling!r}; choose from {', '.join(POOLS)}")
