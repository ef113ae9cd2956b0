"""alexnet summary: per-layer rows add up, FLOPs agree with conv arithmetic, CLI output and errors."""

import json

import pytest

import alexnet
from alexnet.analysis import summarize


def out_size(n, k, stride=1, pad=0):
    """Side of a convolution's or pooling's output (floor mode, as torch computes it)."""
    return (n + 2 * pad - k) // stride + 1


def conv_flops(cin, cout, k, out, groups=1):
    """2 x multiply-adds of a convolution producing out x out maps: 2 * Cin/groups * k*k * Cout * Hout*Wout."""
    return 2 * cout * (cin // groups) * k * k * out * out


def linear_flops(n_in, n_out):
    return 2 * n_in * n_out  # the bias add is not counted


def test_d2l_rows_and_totals():
    """The book's net (d2l 7.1) at 224x224, every figure derived here from its layer list."""
    s1 = out_size(224, 11, stride=4, pad=1)  # conv1 -> 54
    p1 = out_size(s1, 3, stride=2)           # max-pool 3/2 -> 26
    p2 = out_size(out_size(p1, 5, pad=2), 3, stride=2)  # conv2 keeps 26, pool -> 12
    p3 = out_size(p2, 3, stride=2)           # conv3-5 keep 12, pool -> 5
    convs = [(1, 96, 11, s1), (96, 256, 5, p1), (256, 384, 3, p2), (384, 384, 3, p2), (384, 256, 3, p2)]
    linears = [(256 * p3 * p3, 4096), (4096, 4096), (4096, 10)]
    forward = [conv_flops(*c) for c in convs] + [linear_flops(*f) for f in linears]
    params = [cout * (cin * k * k + 1) for cin, cout, k, _ in convs] + [o * (i + 1) for i, o in linears]

    s = summarize(alexnet.create_model("d2l"), (1, 224, 224))
    assert [r.output_shape for r in s.layers][:3] == [[96, s1, s1], [96, s1, s1], [96, p1, p1]]
    assert (s1, p1, p2, p3) == (54, 26, 12, 5) and linears[0][0] == 6400  # the shapes the book prints
    assert len(s.layers) == 21
    assert sum(r.params for r in s.layers) == s.total_params == sum(params)
    weighted = [r.flops for r in s.layers if r.flops]  # the convolutions and linears, in order
    assert weighted == forward
    assert sum(r.flops for r in s.layers) == s.total_flops == sum(forward)
    # forward + backward: backward costs twice the forward except conv1's input gradient, which is not needed
    assert s.train_flops == 3 * sum(forward) - forward[0]
    assert s.layers[0].activation_bytes == 4 * 96 * s1 * s1  # fp32


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


def test_a_summary_shows_as_its_table(cli):
    """A notebook cell ending in `alexnet.summary("d2l")` shows the table, `print(s)` the CLI's, `repr` a line."""
    s = alexnet.summary("d2l")
    code, out, _ = cli("summary", "--model", "d2l")
    assert code == 0 and str(s) + "\n" == out and str(s).splitlines()[4].split() == [
        "features.0", "Conv2d", "96x54x54", "11,712", "67.7", "M", "1.1", "MiB"]
    assert repr(s) == "Summary(model='d2l', input=1x224x224, 21 layers, 46,764,746 params, 1.9 GFLOP forward / image)"
    markdown = s._repr_markdown_().splitlines()
    assert markdown[2:5] == ["| layer | type | output shape | params | FLOPs | activations |",
                             "|---|---|---|--:|--:|--:|",
                             "| features.0 | Conv2d | 96x54x54 | 11,712 | 67.7 M | 1.1 MiB |"]
    assert markdown[24] == "| classifier.6 | Linear | 10 | 40,970 | 81.9 K | 40 B |" and len(markdown) == 27
    assert "total parameters **46,764,746**; forward 1.9 GFLOP (1,876,292,352)" in markdown[-1]


@pytest.mark.parametrize("argv,message", [
    (["summary", "--model", "vgg"], "unknown model 'vgg'; choose from"),
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


def test_two_column_training_flops_by_hand():
    """The paper's two-GPU net: conv2, conv4 and conv5 see only their own column (groups=2). Training costs the
    forward pass three times (input and weight gradients), except conv1, whose input needs no gradient."""
    forward = [conv_flops(3, 96, 11, 55), conv_flops(96, 256, 5, 27, groups=2), conv_flops(256, 384, 3, 13),
               conv_flops(384, 384, 3, 13, groups=2), conv_flops(384, 256, 3, 13, groups=2),
               linear_flops(256 * 6 * 6, 4096), linear_flops(4096, 4096), linear_flops(4096, 1000)]
    s = summarize(alexnet.create_model("paper", two_column=True), (3, 227, 227))
    assert [r.flops for r in s.layers if r.flops] == forward
    assert s.total_flops == sum(forward)
    assert s.train_flops == 3 * sum(forward) - forward[0]
    one_column = summarize(alexnet.create_model("paper"), (3, 227, 227))
    assert one_column.train_flops - s.train_flops == 3 * (forward[1] + forward[3] + forward[4])  # the halved convs
