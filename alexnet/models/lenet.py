"""LeNet-5 as d2l 6.6 builds it, and a four-layer CNN for the paper's Fig. 1 (ReLU vs tanh on CIFAR-10).

* `lenet` (d2l 6.6, LeCun et al. 1998): Conv 6@5x5 pad 2, sigmoid, AvgPool 2/2, Conv 16@5x5, sigmoid, AvgPool 2/2,
  Linear 400-120-84-10 with sigmoids; Xavier init as d2l's `train_ch6`. d2l 7.1 exercise 5 asks what ReLU,
  dropout and augmentation do to it, hence the `activation`, `dropout` and `pooling` options.
* `cifar4`: Krizhevsky et al. 2012, section 3.1, Fig. 1 trains "a four-layer convolutional neural network" on
  CIFAR-10 with ReLU and with tanh. The paper gives no shapes; this is our reconstruction after cuda-convnet's
  `layers-18pct` (three 5x5 convolutions of 32, 32, 64 channels with 3x3 stride-2 pooling, one Linear layer:
  four weight layers). No regularisation by default, as in Fig. 1.

Written with the AlexNets' `Layers`, so they share their head, forward methods and options (`pooling` is theirs).
"""

from alexnet.models.layers import Layers, LeNet, LeNetOptions
from alexnet.models.registry import register_model


@register_model("lenet", input_shape=(1, 28, 28), options=LeNetOptions())
def lenet(o: LeNetOptions) -> LeNet:
    """LeNet-5 as d2l 6.6: 6@5x5 pad 2, 16@5x5, avg-pool 2/2, sigmoid, Linear 400-120-84-10 (61,706 parameters)."""
    n = Layers("lenet", o)
    features = [
        n.conv(6, kernel_size=5, padding=2), n.act(), n.pool(kernel_size=2, stride=2, padding=0),
        n.conv(16, kernel_size=5), n.act(), n.pool(kernel_size=2, stride=2, padding=0),
    ]
    classifier = [
        n.linear(120), n.act(), n.dropout() if o.dropout else None,
        n.linear(84), n.act(), n.dropout() if o.dropout else None,
        n.linear(o.num_classes),
    ]
    return n.build(LeNet, features, classifier, bias_one=frozenset())


@register_model("cifar4", input_shape=(3, 32, 32),
                options=LeNetOptions(in_channels=3, input_size=32, activation="relu", pooling="max", init="default"))
def cifar4(o: LeNetOptions) -> LeNet:
    """Paper Fig. 1 four-layer CNN (our cuda-convnet-style reconstruction): 32/32/64 5x5 convs, 3/2 pools, one FC."""
    n = Layers("cifar4", o)
    # Padded 3x3 stride-2 pools halve the map (rounding up), as cuda-convnet's: 32 -> 16 -> 8 -> 4, 28 -> 14 -> 7 -> 4.
    features = [
        n.conv(32, kernel_size=5, padding=2), n.act(), n.pool(kernel_size=3, stride=2, padding=1),
        n.conv(32, kernel_size=5, padding=2), n.act(), n.pool(kernel_size=3, stride=2, padding=1),
        n.conv(64, kernel_size=5, padding=2), n.act(), n.pool(kernel_size=3, stride=2, padding=1),
    ]
    classifier = [n.dropout() if o.dropout else None, n.linear(o.num_classes)]
    return n.build(LeNet, features, classifier, bias_one=frozenset())
