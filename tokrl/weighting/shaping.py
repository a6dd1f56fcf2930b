"""The advantage-shaping contract, the weighters' sibling: a shaper maps a `TokenView` to `[B, T]` advantages.

A weighter scales the per-token loss; a shaper changes the advantage each token's surrogate sees, for methods
that add to the advantage (an entropy bonus, a per-token reward term). The trainer hands it the view at loss time
(`view.advantages` is `[B]` or `[B, T]`), and TRL's clipped surrogate then uses the returned advantages; weights
from the weighter still multiply the resulting per-token loss.
"""

from __future__ import annotations

import torch

from tokrl.weighting.view import TokenView, ViewReader


class AdvantageShaper(ViewReader):
    """Base class. Subclasses set `needs` (always including "advantages") and implement `shape(view) -> [B, T]`.

    `__call__` checks the contract: the result is detached, float, shaped like the mask, finite on completion
    tokens (a non-finite value is an error: an advantage has no safe default) and 0 outside the mask.
    """

    needs: frozenset[str] = frozenset({"advantages"})

    def shape(self, view: TokenView) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def token_advantages(view: TokenView) -> torch.Tensor:
        """`view.advantages` as `[B, T]` (a `[B]` sequence advantage repeated on every token)."""
        adv = view.require("advantages").float()
        return adv[:, None].expand(view.completion_mask.shape) if adv.dim() == 1 else adv

    def __call__(self, view: TokenView) -> torch.Tensor:
        mask = view.mask
        with torch.no_grad():
            adv = self.shape(view)
        if adv.shape != mask.shape:
            raise ValueError(f"{type(self).__name__} returned advantages of shape {tuple(adv.shape)}, "
                             f"expected {tuple(mask.shape)}")
        adv = adv.detach().float()
        if not torch.isfinite(adv[mask.bool()]).all():
            raise ValueError(f"{type(self).__name__} returned non-finite advantages on completion tokens")
        return torch.where(mask.bool(), adv, torch.zeros_like(adv))
