"""The execution forms of alexnet.kernels equal the plain layers they stand for, forward and backward, and leave
the modules as they were (parameters, state_dict keys, summary)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.kernels.conv1 import applies, conv2d_space_to_depth, first_conv, fold
from alexnet.kernels.forward import FastForward, plan, pool_follows_relu, run
from alexnet.models import create_model

# (in channels, input side, padding) of the first layers: d2l (1 x 224, p 1), the paper (3 x 227, p 0),
# torchvision (3 x 224, p 2); all 11 x 11 stride 4
FIRST_LAYERS = [(1, 224, 1, 96), (3, 227, 0, 96), (3, 224, 2, 64)]


def test_fold_puts_each_block_into_channels():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    f = fold(x, 4)
    assert f.shape == (1, 32, 2, 2)
    # channel c*16 + r*4 + q of block (a, b) is pixel (4a + r, 4b + q) of channel c
    for c, r, q, a, b in [(0, 0, 0, 0, 0), (1, 3, 2, 1, 0), (0, 1, 3, 1, 1)]:
        assert f[0, c * 16 + r * 4 + q, a, b] == x[0, c, 4 * a + r, 4 * b + q]


@pytest.mark.parametrize("channels,side,padding,out", FIRST_LAYERS)
def test_space_to_depth_equals_the_strided_convolution_in_float64(channels, side, padding, out):
    g = torch.Generator().manual_seed(side + padding)
    x = torch.randn(2, channels, side, side, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(out, channels, 11, 11, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(out, dtype=torch.float64, generator=g, requires_grad=True)
    plain = F.conv2d(x, w, b, stride=4, padding=padding)
    fast = conv2d_space_to_depth(x, w, b, 4, padding)
    assert fast.shape == plain.shape  # d2l: 54 x 54, the paper: 55 x 55 (the book's and the paper's shapes)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(plain.shape, dtype=torch.float64, generator=g)
    grads_plain = torch.autograd.grad(plain, (x, w, b), upstream)
    grads_fast = torch.autograd.grad(fast, (x, w, b), upstream)
    for name, a, e in zip(("input", "weight", "bias"), grads_fast, grads_plain, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("channels,side,padding,out", FIRST_LAYERS[:2])
def test_the_d2l_and_paper_first_layers_agree_in_float32(channels, side, padding, out):
    """fp32: the two forms sum the 121 (363) products in another order, so they agree to rounding, ~1e-7 of
    the values; measured against the values' norm so that no single near-zero element decides. The weight's
    gradient sums far more products, 8 x 54 x 54 = 23,328 (8 x 55 x 55 for the paper's), in an order oneDNN picks
    by CPU and thread count: fp32 rounding grows about as u * sqrt(N) = 6e-8 * 153 = 9e-6 of the norm (u, the
    unit roundoff). Against float64, the plain backward is 2.8e-6 off on one thread with AVX2, AVX-512 and AMX
    kernels alike, the folded one 5e-7 to 2.8e-6, the two 2.8e-6 apart (a 1e-5 bound was 3.5x that); the bound is
    3 * u * sqrt(N) = 2.7e-5, 10x the largest difference seen (a mis-wired fold is off by O(1))."""
    g = torch.Generator().manual_seed(channels)
    conv = nn.Conv2d(channels, out, 11, stride=4, padding=padding)
    x = torch.randn(8, channels, side, side, generator=g)
    plain = conv(x)
    with torch.no_grad():
        fast = conv2d_space_to_depth(x, conv.weight, conv.bias, 4, padding)
    assert (fast - plain).norm() / plain.norm() < 1e-5
    upstream = torch.randn(plain.shape, generator=g)
    grad_plain = torch.autograd.grad(plain, conv.weight, upstream)[0]
    fast = conv2d_space_to_depth(x, conv.weight, conv.bias, 4, padding)
    grad_fast = torch.autograd.grad(fast, conv.weight, upstream)[0]
    products = x.shape[0] * plain.shape[-2] * plain.shape[-1]  # summed into each element of the weight's gradient
    bound = 3 * (torch.finfo(torch.float32).eps / 2) * products ** 0.5  # 3 u sqrt(N)
    assert (grad_fast - grad_plain).norm() / grad_plain.norm() < bound


@pytest.mark.parametrize("name", ["d2l", "paper", "torchvision"])
def test_fast_forward_equals_the_plain_net(name):
    """The whole net in float64, so that the comparison shows the wiring (fp32 rounding differences in conv1 move
    ReLU and LRN decisions downstream: the network's gradient is not a check of the rewrite)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, dropout=0.0).double()
    c, side = (1, 224) if name == "d2l" else (3, 227 if name == "paper" else 224)
    x = torch.randn(2, c, side, side, dtype=torch.float64)
    keys, params = list(model.state_dict()), [p.data_ptr() for p in model.parameters()]
    fast = FastForward(model)
    # the same parameters, nothing added: state_dict, parameters and the module's own forward stay the plain ones
    assert [p.data_ptr() for p in fast.parameters()] == params and list(model.state_dict()) == keys
    plain_out = model(x)
    plain_grads = torch.autograd.grad(plain_out.square().sum(), list(model.parameters()))
    fast_out = fast(x)
    fast_grads = torch.autograd.grad(fast_out.square().sum(), list(model.parameters()))
    torch.testing.assert_close(fast_out, plain_out, rtol=1e-10, atol=1e-12)
    for (key, _), a, e in zip(model.named_parameters(), fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12, msg=key)
    assert "forward" not in vars(model.features[0])  # the folded forward is gone outside the call
    assert type(model.features[0]) is nn.Conv2d and model.features[0].weight.shape[-1] == 11


def test_which_convolutions_it_covers():
    assert applies(nn.Conv2d(1, 96, 11, stride=4, padding=1))
    assert not applies(nn.Conv2d(1, 8, 3, stride=1, padding=1))        # small's conv1: nothing to fold
    assert not applies(nn.Conv2d(4, 8, 11, stride=4, groups=2))         # grouped
    assert not applies(nn.Conv2d(1, 8, 11, stride=(4, 2)))              # unequal strides
    assert not applies(nn.Conv2d(1, 8, 11, stride=4, padding_mode="reflect"))

    class Standardised(nn.Conv2d):  # a subclass computes what its own forward says: the rewrite would not
        def forward(self, x):
            return self._conv_forward(x, self.weight - self.weight.mean(), self.bias)
    assert not applies(Standardised(1, 96, 11, stride=4))
    assert first_conv(create_model("small")) is None
    with pytest.raises(ValueError, match="strided square convolution"):
        FastForward(create_model("small"))


def test_fast_forward_compiles():
    """torch.compile traces the folded net as it is (it changes no module attribute): the same outputs."""
    torch.manual_seed(0)
    model = create_model("d2l", num_classes=10, dropout=0.0, input_size=67).double()
    x = torch.randn(2, 1, 67, 67, dtype=torch.float64)
    compiled = torch.compile(FastForward(model), backend="eager")
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-10, atol=1e-12)


# --- pool_first: max-pool, then ReLU ----------------------------------------------------------------------------
def _ties_and_zeros(shape, seed=0) -> torch.Tensor:
    """Values on a coarse grid (many exact ties, exact zeros, windows that are all <= 0), so that the arg-max
    tie-break and the ReLU's zero-gradient region are both exercised."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-6, 4, shape, generator=g) / 2).float()


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 2), nn.MaxPool2d(2, 2), nn.MaxPool2d(3, 2, padding=1),
                                  nn.MaxPool2d(3, 2, ceil_mode=True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pool_then_relu_is_bit_identical_forward_and_backward(pool, dtype):
    x = _ties_and_zeros((4, 8, 13, 13)).to(dtype)
    assert (x == 0).any() and (x < 0).all(dim=(-1)).any()
    upstream = torch.randn(pool(x).shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    plain = pool(torch.relu(a))
    fast = run([nn.ReLU(inplace=True), pool], plan([nn.ReLU(), pool], pool_first=True), b)
    assert torch.equal(fast, plain)
    plain.backward(upstream)
    fast.backward(upstream)
    assert torch.equal(b.grad, a.grad) and a.grad.count_nonzero() > 0


@pytest.mark.parametrize("name", ["d2l", "torchvision", "paper"])
def test_pool_first_leaves_the_net_bit_identical(name):
    """Whole nets in fp32 on the CPU: the same outputs and parameter gradients to the last bit (only the ReLU's
    place moves; the convolutions see the same numbers)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, dropout=0.0, input_size=99)
    c = 1 if name == "d2l" else 3
    x = torch.randn(2, c, 99, 99)
    fast = FastForward(model, fold_conv1=False, pool_first=True)
    outs, grads = [], []
    for net in (model, fast):
        out = net(x)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), list(model.parameters())))
    assert torch.equal(outs[0], outs[1])
    for (key, _), a, e in zip(model.named_parameters(), grads[1], grads[0], strict=True):
        assert torch.equal(a, e), key


