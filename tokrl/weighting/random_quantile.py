"""Random-mask control for the forking-token mask: a random rho fraction of completion tokens.

A forking-token result means something only beside a mask that keeps the same number of tokens chosen at random
("Not All Tokens Learn Alike", arXiv 2605.07660, finds random 20% subsets keep much of full-token performance).
The tokens are the top-rho of uniform random scores under EntropyQuantile's own count rule and scope, so both
masks keep exactly the same number of tokens per batch (or per response).
"""

from __future__ import annotations

import zlib

import torch

from tokrl.weighting.entropy import EntropyQuantile
from tokrl.weighting.registry import register_weighter
from tokrl.weighting.view import TokenView


def batch_generator(seed: int, completion_ids: torch.Tensor) -> torch.Generator:
    """A generator seeded by `seed` and the batch's token ids: a new draw for every batch, the same draw when a
    resumed run regenerates the same batch (no state to checkpoint), independent of the global RNG."""
    data = completion_ids.detach().cpu().contiguous().numpy().tobytes()
    # one 32-bit digest of both: the CPU generator (mt19937) keeps only 32 bits of its seed
    return torch.Generator().manual_seed(zlib.crc32(data, zlib.crc32(str(int(seed)).encode())))


@register_weighter("random_quantile")
class RandomQuantile(EntropyQuantile):
    """Weight 1 on a random `rho` fraction of completion tokens, 0 elsewhere.

    Args:
        rho, scope, select: as in `entropy_quantile` (same count rule k = max(1, ceil(rho * n)) for `topk`).
        seed: seeds the draw (together with the batch's token ids).
    """

    needs = frozenset()

    def __init__(self, rho: float = 0.2, scope: str = "global", select: str = "topk", seed: int = 0):
        super().__init__(rho=rho, scope=scope, select=select)
        self.seed = int(seed)

    def weigh(self, view: TokenView) -> torch.Tensor:
        ids = view.completion_ids
        scores = torch.rand(ids.shape, generator=batch_generator(self.seed, ids)).to(view.completion_mask.device)
        return self.select_top(scores, view)
