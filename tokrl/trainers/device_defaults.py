"""CPU-sane defaults. TRL's GPU defaults (bf16, gradient checkpointing) make a CPU GRPO step ~9x slower."""

from __future__ import annotations

import torch


def has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def resolve_device_defaults(config) -> None:
    """Fill `bf16` and `gradient_checkpointing` when the user left them unset (None).

    With an accelerator: TRL's defaults (bf16 unless fp16, gradient checkpointing on). Without one: fp32 and no
    gradient checkpointing. Call before the TRL config's own `__post_init__`.
    """
    gpu = has_accelerator()
    if config.bf16 is None:
        config.bf16 = (not config.fp16) if gpu else False
    if config.gradient_checkpointing is None:
        config.gradient_checkpointing = gpu
