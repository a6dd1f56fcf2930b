"""GTPO's entropy share (Tan et al., "GTPO and GRPO-S: Token and Sequence-Level Reward Shaping with Policy
Entropy", arXiv 2508.04349), as a token weight on GRPO's advantage.

Read: the abstracts of v1-v6 (arXiv HTML, ICML 2026 page): GTPO redistributes a response's reward over its tokens
with the entropy ratio H_{i,t} / sum_{k=1..n} H_{k,t} (the n responses of the group at position t), rewarding
high-entropy tokens of correct responses and suppressing them in incorrect ones. The method section could not be
read here; reconstructed (UNCERTAIN) from the abstract's ratio and v1's token reward alpha1 r + alpha2 ratio d_t:
    correct (A > 0):   w_{i,t} = alpha1 + alpha2 * d_t * H_{i,t} / sum_{k in O+_t} H_{k,t}
    incorrect (A < 0): w_{i,t} = alpha1 + alpha2 * d_t * H_{i,t}^-1 / sum_{k in O-_t} H_{k,t}^-1
O+_t / O-_t: the group's correct / incorrect responses that still have a token at position t, d_t their count, so
d_t * share averages 1 at each t; A = 0 keeps weight 1. H is the old policy's entropy (nats, logits / T) at sampling
time. Defaults alpha1 = alpha2 = 0.5 (mean weight 1, UNCERTAIN: the paper's values were not retrieved).
A group statistic: a rollout weighter, computed once per generation batch with groups intact.
"""

import torch

from tokrl.weighting.base import TokenWeighter
from tokrl.weighting.registry import register_weighter


@register_weighter("gtpo")
class GTPOEntropyShare(TokenWeighter):
    """Weight alpha1 + alpha2 * d_t * (entropy share of the token among its group's same-sign responses at t)."""

    rollout = True
    needs = frozenset({"entropies", "advantages", "group_ids"})

    def __init__(self, alpha1: float = 0.5, alpha2: float = 0.5, eps: float = 1e-6):
        if alpha1 < 0 or alpha2 < 0:
            raise ValueError(f"gtpo: alpha1 and alpha2 must be >= 0, got {alpha1}, {alpha2}")
        self.alpha1, self.alpha2, self.eps = float(alpha1), float(alpha2), float(eps)

    def weigh(self, view):
        mask = view.mask
        adv = view.require("advantages").float()
        adv = adv if adv.dim() == 1 else adv[:, 0]
        entropy = view.require("entropies").float().clamp(min=self.eps)
        groups = torch.unique(view.require("group_ids"), return_inverse=True)[1]
        weights = torch.ones_like(mask)
        for sign, value in ((1.0, entropy), (-1.0, 1.0 / entropy)):
            member = mask * (torch.sign(adv) == sign).float()[:, None]
            totals = torch.zeros(int(groups.max()) + 1, mask.size(1), device=mask.device)
            sums = totals.index_add(0, groups, value * member)[groups]
            counts = totals.index_add(0, groups, member)[groups]
            share = self.alpha1 + self.alpha2 * counts * value / sums.clamp(min=self.eps)
            weights = torch.where(member.bool(), share, weights)
        return weights
