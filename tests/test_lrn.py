"""LocalResponseNorm: the paper's formula, equal to torch's module once alpha is rescaled by n."""

import pytest
import torch
from helpers import ulp_close

from alexnet.models import LocalResponseNorm


def reference(x, n, alpha, beta, k):
    """The paper's sum, written as loops in float64."""
    out = torch.empty_like(x)
    channels = x.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - n // 2), min(channels - 1, c + (n - 1) // 2)
        out[:, c] = x[:, c] / (k + alpha * x[:, lo:hi + 1].square().sum(1)) ** beta
    return out


@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_matches_the_formula(n):
    x = torch.randn(2, 9, 4, 5, dtype=torch.float64) * 3
    got = LocalResponseNorm(n, alpha=1e-2, beta=0.75, k=2.0)(x)
    torch.testing.assert_close(got, reference(x, n, 1e-2, 0.75, 2.0))


@pytest.mark.parametrize("n,alpha,beta,k", [(5, 1e-4, 0.75, 2.0), (3, 0.1, 0.5, 1.0), (4, 1.0, 1.0, 0.5)])
def test_equals_torch(n, alpha, beta, k):
    x = torch.randn(3, 16, 7, 7) * 5
    theirs = torch.nn.LocalResponseNorm(n, alpha=alpha, beta=beta, k=k)(x)
    torch.testing.assert_close(LocalResponseNorm.from_torch(n, alpha, beta, k)(x), theirs)
    # The paper's alpha is torch's alpha / n.
    torch.testing.assert_close(LocalResponseNorm(n, alpha / n, beta, k)(x), theirs)


def test_paper_hyper_parameters_by_default():
    lrn = LocalResponseNorm()
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    x = torch.full((1, 5, 1, 1), 10.0)
    # centre channel: 10 / (2 + 1e-4 * 5 * 100) ** 0.75
    assert lrn(x)[0, 2, 0, 0].item() == pytest.approx(10 / (2 + 0.05) ** 0.75)


# --- alexnet.kernels.lrn: the same LRN as one autograd Function with an analytic backward -----------------------

from alexnet.kernels import lrn as fused_lrn  # noqa: E402


def forward_backward(form, x, g):
    """form(x) and d((form(x) * g).sum()) / dx for a fresh leaf copy of x."""
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    out = form(x)
    (grad,) = torch.autograd.grad((out * g).sum(), x)
    return out, grad


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("n,alpha,beta,k", [(5, 1e-4, 0.75, 2.0), (5, 0.1, 0.75, 2.0), (3, 1e-2, 0.5, 1.0),
                                            (4, 0.05, 1.0, 0.5)])
