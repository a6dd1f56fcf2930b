"""`TokenCleaningSFTConfig`: TRL's `SFTConfig` plus the token-selection weighting of Token Cleaning."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig

from tokrl.trainers.shared_config import SharedConfig


@dataclass
class TokenCleaningSFTConfig(SharedConfig, SFTConfig):
    r"""
    Configuration for [`TokenCleaningSFTTrainer`]: every field of TRL's `SFTConfig`, the fields of `SharedConfig`
    (`token_dump_steps`, `token_dump_samples`: `tokrl inspect` renders the dump; device defaults), plus:

    > Parameters that control token weighting

    weighting (`str` or `dict`, *optional*, defaults to `{"name": "column", "column": "token_mask"}`):
        Offline weighter spec, resolved by name through the tokrl registry. The default reads the 0/1 `token_mask`
        column written by `tokrl clean` (Token Cleaning, [Pang et al. 2025](https://huggingface.co/papers/2502.01968),
        keeps the top 60 % of response tokens by influence). `"uniform"` trains on every response token, i.e. plain
        SFT. Tokens with weight 0 get label -100, so TRL's normaliser (`num_items_in_batch`: label tokens over the
        whole optimizer step, all ranks) counts only selected tokens: the loss is the mean NLL over selected tokens,
        as in the paper. Weighters that need the forward (`logps`, `entropies`, `hidden_states`) are accepted too.

    Differences from the official Token Cleaning code, kept on purpose: the normaliser is TRL's global token mean
    (the official run averages per micro-batch per device, then over devices); rows with no selected token are
    dropped by TRL (the official code keeps them with zero loss); TRL shuffles (`shuffle_dataset`, and the
    sampler) where the official run does not.

    `remove_unused_columns` defaults to `False` (the per-token columns must reach the collator).
    """

    weighting: Any = field(
        default_factory=lambda: {"name": "column", "column": "token_mask"},
        metadata={
            "help": "Offline weighter spec (name or mapping with 'name'); default: the 0/1 'token_mask' column "
            "written by `tokrl clean` (Token Cleaning, arXiv 2502.01968); 'uniform' = plain SFT."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: the per-token columns have to reach the collator."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.packing or self.padding_free:
            raise ValueError(
                "packing and padding_free must be False for TokenCleaningSFTConfig: they drop per-token columns "
                "(set packing=False, padding_free=False)"
            )
        if self.remove_unused_columns:
            raise ValueError(
                "remove_unused_columns must be False for TokenCleaningSFTConfig: it would drop the 'token_mask' "
                "column before the collator"
            )
        if self.loss_type != "nll":
            raise ValueError(f"loss_type={self.loss_type!r} is not supported by TokenCleaningSFTConfig; use 'nll'")
