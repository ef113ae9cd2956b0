"""The AlexNet family: shapes from the seeds, hand-computed parameter counts, torchvision equality, paper init."""

import pytest
import torch
import torchvision
from torch import nn

import alexnet
from alexnet.base.errors import AlexNetError
from alexnet.models import model_info

# d2l 7.1, printed for X = torch.randn(1, 1, 224, 224) (seeds 000 and 003).
D2L_SHAPES = [
    ("Conv2d", (1, 96, 54, 54)), ("ReLU", (1, 96, 54, 54)), ("MaxPool2d", (1, 96, 26, 26)),
    ("Conv2d", (1, 256, 26, 26)), ("ReLU", (1, 256, 26, 26)), ("MaxPool2d", (1, 256, 12, 12)),
    ("Conv2d", (1, 384, 12, 12)), ("ReLU", (1, 384, 12, 12)),
    ("Conv2d", (1, 384, 12, 12)), ("ReLU", (1, 384, 12, 12)),
    ("Conv2d", (1, 256, 12, 12)), ("ReLU", (1, 256, 12, 12)), ("MaxPool2d", (1, 256, 5, 5)),
    ("Flatten", (1, 6400)),
    ("Linear", (1, 4096)), ("ReLU", (1, 4096)), ("Dropout", (1, 4096)),
    ("Linear", (1, 4096)), ("ReLU", (1, 4096)), ("Dropout", (1, 4096)),
    ("Linear", (1, 10)),
]


def conv(cin, cout, k, groups=1):
    return cout * (cin // groups) * k * k + cout


def linear(fin, fout):
    return fin * fout + fout


def fc_head(flat, classes, hidden=4096):
    return linear(flat, hidden) + linear(hidden, hidden) + linear(hidden, classes)


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", alexnet.list_models())
def test_forward_backward_every_model(name):
    c, h, w = model_info(name).input_shape
    model = alexnet.create_model(name)
    x = torch.randn(2, c, h, w)
    out = model(x)
    assert out.shape == (2, model.classifier[-1].out_features)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert torch.isfinite(out).all()


def test_d2l_shapes_match_the_book():
    model = alexnet.create_model("d2l").eval()
    x = torch.randn(1, 1, 224, 224)
    seen = []
    for layer in [*model.features, model.flatten, *model.classifier]:
        x = layer(x)
        seen.append((type(layer).__name__, tuple(x.shape)))
    assert seen == D2L_SHAPES


def test_parameter_counts_by_hand():
    d2l = conv(1, 96, 11) + conv(96, 256, 5) + conv(256, 384, 3) + conv(384, 384, 3) + conv(384, 256, 3)
    assert count(alexnet.create_model("d2l")) == d2l + fc_head(256 * 5 * 5, 10) == 46_764_746
    paper_conv = conv(3, 96, 11) + conv(96, 256, 5) + conv(256, 384, 3) + conv(384, 384, 3) + conv(384, 256, 3)
    assert count(alexnet.create_model("paper")) == paper_conv + fc_head(256 * 6 * 6, 1000)
    # Two columns: conv2, conv4, conv5 see only the 48 / 192 / 192 kernels of their own GPU.
    two = conv(3, 96, 11) + conv(96, 256, 5, 2) + conv(256, 384, 3) + conv(384, 384, 3, 2) + conv(384, 256, 3, 2)
    n_two = count(alexnet.create_model("paper", two_column=True))
    assert n_two == two + fc_head(256 * 6 * 6, 1000)
    assert 60e6 < n_two < 61e6  # the paper: "60 million parameters"
    tv = conv(3, 64, 11) + conv(64, 192, 5) + conv(192, 384, 3) + conv(384, 256, 3) + conv(256, 256, 3)
    assert count(alexnet.create_model("torchvision")) == tv + fc_head(256 * 6 * 6, 1000)
    assert count(alexnet.create_model("torchvision")) == count(torchvision.models.alexnet())
    w = 32
    small = conv(1, w, 3) + conv(w, 2 * w, 3) + conv(2 * w, 4 * w, 3) + conv(4 * w, 4 * w, 3) + conv(4 * w, 2 * w, 3)
    assert count(alexnet.create_model("small")) == small + fc_head(2 * w * 4 * 4, 10, hidden=256)


def test_paper_shapes_227():
    model = alexnet.create_model("paper", two_column=True).eval()
    x = torch.randn(1, 3, 227, 227)
    sizes = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, nn.MaxPool2d):
            sizes.append(tuple(x.shape[1:]))
    assert sizes == [(96, 27, 27), (256, 13, 13), (256, 6, 6)]
    assert model.num_features == 9216
    assert sum(isinstance(m, alexnet.models.LocalResponseNorm) for m in model.features) == 2
    groups = [m.groups for m in model.features if isinstance(m, nn.Conv2d)]
    assert groups == [1, 2, 1, 2, 2]


def test_torchvision_round_trip():
    ours, theirs = alexnet.create_model("torchvision").eval(), torchvision.models.alexnet().eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(2, 3, 224, 224)
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    fresh = torchvision.models.alexnet().eval()
    fresh.load_state_dict(alexnet.create_model("torchvision").state_dict())
    ours.load_state_dict(fresh.state_dict())
    torch.testing.assert_close(ours(x), fresh(x), rtol=0, atol=0)


def test_paper_initialisation():
    model = alexnet.create_model("paper")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    for layer in convs + linears:
        assert abs(layer.weight.std().item() - 0.01) < 0.0015
        assert abs(layer.weight.mean().item()) < 0.001
    bias = [m.bias.unique().tolist() for m in convs + linears]
    # conv1 0, conv2 1, conv3 0, conv4 1, conv5 1, fc6 1, fc7 1, fc8 0
    assert bias == [[0.0], [1.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.0]]


def test_init_options():
    xav = alexnet.create_model("d2l", init="xavier").features[0].weight
    bound = (6 / (1 * 121 + 96 * 121)) ** 0.5  # Xavier-uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
    assert xav.abs().max() <= bound and xav.abs().max() > 0.9 * bound
    default = alexnet.create_model("torchvision").features[0]
    assert default.weight.abs().max() <= 1 / (3 * 121) ** 0.5  # kaiming_uniform(a=sqrt 5) bound = 1/sqrt(fan_in)


@pytest.mark.parametrize("size", [28, 32])
def test_small_native_inputs(size):
    model = alexnet.create_model("small", input_size=size, in_channels=3 if size == 32 else 1)
    x = torch.randn(4, 3 if size == 32 else 1, size, size)
    assert model(x).shape == (4, 10)
    assert model.num_features == 64 * 4 * 4


def test_options_change_the_network():
    m = alexnet.create_model("d2l", activation="tanh", lrn=True, dropout=0.3, overlapping_pool=False,
                             num_classes=7, in_channels=3)
    kinds = [type(x).__name__ for x in m.features]
    assert "Tanh" in kinds and "ReLU" not in kinds and kinds.count("LocalResponseNorm") == 2
    pools = [x for x in m.features if isinstance(x, nn.MaxPool2d)]
    assert all(p.kernel_size == 2 and p.stride == 2 for p in pools)
    assert m.num_features == 256 * 6 * 6  # 224 -> 54 -> 27 -> 27 -> 13 -> 13 -> 6 with 2x2 pools
    assert [d.p for d in m.classifier if isinstance(d, nn.Dropout)] == [0.3, 0.3]
    assert m(torch.randn(1, 3, 224, 224)).shape == (1, 7)
    shallow = alexnet.create_model("d2l", remove_conv=4)
    assert sum(isinstance(x, nn.Conv2d) for x in shallow.features) == 4
    assert shallow(torch.randn(1, 1, 224, 224)).shape == (1, 10)


@pytest.mark.parametrize("name, length", [("d2l", 21), ("paper", 23), ("torchvision", 22), ("lenet", 12)])
def test_a_net_indexes_as_it_iterates(name, length):
    """`net[i]` and `len(net)` as on the book's nn.Sequential, in the order the shape loop sees the layers."""
    net = alexnet.create_model(name).eval()
    layers = list(net)
    assert len(net) == len(layers) == length
    assert all(net[i] is layer and net[i - length] is layer for i, layer in enumerate(layers))
    assert net[-1] is net.classifier[-1] and net[len(net.features)] is (
        net.flatten if name != "torchvision" else net.avgpool)
    head = net[:5]
    assert isinstance(head, nn.Sequential) and list(head) == layers[:5] and list(net[::-2]) == layers[::-2]
    x = torch.randn(1, *model_info(name).input_shape)
    torch.testing.assert_close(net[3:](net[:3](x)), net(x), rtol=0, atol=0)  # the pieces are the net
    with pytest.raises(IndexError, match=f"layer index {length} is out of range for {length} layers"):
        net[length]
    with pytest.raises(IndexError):
        net[-length - 1]


def test_indexing_leaves_the_state_dict_as_it_was():
    net = alexnet.create_model("d2l")
    assert isinstance(net[0], nn.Conv2d) and net[0] is net.features[0] and net[0].out_channels == 96
    assert isinstance(net[13], nn.Flatten) and isinstance(net[-1], nn.Linear) and net[-1].out_features == 10
    assert list(net.state_dict()) == [f"{part}.{i}.{p}" for part, i in [("features", 0), ("features", 3),
                                                                       ("features", 6), ("features", 8),
                                                                       ("features", 10), ("classifier", 0),
                                                                       ("classifier", 3), ("classifier", 6)]
                                      for p in ("weight", "bias")]
    assert len(net[:0]) == 0 and len(list(net[:5].parameters())) == 4  # two convs' weights and biases


def test_features_and_head_split():
    m = alexnet.create_model("small").eval()
    x = torch.randn(3, 1, 28, 28)
    feats = m.forward_features(x)
    assert feats.shape == (3, m.num_features)
    torch.testing.assert_close(m.forward_head(feats), m(x))


@pytest.mark.parametrize("bad", [dict(activation="gelu"), dict(init="he"), dict(dropout=1.5),
                                 dict(remove_conv=9), dict(nope=1), dict(lrn="yes"), dict(input_size=16),
                                 dict(lrn=None), dict(overlapping_pool=None), dict(dropout=None),
                                 dict(num_classes=0), dict(num_classes=[3]), dict(remove_conv=True),
                                 dict(remove_conv="abc"), dict(input_size=(224,)), dict(input_size=[224, -1])])
def test_bad_options_are_one_line_errors(bad):
    with pytest.raises(AlexNetError) as info:
        alexnet.create_model("d2l", **bad)
    assert "\n" not in str(info.value)


def test_unknown_model():
    with pytest.raises(AlexNetError, match="unknown model"):
        alexnet.create_model("vgg")


@pytest.mark.parametrize("bad", [dict(width=-1), dict(width=0), dict(hidden=0), dict(width=[4, 4])])
def test_bad_sizes_are_one_line_errors(bad):
    with pytest.raises(AlexNetError, match="must be an int >= 1") as info:
        alexnet.create_model("small", **bad)
    assert "\n" not in str(info.value)
