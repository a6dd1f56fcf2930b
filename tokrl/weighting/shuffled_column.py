"""Random-weight control for offline per-token weights (e.g. cDPO's 1 - p_CE): the same values, shuffled.

Each sequence's column values are permuted at random among its own completion tokens, so every sequence keeps
exactly the mean (and the whole distribution) of its weights and only *which* token gets which weight is random.
If a method beats this control, its scorer found the right tokens, not merely the right amount of weight.
"""

from __future__ import annotations

import torch

from tokrl.weighting.column import DatasetColumn
from tokrl.weighting.random_quantile import batch_generator
from tokrl.weighting.registry import register_weighter
from tokrl.weighting.view import TokenView


@register_weighter("shuffled_column")
class ShuffledColumn(DatasetColumn):
    """`offset + scale * column`, with each row's values shuffled among that row's completion tokens (seeded)."""

    def __init__(self, column: str, scale: float = 1.0, offset: float = 0.0, seed: int = 0):
        super().__init__(column, scale=scale, offset=offset)
        self.seed = int(seed)

    def weigh(self, view: TokenView) -> torch.Tensor:
        weights = super().weigh(view)
        generator = batch_generator(self.seed, view.completion_ids)
        mask = view.completion_mask.bool()
        out = weights.clone()
        for i in range(weights.size(0)):
            where = mask[i].nonzero().squeeze(1)
            order = torch.randperm(where.numel(), generator=generator).to(where.device)
            out[i, where] = weights[i, where[order]]
        return out
