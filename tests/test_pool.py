"""The Triton max-pool, alone and with its ReLU (alexnet.kernels.pool): on the CPU through Triton's interpreter
(fp32, where they must equal torch's max_pool2d (+ relu) bit for bit, values and gradients, ties and NaN included),
on CUDA (marked gpu) in bf16 and fp32 against the eager kernels."""

import pytest
import torch
from torch import nn

from alexnet.kernels import pool
from alexnet.kernels.forward import FastForward, plan
from alexnet.models import create_model

pytestmark = pytest.mark.skipif(not pool.available(), reason="needs Triton")


@pytest.fixture
def interpreted(interpret):
    """alexnet.kernels.pool with its kernels run by Triton's interpreter (on CPU tensors), restored after."""
    return interpret(pool)


def reference_and_fused(module, x, fused, relu=True):
    """(output, input gradient) of relu(pool(x)), or pool(x), both ways, with the same upstream gradient."""
    results = []
    for f in (lambda t: torch.relu(module(t)) if relu else module(t), lambda t: fused.max_pool(module, t, relu)):
        t = x.detach().clone().requires_grad_()
        out = f(t)
        torch.manual_seed(1)
        out.backward(torch.randn_like(out))
        results.append((out.detach(), t.grad))
    return results


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit as numbers, NaN where NaN (torch.equal says NaN != NaN)."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


def assert_same_net(model, plain, fast, x):
    """`fast` (model in execution forms) gives plain's output and every parameter's gradient bit for bit."""
    results = []
    for net in (plain, fast):
        out = net(x)
        results.append((out, torch.autograd.grad(out.square().sum(), list(model.parameters()))))
    assert torch.equal(results[0][0], results[1][0])
    for (key, _), a, b in zip(model.named_parameters(), results[0][1], results[1][1], strict=True):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("k,s,shape", [(3, 2, (2, 5, 13, 11)), (3, 2, (3, 4, 27, 27)), (2, 2, (2, 3, 8, 9)),
                                       (3, 1, (1, 4, 7, 9)), (5, 3, (2, 3, 16, 14)), (3, 3, (1, 2, 3, 3))])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("relu", [True, False])
def test_equals_max_pool_and_relu_bit_for_bit(interpreted, k, s, shape, channels_last, relu):
    torch.manual_seed(0)
    x = torch.randint(-3, 4, shape).float()  # many ties, zeros and windows with no positive value
    x[0, 0, 1, 1], x[-1, -1, -1, -2] = float("nan"), float("nan")  # NaN is a window's maximum, as in torch
    x[0, -1] = -1.0  # a whole channel below zero: no gradient passes the ReLU there
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    (ref, ref_grad), (out, grad) = reference_and_fused(nn.MaxPool2d(k, s), x, interpreted, relu)
    assert out.shape == ref.shape and same(out, ref)
    assert same(grad, ref_grad) and grad.abs().sum() > 0
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt) and grad.is_contiguous(memory_format=fmt)


def test_the_d2l_net_with_fused_pools_equals_the_plain_net(interpreted):
    """The book's net at 224 px (its three 3x3 stride-2 pools): output and every gradient bit-equal in fp32."""
    torch.manual_seed(0)
    model = create_model("d2l", num_classes=10, dropout=0.0)
    x = torch.randn(2, 1, 224, 224)
    fast = FastForward(model, fold_conv1=False, pool_first=True, fused_pool=True)
    assert [s for s in fast.steps if s[0] != "layer"] == [("pool_relu_fused", 1), ("pool_relu_fused", 4),
                                                          ("pool_relu_fused", 11)]
    assert_same_net(model, model, fast, x)


def test_the_paper_net_with_fused_pools_equals_the_plain_net(interpreted):
    """The paper's net (two columns): its first two pools follow an LRN and run alone, the third follows a ReLU and
    takes it in; with the fused LRN too, as the trainer would run it."""
    torch.manual_seed(0)
    model = create_model("paper", num_classes=10, dropout=0.0, input_size=99, two_column=True)
    x = torch.randn(2, 3, 99, 99)
    fast = FastForward(model, fold_conv1=False, pool_first=True, fused_lrn=True, fused_pool=True)
    assert [s for s in fast.steps if s[0] not in ("layer", "lrn")] == [
        ("pool_fused", 3), ("pool_fused", 7), ("pool_relu_fused", 13)]
    plain = FastForward(model, fold_conv1=False, pool_first=True, fused_lrn=True)
    assert_same_net(model, plain, fast, x)


