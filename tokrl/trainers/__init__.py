"""TRL trainer subclasses that apply per-token weights."""

from tokrl.trainers.cdpo import CDPOConfig, CDPOTrainer
from tokrl.trainers.forking_grpo import ForkingGRPOConfig, ForkingGRPOTrainer
from tokrl.trainers.thr_grpo import THRGRPOConfig, THRGRPOTrainer
from tokrl.trainers.token_cleaning_sft import TokenCleaningSFTTrainer
from tokrl.trainers.token_cleaning_sft_config import TokenCleaningSFTConfig
from tokrl.trainers.treg import TREGConfig, TREGTrainer
from tokrl.trainers.weighted_dpo import WeightedDPOTrainer
from tokrl.trainers.weighted_dpo_config import WeightedDPOConfig
from tokrl.trainers.weighted_grpo import WeightedGRPOTrainer
from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig

__all__ = ["WeightedGRPOConfig", "WeightedGRPOTrainer", "ForkingGRPOConfig", "ForkingGRPOTrainer", "THRGRPOConfig",
           "THRGRPOTrainer", "WeightedDPOConfig", "WeightedDPOTrainer", "CDPOConfig", "CDPOTrainer", "TREGConfig",
           "TREGTrainer", "TokenCleaningSFTConfig", "TokenCleaningSFTTrainer"]
