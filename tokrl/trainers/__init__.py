"""TRL trainer subclasses that apply per-token weights."""

from tokrl.trainers.forking_grpo import ForkingGRPOConfig, ForkingGRPOTrainer
from tokrl.trainers.weighted_grpo import WeightedGRPOTrainer
from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig

__all__ = ["WeightedGRPOConfig", "WeightedGRPOTrainer", "ForkingGRPOConfig", "ForkingGRPOTrainer"]
