"""`TokenCleaningSFTConfig`: TRL's `SFTConfig` plus the token-selection weighting of Token Cleaning."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig

from tokrl.trainers.device_defaults import resolve_device_defaults
from tokrl.trainers.token_dump_config import TokenDumpConfig


def _default_weighting() -> dict:
    return {"name": "column", "column": "token_mask"}


@dataclass
class TokenCleaningSFTConfig(TokenDumpConfig, SFTConfig):
    r"""
    Configuration for [`TokenCleaningSFTTrainer`]: every field of TRL's `SFTConfig`, the token-dump fields of
    `TokenDumpConfig` (`token_dump_steps`, `token_dump_samples`: `tokrl inspect` renders the dump), plus:

    > Parameters that control token weighting

    weighting (`str` or `dict`, *optional*, defaults to `{"name": "column", "column": "token_mask"}`):
        Offline weighter spec, resolved by name through the tokrl registry. The default reads the 0/1 `token_mask`
        column written by `tokrl clean` (Token Cleaning, [Pang et al. 2025](https://huggingface.co/papers/2502.01968),
        keeps the top 60 % of response tokens by influence). `"uniform"` trains on every response token, i.e. plain
        SFT. Tokens with weight 0 get label -100, so TRL's normaliser (`num_items_in_batch`: label tokens over the
        whole optimizer step, all ranks) counts only selected tokens: the loss is the mean NLL over selected tokens,
        as in the paper. Only weighters that read dataset columns are accepted (no online `needs`).

    Differences from the official Token Cleaning code, kept on purpose: the normaliser is TRL's global token mean
    (the official run averages per micro-batch per device, then over devices); rows with no selected token are
    dropped by TRL (the official code keeps them with zero loss); TRL shuffles (`shuffle_dataset`, and the
    sampler) where the official run does not.

    `remove_unused_columns` defaults to `False` (the per-token columns must reach the collator); `bf16` and
    `gradient_checkpointing` default to `None`: TRL's GPU defaults with an accelerator; on a CPU bf16 autocast where
    the CPU has native bf16 (fp32 elsewhere) and no checkpointing (`tokrl/trainers/device_defaults.py`).
    """

    weighting: Any = field(
        default_factory=_default_weighting,
        metadata={
            "help": "Offline weighter spec (name or mapping with 'name'); default: the 0/1 'token_mask' column "
            "written by `tokrl clean` (Token Cleaning, arXiv 2502.01968); 'uniform' = plain SFT."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: the per-token columns have to reach the collator."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; None = on with an accelerator or a native-bf16 CPU."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Gradient checkpointing; None = on with an accelerator, off on a CPU."}
    )

    def __post_init__(self):
        resolve_device_defaults(self)
        super().__post_init__()
        self.check_token_dump()
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
