"""Faster execution forms of the nets' layers, kept out of the models' text (../shared/STYLE.md, "Fast paths
behind plain ones"): each computes exactly what the plain layer computes, from the plain layer's own parameters,
so the modules, their `state_dict` and `alexnet summary` stay what the book and the paper print. The runtime
(the Trainer) chooses them, names them in its banner, and one setting turns each off.

* `conv1`: the first convolution (11x11, stride 4) as a 3x3 stride-1 convolution over a space-to-depth folded
  input (MLPerf's ResNet trick), so that it runs on tensor cores instead of a generic strided kernel.
* `forward`: the net's forward in the chosen forms (`FastForward`), and `pool_first`: a ReLU followed by a
  max-pool run as the max-pool, then the ReLU on the 4x smaller tensor (exact: ReLU is monotone).
* `lrn`: the paper's local response normalisation as one autograd Function with its analytic backward.
* `pool`, `relu_lrn`: Triton kernels (CUDA) for a max-pool with its ReLU, and for a ReLU with the paper's LRN.

Imports torch, and Triton where it is installed (`pool`, `relu_lrn`).
"""

import torch


def refuse_graph_of_backward(what: str, instead: str) -> None:
    """Raise where an autograd Function's backward is asked for a graph of itself (create_graph=True: autograd
    runs the backward with grad mode on): the Functions here compute their backward with in-place ops or kernels
    that carry none. torch's once_differentiable would let autograd.grad drop the second-order terms without a word
    where the loss also reaches the input another way (its error node hangs off a copy the input's graph never
    reaches). The error names `what` and what to use `instead`."""
    if torch.is_grad_enabled():
        raise RuntimeError(f"{what} has no second derivative; {instead}")
