"""All-ones weights: the oracle. A trainer with `Uniform` must reproduce its TRL parent exactly."""

import torch

from tokrl.weighting.base import TokenWeighter
from tokrl.weighting.registry import register_weighter
from tokrl.weighting.view import TokenView


@register_weighter("uniform")
class Uniform(TokenWeighter):
    def weigh(self, view: TokenView) -> torch.Tensor:
        return torch.ones_like(view.mask)
