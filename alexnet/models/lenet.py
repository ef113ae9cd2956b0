"""LeNet-5 as d2l 6.6 builds it, and a four-layer CNN for the paper's Fig. 1 (ReLU vs tanh on CIFAR-10).

* `lenet` (d2l 6.6, LeCun et al. 1998): Conv 6@5x5 pad 2, sigmoid, AvgPool 2/2, Conv 16@5x5, sigmoid, AvgPool 2/2,
  Linear 400-120-84-10 with sigmoids; Xavier init as d2l's `train_ch6`. d2l 7.1 exercise 5 asks what ReLU,
  dropout and augmentation do to it, hence the `activation`, `dropout` and `pooling` options.
* `cifar4`: Krizhevsky et al. 2012, section 3.1, Fig. 1 trains "a four-layer convolutional neural network" on
  CIFAR-10 with ReLU and with tanh. The paper gives no shapes; this is our reconstruction after cuda-convnet's
  `layers-18pct` (three 5x5 convolutions of 32, 32, 64 channels with 3x3 stride-2 pooling, one Linear layer:
  four weight layers). No regularisation by default, as in Fig. 1.

Pure modules, split `features` -> `flatten` -> `classifier` like the AlexNet family, with `forward_features` /
`forward_head`.
"""

import torch
from torch import nn

from alexnet.errors import AlexNetError
from alexnet.models.alexnet import ACTIVATIONS, check_common_options, initialise, square
from alexnet.models.registry import register_model

POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def _check(name: str, activation: str, pooling: str, dropout: float, init: str, num_classes: int,
           in_channels: int) -> None:
    check_common_options(name, num_classes, in_channels, activation, dropout, init)
    if pooling not in POOLS:
        raise AlexNetError(f"{name}: unknown pooling {pooling!r}; choose from {', '.join(POOLS)}")


class SmallCNN(nn.Module):
    """Convolutions (each followed by the activation and a pool) then a stack of Linear layers."""

    def __init__(self, features: list[nn.Module], num_features: int, hidden: list[int], *, num_classes: int,
                 activation: str, dropout: float, init: str):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.flatten = nn.Flatten()
        self.num_features = num_features
        head: list[nn.Module] = []
        width = num_features
        for out in hidden:
            head += [nn.Linear(width, out), ACTIVATIONS[activation]()]
            if dropout:
                head.append(nn.Dropout(dropout))
            width = out
        if dropout and not hidden:  # no hidden layer: drop the features themselves
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*head)
        initialise(self, init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_features)
        return self.flatten(self.features(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:  # (B, num_features) -> (B, num_classes)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _conv_stack(name: str, convs: list[tuple[int, int, int]], pools: list[nn.Module], in_channels: int,
                input_size: tuple[int, int], activation: str) -> tuple[list[nn.Module], int]:
    """convs: (out_channels, kernel, padding), each followed by the activation and its pool; returns the layers
    and the flattened feature count, or a one-line error when the map vanishes."""
    layers: list[nn.Module] = []
    channels, (h, w) = in_channels, input_size
    for index, ((out, kernel, padding), pool) in enumerate(zip(convs, pools), start=1):
        layers += [nn.Conv2d(channels, out, kernel, padding=padding), ACTIVATIONS[activation](), pool]
        h, w = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
        k, s, p = pool.kernel_size, pool.stride, pool.padding
        h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if h < 1 or w < 1:
            raise AlexNetError(f"{name}: input {in_channels}x{input_size[0]}x{input_size[1]} is too small, "
                               f"the feature map vanishes at conv{index}")
        channels = out
    return layers, channels * h * w


@register_model("lenet", input_shape=(1, 28, 28))
def lenet(*, num_classes: int = 10, in_channels: int = 1, input_size=28, activation: str = "sigmoid",
          pooling: str = "avg", dropout: float = 0.0, init: str = "xavier") -> SmallCNN:
    """LeNet-5 as d2l 6.6: 6@5x5 pad 2, 16@5x5, avg-pool 2/2, sigmoid, Linear 400-120-84-10 (61,706 parameters)."""
    _check("lenet", activation, pooling, dropout, init, num_classes, in_channels)
    pools = [POOLS[pooling](kernel_size=2, stride=2) for _ in range(2)]
    features, n = _conv_stack("lenet", [(6, 5, 2), (16, 5, 0)], pools, in_channels, square(input_size),
                              activation)
    return SmallCNN(features, n, [120, 84], num_classes=num_classes, activation=activation, dropout=dropout,
                    init=init)


@register_model("cifar4", input_shape=(3, 32, 32))
def cifar4(*, num_classes: int = 10, in_channels: int = 3, input_size=32, activation: str = "relu",
           pooling: str = "max", dropout: float = 0.0, init: str = "default") -> SmallCNN:
    """Paper Fig. 1 four-layer CNN (our cuda-convnet-style reconstruction): 32/32/64 5x5 convs, 3/2 pools, one FC."""
    _check("cifar4", activation, pooling, dropout, init, num_classes, in_channels)
    # Padded 3x3 stride-2 pools halve the map (rounding up), as cuda-convnet's: 32 -> 16 -> 8 -> 4, 28 -> 14 -> 7 -> 4.
    pools = [POOLS[pooling](kernel_size=3, stride=2, padding=1) for _ in range(3)]
    features, n = _conv_stack("cifar4", [(32, 5, 2), (32, 5, 2), (64, 5, 2)], pools, in_channels,
                              square(input_size), activation)
    return SmallCNN(features, n, [], num_classes=num_classes, activation=activation, dropout=dropout, init=init)
