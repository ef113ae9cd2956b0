"""The paper's ReLU -> local response normalisation (alexnet.models.lrn), or the LRN alone, as one pair of Triton
kernels, forward and backward, for CUDA (issue #22, item 4: the paper net's step ran at 58 TFLOP/s on an H200
against the d2l net's 158, its LRN as several element-wise kernels each way).

With a = relu(x) (or x), S[c] = sum_{j = c - n//2}^{c + (n-1)//2} a[j]^2 (channels outside 0 .. C-1 count as
zero) and d = k + alpha * S, the forward is b = a * d^-beta, and the backward (alexnet.kernels.lrn derives it)

    dL/da[j] = g[j] * d[j]^-beta - 2 * alpha * beta * a[j] * sum_{c = j - (n-1)//2}^{j + n//2} g[c] a[c] d[c]^(-beta-1)

then dL/dx[j] = dL/da[j] where x[j] is not <= 0 (torch's ReLU: a NaN passes its gradient), else 0.

One program per block of elements, each element on its own: the forward loads its n channel neighbours, the backward
the n neighbours of each of the n windows that hold it (2n - 1 distinct ones, from the cache) and recomputes their
d, so the only tensor saved for backward is x (the convolution's output, in the nets here), and nothing else is
written: forward reads x and writes b, backward reads x and g and writes dL/dx, ~5 passes over the tensor in all.
The plain ReLU + LRN runs ~14 kernels forward and ~21 backward; the analytic Function (alexnet.kernels.lrn) 6 and 7
with a ReLU of its own, and saves d. Sums and powers are fp32 whatever the tensor's dtype, rounded once to it: in
fp32 within a few ulp of the plain module, whose window sum it adds in the same order (on a GPU each add fused with
its square into one multiply-add); in bf16 closer to the exact value than the plain module under autocast, which
rounds each of its n adds to bf16. The paper's beta = 0.75 takes its powers from the hardware's reciprocal square
root; any other beta from exp2 and log2, and log2 is a long polynomial on NVIDIA GPUs: for sm_90 the backward
compiles to 1,336 instructions per thread (8 elements) with beta = 0.75 and 2,552 without, the forward to 528 and
696 (benchmarks/kernel_sass.py; the max-pool's forward: 784).

Both kernels read the tensors as they lie (channels-last, the trainer's layout on a GPU, where a window's channels
are adjacent in memory, or contiguous NCHW) and write in the same layout. Under TRITON_INTERPRET=1 (set before this
module is imported) they run on CPU tensors through Triton's interpreter, as alexnet.kernels.pool's do, which is
how the tests check them without a GPU; like those they call no triton.language function that is itself a
@triton.jit function.
"""

from typing import Any

import torch
from torch import nn

from alexnet.kernels import lrn, pool, refuse_graph_of_backward

try:
    import triton
    import triton.language as tl
except ImportError:  # a CPU-only install: the form does not apply (alexnet.training.fast says so)
    triton = None

BLOCK = 1024
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # the kernels add and raise to powers in fp32


def available() -> bool:
    return triton is not None


def applies(module: nn.Module) -> bool:
    """Whether `module` is the paper's LRN, which these kernels compute (alexnet.kernels.lrn.applies)."""
    return lrn.applies(module)


