"""LocalResponseNorm: the paper's formula, equal to torch's module once alpha is rescaled by n."""

import pytest
import torch

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
