"""A max-pool, alone or followed by a ReLU (the `pool_first` order of a net's ReLU -> max-pool,
alexnet.kernels.forward), as one pair of Triton kernels, forward and backward, for CUDA (issue #21, item 4: max-pool
was 24 % of the d2l step's GPU time on an H200, and its eager kernels ran well below the memory's rate: the first
pool of batch 256, bf16, moves ~310 MB forward (input, output, int64 indices) and as much backward, 0.30 and 0.55 ms
there: 1.0 and 0.56 TB/s of the H200's 4.8).

Forward, one program per block of output elements: the window's maximum, first index on ties and NaN taken as the
maximum (torch's own rule, CPU and CUDA), then the ReLU if asked. Besides the output it stores one int8 per output:
the position of the maximum in its window (0 .. k*k-1), or, with the ReLU, -1 where the ReLU's gradient is zero (a
maximum <= 0; torch's ReLU passes the gradient of a NaN). Eager PyTorch stores an int64 index per output instead,
and runs the ReLU as two more kernels. Expected traffic of the first pool: ~190 MB forward and backward each.

Backward, one program per block of input elements, a gather (no atomics, deterministic): each input element adds the
gradients of the at most ceil(k/s)^2 windows that hold it and chose it, in ascending (row, column) order of the
windows, in fp32, rounded once. That is the order in which torch's backward (CUDA's channels-last gather, the CPU's
scatter) adds them, so in fp32 the gradient equals torch's max_pool2d + relu bit for bit.

Both kernels read the tensors as they lie in memory (channels-last, the trainer's layout on a GPU, or contiguous
NCHW) and write outputs in the same layout. Supported pools: square window and stride, no padding, no dilation,
floor mode (every pool of alexnet.models); `applies` says which. Under TRITON_INTERPRET=1 (set before this module is
imported) the kernels run on CPU tensors through Triton's interpreter, which is how the tests check them without a
GPU (fp32: the interpreter has no bf16). They call no triton.language function that is itself a @triton.jit function
(tl.zeros is; tl.full is not): triton is imported before a test switches the interpreter on, and such a function
would stay compiled-only.
"""

import contextlib
from typing import Any

import torch
from torch import nn

from alexnet.kernels import refuse_graph_of_backward

try:
    import triton
    import triton.language as tl
except ImportError:  # a CPU-only install: the form does not apply (alexnet.training.fast says so)
    triton = None

BLOCK = 1024


def available() -> bool:
    return triton is not None


def window(pool: nn.Module) -> tuple[int, int] | None:
    """(kernel, stride) of a max-pool this form computes, else None."""
    if type(pool) is not nn.MaxPool2d or pool.return_indices or pool.ceil_mode:
        return None

    def square(v: Any) -> int | None:
        v = (v, v) if isinstance(v, int) else tuple(v)
        return v[0] if len(v) == 2 and v[0] == v[1] else None
    k, s = square(pool.kernel_size), square(pool.stride if pool.stride is not None else pool.kernel_size)
    if k is None or s is None or square(pool.padding) != 0 or square(pool.dilation) != 1 or not 1 <= k * k <= 127:
        return None
    return k, s


def applies(pool: nn.Module) -> bool:
    return window(pool) is not None