def test_fused_equals_module_fp32(layout, n, alpha, beta, k):
    torch.manual_seed(0)
    m = LocalResponseNorm(n, alpha, beta, k)
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    x = (torch.randn(2, 12, 5, 6) * 4).to(memory_format=fmt)
    g = torch.randn(2, 12, 5, 6)
    out, grad = forward_backward(lambda t: fused_lrn.fused(m, t), x, g)
    out_ref, grad_ref = forward_backward(m, x, g)
    assert out.dtype == grad.dtype == torch.float32
    assert out.is_contiguous(memory_format=fmt) and grad.is_contiguous(memory_format=fmt)
    ulp_close(out, out_ref, 8)
    ulp_close(grad, grad_ref, 16)  # the backward: a difference of two terms, a few more roundings
    # and both within fp32 of the float64 truth
    out64, grad64 = forward_backward(m, x.double(), g.double())
    ulp_close(out, out64.float(), 8)
    ulp_close(grad, grad64.float(), 16)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_fused_equals_module_fp64(n):
    torch.manual_seed(1)
    m = LocalResponseNorm(n, 0.1, 0.75, 2.0)
    x = torch.randn(2, 7, 3, 4, dtype=torch.float64) * 3
    g = torch.randn_like(x)
    out, grad = forward_backward(lambda t: fused_lrn.fused(m, t), x, g)
    out_ref, grad_ref = forward_backward(m, x, g)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)
    # the forward is the paper's loop formula too
    torch.testing.assert_close(out, reference(x, n, 0.1, 0.75, 2.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("alpha,beta,scale", [(1e-4, 0.75, 30.0), (0.1, 0.75, 3.0), (1e-2, 0.5, 5.0)])
def test_fused_bf16_close_to_fp32(layout, alpha, beta, scale):
    """bf16 in, bf16 out (8 significant bits): within ~1% of the fp32 module on the same bf16 values, and no further
    from it than the plain module run in bf16. The gradient's tolerance is relative to its largest entry: it is a
    difference of two terms, and where they cancel a bf16 result has no relative accuracy (both forms reach
    10-50% elementwise there)."""
    torch.manual_seed(2)
    m = LocalResponseNorm(5, alpha, beta, 2.0)
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    x = (torch.randn(2, 16, 5, 5) * scale).to(torch.bfloat16).to(memory_format=fmt)
    g = torch.randn(2, 16, 5, 5).to(torch.bfloat16)
    out, grad = forward_backward(lambda t: fused_lrn.fused(m, t), x, g)
    assert out.dtype == grad.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=fmt)
    out32, grad32 = forward_backward(m, x.float(), g.float())
    torch.testing.assert_close(out.float(), out32, rtol=1e-2, atol=1e-3 * out32.abs().max().item())
    torch.testing.assert_close(grad.float(), grad32, rtol=1e-2, atol=1e-2 * grad32.abs().max().item())
    out_plain, grad_plain = forward_backward(m, x, g)  # the plain module, all in bf16
    assert (out.float() - out32).abs().max() <= 2 * (out_plain.float() - out32).abs().max()
    assert (grad.float() - grad32).abs().max() <= 2 * (grad_plain.float() - grad32).abs().max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_under_autocast_keeps_the_modules_dtype(dtype):
    """Under bf16 autocast the plain module's ops (no matmul) run in the input's dtype: bf16 in, bf16 out; the
    Function (autocast off inside) returns the same dtype, and the same values to the dtype's accuracy."""
    torch.manual_seed(3)
    m = LocalResponseNorm()
    x = (torch.randn(2, 8, 4, 4) * 10).to(dtype)
    g = torch.randn(2, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grad = forward_backward(lambda t: fused_lrn.fused(m, t), x, g)
        out_ref, grad_ref = forward_backward(m, x, g)
    assert out.dtype == out_ref.dtype == dtype
    assert grad.dtype == grad_ref.dtype == dtype
    if dtype == torch.float32:
        ulp_close(out, out_ref, 8)
        ulp_close(grad, grad_ref, 16)
    else:  # both within bf16 of the fp32 module on the same bf16 values
        out32, grad32 = forward_backward(m, x.float(), g)
        for got, expected in ((out, out32), (out_ref, out32), (grad, grad32), (grad_ref, grad32)):
            torch.testing.assert_close(got.float(), expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item())


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("channels", [2, 3, 9])
@pytest.mark.parametrize("alpha,beta,k", [(1e-4, 0.75, 2.0), (1e-4, 0.5, 2.0), (0.3, 0.75, 1.0)])
def test_fused_equals_torch_lrn(n, channels, alpha, beta, k):
    """From torch's own numbers (`from_torch`): fused == torch.nn.LocalResponseNorm forward and backward, windows
    wider than the channels (C = 2, n = 5) and even n (window [c - n//2, c + (n-1)//2]) included."""
    torch.manual_seed(4)
    theirs = torch.nn.LocalResponseNorm(n, alpha=alpha, beta=beta, k=k)
    m = LocalResponseNorm.from_torch(n, alpha, beta, k)
    x = torch.randn(2, channels, 3, 4, dtype=torch.float64) * 5
    g = torch.randn_like(x)
    out, grad = forward_backward(lambda t: fused_lrn.fused(m, t), x, g)
    out_ref, grad_ref = forward_backward(theirs, x, g)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)


def test_fused_paper_numbers_equal_torch_fp32():
    """The paper's (n, alpha, beta, k) = (5, 1e-4, 0.75, 2) is torch's alpha = 5e-4, in fp32 as the net runs it."""
    torch.manual_seed(5)
    theirs = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    x = torch.randn(2, 16, 5, 5).relu() * 30
    g = torch.randn_like(x)
    out, grad = forward_backward(lambda t: fused_lrn.fused(LocalResponseNorm(), t), x, g)
    out_ref, grad_ref = forward_backward(theirs, x, g)
    ulp_close(out, out_ref, 8)
    ulp_close(grad, grad_ref, 16)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(2, 6, 3, 2), (2, 3, 4), (1, 2, 2, 2)])
def test_lrn_gradcheck(n, shape):
    torch.manual_seed(6)
    x = (torch.randn(shape, dtype=torch.float64) * 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: fused_lrn.lrn(t, n, 0.1, 0.75, 2.0), (x,))


