"""The token-dump settings every weighted trainer's config shares (GRPO, DPO, SFT)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenDumpConfig:
    r"""
    > Parameters that control the token dump (shared by every tokrl config)

    token_dump_steps (`int`, *optional*, defaults to `20`):
        At the first step and every this many steps after, write a bounded sample of completions with their
        per-token values (weight, entropy, log-prob, data columns) to `output_dir/token_values.jsonl`, which
        `tokrl inspect` renders (on by default so that every run can be inspected). 0 disables.
    token_dump_samples (`int`, *optional*, defaults to `4`):
        Completions written per dump.
    """

    token_dump_steps: int = field(
        default=20,
        metadata={"help": "Write per-token values at step 1 and every N steps to token_values.jsonl; 0 = off."},
    )
    token_dump_samples: int = field(default=4, metadata={"help": "Completions written per token dump."})

    def check_token_dump(self) -> None:
        if self.token_dump_steps < 0 or self.token_dump_samples < 0:
            raise ValueError("token_dump_steps and token_dump_samples must be >= 0")
