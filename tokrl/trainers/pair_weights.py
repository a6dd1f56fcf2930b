"""Per-pair weights for DPO, read from a dataset column: one non-negative number per preference pair.

TRL 1.16's DPO loss is the mean over the batch of per-pair losses. With a weight w_i per pair the loss becomes

    L = (1/B) sum_i w_i * -log sigma(beta * (lr+_i - lr-_i))       lr = sum_t w_t (log pi_theta - log pi_ref)

(a weight of 2 counts a pair twice; all weights 1 is TRL's sigmoid DPO). The log-ratios are the ones TRL's loss
saw, so per-token weights (`weighting:`) compose inside them. TRL forms the per-pair losses inside its private
`_compute_loss` and only returns their mean, so the weighted mean is recomputed from the captured log-ratios:
only the `sigmoid` loss (TRL's default, reverse-KL) is supported.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BATCH_KEY = "tokrl_pair_weight"


def check_config(args) -> None:
    """Refuse DPO settings whose per-pair loss is not the plain sigmoid one recomputed here."""
    column = getattr(args, "pair_weight_column", None)
    if column is None:
        return
    if not isinstance(column, str) or not column:
        raise ValueError("pair_weight_column must name a dataset column")
    check_plain_sigmoid(args, "pair_weight_column")


def check_plain_sigmoid(args, who: str) -> None:
    """Refuse DPO settings that change the plain sigmoid loss `who` is derived for (per-pair weights, cDPO's
    per-position loss, T-REG); the error names the first one."""
    if list(args.loss_type) != ["sigmoid"] or args.loss_weights not in (None, [1.0]):
        got = f"loss_type={list(args.loss_type)} (loss_weights={args.loss_weights})"
    elif args.f_divergence_type != "reverse_kl":
        got = f"f_divergence_type={args.f_divergence_type!r}"
    elif args.ld_alpha is not None or args.use_weighting:
        got = f"ld_alpha={args.ld_alpha}, use_weighting={args.use_weighting}"
    else:
        return
    raise ValueError(f"{who} needs loss_type='sigmoid' without loss_weights, f_divergence_type='reverse_kl', no "
                     f"ld_alpha and use_weighting=False (plain sigmoid DPO); got {got}")


def check_values(values, column: str, dataset_name: str = "train") -> None:
    """Every row holds a finite number >= 0; the error names the column and the row."""
    for row, value in enumerate(values):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        if not ok:
            raise ValueError(f"column '{column}' row {row} ({dataset_name}): pair weights must be finite numbers "
                             f">= 0, got {value!r}")


def check_dataset(dataset, column: str, dataset_name: str = "train") -> None:
    if column not in dataset.column_names:
        raise KeyError(f"{dataset_name} dataset has no column '{column}' (pair_weight_column)")
    check_values(dataset[column], column, dataset_name)


class PairWeightCollator:
    """Wraps a preference collator and adds `tokrl_pair_weight`, `[B]`, from the rows' `column`."""

    def __init__(self, inner, column: str):
        self.inner = inner
        self.column = column

    def __call__(self, examples):
        batch = self.inner(examples)
        values = [ex.get(self.column) for ex in examples]
        check_values(values, self.column, "batch")
        batch[BATCH_KEY] = torch.tensor(values, dtype=torch.float32)
        return batch


def weighted_sigmoid_loss(chosen: torch.Tensor, rejected: torch.Tensor, beta: float, weights: torch.Tensor):
    """`mean_i w_i * -log sigma(beta * (chosen_i - rejected_i))` from the per-pair log-ratios."""
    return (weights.to(chosen.dtype) * -F.logsigmoid(beta * (chosen - rejected))).mean()