def test_lrn_gradient_second_term_matters():
    """With alpha = 0.1 the cross-channel term -2 alpha beta a T(g b / d) is a sizeable part of the gradient (so the
    checks above test it), and it is exact: dL/da = g d^-beta - 2 alpha beta a T(g a d^(-beta-1))."""
    torch.manual_seed(7)
    n, alpha, beta, k = 3, 0.1, 0.75, 2.0
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64) * 3
    g = torch.randn_like(x)
    _, grad = forward_backward(lambda t: fused_lrn.lrn(t, n, alpha, beta, k), x, g)
    d = k + alpha * fused_lrn.shifted_sum(x.square(), n // 2, (n - 1) // 2)
    first = g * d.pow(-beta)
    assert (grad - first).abs().max() > 0.2 * first.abs().max()
    second = -2 * alpha * beta * x * fused_lrn.shifted_sum(g * x * d.pow(-beta - 1), (n - 1) // 2, n // 2)
    torch.testing.assert_close(grad, first + second, rtol=1e-12, atol=1e-12)


def test_lrn_second_derivative_raises():
    """The backward's in-place ops carry no graph: asked for one (create_graph=True), it raises at once rather than
    let torch.autograd.grad drop the second-order terms without a word (once_differentiable alone would: its
    error node hangs off a copy that x's graph never reaches). The first derivative itself is unchanged."""
    torch.manual_seed(11)
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad((fused_lrn.lrn(x, 3, 0.1, 0.75, 2.0) * x).sum(), x, create_graph=True)
    (grad,) = torch.autograd.grad((fused_lrn.lrn(x, 3, 0.1, 0.75, 2.0) * x).sum(), x)
    theirs = torch.nn.LocalResponseNorm(3, alpha=0.3, beta=0.75, k=2.0)
    (grad_ref,) = torch.autograd.grad((theirs(x) * x).sum(), x)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)


def test_applies():
    assert fused_lrn.applies(LocalResponseNorm())
    assert fused_lrn.applies(LocalResponseNorm.from_torch(3, 1e-3, 0.5, 1.0))
    assert not fused_lrn.applies(torch.nn.LocalResponseNorm(5))
    assert not fused_lrn.applies(torch.nn.ReLU())
    assert not fused_lrn.applies(torch.nn.Conv2d(3, 4, 3))


def test_lrn_3d_input_and_2d_raises():
    torch.manual_seed(8)
    m = LocalResponseNorm(5, 0.1, 0.75, 2.0)
    x = torch.randn(2, 7, 9, dtype=torch.float64) * 3
    g = torch.randn_like(x)
    out, grad = forward_backward(lambda t: fused_lrn.fused(m, t), x, g)
    out_ref, grad_ref = forward_backward(torch.nn.LocalResponseNorm(5, alpha=0.5, beta=0.75, k=2.0), x, g)
    assert out.shape == grad.shape == (2, 7, 9)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="LRN takes"):
        fused_lrn.lrn(torch.randn(4, 7), 5, 1e-4, 0.75, 2.0)


def test_lrn_non_contiguous_input():
    """A transposed (neither NCHW- nor NHWC-contiguous) input: made contiguous, the values and gradient unchanged."""
    torch.manual_seed(9)
    m = LocalResponseNorm(3, 0.1, 0.75, 2.0)
    x = (torch.randn(2, 5, 6, 4, dtype=torch.float64) * 3).transpose(2, 3)
    g = torch.randn(x.shape, dtype=torch.float64)
    out, grad = forward_backward(lambda t: fused_lrn.fused(m, t), x, g)
    out_ref, grad_ref = forward_backward(m, x, g)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_window_sum_forms_agree(n):
    """The banded GEMM (bf16 / fp16) and the shifted slices (fp32 / fp64) compute the same window sum, NCHW and
    NHWC, and the band's rows hold n ones (fewer at the clipped edges)."""
    torch.manual_seed(10)
    before, after = n // 2, (n - 1) // 2
    m = fused_lrn.band(6, before, after, torch.float64, torch.device("cpu"))
    assert m.sum(1).tolist() == [min(5, c + after) - max(0, c - before) + 1 for c in range(6)]
    t = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    expected = fused_lrn.shifted_sum(t, before, after)
    torch.testing.assert_close(expected, torch.einsum("cj,bjhw->bchw", m, t))
    for fmt in (torch.contiguous_format, torch.channels_last):
        tt = t.to(memory_format=fmt)
        torch.testing.assert_close(fused_lrn.banded(tt, before, after), expected)
        torch.testing.assert_close(fused_lrn.banded(tt, before, after, 0.1, 2.0), 2.0 + 0.1 * expected)
        half = fused_lrn.window_sum(tt.to(torch.bfloat16), before, after)
        torch.testing.assert_close(half.float(), expected.float(), rtol=1e-2, atol=2e-2)
