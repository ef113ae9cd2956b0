"""The AlexNets, each written as its source writes it, top to bottom:

* `d2l`: Dive into Deep Learning, section 7.1: the 1-channel Fashion-MNIST net at 224x224, Xavier init.
* `paper`: Krizhevsky, Sutskever, Hinton 2012, section 3.5 (Fig. 2): 3x227x227, LRN after conv1 and conv2,
  overlapping max-pooling, the two-GPU connectivity as an option (`two_column`), N(0, 0.01) init (section 5).
* `torchvision`: `torchvision.models.alexnet` (after "One weird trick", Krizhevsky 2014): 64/192/384/256/256,
  an adaptive 6x6 average pool, dropout before the FC layers; state_dict keys and layout equal torchvision's.
* `small`: the same five convolutions and three FC layers for native 28x28 / 32x32 input (d2l 7.1, exercise 2).

The options of `alexnet.models.layers.Layers` rewrite them for the studies (activation, LRN, dropout, pooling,
two columns, a removed layer, init, width); with the defaults, what is written here is what is built.
"""

from alexnet.models.layers import AlexNet, Layers, Options, SmallOptions
from alexnet.models.registry import register_model


@register_model("d2l", input_shape=(1, 224, 224),
                options=Options(num_classes=10, in_channels=1, input_size=224, init="xavier"))
def d2l(o: Options) -> AlexNet:
    """d2l 7.1: 1-channel Fashion-MNIST AlexNet at 224x224, Xavier init as in train_ch6 (46.8 M parameters)."""
    n = Layers("d2l", o)
    features = [
        # A larger 11x11 window to capture objects; stride 4 to shrink the map fast.
        n.conv(96, kernel_size=11, stride=4, padding=1), n.act(), n.lrn(),
        n.pool(),
        # A smaller window, padding 2 keeps the size, and more output channels.
        n.conv(256, kernel_size=5, padding=2, column=True), n.act(), n.lrn(),
        n.pool(),
        # Three consecutive convolutions, smaller windows; no pooling between them.
        n.conv(384, kernel_size=3, padding=1), n.act(),
        n.conv(384, kernel_size=3, padding=1, column=True), n.act(),
        n.conv(256, kernel_size=3, padding=1, column=True), n.act(),
        n.pool(),
    ]
    classifier = [
        # The FC layers are several times LeNet's; dropout against overfitting.
        n.linear(4096), n.act(), n.dropout(),
        n.linear(4096), n.act(), n.dropout(),
        n.linear(o.num_classes),
    ]
    return n.build(AlexNet, features, classifier)


@register_model("paper", input_shape=(3, 227, 227),
                options=Options(num_classes=1000, in_channels=3, input_size=227, lrn=True, init="paper"))
def paper(o: Options) -> AlexNet:
    """Krizhevsky et al. 2012: 3x227x227, LRN, overlapping pooling, N(0, 0.01) init (62.4 M; 61.0 M two-column)."""
    n = Layers("paper", o)
    features = [
        # "The first convolutional layer filters the 224x224x3 input image with 96 kernels of size 11x11x3 with a
        # stride of 4 pixels" (227 makes the arithmetic work: (227 - 11) / 4 + 1 = 55).
        n.conv(96, kernel_size=11, stride=4), n.act(), n.lrn(),
        n.pool(),
        # "256 kernels of size 5x5x48": with two columns each GPU's kernels see only its own 48 channels.
        n.conv(256, kernel_size=5, padding=2, column=True), n.act(), n.lrn(),
        n.pool(),
        # "384 kernels of size 3x3x256 connected to the (normalized, pooled) outputs of the second layer": the
        # one convolution that communicates across the GPUs.
        n.conv(384, kernel_size=3, padding=1), n.act(),
        # "384 kernels of size 3x3x192" and "256 kernels of size 3x3x192": each column on its own again.
        n.conv(384, kernel_size=3, padding=1, column=True), n.act(),
        n.conv(256, kernel_size=3, padding=1, column=True), n.act(),
        n.pool(),
    ]
    classifier = [
        # "The fully-connected layers have 4096 neurons each", with dropout 0.5 (section 4.2).
        n.linear(4096), n.act(), n.dropout(),
        n.linear(4096), n.act(), n.dropout(),
        n.linear(o.num_classes),
    ]
    return n.build(AlexNet, features, classifier)


@register_model("torchvision", input_shape=(3, 224, 224), options=Options(num_classes=1000, in_channels=3))
def torchvision(o: Options) -> AlexNet:
    """torchvision.models.alexnet: 64/192/384/256/256 + adaptive 6x6 pool; state_dict compatible (61.1 M)."""
    n = Layers("torchvision", o)
    features = [
        n.conv(64, kernel_size=11, stride=4, padding=2), n.act(), n.lrn(),
        n.pool(),
        n.conv(192, kernel_size=5, padding=2, column=True), n.act(), n.lrn(),
        n.pool(),
        n.conv(384, kernel_size=3, padding=1), n.act(),
        n.conv(256, kernel_size=3, padding=1, column=True), n.act(),
        n.conv(256, kernel_size=3, padding=1, column=True), n.act(),
        n.pool(),
    ]
    avgpool = n.adaptive_pool(6)  # any input >= 63 px gives a 6x6 map
    classifier = [
        n.dropout(), n.linear(4096), n.act(),
        n.dropout(), n.linear(4096), n.act(),
        n.linear(o.num_classes),
    ]
    return n.build(AlexNet, features, classifier, avgpool)


@register_model("small", input_shape=(1, 28, 28), options=SmallOptions(num_classes=10, in_channels=1, input_size=28))
def small(o: SmallOptions) -> AlexNet:
    """AlexNet-shaped net for native 28x28 / 32x32 input: 3x3 convs, padded overlapping pools (28->14->7->4)."""
    n, w = Layers("small", o, pool_padding=1), o.width
    features = [
        n.conv(w, kernel_size=3, padding=1), n.act(), n.lrn(),
        n.pool(),
        n.conv(2 * w, kernel_size=3, padding=1, column=True), n.act(), n.lrn(),
        n.pool(),
        n.conv(4 * w, kernel_size=3, padding=1), n.act(),
        n.conv(4 * w, kernel_size=3, padding=1, column=True), n.act(),
        n.conv(2 * w, kernel_size=3, padding=1, column=True), n.act(),
        n.pool(),
    ]
    classifier = [
        n.linear(o.hidden), n.act(), n.dropout(),
        n.linear(o.hidden), n.act(), n.dropout(),
        n.linear(o.num_classes),
    ]
    return n.build(AlexNet, features, classifier)
