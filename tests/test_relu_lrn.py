"""The Triton ReLU + LRN (alexnet.kernels.relu_lrn): on the CPU through Triton's interpreter in fp32, where values
and gradients must be as close to the exact (fp64) ones as the plain module's are, NaN and the ReLU's edge
included; on CUDA (marked gpu) in bf16 and fp32 against the plain module."""

import pytest
import torch
from helpers import ulp_close
from torch import nn

from alexnet.config import apply_overrides, load_preset
from alexnet.kernels import lrn, relu_lrn
from alexnet.kernels.forward import FastForward, plan
from alexnet.models import LocalResponseNorm, create_model
from alexnet.runtime.distributed import DistEnv
from alexnet.runtime.precision import resolve_precision
from alexnet.training import fast

pytestmark = pytest.mark.skipif(not relu_lrn.available(), reason="needs Triton")


@pytest.fixture
def interpreted(interpret):
    return interpret(relu_lrn)


def forward_backward(form, x, g):
    """form(x) and d((form(x) * g).sum()) / dx for a fresh leaf copy of x (same layout)."""
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    out = form(x)
    (grad,) = torch.autograd.grad((out * g).sum(), x)
    return out, grad


def plain(module, relu):
    return lambda t: module(torch.relu(t) if relu else t)


@pytest.mark.parametrize("size,shape", [(5, (2, 9, 4, 5)), (5, (3, 2, 3, 3)), (2, (2, 7, 3, 4)),
                                        (6, (1, 11, 5, 2)), (1, (2, 4, 3, 3))])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("relu", [True, False])
def test_equals_relu_and_the_plain_lrn(interpreted, size, shape, channels_last, relu):
    """Against the exact (fp64) result within the plain module's own ulps (test_lrn), both layouts, windows odd,
    even, wider than the channels, and of one; the output keeps the input's layout."""
    torch.manual_seed(0)
    module = LocalResponseNorm(size, alpha=1e-2, beta=0.75, k=2.0)  # a large alpha: the window sum matters
    x, g = torch.randn(shape) * 3, torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out, grad = forward_backward(lambda t: interpreted.relu_lrn(module, t, relu), x, g)
    out64, grad64 = forward_backward(plain(module, relu), x.double(), g.double())
    ulp_close(out, out64.float(), 8)
    ulp_close(grad, grad64.float(), 64)  # the backward: a difference of two sums of products
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt) and grad.is_contiguous(memory_format=fmt)
    if relu:
        assert torch.equal(grad[x <= 0], torch.zeros_like(grad[x <= 0])) and grad[x > 0].abs().min() > 0


@pytest.mark.parametrize("beta,k", [(0.5, 1.5), (0.6, 1.5), (1.0, 1.5), (0.75, 0.0), (0.6, 0.0)])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # numpy's, in the interpreter: 0 * inf at k = 0
def test_any_beta_and_k(interpreted, beta, k, relu):
    """beta = 0.75 (the paper's) runs on the reciprocal square root, any other through exp2 and log2; k = 0 keeps
    the windows past the channel edges out with a select (there d can be 0), k > 0 needs none."""
    torch.manual_seed(2)
    module = LocalResponseNorm(5, alpha=1e-2, beta=beta, k=k)
    x, g = torch.randn(2, 8, 3, 4) * 3, torch.randn(2, 8, 3, 4)
    x[:, :, 0, 0] = 0.0  # a position with no activation at all: d = k there
    x[:, -2:, 1, 1] = 0.0  # the last two channels: windows past the edge that hold nothing but zeros
    out, grad = forward_backward(lambda t: interpreted.relu_lrn(module, t, relu), x, g)
    out64, grad64 = forward_backward(plain(module, relu), x.double(), g.double())
    assert out.isnan().any() == (k == 0)  # 0 * 0^-beta at the first position
    for got, exact in ((out, out64.float()), (grad, grad64.float())):
        assert torch.equal(got.isnan(), exact.isnan())
        ulp_close(got.nan_to_num(0.0), exact.nan_to_num(0.0), 64)


