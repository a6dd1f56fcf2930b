"""TRL trainer subclasses that apply per-token weights."""

from tokrl.trainers.forking_grpo import ForkingGRPOConfig, ForkingGRPOTrainer
from tokrl.trainers.weighted_grpo import WeightedGRPOTrainer
from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig

__all__ = ["WeightedGRPOConfig", "WeightedGRPOTrainer", "ForkingGRPOConfig", "ForkingGRPOTrainer"]
from tokrl.trainers.weighted_dpo import WeightedDPOTrainer  # noqa: E402
from tokrl.trainers.weighted_dpo_config import WeightedDPOConfig  # noqa: E402
from tokrl.trainers.cdpo import CDPOConfig, CDPOTrainer  # noqa: E402
from tokrl.trainers.treg import TREGConfig, TREGTrainer  # noqa: E402

__all__ += ["WeightedDPOConfig", "WeightedDPOTrainer", "CDPOConfig", "CDPOTrainer", "TREGConfig", "TREGTrainer"]
from tokrl.trainers.thr_grpo import THRGRPOConfig, THRGRPOTrainer  # noqa: E402

__all__ += ["THRGRPOConfig", "THRGRPOTrainer"]
from tokrl.trainers.token_cleaning_sft import TokenCleaningSFTTrainer  # noqa: E402
from tokrl.trainers.token_cleaning_sft_config import TokenCleaningSFTConfig  # noqa: E402

__all__ += ["TokenCleaningSFTConfig", "TokenCleaningSFTTrainer"]
