"""The first convolution of the AlexNets (11x11, stride 4) in its space-to-depth form, an exact rewrite:

    y = conv2d(x, w, stride=s, padding=p)                        # (B, C, H, W) -> (B, O, Ho, Wo)
      = conv2d(fold(pad(x)), fold(pad(w)), stride=1)             # (B, C*s*s, L/s, L/s) -> (B, O, Ho, Wo)

`pad(w)` zero-pads the k x k kernel to kf*s (kf = ceil(k/s): 12 for 11, stride 4) and `fold` moves each s x s
block of pixels into channels, so output pixel o reads folded rows o .. o+kf-1, i.e. padded input rows
o*s .. o*s + kf*s - 1: the same window as the strided convolution, plus taps whose weight is zero. The input is
padded by p at the top/left and padded or cropped at the bottom/right to L = (Ho + kf - 1) * s rows.

For the d2l net (1 x 224 x 224, p = 1): a 16-channel 56 x 56 input and a 96 x 16 x 3 x 3 kernel, which cuDNN runs
as an implicit GEMM on tensor cores (reduction 144 deep), where the plain form (reduction 121 deep over one
channel, stride 4) takes a generic kernel and an NCHW -> NHWC conversion (issue #21's profile). The gradient of
the plain weight flows back through `fold(pad(.))`: the module's parameter is still the 96 x 1 x 11 x 11 one.

`alexnet.kernels.forward.FastForward(model)` runs a net with its first such convolution in this form
(tests/test_kernels.py holds it equal to the plain net, forward and backward).
"""

import torch
import torch.nn.functional as F
from torch import nn


def applies(conv: nn.Module) -> bool:
    """Whether `conv` has the form this rewrite covers: a plain zero-padded square strided convolution."""
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and conv.stride[0] == conv.stride[1] > 1 and conv.kernel_size[0] == conv.kernel_size[1] >= conv.stride[0]
            and conv.padding[0] == conv.padding[1])


def fold(t: torch.Tensor, s: int) -> torch.Tensor:
    """(N, C, s*h, s*w) -> (N, C*s*s, h, w): channel c*s*s + r*s + q holds pixel (r, q) of each s x s block."""
    n, c, lh, lw = t.shape
    return t.reshape(n, c, lh // s, s, lw // s, s).permute(0, 1, 3, 5, 2, 4).reshape(n, c * s * s, lh // s, lw // s)


def conv2d_space_to_depth(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                          padding: int) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, stride, padding)` computed as a stride-1 convolution over folded x."""
    s, k = stride, weight.shape[-1]
    kf = -(-k // s)
    h, w = x.shape[-2:]
    ho, wo = (h + 2 * padding - k) // s + 1, (w + 2 * padding - k) // s + 1
    lh, lw = (ho + kf - 1) * s, (wo + kf - 1) * s
    # (left, right, top, bottom); a negative right/bottom pad crops rows no output reads
    padded = F.pad(x, (padding, lw - w - padding, padding, lh - h - padding))
    folded = fold(padded, s)
    if x.is_contiguous(memory_format=torch.channels_last):
        folded = folded.contiguous(memory_format=torch.channels_last)
    kernel = fold(F.pad(weight, (0, kf * s - k, 0, kf * s - k)), s)
    return F.conv2d(folded, kernel, bias)


def folded(conv: nn.Conv2d, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """`conv(x)` in the folded form, from the module's own weight and bias (without it if not `bias`)."""
    return conv2d_space_to_depth(x, conv.weight, conv.bias if bias else None, conv.stride[0], int(conv.padding[0]))


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    """The net's first layer, `model.features[0]`, when it is a convolution the rewrite covers and the net has the
    layout of alexnet.models' nets (features -> avgpool -> flatten -> forward_head); else None (e.g. `small`'s
    3x3 stride-1 conv1, or a module of the user's own)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or not len(features):
        return None
    if not all(hasattr(model, name) for name in ("avgpool", "flatten", "forward_head")):
        return None
    conv = features[0]
    return conv if isinstance(conv, nn.Conv2d) and applies(conv) else None  # applies: exactly nn.Conv2d
