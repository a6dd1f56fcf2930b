"""`TokenView`: everything a weighter may read about one batch, aligned on the completion tokens, and `ViewReader`,
what weighters and advantage shapers share: the fields and columns of the view they read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


def _identity_gather(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class TokenView:
    """One batch seen token by token. All per-token tensors are `[B, T]`, aligned with `completion_ids`.

    Only `completion_ids` and `completion_mask` are always present; the trainer fills the other fields when a
    weighter lists them in `needs` (so entropies or hidden states are computed only when someone asks).

    `gather` concatenates a 1-D tensor across processes along dim 0 (identity on one process); weighters use it
    for global statistics and hold no accelerator themselves. `stats` is a per-batch scratch dict in which a
    weighter leaves scalars (e.g. its threshold) for the trainer to log, and `values` per-token tensors for the
    token dump.
    """

    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    logps: torch.Tensor | None = None
    entropies: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None  # [B, T, H], the states that produced each completion token
    old_logps: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None
    advantages: torch.Tensor | None = None  # [B] or [B, T]
    rewards: torch.Tensor | None = None  # [B]
    group_ids: torch.Tensor | None = None  # [B], unique across processes
    unembedding: Any = None  # `Unembedding`: LM-head rows and logit transform (rollout weighters that need it)
    columns: dict[str, torch.Tensor] = field(default_factory=dict)  # per-token data columns, [B, T]
    gather: Callable[[torch.Tensor], torch.Tensor] = _identity_gather
    stats: dict[str, float] = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def mask(self) -> torch.Tensor:
        """The completion mask as a float tensor."""
        return self.completion_mask.float()

    def require(self, name: str) -> torch.Tensor:
        """Return field or column `name`, with an error that names it when the trainer did not fill it."""
        value = self.columns.get(name) if name not in self.__dataclass_fields__ else getattr(self, name)
        if value is None:
            raise ValueError(
                f"TokenView has no '{name}': the weighter must list it in `needs` and the trainer must provide it"
            )
        return value


class ViewReader:
    """Base of weighters and advantage shapers: which view fields (`needs`) and data columns (`columns`) it reads."""

    needs: frozenset[str] = frozenset()
    #: per-token data columns read from `view.columns` (offline weighters)
    columns: tuple[str, ...] = ()

    def all_needs(self) -> frozenset[str]:
        """Needs of this reader and of any weighter it wraps."""
        return frozenset(self.needs)

    def all_columns(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