if triton is not None:
    @triton.jit
    def _indices(BLOCK: tl.constexpr, INT64: tl.constexpr):
        """This program's flat indices (int32 unless the tensor holds 2^31 elements or more)."""
        program = tl.program_id(0)
        if INT64:
            program = program.to(tl.int64)
        return program * BLOCK + tl.arange(0, BLOCK)

    @triton.jit
    def _channel(i, C, HW, CHANNELS_LAST: tl.constexpr):
        """The channel of flat index i, and the distance in memory from one channel to the next."""
        if CHANNELS_LAST:
            c = i % C
            step = 1
        else:
            c = (i // HW) % C
            step = HW
        return c, step

    @triton.jit
    def _load(ptr, i, c, t, C, step, mask, RELU: tl.constexpr):
        """The element t channels away from flat index i (channel c) in fp32, 0 outside channels 0 .. C-1; through
        the ReLU if RELU."""
        ok = mask & (c + t >= 0) & (c + t < C)
        v = tl.load(ptr + i + t * step, mask=ok, other=0.0).to(tl.float32)
        if RELU:
            v = tl.where(v < 0, 0.0, v)  # NaN stays NaN, as in torch's ReLU
        return v

    @triton.jit
    def _powers(d, beta, THREE_QUARTERS: tl.constexpr):
        """(d^-beta, d^-beta / d) in fp32: for the paper's beta = 0.75 from the hardware's reciprocal square root,
        d^-1/2 * (d^-1/2)^1/2 and that times (d^-1/2)^2; else as exp2(e * log2 d), whose log2 is a long
        polynomial on NVIDIA GPUs (no special-function unit)."""
        if THREE_QUARTERS:
            r = tl.rsqrt(d)
            p = r * tl.sqrt(r)
            q = p * r * r
        else:
            lg = tl.log2(d)
            p = tl.exp2(-beta * lg)
            q = tl.exp2((-beta - 1.0) * lg)
        return p, q

    @triton.jit
    def _forward(x, out, total, C, HW, alpha, beta, k, BEFORE: tl.constexpr, AFTER: tl.constexpr,
                 THREE_QUARTERS: tl.constexpr, RELU: tl.constexpr, CHANNELS_LAST: tl.constexpr, INT64: tl.constexpr,
                 BLOCK: tl.constexpr):
        i = _indices(BLOCK, INT64)
        mask = i < total
        c, step = _channel(i, C, HW, CHANNELS_LAST)
        s = tl.full([BLOCK], 0.0, tl.float32)
        for t in tl.static_range(BEFORE + AFTER + 1):  # ascending channels: the plain module's order of adds
            v = _load(x, i, c, t - BEFORE, C, step, mask, RELU)
            s += v * v
        p, _ = _powers(k + alpha * s, beta, THREE_QUARTERS)
        b = _load(x, i, c, 0, C, step, mask, RELU) * p
        tl.store(out + i, b.to(out.dtype.element_ty), mask=mask)

    @triton.jit
    def _backward(x, g, grad_x, total, C, HW, alpha, beta, k, BEFORE: tl.constexpr, AFTER: tl.constexpr,
                  THREE_QUARTERS: tl.constexpr, RELU: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                  INT64: tl.constexpr, BLOCK: tl.constexpr, POSITIVE_K: tl.constexpr):
        i = _indices(BLOCK, INT64)
        mask = i < total
        c, step = _channel(i, C, HW, CHANNELS_LAST)
        own = tl.full([BLOCK], 0.0, tl.float32)    # g[j] * d[j]^-beta
        cross = tl.full([BLOCK], 0.0, tl.float32)  # sum over the windows that hold j of g * a * d^-beta / d
        for t in tl.static_range(BEFORE + AFTER + 1):  # the window of channel c + o holds c
            o = t - AFTER
            s = tl.full([BLOCK], 0.0, tl.float32)
            for u in tl.static_range(BEFORE + AFTER + 1):
                v = _load(x, i, c, o + u - BEFORE, C, step, mask, RELU)
                s += v * v
            p, q = _powers(k + alpha * s, beta, THREE_QUARTERS)
            gc = _load(g, i, c, o, C, step, mask, False)
            if o == 0:
                own = gc * p
            ac = _load(x, i, c, o, C, step, mask, RELU)
            if POSITIVE_K:  # d >= k > 0: q is finite, and a window past the edge adds 0 * 0 * q = 0
                cross += gc * ac * q
            else:  # no 0 * inf from a window past the edge
                cross += tl.where(mask & (c + o >= 0) & (c + o < C), gc * ac * q, 0.0)
        grad = own - 2.0 * alpha * beta * _load(x, i, c, 0, C, step, mask, RELU) * cross
        if RELU:
            grad = tl.where(tl.load(x + i, mask=mask, other=0.0) <= 0, 0.0, grad)
        tl.store(grad_x + i, grad.to(grad_x.dtype.element_ty), mask=mask)


class ReluLRN(torch.autograd.Function):
    """lrn(relu(x)), or lrn(x), with the paper's size, alpha, beta, k; saves x only (module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                relu: bool) -> torch.Tensor:
        fmt, channels_last = pool.layout(x)
        x = x.contiguous(memory_format=fmt)
        out = torch.empty_like(x, memory_format=fmt)
        ctx.numbers = (x.shape[1], x.shape[2] * x.shape[3], float(alpha), float(beta), float(k))
        ctx.flags = {"BEFORE": size // 2, "AFTER": (size - 1) // 2, "THREE_QUARTERS": beta == 0.75, "RELU": relu,
                     "CHANNELS_LAST": channels_last, "INT64": pool.needs_int64(x.numel(), BLOCK), "BLOCK": BLOCK}
        ctx.fmt = fmt
        if x.numel():
            with pool.on_device(x.device):
                _forward[pool.grid(x.numel(), BLOCK)](x, out, x.numel(), *ctx.numbers, **ctx.flags)
        ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        refuse_graph_of_backward("the Triton ReLU + LRN", "use train.triton_lrn: false")
        (x,) = ctx.saved_tensors
        g = g.contiguous(memory_format=ctx.fmt)
        grad_x = torch.empty_like(x, memory_format=ctx.fmt)
        if x.numel():
            with pool.on_device(x.device):
                _backward[pool.grid(x.numel(), BLOCK)](x, g, grad_x, x.numel(), *ctx.numbers, **ctx.flags,
                                                       POSITIVE_K=ctx.numbers[-1] > 0)
        return grad_x, None, None, None, None, None


def relu_lrn(lrn_module: nn.Module, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """`lrn_module(relu(x))` (or `lrn_module(x)`) for the paper's LRN, as the Triton kernels; x is N x C x H x W.
    Another dtype (fp64: the kernels would round it to fp32) or rank runs the analytic Function
    (alexnet.kernels.lrn) after torch's ReLU."""
    m: Any = lrn_module
    if x.dtype not in KERNEL_DTYPES or x.dim() != 4:
        return lrn.fused(m, torch.relu(x) if relu else x)
    out: torch.Tensor = ReluLRN.apply(x, int(m.size), float(m.alpha), float(m.beta), float(m.k), relu)
    return out
