"""The weighting contract: a weighter maps a `TokenView` to a detached `[B, T]` weight tensor."""

from __future__ import annotations

import logging

import torch

from tokrl.weighting.view import TokenView, ViewReader

logger = logging.getLogger(__name__)
_WARNED: set[str] = set()

# What a weighter may ask the trainer for (besides per-token data columns, which it names itself).
KNOWN_NEEDS = frozenset(
    {"logps", "entropies", "hidden_states", "old_logps", "ref_logps", "advantages", "rewards", "group_ids",
     "unembedding"}
)


def check_needs(weighter: "TokenWeighter", supported, trainer: str) -> None:
    """One line naming the first need `trainer` cannot fill (or that no trainer knows), at construction."""
    for name in sorted(weighter.all_needs()):
        if name not in KNOWN_NEEDS:
            raise ValueError(f"weighter {weighter!r} needs '{name}', which is not a known need "
                             f"({', '.join(sorted(KNOWN_NEEDS))})")
        if name not in supported:
            raise ValueError(f"{trainer} cannot give weighter {type(weighter).__name__} its need '{name}'; "
                             f"it fills: {', '.join(sorted(supported))} and per-token columns")


def rollout_weighters(weighter: "TokenWeighter") -> list["TokenWeighter"]:
    """The weighters, in `weighter`'s tree, that are computed once per generation batch (`rollout = True`)."""
    found = [weighter] if weighter.rollout else []
    for inner in weighter._inner():
        found += rollout_weighters(inner)
    names = [w.carry_column for w in found]
    if len(set(names)) != len(names):
        raise ValueError(f"a weighting spec may hold each rollout weighter once, got {names}")
    return found


class TokenWeighter(ViewReader):
    """Base class. Subclasses set `needs` (and `columns`) and implement `weigh(view) -> [B, T]`.

    `__call__` enforces the contract so subclasses need not: the result is detached, float, shaped like the
    mask, finite, and zero outside the mask. Non-finite weights (e.g. a NaN in a precomputed column) become 0, with
    one warning per weighter class giving the counts, so no NaN reaches the loss. A weighter holds no trainer,
    accelerator or model: everything it reads comes through the view.
    """

    #: True: the weights need the whole generation batch, groups intact (group statistics, rewards, group_ids).
    #: A GRPO trainer then calls the weighter once per generation batch, before TRL shuffles and splits it, and
    #: carries the weights to the loss as the batch column `carry_column`; at loss time `carried()` reads them.
    rollout: bool = False

    @property
    def carry_column(self) -> str:
        """Batch column that carries a rollout weighter's weights from generation to the loss."""
        return f"tokrl_{getattr(self, 'registry_name', type(self).__name__.lower())}_weight"

    def carried(self, view: TokenView, weights: torch.Tensor) -> torch.Tensor:
        """Loss-time weights of a rollout weighter from its carried column (override to expose more values)."""
        return weights

    def _inner(self) -> list["TokenWeighter"]:
        """Weighters this one wraps (composition)."""
        return []

    def weigh(self, view: TokenView) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, view: TokenView) -> torch.Tensor:
        mask = view.mask
        carried = view.columns.get(self.carry_column) if self.rollout else None
        with torch.no_grad():
            w = self.carried(view, carried.float()) if carried is not None else self.weigh(view)
        if w.shape != mask.shape:
            raise ValueError(f"{type(self).__name__} returned weights of shape {tuple(w.shape)}, expected {tuple(mask.shape)}")
        w = w.detach().to(mask.dtype)
        bad = ~torch.isfinite(w) & mask.bool()
        if bad.any():
            name = type(self).__name__
            if name not in _WARNED:
                _WARNED.add(name)
                logger.warning("%s produced %d non-finite weights out of %d completion tokens; they are set to 0 "
                               "(this warning is shown once)", name, int(bad.sum()), int(mask.sum()))
        w = torch.where(torch.isfinite(w), w, torch.zeros_like(w))
        return w * mask


def weight_stats(weights: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Fraction of completion tokens with non-zero weight, and weight mean/std/min/max over completion tokens."""
    valid = mask.bool()
    w = weights[valid].float()
    if w.numel() == 0:
        return {"kept_frac": 0.0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    return {
        "kept_frac": (w != 0).float().mean().item(),
        "mean": w.mean().item(),
        "std": w.std(unbiased=False).item(),
        "min": w.min().item(),
        "max": w.max().item(),
    }