if triton is not None:
    @triton.jit
    def _position(i, C, H, W, CHANNELS_LAST: tl.constexpr):
        """(n, c, h, w) of flat index i of an N x C x H x W tensor laid out channels-last or NCHW."""
        if CHANNELS_LAST:
            c = i % C
            t = i // C
            w = t % W
            t = t // W
            h = t % H
            n = t // H
        else:
            w = i % W
            t = i // W
            h = t % H
            t = t // H
            c = t % C
            n = t // C
        return n, c, h, w

    @triton.jit
    def _offset(n, c, h, w, C, H, W, CHANNELS_LAST: tl.constexpr):
        if CHANNELS_LAST:
            offset = ((n * H + h) * W + w) * C + c
        else:
            offset = ((n * C + c) * H + h) * W + w
        return offset

    @triton.jit
    def _indices(BLOCK: tl.constexpr, INT64: tl.constexpr):
        """This program's flat indices: int32 arithmetic (a quarter of the instructions of int64's divisions)
        unless the tensor holds 2^31 elements or more."""
        program = tl.program_id(0)
        if INT64:
            program = program.to(tl.int64)
        return program * BLOCK + tl.arange(0, BLOCK)

    @triton.jit
    def _forward(x, out, code, total, C, H, W, OH, OW, K: tl.constexpr, S: tl.constexpr, RELU: tl.constexpr,
                 CODE: tl.constexpr, CHANNELS_LAST: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr):
        i = _indices(BLOCK, INT64)
        mask = i < total
        n, c, oh, ow = _position(i, C, OH, OW, CHANNELS_LAST)
        best = tl.full([BLOCK], float("-inf"), tl.float32)
        arg = tl.full([BLOCK], 0, tl.int32)
        for kh in tl.static_range(K):
            for kw in tl.static_range(K):
                where = _offset(n, c, oh * S + kh, ow * S + kw, C, H, W, CHANNELS_LAST)
                v = tl.load(x + where, mask=mask, other=float("-inf")).to(tl.float32)
                take = (v > best) | (v != v)  # first maximum; NaN wins and propagates, as in torch
                best = tl.where(take, v, best)
                arg = tl.where(take, kh * K + kw, arg)
        if RELU:
            tl.store(out + i, tl.where(best < 0, 0.0, best).to(out.dtype.element_ty), mask=mask)  # NaN stays NaN
            arg = tl.where(best <= 0, -1, arg)  # the ReLU passes a gradient where the maximum is not <= 0
        else:
            tl.store(out + i, best.to(out.dtype.element_ty), mask=mask)
        if CODE:  # for the backward; evaluation needs none
            tl.store(code + i, arg.to(tl.int8), mask=mask)

    @triton.jit
    def _backward(grad_out, code, grad_in, total, C, H, W, OH, OW, K: tl.constexpr, S: tl.constexpr,
                  CHANNELS_LAST: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr):
        i = _indices(BLOCK, INT64)
        mask = i < total
        n, c, h, w = _position(i, C, H, W, CHANNELS_LAST)
        R: tl.constexpr = (K + S - 1) // S  # windows per axis that can hold one element
        acc = tl.full([BLOCK], 0.0, tl.float32)
        for a in tl.static_range(R):
            oh = h // S - (R - 1) + a  # ascending: the order torch adds in
            dh = h - oh * S
            row = mask & (oh >= 0) & (oh < OH) & (dh < K)
            for b in tl.static_range(R):
                ow = w // S - (R - 1) + b
                dw = w - ow * S
                ok = row & (ow >= 0) & (ow < OW) & (dw < K)
                where = _offset(n, c, tl.maximum(oh, 0), tl.maximum(ow, 0), C, OH, OW, CHANNELS_LAST)
                chose = tl.load(code + where, mask=ok, other=-1).to(tl.int32) == dh * K + dw
                # one mask for the window's loads (vector loads); where, not a product: a window that did not
                # choose this element adds 0 even where its gradient is inf or NaN
                g = tl.load(grad_out + where, mask=ok, other=0.0).to(tl.float32)
                acc += tl.where(chose, g, 0.0)
        tl.store(grad_in + i, acc.to(grad_in.dtype.element_ty), mask=mask)


def layout(x: torch.Tensor) -> tuple[torch.memory_format, bool]:
    """The layout to work in: channels-last where x is (the trainer's on a GPU), else contiguous NCHW."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last, True
    return torch.contiguous_format, False


def grid(total: int, block: int = BLOCK) -> tuple[int]:
    return (triton.cdiv(total, block),)


def needs_int64(total: int, block: int = BLOCK) -> bool:
    return total + block >= 2**31  # the last program's indices run up to `block` past the end


def on_device(device: torch.device):
    """Launch on the tensors' own GPU (Triton launches on the current one; a run on cuda:1 sets none)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class MaxPool(torch.autograd.Function):
    """max_pool2d(x, k, s), and its ReLU if `relu`, with an int8 arg-max code saved for backward (module
    docstring)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: int, s: int, relu: bool) -> torch.Tensor:
        fmt, channels_last = layout(x)
        x = x.contiguous(memory_format=fmt)
        n, c, h, w = x.shape
        oh, ow = (h - k) // s + 1, (w - k) // s + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"a {k}x{k} max-pool does not fit a {h}x{w} input")
        out = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device, memory_format=fmt)
        keep = ctx.needs_input_grad[0]  # evaluation writes no codes
        code = torch.empty((n, c, oh, ow) if keep else (1, 1, 1, 1), dtype=torch.int8, device=x.device,
                           memory_format=fmt)
        if out.numel():
            with on_device(x.device):
                _forward[grid(out.numel())](x, out, code, out.numel(), c, h, w, oh, ow, K=k, S=s, RELU=relu,
                                            CODE=keep, CHANNELS_LAST=channels_last, INT64=needs_int64(x.numel()),
                                            BLOCK=BLOCK)
        ctx.save_for_backward(code)
        ctx.geometry = (x.shape, x.dtype, k, s, fmt, channels_last)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        refuse_graph_of_backward("the Triton max-pool", "use torch's (train.fused_pool: false)")
        (code,) = ctx.saved_tensors
        shape, dtype, k, s, fmt, channels_last = ctx.geometry
        grad = grad.contiguous(memory_format=fmt)
        grad_in = torch.empty(shape, dtype=dtype, device=grad.device, memory_format=fmt)
        n, c, h, w = shape
        if grad_in.numel():
            with on_device(grad.device):
                _backward[grid(grad_in.numel())](grad, code, grad_in, grad_in.numel(), c, h, w, code.shape[2],
                                                 code.shape[3], K=k, S=s, CHANNELS_LAST=channels_last,
                                                 INT64=needs_int64(grad_in.numel()), BLOCK=BLOCK)
        return grad_in, None, None, None


KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # the kernels compare and add in fp32


def max_pool(pool: nn.Module, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """pool(x), or relu(pool(x)), for a max-pool that `applies`, as the Triton kernels; x is N x C x H x W.
    Another dtype (fp64: the kernels would round it to fp32) runs torch's own pool."""
    if x.dtype not in KERNEL_DTYPES:
        out = pool(x)
        return torch.relu(out) if relu else out
    k, s = window(pool)  # type: ignore[misc]
    return MaxPool.apply(x, k, s, relu)
