"""`WeightedDPOConfig`: TRL's `DPOConfig` plus the per-token weighting field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import DPOConfig

from tokrl.trainers.pair_weights import check_config as check_pair_weight_config
from tokrl.trainers.shared_config import SharedConfig


@dataclass
class WeightedDPOConfig(SharedConfig, DPOConfig):
    r"""
    Configuration for [`WeightedDPOTrainer`]: every field of TRL's `DPOConfig`, the fields of `SharedConfig`
    (`token_dump_steps`, `token_dump_samples`: `tokrl inspect` renders the dump; device defaults), plus:

    > Parameters that control token weighting

    weighting (`str` or `dict`, *optional*, defaults to `None`):
        Weighter spec, resolved by name through the tokrl registry, e.g. `{"name": "column", "column":
        "token_weights"}` to read the dataset columns `chosen_token_weights` / `rejected_token_weights`. The
        weights multiply the per-token log-probs of the policy and of the reference before TRL sums them, so
        every DPO log-ratio becomes `sum_t w_t (log pi_theta - log pi_ref)`. `None` means uniform weights, i.e.
        plain DPO. A `weighter=` object passed to the trainer takes precedence.
    pair_weight_column (`str`, *optional*, defaults to `None`):
        Dataset column with one weight per preference pair (a finite number >= 0): the loss is the mean over the
        batch of `w_i * -log sigma(beta * margin_i)` (all weights 1 is TRL's DPO). Needs `loss_type="sigmoid"`.
        Composes with per-token weights, which act inside the margins.
    """

    weighting: Any = field(
        default=None,
        metadata={
            "help": "Weighter spec (name or mapping with 'name'); its weights multiply policy and reference "
            "per-token log-probs. None = uniform, i.e. plain DPO."
        },
    )
    pair_weight_column: str | None = field(
        default=None,
        metadata={"help": "Dataset column with one weight >= 0 per pair; the loss is the weighted mean of the "
                          "per-pair sigmoid losses. None = unweighted."},
    )

    def __post_init__(self):
        super().__post_init__()
        check_pair_weight_config(self)
