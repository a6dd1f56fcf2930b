"""Forking-token GRPO: train only on the top-rho highest-entropy completion tokens.

Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective Reinforcement Learning for
LLM Reasoning" (arXiv 2506.01939). A thin preset over `WeightedGRPOTrainer` with an `EntropyQuantile` weighter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokrl.trainers.weighted_grpo import WeightedGRPOTrainer
from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig
from tokrl.weighting import EntropyQuantile


@dataclass
class ForkingGRPOConfig(WeightedGRPOConfig):
    r"""
    Configuration for [`ForkingGRPOTrainer`]: `WeightedGRPOConfig` plus the forking-token mask.

    > Parameters that control token weighting

    forking_rho (`float`, *optional*, defaults to `0.2`):
        Fraction of completion tokens that get gradient, the top-rho by entropy (paper: 0.2, "top 20%").
    forking_scope (`str`, *optional*, defaults to `"global"`):
        Where the threshold is taken: `"global"` (micro-batch, all processes: TRL), `"batch"` (micro-batch on this
        process: the authors' verl code) or `"sequence"` (per response: an extension).
    forking_select (`str`, *optional*, defaults to `"topk"`):
        `"topk"` keeps max(1, ceil(rho*n)) tokens (authors' code); `"quantile"` uses torch.quantile(1 - rho) (TRL).
    forking_invert (`bool`, *optional*, defaults to `False`):
        Keep the bottom 1 - rho tokens instead: the paper's negative control.
    weight_normalizer (`str`, *optional*, defaults to `"selected"`):
        The authors' code averages the loss over the kept tokens (`"selected"`); the paper's equation and TRL divide
        by all completion tokens (`"all"`).
    """

    forking_rho: float = field(default=0.2, metadata={"help": "Top-rho entropy tokens kept; paper 0.2. 1 = GRPO."})
    forking_scope: str = field(default="global", metadata={"help": "'global' (TRL), 'batch' (verl) or 'sequence'."})
    forking_select: str = field(default="topk", metadata={"help": "'topk' (verl, exact count) or 'quantile' (TRL)."})
    forking_invert: bool = field(default=False, metadata={"help": "Keep the bottom 1-rho tokens (negative control)."})
    weight_normalizer: str = field(
        default="selected", metadata={"help": "'selected' (authors' code: mean over kept tokens) or 'all' (TRL)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.weighting is not None:
            raise ValueError(
                "ForkingGRPOConfig sets its own weighter from forking_* fields; use WeightedGRPOConfig with "
                "'weighting' to compose the forking mask with other weighters"
            )
        # Validate the forking fields now, naming them, rather than at trainer init.
        self.forking_weighter()

    def forking_weighter(self) -> EntropyQuantile:
        try:
            return EntropyQuantile(
                rho=self.forking_rho, scope=self.forking_scope, select=self.forking_select, invert=self.forking_invert
            )
        except ValueError as exc:
            raise ValueError(str(exc).replace("entropy_quantile: ", "forking_")) from None


class ForkingGRPOTrainer(WeightedGRPOTrainer):
    """GRPO on the forking (high-entropy) tokens only; see `ForkingGRPOConfig`."""

    _tag_names = ["trl", "grpo", "tokrl", "forking-tokens"]
    _name = "Forking-token GRPO"
    config_class = ForkingGRPOConfig

    def __init__(self, *args, weighter=None, **kwargs):
        args_ = kwargs.get("args") if "args" in kwargs else (args[2] if len(args) > 2 else None)
        if weighter is None and isinstance(args_, ForkingGRPOConfig):
            weighter = args_.forking_weighter()
        super().__init__(*args, weighter=weighter, **kwargs)
