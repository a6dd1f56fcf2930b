"""Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617).

Read: the paper's abstract/introduction (arXiv HTML v1) and the authors' `compute_policy_loss_clip_cov` as merged
into verl (`verl/trainer/ppo/core_algos.py`). Per token of the micro-batch, with means over its completion tokens,
    Cov_t = (A_t - mean A) * (log pi(y_t) - mean log pi);
tokens not already clipped by PPO's ratio clip with lb < Cov_t < ub are candidates, and max(1, int(r * N)) of them
(N completion tokens), drawn uniformly at random, get weight 0 (their gradient is detached); every other token 1.
Defaults are verl's: r = 2e-4, lb = 1, ub = 5, PPO clip 0.2 / 0.2 (TRL's epsilon). KL-Cov instead adds
k * |log pi - log pi_old| to the loss of the top r*N tokens by Cov: an additive penalty, not a factor on the
surrogate, so it cannot be a token weight and is not implemented here.
"""

import torch

from tokrl.weighting.base import TokenWeighter
from tokrl.weighting.registry import register_weighter


@register_weighter("clip_cov")
class ClipCov(TokenWeighter):
    """Weight 0 on a random `ratio` fraction of the tokens whose Cov lies in (`lower`, `upper`), 1 elsewhere."""

    needs = frozenset({"logps", "old_logps", "advantages"})

    def __init__(self, ratio: float = 2e-4, lower: float = 1.0, upper: float = 5.0, clip_low: float = 0.2,
                 clip_high: float = 0.2):
        if not 0 < ratio <= 1 or not lower < upper:
            raise ValueError(f"clip_cov: need 0 < ratio <= 1 and lower < upper, got {ratio}, {lower}, {upper}")
        self.ratio, self.lower, self.upper = float(ratio), float(lower), float(upper)
        self.clip_low, self.clip_high = float(clip_low), float(clip_high)

    def weigh(self, view):
        mask = view.completion_mask.bool()
        adv = view.require("advantages").float()
        adv = adv[:, None].expand(mask.shape) if adv.dim() == 1 else adv
        logps = view.require("logps").float()
        cov = (adv - adv[mask].mean()) * (logps - logps[mask].mean())
        ratio = torch.exp(logps - view.require("old_logps").float())
        clipped = -adv * ratio.clamp(1 - self.clip_low, 1 + self.clip_high) > -adv * ratio
        candidates = ((cov > self.lower) & (cov < self.upper) & mask & ~clipped).nonzero()
        n = max(int(self.ratio * int(mask.sum())), 1)
        chosen = candidates[torch.randperm(len(candidates))[:n]]
        weights = torch.ones_like(cov)
        weights[chosen[:, 0], chosen[:, 1]] = 0.0
        view.stats["clip_cov_frac"] = len(chosen) / max(int(mask.sum()), 1)
        view.values["cov"] = cov * mask
        return weights
