"""A net's forward pass in its execution forms (issue #21): the same layers in the same order as `ConvNet.forward`,
with the rewrites the runtime chose, each exact or equal to rounding (below) and each computed from the plain
layer's own parameters (the modules, their `state_dict` and `alexnet summary` stay the book's and the paper's).

* `fold_conv1`: the first convolution in its space-to-depth form (`alexnet.kernels.conv1`).
* `pool_first`: a ReLU followed by a max-pool runs as the max-pool, then the ReLU. ReLU is monotone, so
  max(relu(a), relu(b)) = relu(max(a, b)) exactly, and the ReLU then reads and writes the pooled tensor (3x3
  stride-2 pooling: ~4.3x fewer elements) instead of the convolution's output, forward and backward. The
  gradients are bit-identical too: a window whose maximum is > 0 routes its gradient to the same element in both
  orders (ReLU changes no positive value, so neither the maximum nor the first-index tie-break moves), and a window
  whose maximum is <= 0 routes it to an element whose ReLU gradient is 0 in one order and masks it with the ReLU's
  zero gradient in the other; the elements that do receive gradient add the same terms in the same order.
  (A tanh does not qualify: rounding makes it flat where its input is not, which would move the arg-max.)
* `fused_pool`: each max-pool as one pair of Triton kernels on CUDA (`alexnet.kernels.pool`): int8 arg-max codes
  instead of int64 indices; with `pool_first` the ReLU runs inside it. Bit-equal to torch's in fp32.
* `bias_after_pool`: a biased convolution followed by ReLU -> max-pool runs without its bias, and the bias is added
  to the pooled tensor before the ReLU: conv -> max-pool -> + bias -> ReLU. A per-channel constant commutes with
  the window's maximum, and rounding is monotone, so max(round(x_k + b)) = round(max(x_k) + b): the values are
  those of torch's CUDA convolution, which adds its bias in a kernel of its own after cuDNN (on a CPU oneDNN adds
  it inside the convolution before rounding: within an ulp). The add and the bias gradient's sum then touch the
  pooled tensor (~4.3x fewer elements) instead of the convolution's output; on the H200 those two kernels took
  0.77 ms of a 5.98 ms d2l step (docs/performance.md, section 7). The gradients equal the plain ones but for the
  bias gradient's order of summation, and an arg-max that rounding x_k + b would have tied (torch's tie-break then
  picks the first element of the tie, this form the larger x_k).
* `fused_lrn`: the paper's local response normalisation as one autograd Function with its analytic backward
  (`alexnet.kernels.lrn`): 5 kernels forward and 6 backward where the plain module runs ~13 and ~20, equal to it
  within a few ulp in fp32 (bf16: one rounding of the window sum instead of n).
* `triton_lrn`: a ReLU followed by the paper's LRN (or an LRN alone) as one pair of Triton kernels on CUDA
  (`alexnet.kernels.relu_lrn`): one kernel forward and one backward, x the only tensor saved, sums and powers in
  fp32; it takes the place of `fused_lrn` where both are asked for.
"""

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.kernels import conv1, lrn, pool, relu_lrn

# (what, index of its first layer): "layer" | "fold" | "pool_relu" | "pool_relu_fused" | "pool_fused" | "lrn"
# | "relu_lrn_triton" | "lrn_triton" | "conv_nobias" | "fold_nobias" | "pool_bias_relu" | "pool_fused_bias_relu"
# (the last two: the ReLU's index; the bias is the convolution's before it)
Step = tuple[str, int]


def pool_follows_relu(layers: Sequence[nn.Module], i: int) -> bool:
    """Whether layers[i] is a ReLU and layers[i + 1] a max-pool whose indices nobody asked for."""
    return (i + 1 < len(layers) and type(layers[i]) is nn.ReLU and type(layers[i + 1]) is nn.MaxPool2d
            and not layers[i + 1].return_indices)


def lrn_follows_relu(layers: Sequence[nn.Module], i: int) -> bool:
    """Whether layers[i] is a ReLU and layers[i + 1] the paper's LRN."""
    return i + 1 < len(layers) and type(layers[i]) is nn.ReLU and relu_lrn.applies(layers[i + 1])


def bias_defers(layers: Sequence[nn.Module], i: int) -> bool:
    """Whether layers[i] is a biased, zero-padded convolution followed by a ReLU and a max-pool (`pool_follows_relu`):
    its bias can be added after the pool."""
    conv = layers[i]
    return (type(conv) is nn.Conv2d and conv.bias is not None and conv.padding_mode == "zeros"
            and pool_follows_relu(layers, i + 1))