def test_which_pools_it_computes():
    assert pool.window(nn.MaxPool2d(3, 2)) == (3, 2) and pool.window(nn.MaxPool2d((3, 3), (2, 2))) == (3, 2)
    assert pool.window(nn.MaxPool2d(2)) == (2, 2)  # stride defaults to the window
    for other in (nn.MaxPool2d(3, 2, padding=1), nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(3, 2, dilation=2),
                  nn.MaxPool2d((3, 2), 2), nn.MaxPool2d(3, (2, 1)), nn.MaxPool2d(3, 2, return_indices=True),
                  nn.MaxPool2d(12), nn.AvgPool2d(3, 2)):
        assert not pool.applies(other), other
    # a pool it cannot compute stays in the exact pool_first form
    layers = [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1), nn.Conv2d(2, 2, 3), nn.ReLU(),
              nn.MaxPool2d(3, 2)]
    assert plan(layers, pool_first=True, fused_pool=True) == [
        ("layer", 0), ("pool_relu", 1), ("layer", 3), ("pool_relu_fused", 4)]
    # without pool_first the pools run alone, after their ReLU
    assert [s for s in plan(create_model("d2l").features, fused_pool=True) if s[0] != "layer"] == [
        ("pool_fused", 2), ("pool_fused", 5), ("pool_fused", 12)]
    with pytest.raises(ValueError, match="no max-pool the fused kernels compute"):
        FastForward(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1)), fold_conv1=False,
                    fused_pool=True)


def test_what_the_kernels_do_not_compute_is_said_or_left_to_torch(interpreted):
    """fp64 runs torch's pool (the kernels would round it to fp32); no gradient needed, no codes kept; a second
    derivative raises; an inf or NaN gradient of a window flows only to the element that window chose."""
    p = nn.MaxPool2d(3, 2)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64) * (1 + 2**-40)
    assert torch.equal(interpreted.max_pool(p, x, relu=True), torch.relu(p(x)))
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(interpreted.max_pool(p, x), p(x))
    t, v = x.clone().requires_grad_(), torch.ones(2, 3, 4, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="no second derivative"):  # asked for a graph of the backward at all
        torch.autograd.grad(interpreted.max_pool(p, t), t, grad_outputs=v, create_graph=True)
    with pytest.raises(RuntimeError, match="no second derivative"):  # the loss reaches t another way too
        torch.autograd.grad(interpreted.max_pool(p, t).square().sum() + t.square().sum(), t, create_graph=True)
    g = torch.randn(2, 3, 4, 4)
    g[0, 0, 1, 1], g[1, 2, 0, 3] = float("inf"), float("nan")
    results = []
    for f in (p, lambda u: interpreted.max_pool(p, u)):
        u = x.clone().requires_grad_()
        f(u).backward(g)
        results.append(u.grad)
    assert same(results[1], results[0]) and results[0].isinf().sum() == 1 and results[0].isnan().sum() == 1


def test_a_pool_larger_than_its_input_is_a_clear_error(interpreted):
    with pytest.raises(ValueError, match="does not fit a 2x2 input"):
        interpreted.max_pool(nn.MaxPool2d(3, 2), torch.zeros(1, 1, 2, 2))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("channels", [96, 40])  # 40: not a multiple of 16, the kernels' loads are not vectorised
def test_on_cuda_equals_the_eager_kernels(dtype, relu, channels):
    """The d2l net's first pool at batch 64, channels-last as the trainer runs it: values equal, and gradients
    equal (CUDA's channels-last max-pool backward adds in fp32 in the same order); ties, NaN and -0.0 included."""
    torch.manual_seed(0)
    x = torch.randn(64, channels, 54, 54, device="cuda").round(decimals=1).to(dtype)  # ties
    x[0, 0, 3, 3], x[1, 1, 5, 5], x[2, 2] = float("nan"), -0.0, -1.0
    x = x.contiguous(memory_format=torch.channels_last)
    (ref, ref_grad), (out, grad) = reference_and_fused(nn.MaxPool2d(3, 2), x, pool, relu)
    assert out.dtype == dtype and same(out, ref) and same(grad, ref_grad)
