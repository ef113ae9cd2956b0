"""Local response normalisation (the paper's, alexnet.models.lrn) as one autograd Function with its analytic
backward, an exact rewrite of the plain module's chain of element-wise ops:

    S[c] = sum_{j = c - n//2}^{c + (n-1)//2} a[j]^2        (channels outside 0 .. C-1 count as zero)
    d    = k + alpha * S,      b = a * d^-beta

and, with g = dL/db and T the transposed window sum (channel j collects the c whose window holds j:
c in [j - (n-1)//2, j + n//2]; T = the window sum for odd n):

    dL/da[j] = g[j] * d[j]^-beta  -  2 * alpha * beta * a[j] * T(g * b / d)[j]

The plain module runs ~13 kernels forward (square, pad, n-1 shifted adds, scale, shift, rsqrt, sqrt, rsqrt,
two products) and autograd saves several of their results and runs ~20 backward; this one runs 5 forward and 6
backward and saves two tensors: `a` (the ReLU before it saves the same tensor: no new memory) and `d`.

The window sums: in bf16 / fp16 one banded C x C matrix product over the channel axis (addmm on the NHWC rows,
baddbmm on NCHW), which accumulates in fp32 inside the GEMM, adds k and scales by alpha in its epilogue (one
rounding where the plain module rounds at each of its n adds); in fp32 / fp64 the n shifted slices added in
place (no TF32 on a GPU, the plain module's own arithmetic: equal to it within a few ulp). Each form works in the
input's dtype, as the plain module does under autocast (bf16 in, bf16 out); autocast is off inside.

Measured on the 2-core development CPU (Xeon, AMX; torch 2.14, ms per call, best of 5; forward+backward in
benchmarks/lrn.py), the window sum alone:

    shape (64, 96, 55, 55)  fp32: shifted slices 103, in place 33, cumsum (fp32) 80, matmul 32, avg_pool3d 140,
                                  conv3d 330;  bf16: 85, 49, 93, 13 (matmul), avg_pool3d not implemented, 98
    shape (64, 256, 27, 27) fp32: 69, 21, 57, 34 (NCHW; 94 NHWC), 91, 212;  bf16: 100, 104, 166, 56 NCHW / 10
                                  NHWC, -, 208

A fresh 74 MB tensor costs ~17 ms on that CPU (glibc maps it and the kernel zeroes its pages on first touch), as
much as one pass over it: the forms below write into buffers they own (`out=`, in-place ops) and allocate only
what they return or save. `d^-beta` is one `pow`: the plain module's rsqrt(d) * rsqrt(sqrt(d)) for beta = 0.75
is three passes and a temporary, 61 ms against pow's 67 ms (fp32) and 64 against 52 ms (bf16); on a GPU every
pass costs memory traffic, so one pow wins there too.

`fused(lrn, x)` applies it with a module's own size, alpha, beta and k.
"""

import functools
from typing import Any

import torch
from torch import nn

from alexnet.kernels import refuse_graph_of_backward

HALF = (torch.bfloat16, torch.float16)


def applies(module: nn.Module) -> bool:
    """Whether `module` is the paper's LRN (alexnet.models.lrn.LocalResponseNorm; read by its class name and
    numbers, kernels import no models). torch's own `nn.LocalResponseNorm` is not: its alpha is per channel."""
    numbers = [getattr(module, name, None) for name in ("size", "alpha", "beta", "k")]
    return (type(module).__name__ == "LocalResponseNorm" and not isinstance(module, nn.LocalResponseNorm)
            and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers)
            and int(numbers[0]) >= 1)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=64)
