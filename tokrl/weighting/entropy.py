"""Forking-token mask (Wang et al. 2025, "Beyond the 80/20 Rule", arXiv 2506.01939).

Keep the policy-gradient loss only on the top-rho highest-entropy completion tokens. Entropy is the current
policy's full-vocabulary entropy at each position (nats, logits / sampling temperature), as TRL's fused LM head
returns it; the weighter never sees logits.
"""

from __future__ import annotations

import torch

from tokrl.weighting.base import TokenWeighter
from tokrl.weighting.quantile import kth_largest, quantile_linear, topk_count
from tokrl.weighting.registry import register_weighter
from tokrl.weighting.view import TokenView

SCOPES = ("batch", "global", "sequence")
SELECTS = ("topk", "quantile")


@register_weighter("entropy_quantile")
class EntropyQuantile(TokenWeighter):
    """Weight 1 on the top-`rho` entropy tokens, 0 elsewhere.

    Args:
        rho: fraction of completion tokens kept, in [0, 1] (paper: 0.2). 1 keeps every token.
        scope: where the threshold is taken. `batch`: over this micro-batch on this process (the authors' verl
            code); `global`: over this micro-batch gathered across all processes, so every rank uses the same
            threshold (TRL's `top_entropy_quantile`); `sequence`: per response (an extension, not in the paper).
        select: `topk` (default, the authors' code): threshold = the k-th largest entropy, k = max(1, ceil(rho*n));
            `quantile` (TRL): threshold = torch.quantile(H, 1 - rho) with linear interpolation. Both keep H >= tau,
            so exact ties at the threshold are all kept.
        invert: keep the complement (the bottom 1 - rho tokens): the paper's negative control.
        lowest: keep the rho *lowest*-entropy tokens instead (same count rule, so exactly as many tokens as the
            forking mask keeps): the inverse-mask control at an equal kept fraction.
        soft_temperature: if set, weights are sigmoid((H - tau) / soft_temperature) instead of a hard mask.
    """

    needs = frozenset({"entropies"})

    def __init__(
        self,
        rho: float = 0.2,
        scope: str = "global",
        select: str = "topk",
        invert: bool = False,
        soft_temperature: float | None = None,
        lowest: bool = False,
    ):
        if not isinstance(rho, (int, float)) or not 0.0 <= float(rho) <= 1.0:
            raise ValueError(f"entropy_quantile: rho must be in [0, 1], got {rho!r}")
        if scope not in SCOPES:
            raise ValueError(f"entropy_quantile: scope must be one of {SCOPES}, got {scope!r}")
        if select not in SELECTS:
            raise ValueError(f"entropy_quantile: select must be one of {SELECTS}, got {select!r}")
        if soft_temperature is not None and soft_temperature <= 0:
            raise ValueError(f"entropy_quantile: soft_temperature must be > 0, got {soft_temperature!r}")
        self.rho = float(rho)
        self.scope = scope
        self.select = select
        self.invert = bool(invert)
        self.soft_temperature = soft_temperature
        self.lowest = bool(lowest)
        if self.lowest and self.invert:
            raise ValueError("entropy_quantile: choose one of lowest (the rho lowest) and invert (the bottom 1 - rho)")

    def threshold(self, values: torch.Tensor) -> torch.Tensor | None:
        """Threshold tau over a flat tensor of valid entropies (None when there are none)."""
        if values.numel() == 0:
            return None
        if self.select == "quantile":
            return quantile_linear(values, 1.0 - self.rho)
        return kth_largest(values, topk_count(values.numel(), self.rho))

    def _keep(self, entropies: torch.Tensor, tau: torch.Tensor | None) -> torch.Tensor:
        if tau is None:
            return torch.zeros_like(entropies)
        if self.soft_temperature is not None:
            return torch.sigmoid((entropies - tau) / self.soft_temperature)
        return (entropies >= tau).float()

    def select_top(self, scores: torch.Tensor, view: TokenView) -> torch.Tensor:
        """`[B, T]` keep weights for the top-rho `scores` among completion tokens, under this scope and rule."""
        mask = view.completion_mask.bool()
        if self.scope == "sequence":
            keep = torch.zeros_like(scores)
            for i in range(scores.size(0)):
                keep[i] = self._keep(scores[i], self.threshold(scores[i][mask[i]]))
        else:
            local = scores[mask]
            tau = self.threshold(view.gather(local) if self.scope == "global" else local)
            keep = self._keep(scores, tau)
            if tau is not None:
                view.stats["entropy_threshold"] = float(-tau if self.lowest else tau)
        if self.invert:
            keep = 1.0 - keep
        return keep * mask.float()

    def weigh(self, view: TokenView) -> torch.Tensor:
        entropies = view.require("entropies").float()
        view.values["entropy"] = entropies
        return self.select_top(-entropies if self.lowest else entropies, view)
