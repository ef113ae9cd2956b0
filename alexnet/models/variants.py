"""The registered AlexNet variants (see alexnet.py for the sources of each)."""

from alexnet.models.alexnet import AlexNet, ConvSpec, square
from alexnet.models.registry import register_model

# conv1 .. conv5 of the 2012 net; d2l keeps the widths and adds padding 1 to conv1 (224 -> 54 instead of 227 -> 55).
_PAPER = [
    ConvSpec(96, 11, stride=4, padding=0, pool=True, lrn_slot=True),
    ConvSpec(256, 5, padding=2, pool=True, lrn_slot=True, column_split=True, bias_one=True),
    ConvSpec(384, 3, padding=1),
    ConvSpec(384, 3, padding=1, column_split=True, bias_one=True),
    ConvSpec(256, 3, padding=1, pool=True, column_split=True, bias_one=True),
]
_D2L = [ConvSpec(96, 11, stride=4, padding=1, pool=True, lrn_slot=True), *_PAPER[1:]]
_TORCHVISION = [
    ConvSpec(64, 11, stride=4, padding=2, pool=True, lrn_slot=True),
    ConvSpec(192, 5, padding=2, pool=True, lrn_slot=True, column_split=True, bias_one=True),
    ConvSpec(384, 3, padding=1),
    ConvSpec(256, 3, padding=1, column_split=True, bias_one=True),
    ConvSpec(256, 3, padding=1, pool=True, column_split=True, bias_one=True),
]


@register_model("d2l", input_shape=(1, 224, 224))
def d2l(*, num_classes: int = 10, in_channels: int = 1, input_size=224, activation: str = "relu",
        lrn: bool = False, dropout: float = 0.5, overlapping_pool: bool = True, two_column: bool = False,
        remove_conv: int | None = None, init: str = "xavier") -> AlexNet:
    """d2l 7.1: 1-channel Fashion-MNIST AlexNet at 224x224, Xavier init as in train_ch6 (46.8 M parameters)."""
    return AlexNet(_D2L, (4096, 4096), num_classes=num_classes, in_channels=in_channels,
                   input_size=square(input_size), activation=activation, lrn=lrn, dropout=dropout,
                   overlapping_pool=overlapping_pool, two_column=two_column, remove_conv=remove_conv,
                   init=init, name="d2l")


@register_model("paper", input_shape=(3, 227, 227))
def paper(*, num_classes: int = 1000, in_channels: int = 3, input_size=227, activation: str = "relu",
          lrn: bool = True, dropout: float = 0.5, overlapping_pool: bool = True, two_column: bool = False,
          remove_conv: int | None = None, init: str = "paper") -> AlexNet:
    """Krizhevsky et al. 2012: 3x227x227, LRN, overlapping pooling, N(0, 0.01) init (62.4 M; 61.0 M two-column)."""
    return AlexNet(_PAPER, (4096, 4096), num_classes=num_classes, in_channels=in_channels,
                   input_size=square(input_size), activation=activation, lrn=lrn, dropout=dropout,
                   overlapping_pool=overlapping_pool, two_column=two_column, remove_conv=remove_conv,
                   init=init, name="paper")


@register_model("torchvision", input_shape=(3, 224, 224))
def torchvision(*, num_classes: int = 1000, in_channels: int = 3, input_size=224, activation: str = "relu",
                lrn: bool = False, dropout: float = 0.5, overlapping_pool: bool = True, two_column: bool = False,
                remove_conv: int | None = None, init: str = "default") -> AlexNet:
    """torchvision.models.alexnet: 64/192/384/256/256 + adaptive 6x6 pool; state_dict compatible (61.1 M)."""
    return AlexNet(_TORCHVISION, (4096, 4096), num_classes=num_classes, in_channels=in_channels,
                   input_size=square(input_size), activation=activation, lrn=lrn, dropout=dropout,
                   overlapping_pool=overlapping_pool, two_column=two_column, remove_conv=remove_conv,
                   adaptive_pool=6, dropout_first=True, init=init, name="torchvision")


@register_model("small", input_shape=(1, 28, 28))
def small(*, num_classes: int = 10, in_channels: int = 1, input_size=28, activation: str = "relu",
          lrn: bool = False, dropout: float = 0.5, overlapping_pool: bool = True, two_column: bool = False,
          remove_conv: int | None = None, init: str = "default", width: int = 32, hidden: int = 256) -> AlexNet:
    """AlexNet-shaped net for native 28x28 / 32x32 input: 3x3 convs, padded overlapping pools (28->14->7->4)."""
    convs = [
        ConvSpec(width, 3, padding=1, pool=True, lrn_slot=True),
        ConvSpec(2 * width, 3, padding=1, pool=True, lrn_slot=True, column_split=True, bias_one=True),
        ConvSpec(4 * width, 3, padding=1),
        ConvSpec(4 * width, 3, padding=1, column_split=True, bias_one=True),
        ConvSpec(2 * width, 3, padding=1, pool=True, column_split=True, bias_one=True),
    ]
    return AlexNet(convs, (hidden, hidden), num_classes=num_classes, in_channels=in_channels,
                   input_size=square(input_size), activation=activation, lrn=lrn, dropout=dropout,
                   overlapping_pool=overlapping_pool, pool_padding=1, two_column=two_column,
                   remove_conv=remove_conv, init=init, name="small")