def band(channels: int, before: int, after: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The C x C matrix M with M[c, j] = 1 where c - before <= j <= c + after: (M @ t)[c] is t's window sum."""
    i = torch.arange(channels, device=device)
    offset = i[None, :] - i[:, None]
    return ((offset >= -before) & (offset <= after)).to(dtype)


def shifted_sum(t: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """sum_{j = c - before}^{c + after} t[:, j], clipped at the edges, as shifted slices added in place."""
    channels = t.shape[1]
    out = t.clone()
    for offset in range(1, min(before, channels - 1) + 1):
        out[:, offset:].add_(t[:, :channels - offset])  # not +=: its __setitem__ copies the view onto itself
    for offset in range(1, min(after, channels - 1) + 1):
        out[:, :channels - offset].add_(t[:, offset:])
    return out


def banded(t: torch.Tensor, before: int, after: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """shift + scale * (t's window sum [c - before, c + after]) as one GEMM with the band (a new tensor, in t's
    memory format): NHWC rows times the band's transpose, or the band times each NCHW image."""
    channels = t.shape[1]
    m = band(channels, before, after, t.dtype, t.device)
    affine = scale != 1.0 or shift != 0.0
    bias = torch.full((1, 1, 1), shift, dtype=t.dtype, device=t.device)
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        rows = t.permute(0, 2, 3, 1).reshape(-1, channels)
        out = torch.addmm(bias[0], rows, m.T, alpha=scale) if affine else rows @ m.T
        return out.view(t.shape[0], t.shape[2], t.shape[3], channels).permute(0, 3, 1, 2)
    images, weights = t.reshape(t.shape[0], channels, -1), m.expand(t.shape[0], -1, -1)
    out = torch.baddbmm(bias, weights, images, alpha=scale) if affine else torch.bmm(weights, images)
    return out.view(t.shape)


def window_sum(t: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """t's window sum [c - before, c + after] over the channels, clipped: a new tensor."""
    return banded(t, before, after) if t.dtype in HALF else shifted_sum(t, before, after)


def denominator(sq: torch.Tensor, before: int, after: int, alpha: float, k: float) -> torch.Tensor:
    """k + alpha * (sq's window sum): a new tensor (half types: scaled and shifted in the GEMM's epilogue)."""
    if sq.dtype in HALF:
        return banded(sq, before, after, alpha, k)
    d = shifted_sum(sq, before, after)
    return torch.add(torch.tensor(k, dtype=d.dtype), d, alpha=alpha, out=d)  # one pass: k + alpha * S


class LRNFunction(torch.autograd.Function):
    """b = a * (k + alpha * S)^-beta with the analytic backward; `lrn(x, size, alpha, beta, k)` applies it."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        before, after = size // 2, (size - 1) // 2
        with torch.autocast(a.device.type, enabled=False):
            b = torch.mul(a, a)  # a^2, then reused for d^-beta and b: the one buffer this returns
            d = denominator(b, before, after, alpha, k)
            torch.pow(d, -beta, out=b)
            b.mul_(a)
        # Saved: a (the ReLU before it holds the same tensor) and d, from which the backward's d^-beta and
        # g * b / d = g * a * d^-beta / d follow in three passes; saving d^-beta instead would need d^(1/beta)
        # (a pow) for the 1/d, and saving both would cost a tensor to save one pass.
        ctx.save_for_backward(a, d)
        ctx.window, ctx.alpha, ctx.beta = (before, after), alpha, beta
        return b

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        refuse_graph_of_backward("the fused LRN", "use the plain module (train.fused_lrn: false)")
        a, d = ctx.saved_tensors
        before, after = ctx.window
        with torch.autocast(g.device.type, enabled=False):
            grad = torch.pow(d, -ctx.beta)
            grad.mul_(g)  # g * d^-beta
            u = torch.mul(grad, a).div_(d)  # g * b / d
            t = window_sum(u, after, before)  # T: the window mirrored
            del u
            grad.addcmul_(a, t, value=-2.0 * ctx.alpha * ctx.beta)
        return grad, None, None, None, None


def lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The paper's LRN of x (B, C, ...) over its channel axis, in one Function (this file's docstring)."""
    if x.dim() < 3:
        raise ValueError(f"LRN takes (B, C, ...) input, got shape {tuple(x.shape)}")
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    out: torch.Tensor = LRNFunction.apply(x, int(size), float(alpha), float(beta), float(k))
    return out


def fused(lrn_module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`lrn_module(x)` as one Function, from the module's own numbers."""
    m: Any = lrn_module
    return lrn(x, m.size, m.alpha, m.beta, m.k)
