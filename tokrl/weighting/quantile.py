"""Quantile and top-k thresholds on flat tensors, exact and without torch.quantile's 2**24-element limit."""

import math

import torch


def quantile_linear(values: torch.Tensor, q: float) -> torch.Tensor:
    """`torch.quantile(values, q)` (linear interpolation) for a 1-D tensor of any length."""
    s, _ = torch.sort(values.float())
    pos = q * (s.numel() - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, s.numel() - 1)
    return torch.lerp(s[lo], s[hi], torch.tensor(pos - lo, dtype=s.dtype, device=s.device))


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value (k >= 1) of a 1-D tensor."""
    return torch.topk(values.float(), k).values[-1]


def topk_count(n: int, rho: float) -> int:
    """Tokens kept by top-rho selection among n: max(1, ceil(rho * n)), as in the authors' verl code."""
    return min(n, max(1, math.ceil(rho * n - 1e-9)))