def plan(layers: Sequence[nn.Module], *, fold_first: bool = False, pool_first: bool = False,
         fused_lrn: bool = False, fused_pool: bool = False, bias_after_pool: bool = False,
         triton_lrn: bool = False) -> list[Step]:
    """The steps that run `layers` in order: each plain layer, or a rewrite that stands for one or two layers."""
    steps: list[Step] = []
    i = 0
    while i < len(layers):
        defer = bias_after_pool and bias_defers(layers, i)
        if i == 0 and fold_first and conv1.applies(layers[0]):
            steps.append(("fold_nobias" if defer else "fold", i))
        elif defer:
            steps.append(("conv_nobias", i))
        elif bias_after_pool and i > 0 and bias_defers(layers, i - 1):  # the ReLU of a deferred bias, and its pool
            steps.append(("pool_fused_bias_relu" if fused_pool and pool.applies(layers[i + 1]) else "pool_bias_relu",
                          i))
            i += 1
        elif pool_first and pool_follows_relu(layers, i):
            steps.append(("pool_relu_fused" if fused_pool and pool.applies(layers[i + 1]) else "pool_relu", i))
            i += 1  # the max-pool is part of this step
        elif triton_lrn and lrn_follows_relu(layers, i):
            steps.append(("relu_lrn_triton", i))
            i += 1  # the LRN is part of this step
        elif triton_lrn and relu_lrn.applies(layers[i]):
            steps.append(("lrn_triton", i))
        elif fused_pool and pool.applies(layers[i]):
            steps.append(("pool_fused", i))
        elif fused_lrn and lrn.applies(layers[i]):
            steps.append(("lrn", i))
        else:
            steps.append(("layer", i))
        i += 1
    return steps


def run(layers: Sequence[nn.Module], steps: list[Step], x: torch.Tensor) -> torch.Tensor:
    """`layers` applied to x as `plan` laid them out."""
    for what, i in steps:
        if what == "fold":
            x = conv1.folded(cast(nn.Conv2d, layers[i]), x)  # plan checked conv1.applies
        elif what == "fold_nobias":
            x = conv1.folded(cast(nn.Conv2d, layers[i]), x, bias=False)
        elif what == "conv_nobias":
            conv = cast(nn.Conv2d, layers[i])
            x = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)  # zero padding
        elif what in ("pool_bias_relu", "pool_fused_bias_relu"):
            x = layers[i + 1](x) if what == "pool_bias_relu" else pool.max_pool(layers[i + 1], x)
            bias = cast(torch.Tensor, cast(nn.Conv2d, layers[i - 1]).bias)
            x = torch.relu_(x + bias.to(x.dtype).view(1, -1, 1, 1))  # the convolution's dtype (autocast's)
        elif what == "pool_relu":
            x = torch.relu_(layers[i + 1](x))  # in place: max-pool's backward keeps its input and indices only
        elif what == "pool_relu_fused":
            x = pool.max_pool(layers[i + 1], x, relu=True)
        elif what == "pool_fused":
            x = pool.max_pool(layers[i], x)
        elif what == "lrn":
            x = lrn.fused(layers[i], x)
        elif what == "relu_lrn_triton":
            x = relu_lrn.relu_lrn(layers[i + 1], x)
        elif what == "lrn_triton":
            x = relu_lrn.relu_lrn(layers[i], x, relu=False)
        else:
            x = layers[i](x)
    return x


def _features(model: nn.Module) -> list[nn.Module]:
    features = getattr(model, "features", None)
    return list(features) if isinstance(features, nn.Sequential) else []


def has_pool_after_relu(model: nn.Module) -> bool:
    layers = _features(model)
    return any(pool_follows_relu(layers, i) for i in range(len(layers)))


def has_bias_before_pool(model: nn.Module) -> bool:
    """Whether the net's features hold a biased convolution -> ReLU -> max-pool (what `bias_after_pool` moves)."""
    layers = _features(model)
    return any(bias_defers(layers, i) for i in range(len(layers)))


def has_fusable_pool(model: nn.Module) -> bool:
    """Whether the net's features hold a max-pool `fused_pool` computes."""
    return any(pool.applies(layer) for layer in _features(model))


def has_lrn(model: nn.Module) -> bool:
    """Whether the net's features hold the paper's LRN (the layer `fused_lrn` and `triton_lrn` rewrite)."""
    return any(lrn.applies(layer) for layer in _features(model))


class FastForward(nn.Module):
    """`model` (a net with alexnet.models' layout: features -> avgpool -> flatten -> forward_head) run in its
    execution forms. It holds `model` (and so its parameters, for DDP and the optimizer), changes nothing of it
    (torch.compile traces it as it is) and adds nothing: save and load `model` itself."""

    def __init__(self, model: nn.Module, *, fold_conv1: bool = True, pool_first: bool = False,
                 fused_lrn: bool = False, fused_pool: bool = False, bias_after_pool: bool = False,
                 triton_lrn: bool = False):
        super().__init__()
        if fold_conv1 and conv1.first_conv(model) is None:
            raise ValueError("the model's first layer is not a strided square convolution (features[0])")
        if pool_first and not has_pool_after_relu(model):
            raise ValueError("the model has no ReLU followed by a max-pool in its features")
        if fused_pool and not has_fusable_pool(model):
            raise ValueError("the model has no max-pool the fused kernels compute (square, unpadded, floor mode)")
        if (fused_lrn or triton_lrn) and not has_lrn(model):
            raise ValueError("the model has no local response normalisation in its features")
        if bias_after_pool and not has_bias_before_pool(model):
            raise ValueError("the model has no biased convolution followed by a ReLU and a max-pool")
        self.model = model
        m: Any = model  # typed loosely: kernels import no models
        self.steps = plan(m.features, fold_first=fold_conv1, pool_first=pool_first, fused_lrn=fused_lrn,
                          fused_pool=fused_pool, bias_after_pool=bias_after_pool, triton_lrn=triton_lrn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m: Any = self.model
        x = run(m.features, self.steps, x)
        return m.forward_head(m.flatten(m.avgpool(x)))

    def extra_repr(self) -> str:
        return "steps=" + ", ".join(f"{what}@{i}" for what, i in self.steps if what != "layer")