def test_the_paper_numbers_and_the_relu_edge(interpreted):
    """The paper's k, n, alpha, beta on activations of a realistic size; an input of exactly 0 gets no gradient
    through the ReLU, and a NaN spreads over the windows that hold it and passes its gradient, as in torch."""
    torch.manual_seed(1)
    module = LocalResponseNorm()
    x = torch.randn(2, 16, 6, 6) * 40
    x[0, :, 0, 0] = 0.0
    x[1, 7, 2, 3] = float("nan")
    g = torch.randn_like(x)
    out, grad = forward_backward(lambda t: interpreted.relu_lrn(module, t), x, g)
    ref, ref_grad = forward_backward(plain(module, True), x, g)
    for got, expected in ((out, ref), (grad, ref_grad)):
        assert torch.equal(got.isnan(), expected.isnan())
        ulp_close(got.nan_to_num(0.0), expected.nan_to_num(0.0), 64)
    assert out[1, 5:10, 2, 3].isnan().all() and not out[1, 4, 2, 3].isnan() and not out[1, 10, 2, 3].isnan()
    assert torch.equal(grad[0, :, 0, 0], torch.zeros(16))


def test_what_the_kernels_do_not_compute_is_left_to_the_function(interpreted):
    """fp64 and other ranks run the analytic Function after torch's ReLU; evaluation saves nothing; a second
    derivative raises; an empty batch is an empty batch."""
    module = LocalResponseNorm()
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64) * 30
    assert torch.equal(interpreted.relu_lrn(module, x), lrn.fused(module, torch.relu(x)))
    x3 = torch.randn(2, 6, 5) * 30
    assert torch.equal(interpreted.relu_lrn(module, x3, relu=False), lrn.fused(module, x3))
    x = torch.randn(2, 6, 3, 3) * 30
    with torch.no_grad():
        ulp_close(interpreted.relu_lrn(module, x), module(torch.relu(x)), 8)
    t, v = x.clone().requires_grad_(), torch.ones_like(x, requires_grad=True)
    with pytest.raises(RuntimeError, match="no second derivative"):  # asked for a graph of the backward at all
        torch.autograd.grad(interpreted.relu_lrn(module, t), t, grad_outputs=v, create_graph=True)
    with pytest.raises(RuntimeError, match="no second derivative"):  # the loss reaches t another way too: the
        # terms once_differentiable would have dropped without a word
        torch.autograd.grad(interpreted.relu_lrn(module, t).square().sum() + t.square().sum(), t, create_graph=True)
    empty = torch.zeros(0, 6, 3, 3, requires_grad=True)
    interpreted.relu_lrn(module, empty).sum().backward()
    assert empty.grad.shape == (0, 6, 3, 3)


def test_the_paper_net_with_the_triton_lrn_equals_the_fused_function(interpreted):
    """The paper's net (one column and two) in fp32: each ReLU -> LRN one step, the rest as before; output and
    every parameter's gradient as those of the analytic Function's form, to rounding."""
    for two_column in (False, True):
        torch.manual_seed(0)
        model = create_model("paper", num_classes=10, dropout=0.0, input_size=99, two_column=two_column)
        x = torch.randn(2, 3, 99, 99)
        triton = FastForward(model, fold_conv1=False, pool_first=True, fused_lrn=True, triton_lrn=True)
        assert [s for s in triton.steps if s[0] != "layer"] == [("relu_lrn_triton", 1), ("relu_lrn_triton", 5),
                                                                ("pool_relu", 13)]
        function = FastForward(model, fold_conv1=False, pool_first=True, fused_lrn=True)
        results = []
        for net in (function, triton):
            out = net(x)
            results.append((out, torch.autograd.grad(out.square().sum(), list(model.parameters()))))
        # to rounding, on the tensor's scale: the two forms round differently, and oneDNN's kernels (AVX2 or
        # AVX512) carry it through the layers after them differently again
        ulp_close(results[1][0], results[0][0], 64)
        for a, b in zip(results[1][1], results[0][1], strict=True):
            ulp_close(a, b, 256)


