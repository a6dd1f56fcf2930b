"""Offline weights: read a per-token column that a scoring pipeline wrote into the dataset."""

from __future__ import annotations

import torch

from tokrl.weighting.base import TokenWeighter
from tokrl.weighting.registry import register_weighter
from tokrl.weighting.view import TokenView


@register_weighter("column")
class DatasetColumn(TokenWeighter):
    """Weights taken verbatim from `view.columns[column]` (`[B, T]`, aligned with the completion tokens).

    The trainer is responsible for collating the column to the batch layout; this weighter only checks it.
    `scale` and `offset` give `offset + scale * column` (e.g. T-REG's 1 + alpha * r).
    """

    def __init__(self, column: str, scale: float = 1.0, offset: float = 0.0):
        if not isinstance(column, str) or not column:
            raise ValueError("column: 'column' must name a per-token dataset column")
        self.column = column
        self.columns = (column,)
        self.scale = float(scale)
        self.offset = float(offset)

    def weigh(self, view: TokenView) -> torch.Tensor:
        values = view.columns.get(self.column)
        if values is None:
            raise KeyError(f"column weighter: the batch has no per-token column '{self.column}'")
        if values.shape != view.completion_mask.shape:
            raise ValueError(
                f"column '{self.column}' has shape {tuple(values.shape)}, the completion mask "
                f"{tuple(view.completion_mask.shape)}"
            )
        return self.offset + self.scale * values.float()