def test_which_pools_move():
    d2l, paper = create_model("d2l"), create_model("paper")
    # d2l: conv relu pool | conv relu pool | conv relu conv relu conv relu pool
    assert [s for s in plan(d2l.features, pool_first=True) if s[0] != "layer"] == [
        ("pool_relu", 1), ("pool_relu", 4), ("pool_relu", 11)]
    # the paper: conv relu LRN pool twice (the LRN sits between them: not moved), then conv5 relu pool
    assert [s for s in plan(paper.features, pool_first=True, fold_first=True) if s[0] != "layer"] == [
        ("fold", 0), ("pool_relu", 13)]
    tanh = create_model("d2l", activation="tanh")
    assert not any(pool_follows_relu(tanh.features, i) for i in range(len(tanh.features)))
    with pytest.raises(ValueError, match="no ReLU followed by a max-pool"):
        FastForward(tanh, fold_conv1=False, pool_first=True)
    assert "pool_relu@1" in repr(FastForward(d2l, fold_conv1=False, pool_first=True))


def test_fused_lrn_steps_stand_for_the_paper_lrn_layers():
    paper, d2l = create_model("paper"), create_model("d2l")
    # the paper: conv relu LRN pool twice: the LRNs at 2 and 6 (the pools behind them stay plain)
    assert [s for s in plan(paper.features, pool_first=True, fused_lrn=True) if s[0] != "layer"] == [
        ("lrn", 2), ("lrn", 6), ("pool_relu", 13)]
    assert "lrn@2, lrn@6" in repr(FastForward(paper, fold_conv1=False, fused_lrn=True))
    with pytest.raises(ValueError, match="no local response normalisation"):
        FastForward(d2l, fold_conv1=False, fused_lrn=True)
    tv = create_model("torchvision")
    assert not any(what == "lrn" for what, _ in plan(tv.features, fused_lrn=True))


def test_the_paper_net_with_fused_lrn_equals_the_plain_net():
    """The whole paper net in fp32 (its weights scaled up so that the LRN's second term matters): outputs and
    every parameter's gradient equal the plain net's to fp32 rounding."""
    torch.manual_seed(0)
    model = create_model("paper", num_classes=10, dropout=0.0, input_size=99)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8)
    x = torch.randn(2, 3, 99, 99)
    fast = FastForward(model, fold_conv1=False, pool_first=True, fused_lrn=True)
    outs, grads = [], []
    for net in (model, fast):
        out = net(x)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), list(model.parameters())))
    assert outs[0].abs().max() > 1
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    for (key, _), a, e in zip(model.named_parameters(), grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5 * e.abs().max().item(), msg=key)
