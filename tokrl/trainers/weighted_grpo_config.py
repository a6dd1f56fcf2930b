"""`WeightedGRPOConfig`: TRL's `GRPOConfig` plus the per-token weighting fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from tokrl.trainers.device_defaults import resolve_device_defaults

NORMALIZERS = ("all", "selected")


@dataclass
class WeightedGRPOConfig(GRPOConfig):
    r"""
    Configuration for [`WeightedGRPOTrainer`]: every field of TRL's `GRPOConfig`, plus:

    > Parameters that control token weighting

    weighting (`str` or `dict`, *optional*, defaults to `None`):
        Weighter spec, resolved by name through the tokrl registry (e.g. `{"name": "entropy_quantile", "rho": 0.2}`).
        `None` means uniform weights, i.e. plain GRPO. A `weighter=` object passed to the trainer takes precedence.
    weight_normalizer (`str`, *optional*, defaults to `"all"`):
        `"all"`: weighted per-token losses are aggregated with TRL's own denominators (token counts), as in the
        forking paper's equation. `"selected"`: the denominators count weight mass instead of tokens (per sequence
        for `grpo`/`sapo`, per local micro-batch for `bnpo`, per micro-batch across processes for
        `dapo`/`cispo`/`vespo`/`dr_grpo`), as in the forking authors' verl code. Same for uniform weights.
    token_dump_steps (`int`, *optional*, defaults to `0`):
        Every this many steps, write a bounded sample of completions with per-token values to
        `output_dir/token_values.jsonl`. 0 disables.
    token_dump_samples (`int`, *optional*, defaults to `4`):
        Completions written per dump.

    `bf16` and `gradient_checkpointing` default to `None`: TRL's GPU defaults when an accelerator is present, fp32
    and no checkpointing on a CPU.
    """

    weighting: Any = field(
        default=None,
        metadata={"help": "Weighter spec (name or mapping with 'name'); None = uniform, i.e. plain GRPO."},
    )
    weight_normalizer: str = field(
        default="all",
        metadata={"help": "'all' (TRL's token-count denominators) or 'selected' (weight-mass denominators)."},
    )
    token_dump_steps: int = field(
        default=0, metadata={"help": "Write per-token values every N steps to token_values.jsonl; 0 = off."}
    )
    token_dump_samples: int = field(default=4, metadata={"help": "Completions written per token dump."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; None = on with an accelerator, off on CPU."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Gradient checkpointing; None = on with an accelerator, off on CPU."}
    )

    def __post_init__(self):
        resolve_device_defaults(self)
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO compares completions within a group), "
                             f"got {self.num_generations}")
        super().__post_init__()
        if self.weight_normalizer not in NORMALIZERS:
            raise ValueError(f"weight_normalizer must be one of {NORMALIZERS}, got {self.weight_normalizer!r}")
        if self.weight_normalizer == "selected" and self.loss_type == "luspo":
            raise ValueError(
                "weight_normalizer='selected' is not defined for loss_type='luspo' (it sums tokens per sequence "
                "without a token-count denominator); use weight_normalizer='all' or another loss_type"
            )
        if self.token_dump_steps < 0 or self.token_dump_samples < 0:
            raise ValueError("token_dump_steps and token_dump_samples must be >= 0")
