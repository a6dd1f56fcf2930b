"""Combinators: weights of weighters, so `forking x THR` is one line of YAML."""

from __future__ import annotations

import torch

from tokrl.weighting.base import TokenWeighter
from tokrl.weighting.registry import register_weighter
from tokrl.weighting.view import TokenView


class _Wrapper(TokenWeighter):
    def _inner(self):
        return [self.weighter]

    def all_needs(self) -> frozenset[str]:
        return frozenset(self.needs).union(*(w.all_needs() for w in self._inner()))

    def all_columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for w in self._inner() for c in w.all_columns()))


@register_weighter("product")
class Product(_Wrapper):
    """Elementwise product of several weighters' weights."""

    def __init__(self, weighters: list[TokenWeighter]):
        if not weighters:
            raise ValueError("product: 'weighters' must list at least one weighter")
        self.weighters = list(weighters)

    def _inner(self):
        return self.weighters

    def weigh(self, view: TokenView) -> torch.Tensor:
        out = torch.ones_like(view.mask)
        for w in self.weighters:
            out = out * w(view)
        return out


@register_weighter("clip")
class Clip(_Wrapper):
    """Clamp another weighter's weights to [min, max]."""

    def __init__(self, weighter: TokenWeighter, min: float | None = None, max: float | None = None):
        if min is not None and max is not None and min > max:
            raise ValueError(f"clip: min ({min}) must not exceed max ({max})")
        self.weighter = weighter
        self.min = min
        self.max = max

    def weigh(self, view: TokenView) -> torch.Tensor:
        return self.weighter(view).clamp(min=self.min, max=self.max)


@register_weighter("normalize")
class Normalize(_Wrapper):
    """Rescale another weighter's weights so their mean over completion tokens is 1 (mean-preserving vs uniform).

    `scope="global"` takes the mean over all processes. All-zero weights stay zero.
    """

    def __init__(self, weighter: TokenWeighter, scope: str = "global"):
        if scope not in ("batch", "global"):
            raise ValueError(f"normalize: scope must be 'batch' or 'global', got {scope!r}")
        self.weighter = weighter
        self.scope = scope

    def weigh(self, view: TokenView) -> torch.Tensor:
        w = self.weighter(view)
        totals = torch.stack([w.sum(), view.mask.sum()]).reshape(1, 2)
        if self.scope == "global":
            totals = view.gather(totals)
        total_w, count = totals.sum(0)
        if total_w <= 0:
            return w
        return w * (count / total_w)
