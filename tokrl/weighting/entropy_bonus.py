"""Clipped entropy bonus on the advantage (Cheng et al. 2025, "Reasoning with Exploration: An Entropy
Perspective", arXiv 2506.14758):

    psi(H_t) = min(alpha * H_t^detach, |A_t| / kappa),   alpha > 0, kappa > 1        A'_t = A_t + psi(H_t)

H_t is the entropy of the current policy at token t, detached (the bonus moves no gradient through the entropy);
the clip |A_t| / kappa keeps the bonus below a fraction of the advantage, so it never flips a negative advantage's
sign and vanishes where A_t = 0. Defaults alpha = 0.4, kappa = 2.
"""

from __future__ import annotations

import torch

from tokrl.weighting.registry import register_shaper
from tokrl.weighting.shaping import AdvantageShaper
from tokrl.weighting.view import TokenView


@register_shaper("entropy_bonus")
class EntropyBonus(AdvantageShaper):
    """A'_t = A_t + min(alpha * H_t, |A_t| / kappa) (see the module docstring)."""

    needs = frozenset({"advantages", "entropies"})

    def __init__(self, alpha: float = 0.4, kappa: float = 2.0):
        if not alpha > 0:
            raise ValueError(f"entropy_bonus: alpha must be > 0, got {alpha}")
        if not kappa > 1:
            raise ValueError(f"entropy_bonus: kappa must be > 1, got {kappa}")
        self.alpha = float(alpha)
        self.kappa = float(kappa)

    def shape(self, view: TokenView) -> torch.Tensor:
        adv = self.token_advantages(view)
        raw, cap = self.alpha * view.require("entropies").detach().float(), adv.abs() / self.kappa
        bonus = torch.minimum(raw, cap)
        mask = view.mask.bool()
        if mask.any():
            view.stats["entropy_bonus_mean"] = bonus[mask].mean().item()
            view.stats["entropy_bonus_clipped_frac"] = (raw > cap)[mask].float().mean().item()
        return adv + bonus
