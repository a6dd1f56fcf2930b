"""The fields every weighted trainer's config shares (GRPO, DPO, SFT): the token dump and the device defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokrl.trainers.device_defaults import resolve_device_defaults


@dataclass
class SharedConfig:
    r"""
    > Parameters that control the token dump (shared by every tokrl config)

    token_dump_steps (`int`, *optional*, defaults to `20`):
        At the first step and every this many steps after, write a bounded sample of completions with their
        per-token values (weight, entropy, log-prob, data columns) to `output_dir/token_values.jsonl`, which
        `tokrl inspect` renders (on by default so that every run can be inspected). 0 disables.
    token_dump_samples (`int`, *optional*, defaults to `4`):
        Completions written per dump.

    `bf16` and `gradient_checkpointing` default to `None`: TRL's GPU defaults when an accelerator is present; on a
    CPU bf16 autocast where the CPU has native bf16 (fp32 elsewhere) and no checkpointing
    (`tokrl/trainers/device_defaults.py`).
    """

    token_dump_steps: int = field(
        default=20,
        metadata={"help": "Write per-token values at step 1 and every N steps to token_values.jsonl; 0 = off."},
    )
    token_dump_samples: int = field(default=4, metadata={"help": "Completions written per token dump."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; None = on with an accelerator or a native-bf16 CPU."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Gradient checkpointing; None = on with an accelerator, off on a CPU."}
    )

    def __post_init__(self):
        resolve_device_defaults(self)  # before TRL's own __post_init__, which reads bf16
        super().__post_init__()
        if self.token_dump_steps < 0 or self.token_dump_samples < 0:
            raise ValueError("token_dump_steps and token_dump_samples must be >= 0")
