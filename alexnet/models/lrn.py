"""Local response normalisation, as written in the AlexNet paper (Krizhevsky et al. 2012, section 3.3).

    b[c] = a[c] / (k + alpha * sum_{j = c - n//2}^{c + (n-1)//2} a[j]^2) ** beta

with the paper's k = 2, n = 5, alpha = 1e-4, beta = 0.75; the sum runs over the n neighbouring channels at the
same spatial position, clipped at the first and last channel.

Convention: the paper multiplies the *sum* by alpha. `torch.nn.LocalResponseNorm` multiplies the *mean*
(it divides alpha by n), so the paper's alpha = 1e-4 is torch's alpha = 5e-4 for n = 5. This module takes the
paper's alpha; `LocalResponseNorm.from_torch(...)` builds the module equal to torch's with torch's arguments.
"""

import torch
import torch.nn.functional as F
from torch import nn


class LocalResponseNorm(nn.Module):
    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        if size < 1:
            raise ValueError(f"LRN size must be >= 1, got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    @classmethod
    def from_torch(cls, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> "LocalResponseNorm":
        """The module equal to `torch.nn.LocalResponseNorm(size, alpha, beta, k)` (torch's alpha is per channel)."""
        return cls(size, alpha / size, beta, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        channels = x.shape[1]
        # Window [c - n//2, c + (n-1)//2], the same placement torch uses for even n; zero padding = clipping.
        padded = F.pad(x.square(), (0, 0, 0, 0, self.size // 2, (self.size - 1) // 2))
        window_sum = padded[:, 0:channels]
        for offset in range(1, self.size):
            window_sum = window_sum + padded[:, offset:offset + channels]
        denominator = self.k + self.alpha * window_sum
        if self.beta == 0.75:  # the paper's beta: d^-0.75 = rsqrt(d) * rsqrt(sqrt(d)), ~2x faster than pow on a CPU
            return x * denominator.rsqrt() * denominator.sqrt().rsqrt()
        return x / denominator.pow(self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k} (paper convention)"
