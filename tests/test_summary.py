"""alexnet summary: per-layer rows add up, FLOPs agree with conv arithmetic, CLI output and errors."""

import json

import pytest

import alexnet
from alexnet.analysis import summarize


def test_d2l_rows_and_totals():
    s = summarize(alexnet.create_model("d2l"), (1, 224, 224))
    assert [r.output_shape for r in s.layers][:3] == [[96, 54, 54], [96, 54, 54], [96, 26, 26]]
    assert len(s.layers) == 21
    assert sum(r.params for r in s.layers) == s.total_params == 46_764_746
    assert sum(r.flops for r in s.layers) == s.total_flops
    # conv1: 54*54 outputs x 96 kernels x (11*11*1) multiply-adds x 2
    assert s.layers[0].flops == 2 * 54 * 54 * 96 * 11 * 11
    assert s.layers[14].flops == 2 * 6400 * 4096  # first FC (bias add not counted)
    assert s.total_flops == 1_876_292_352
    # forward + backward: backward costs twice the forward except conv1's input gradient, which is not needed
    assert s.train_flops == 3 * s.total_flops - s.layers[0].flops
    assert s.layers[0].activation_bytes == 4 * 96 * 54 * 54


def test_cli_json(cli):
    code, out, _ = cli("summary", "--model", "paper", "--option", "two_column=true", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["total_params"] == sum(layer["params"] for layer in data["layers"])
    assert data["input_shape"] == [3, 227, 227]
    assert {"name", "type", "output_shape", "params", "flops"} <= set(data["layers"][0])


def test_cli_table(cli):
    code, out, _ = cli("summary", "--model", "small", "--input", "3,32,32", "--classes", "100")
    assert code == 0
    assert "3x32x32" in out and "classifier.6  Linear     100" in out


@pytest.mark.parametrize("argv,message", [
    (["summary", "--model", "vgg"], "invalid choice"),
    (["summary", "--model", "d2l", "--input", "1,32,32"], "too small"),
    (["summary", "--input", "1,2"], "C,H,W"),
    (["summary", "--option", "dropout=high"], "dropout must be a number"),
    (["summary", "--model", "small", "--option", "input_size=[28]"], "--option input_size is set by --input"),
    (["summary", "--model", "small", "--option", "width=-1"], "width must be an int >= 1"),
    (["predict", "--checkpoint", "ck.pt", "--topk", "0", "a.png"], "expected a positive integer"),
    (["augment", "--out", "grid.png", "--samples", "-2"], "expected a positive integer"),
])
def test_cli_errors_are_one_line(argv, message, cli):
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def conv_flops(cin, cout, k, out, groups=1):
    """2 x multiply-adds of a convolution producing out x out maps."""
    return 2 * cout * (cin // groups) * k * k * out * out


def test_two_column_training_flops_by_hand():
    """The paper's two-GPU net: conv2, conv4 and conv5 see only their own column (groups=2). Training costs the
    forward pass three times (input and weight gradients), except conv1, whose input needs no gradient."""
    forward = [conv_flops(3, 96, 11, 55), conv_flops(96, 256, 5, 27, groups=2), conv_flops(256, 384, 3, 13),
               conv_flops(384, 384, 3, 13, groups=2), conv_flops(384, 256, 3, 13, groups=2),
               2 * 9216 * 4096, 2 * 4096 * 4096, 2 * 4096 * 1000]
    s = summarize(alexnet.create_model("paper", two_column=True), (3, 227, 227))
    assert s.total_flops == sum(forward) == 1_448_813_632
    assert s.train_flops == 3 * sum(forward) - forward[0] == 4_135_610_496
    one_column = summarize(alexnet.create_model("paper"), (3, 227, 227))
    assert one_column.train_flops - s.train_flops == 3 * (forward[1] + forward[3] + forward[4])  # the halved convs
