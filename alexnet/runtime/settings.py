"""Process-wide torch settings, set in one place by the entry points (`train()`, the benchmark), never by a
model or the Trainer, and put back afterwards so that whatever runs next in the process (a notebook cell, the
d2l baseline measured beside ours) gets torch's defaults."""

import contextlib
import os
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_settings(device: torch.device, *, threads: int = 0, deterministic: bool = False,
                   precision: str = "fp32") -> Iterator[None]:
    """Inside the block: `threads` CPU intra-op threads (0: torch's default), cuDNN autotuning unless
    `deterministic` (fixed shapes: let cuDNN pick the fastest kernels), TF32 tensor cores for fp32 convolutions
    and matmuls only when `precision` is `tf32` (torch's default would run fp32 convolutions in TF32: then `fp32`
    would not be fp32), and torch's deterministic algorithms when asked."""
    saved = (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch.backends.cudnn.benchmark = not deterministic
        if device.type == "cuda" and deterministic:  # cuBLAS is deterministic only with a fixed workspace,
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # set before its first use
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
        with num_threads(threads), tf32_math(precision == "tf32"):
            yield
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])


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


@contextlib.contextmanager
def tf32_math(enabled: bool) -> Iterator[None]:
    """TF32 tensor cores for fp32 convolutions (cuDNN) and matmuls (cuBLAS) on or off inside the block, the
    previous settings restored after it. torch's defaults are TF32 on for convolutions, off for matmuls."""
    with conv_tf32(enabled), matmul_precision("high" if enabled else "highest"):
        yield


@contextlib.contextmanager
def conv_tf32(enabled: bool) -> Iterator[None]:
    """cuDNN's TF32 for fp32 convolutions alone on or off inside the block (torch's default: on)."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved
