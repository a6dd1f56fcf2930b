"""Forking-token GRPO: train only on the top-rho highest-entropy completion tokens.

Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective Reinforcement Learning for
LLM Reasoning" (arXiv 2506.01939). A preset: `WeightedGRPOConfig` with an `entropy_quantile` weighting by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokrl.trainers.weighted_grpo import WeightedGRPOTrainer
from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig


@dataclass
class ForkingGRPOConfig(WeightedGRPOConfig):
    r"""
    Configuration for [`ForkingGRPOTrainer`]: `WeightedGRPOConfig` with the forking-token defaults.

    weighting (`dict`, *optional*, defaults to `{"name": "entropy_quantile", "rho": 0.2, "scope": "global",
    "select": "topk"}`):
        The top-20% entropy tokens of the micro-batch over all processes get gradient (paper: "top 20%"); `rho`,
        `scope` (`"global"`/`"batch"`/`"sequence"`), `select` (`"topk"`/`"quantile"`) and `invert` (the paper's
        negative control) are the `entropy_quantile` weighter's arguments.
    weight_normalizer (`str`, *optional*, defaults to `"selected"`):
        The authors' code averages the loss over the kept tokens (`"selected"`); the paper's equation and TRL divide
        by all completion tokens (`"all"`).
    """

    weighting: Any = field(
        default_factory=lambda: {"name": "entropy_quantile", "rho": 0.2, "scope": "global", "select": "topk"},
        metadata={"help": "Weighter spec; default: entropy_quantile, rho 0.2 (paper), global scope, topk."},
    )
    weight_normalizer: str = field(
        default="selected", metadata={"help": "'selected' (authors' code: mean over kept tokens) or 'all' (TRL)."}
    )


class ForkingGRPOTrainer(WeightedGRPOTrainer):
    """GRPO on the forking (high-entropy) tokens only; see `ForkingGRPOConfig`."""

    _tag_names = ["trl", "grpo", "tokrl", "forking-tokens"]
    _name = "Forking-token GRPO"
    config_class = ForkingGRPOConfig
