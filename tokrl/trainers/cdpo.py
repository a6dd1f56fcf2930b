"""cDPO: token-level DPO with critical-token weights (Lin et al., "Critical Tokens Matter", arXiv 2411.19943).

A thin preset over `WeightedDPOTrainer`: the weights are read from the dataset columns `chosen_token_weights` /
`rejected_token_weights` that the cDPO scoring pipeline writes (rejected: `1 - p_CE(y_t)`; chosen: 1 in the
released configuration), aligned with TRL's completion tokens (`tokrl.trainers.token_columns`).

Two granularities, checked against the official code (github.com/chenzhiling9954/Critical-Tokens-Matter @ 228991e,
`src/train/train_cdpo.py`, TRL 0.9.6):
- `"sequence"` (default; the paper's formula): `-log sigma(beta * [sum_t w+_t lr+_t - sum_t w-_t lr-_t])` with
  `lr_t = log pi_theta(y_t) - log pi_ref(y_t)`, through TRL's own sigmoid loss. All weights 1 = TRL's DPO.
- `"position"` (what the released code computes): its `get_batch_logps` returns the masked per-token log-probs
  without summing, and `dpo_loss` forms `w+_j lr+_j - w-_j lr-_j` per position j of the right-padded batch
  (chosen and rejected paired by absolute position, prompt and padding positions contribute `-log sigma(0) = log 2`
  with no gradient), applies `-log sigma(beta * .)` to each, and takes `.mean()` over all `B x (L-1)` positions.
  Here L is the padded width of TRL 1.16's `[2B, L]` batch (chosen and rejected padded together, as TRL 0.9.6's
  concatenated batch was). All weights 1 do not give DPO in this mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from tokrl.trainers.pair_weights import check_plain_sigmoid
from tokrl.trainers.weighted_dpo import DPOTokenParts, WeightedDPOTrainer
from tokrl.trainers.weighted_dpo_config import WeightedDPOConfig

GRANULARITIES = ("sequence", "position")


@dataclass
class CDPOConfig(WeightedDPOConfig):
    r"""
    Configuration for [`CDPOTrainer`]: `WeightedDPOConfig` with cDPO's critical-token weights.

    > Parameters that control token weighting

    weighting (`str` or `dict`, *optional*, defaults to `{"name": "column", "column": "token_weights"}`):
        Reads the dataset columns `chosen_token_weights` / `rejected_token_weights` (paper: rejected
        `1 - p_CE(y_t)`, chosen 1, EOS 1). Any weighter spec works.
    loss_granularity (`str`, *optional*, defaults to `"sequence"`):
        `"sequence"`: the paper's token-weighted DPO, `-log sigma(beta (sum w+ lr+ - sum w- lr-))`; all weights 1
        reproduces TRL's sigmoid DPO. `"position"`: the released code's per-position loss, `-log sigma(beta (w+_j
        lr+_j - w-_j lr-_j))` averaged over all positions of the padded batch; needs `loss_type="sigmoid"`, no
        precomputed reference log-probs.
    """

    weighting: Any = field(
        default_factory=lambda: {"name": "column", "column": "token_weights"},
        metadata={
            "help": "Weighter spec; default reads chosen_token_weights / rejected_token_weights (paper: rejected "
            "1 - p_CE, chosen 1)."
        },
    )
    loss_granularity: str = field(
        default="sequence",
        metadata={
            "help": "'sequence' (paper formula; all-ones weights = TRL DPO) or 'position' (released code: "
            "per-position sigmoid, mean over all padded positions)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.loss_granularity not in GRANULARITIES:
            raise ValueError(f"loss_granularity must be one of {GRANULARITIES}, got {self.loss_granularity!r}")
        if self.label_smoothing != 0.0:
            raise ValueError("cDPO uses label_smoothing=0 (TRL's sigmoid loss ignores it); unset label_smoothing")
        if self.loss_granularity == "position":
            check_plain_sigmoid(self, "loss_granularity='position'")
            if self.precompute_ref_log_probs:
                raise ValueError(
                    "loss_granularity='position' needs per-token reference log-probs; "
                    "set precompute_ref_log_probs=False"
                )
            if self.pair_weight_column is not None:
                raise ValueError("loss_granularity='position' does not combine with pair_weight_column")


def position_loss(parts: DPOTokenParts, beta: float) -> torch.Tensor:
    """The released code's per-position cDPO loss, `[B, L-1]` positions averaged (see the module docstring)."""
    if parts.ref_logps is None:
        raise ValueError("loss_granularity='position' needs per-token reference log-probs (no precompute)")
    ratios = (parts.policy_logps - parts.ref_logps) * parts.weights
    chosen, rejected = ratios.chunk(2)
    return -F.logsigmoid(beta * (chosen - rejected)).mean()


class CDPOTrainer(WeightedDPOTrainer):
    """cDPO (critical-token weighted DPO); see `CDPOConfig`."""

    _tag_names = ["trl", "dpo", "tokrl", "cdpo"]
    _name = "cDPO"
    _paper = {
        "title": "Critical Tokens Matter: Token-Level Contrastive Estimation Enhances LLM's Reasoning Capability",
        "id": "2411.19943",
    }
    config_class = CDPOConfig

    def __init__(self, model, ref_model=None, args=None, *pargs, **kwargs):
        if args is None:
            args = CDPOConfig(output_dir="cdpo-output")
        if not isinstance(args, CDPOConfig):
            raise TypeError(f"CDPOTrainer needs a CDPOConfig, got {type(args).__name__}")
        self.loss_granularity = args.loss_granularity
        super().__init__(model, ref_model, args, *pargs, **kwargs)

    def dpo_loss(self, trl_loss: torch.Tensor, parts: DPOTokenParts) -> torch.Tensor:
        if self.loss_granularity == "sequence":
            return super().dpo_loss(trl_loss, parts)
        loss = position_loss(parts, self.beta)
        self.log_metric("cdpo/position_loss", self.accelerator.gather(loss.detach()).mean().item())
        return loss
