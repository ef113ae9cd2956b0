"""`bias_after_pool` (alexnet.kernels.forward): conv -> ReLU -> max-pool run as conv without its bias -> max-pool
-> + bias -> ReLU. Where the arithmetic is exact (small integers) it gives the plain layers' output and every
gradient bit for bit, ties included; in fp32 the whole nets agree to rounding; the modules stay as they were."""

import pytest
import torch
from torch import nn

from alexnet.kernels import pool
from alexnet.kernels.forward import FastForward, has_bias_before_pool, plan, run
from alexnet.models import create_model


def integer_triple(seed: int, channels_last: bool = False):
    """conv (3x3, integer weights and bias) -> ReLU -> 3x3 stride-2 max-pool, and an integer input: every sum is an
    integer below 2^24, so fp32 computes it exactly in any order, and the conv's output has many ties and zeros."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-2, 3, conv.weight.shape, generator=g).float())
        conv.bias.copy_(torch.randint(-6, 7, conv.bias.shape, generator=g).float())
    x = torch.randint(-3, 4, (4, 3, 15, 13), generator=g).float()
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return [conv, nn.ReLU(inplace=True), nn.MaxPool2d(3, 2)], x


def outputs_and_gradients(layers, steps, x, upstream):
    t = x.clone().requires_grad_()
    out = run(layers, steps, t)
    conv = layers[0]
    grads = torch.autograd.grad(out, [t, conv.weight, conv.bias], upstream)
    return out.detach(), grads


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bit_identical_where_the_arithmetic_is_exact(seed, channels_last):
    layers, x = integer_triple(seed, channels_last)
    plain_steps, moved = plan(layers), plan(layers, bias_after_pool=True)
    assert moved == [("conv_nobias", 0), ("pool_bias_relu", 1)]
    out = run(layers, plain_steps, x)
    upstream = torch.randint(-3, 4, out.shape, generator=torch.Generator().manual_seed(seed + 10)).float()
    plain, plain_grads = outputs_and_gradients(layers, plain_steps, x, upstream)
    fast, fast_grads = outputs_and_gradients(layers, moved, x, upstream)
    assert torch.equal(fast, plain) and (plain == 0).any() and (plain > 0).any()
    windows = layers[0](x).detach().unfold(2, 3, 2).unfold(3, 3, 2).flatten(-2)
    tied = (windows == windows.max(-1, keepdim=True).values).sum(-1) > 1
    assert tied.any()  # windows whose maximum is tied: the tie-break is exercised
    for name, a, e in zip(("input", "weight", "bias"), fast_grads, plain_grads, strict=True):
        assert torch.equal(a, e), name
        assert a.count_nonzero() > 0, name


@pytest.mark.parametrize("name", ["d2l", "torchvision", "paper"])
def test_whole_nets_agree_in_float32(name):
    """Outputs and every gradient within fp32 rounding (the bias gradients are summed over the pooled tensor, in
    another order); the parameters, their order and the state_dict are the model's own."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, dropout=0.0, input_size=99)
    with torch.no_grad():  # biases large enough that moving them matters
        for layer in model.features:
            if isinstance(layer, nn.Conv2d):
                layer.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 1 if name == "d2l" else 3, 99, 99)
    keys = list(model.state_dict())
    fast = FastForward(model, fold_conv1=False, pool_first=True, bias_after_pool=True)
    assert list(model.state_dict()) == keys and list(fast.parameters()) == list(model.parameters())
    assert_same_net(model, fast, x, rtol=1e-5, atol=1e-6, grad_rtol=1e-4, grad_atol=1e-5)