def test_which_layers_it_takes():
    """A ReLU followed by the paper's LRN is one step, an LRN alone another; torch's own LRN (alpha per channel)
    and a tanh are not taken; without an LRN the form cannot be asked for."""
    layers = [nn.Conv2d(3, 8, 3), nn.ReLU(), LocalResponseNorm(), nn.Conv2d(8, 8, 3), LocalResponseNorm(),
              nn.Tanh(), LocalResponseNorm(), nn.ReLU(), nn.LocalResponseNorm(5)]
    assert plan(layers, triton_lrn=True) == [("layer", 0), ("relu_lrn_triton", 1), ("layer", 3), ("lrn_triton", 4),
                                             ("layer", 5), ("lrn_triton", 6), ("layer", 7), ("layer", 8)]
    assert plan(layers, triton_lrn=True, fused_lrn=True) == plan(layers, triton_lrn=True)  # it takes the place
    with pytest.raises(ValueError, match="no local response normalisation"):
        FastForward(create_model("d2l"), fold_conv1=False, triton_lrn=True)


def test_the_choice_waits_for_cuda_and_a_measurement():
    """Off on a CPU; on CUDA off by default until measured, on when asked, in place of fused_lrn; never under
    torch.compile or for a net without an LRN."""
    paper, d2l = create_model("paper"), create_model("d2l")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    def config(**overrides):
        return apply_overrides(load_preset("paper"), overrides)
    cfg, asked = config(), config(**{"train.triton_lrn": True})
    assert fast.triton_lrn(cfg, cpu, paper) == fast.Choice(False, "not a CUDA device: the kernels are Triton's")
    auto = fast.triton_lrn(cfg, cuda, paper)
    assert not auto.on and auto.reason.startswith("auto: off until measured")
    choices = fast.choose(asked, cuda, DistEnv(), resolve_precision("fp32", cpu), paper)
    assert choices["triton_lrn"] == fast.Choice(True, "train.triton_lrn: true")
    assert choices["fused_lrn"] == fast.Choice(False, "triton_lrn runs the LRN")
    assert fast.forms(choices)["triton_lrn"] and not fast.forms(choices)["fused_lrn"]
    with pytest.raises(fast.NotApplicable, match="train.triton_lrn: true does not apply: torch.compile"):
        fast.triton_lrn(config(**{"train.triton_lrn": True, "train.compile": True}), cuda, paper)
    with pytest.raises(fast.NotApplicable, match="has no LRN"):
        fast.triton_lrn(config(**{"train.triton_lrn": True, "model.name": "d2l"}), cuda, d2l)
    with pytest.raises(fast.NotApplicable, match="not a CUDA device"):
        fast.triton_lrn(asked, cpu, paper)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_cuda_against_the_plain_module(dtype):
    """The paper's first LRN at batch 8 on the GPU, channels-last: within the plain module's own distance from the
    exact result (bf16: the plain module rounds each add, the kernels once), values and gradients."""
    torch.manual_seed(0)
    module = LocalResponseNorm()
    x = (torch.randn(8, 96, 55, 55, device="cuda") * 40).to(dtype).contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    exact, exact_grad = forward_backward(plain(module, True), x.double(), g.double())
    ref, ref_grad = forward_backward(plain(module, True), x, g)
    out, grad = forward_backward(lambda t: relu_lrn.relu_lrn(module, t), x, g)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    for got, theirs, true in ((out, ref, exact), (grad, ref_grad, exact_grad)):
        scale = true.abs().max()
        assert (got.double() - true).abs().max() <= max(2 * (theirs.double() - true).abs().max(), 1e-6 * scale)
