"""Process-wide torch settings, set in one place by the entry points (`train()`, the benchmark), never by a
model or the Trainer, and put back afterwards so that whatever runs next in the process (a notebook cell, the
d2l baseline measured beside ours) gets torch's defaults."""

import contextlib
import os
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_settings(device: torch.device, *, threads: int = 0, deterministic: bool = False) -> Iterator[None]:
    """Inside the block: `threads` CPU intra-op threads (0: torch's default), cuDNN autotuning unless
    `deterministic` (fixed shapes: let cuDNN pick the fastest kernels), TF32 for the FC matmuls on CUDA (cuDNN
    already runs fp32 convolutions in TF32), and torch's deterministic algorithms when asked."""
    saved = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision(),
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch.backends.cudnn.benchmark = not deterministic
        if device.type == "cuda":
            torch.set_float32_matmul_precision("high")
            if deterministic:  # cuBLAS is deterministic only with a fixed workspace, set before its first use
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        with num_threads(threads):
            yield
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.set_float32_matmul_precision(saved[1])
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


@contextlib.contextmanager
def num_threads(threads: int) -> Iterator[None]:
    """`threads` CPU intra-op threads inside the block (0: leave torch's setting alone)."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextlib.contextmanager
def matmul_precision(value: str) -> Iterator[None]:
    """`torch.set_float32_matmul_precision(value)` inside the block, the previous setting restored after it."""
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)