def assert_same_net(model, fast, x, *, rtol, atol, grad_rtol, grad_atol):
    """`fast` (model in execution forms) gives model's output, and every parameter's gradient of the output's
    squared sum, within the tolerances (grad_atol relative to the gradient's largest element)."""
    results = []
    for net in (model, fast):
        out = net(x)
        results.append((out, torch.autograd.grad(out.square().sum(), list(model.parameters()))))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=rtol, atol=atol)
    for (key, _), a, e in zip(model.named_parameters(), results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(a, e, rtol=grad_rtol, atol=grad_atol * e.abs().max().item(), msg=key)


def test_with_conv1_folded_in_float64():
    """The folded conv1 without its bias, then the pool and the bias: the plain net's output and gradients."""
    torch.manual_seed(0)
    model = create_model("d2l", num_classes=10, dropout=0.0, input_size=99).double()
    x = torch.randn(2, 1, 99, 99, dtype=torch.float64)
    fast = FastForward(model, fold_conv1=True, pool_first=True, bias_after_pool=True)
    assert fast.steps[:2] == [("fold_nobias", 0), ("pool_bias_relu", 1)]
    assert_same_net(model, fast, x, rtol=1e-10, atol=1e-12, grad_rtol=1e-9, grad_atol=1e-12)


def test_bf16_autocast_keeps_the_convolutions_dtype():
    """Under autocast the bias is added in the convolution's bf16, as the plain layers do: outputs within bf16's
    rounding of the plain net's, and the pooled tensor stays bf16."""
    torch.manual_seed(0)
    model = create_model("d2l", num_classes=10, dropout=0.0, input_size=67)
    x = torch.randn(4, 1, 67, 67)
    fast = FastForward(model, fold_conv1=False, bias_after_pool=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, moved = model(x), fast(x)
        pooled = run(model.features[:3], fast.steps[:2], x)
    assert pooled.dtype == torch.bfloat16 and moved.dtype == plain.dtype
    torch.testing.assert_close(moved.float(), plain.float(), rtol=3e-2, atol=3e-2 * plain.abs().max().item())


def test_which_biases_move():
    d2l, paper = create_model("d2l"), create_model("paper")
    # d2l: conv relu pool | conv relu pool | conv relu conv relu conv relu pool: conv1, conv2 and conv5 move
    assert [s for s in plan(d2l.features, pool_first=True, bias_after_pool=True) if s[0] != "layer"] == [
        ("conv_nobias", 0), ("pool_bias_relu", 1), ("conv_nobias", 3), ("pool_bias_relu", 4),
        ("conv_nobias", 10), ("pool_bias_relu", 11)]
    assert plan(d2l.features, fold_first=True, bias_after_pool=True, fused_pool=True)[:2] == [
        ("fold_nobias", 0), ("pool_fused_bias_relu", 1)]
    # the paper: an LRN sits between conv1/conv2's ReLU and pool (their biases stay); conv5 -> ReLU -> pool moves
    assert [s for s in plan(paper.features, fused_lrn=True, bias_after_pool=True) if s[0] != "layer"] == [
        ("lrn", 2), ("lrn", 6), ("conv_nobias", 12), ("pool_bias_relu", 13)]
    unbiased = [nn.Conv2d(1, 2, 3, bias=False), nn.ReLU(), nn.MaxPool2d(2)]
    assert plan(unbiased, bias_after_pool=True) == plan(unbiased)

    class Scaled(nn.Conv2d):  # a subclass computes what its own forward says: its bias stays where it is
        def forward(self, x):
            return 2 * super().forward(x)
    assert plan([Scaled(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)], bias_after_pool=True) == [
        ("layer", 0), ("layer", 1), ("layer", 2)]
    tanh = create_model("d2l", activation="tanh")
    assert not has_bias_before_pool(tanh)
    with pytest.raises(ValueError, match="no biased convolution followed by a ReLU and a max-pool"):
        FastForward(tanh, fold_conv1=False, bias_after_pool=True)
    assert "conv_nobias@0, pool_bias_relu@1" in repr(FastForward(d2l, fold_conv1=False, bias_after_pool=True))


@pytest.mark.skipif(not pool.available(), reason="needs Triton")
def test_with_the_triton_pool_in_the_interpreter(interpret):
    """The Triton pool (no ReLU inside: the bias comes between) in the moved order: the exact case bit for bit."""
    interpret(pool)
    layers, x = integer_triple(3)
    steps = plan(layers, bias_after_pool=True, fused_pool=True)
    assert steps == [("conv_nobias", 0), ("pool_fused_bias_relu", 1)]
    upstream = torch.randint(-3, 4, run(layers, plan(layers), x).shape,
                             generator=torch.Generator().manual_seed(7)).float()
    plain, plain_grads = outputs_and_gradients(layers, plan(layers), x, upstream)
    fast, fast_grads = outputs_and_gradients(layers, steps, x, upstream)
    assert torch.equal(fast, plain)
    for a, e in zip(fast_grads, plain_grads, strict=True):
        assert torch.equal(a, e)
