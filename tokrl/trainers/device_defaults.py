"""CPU-sane defaults. TRL's GPU defaults (bf16, gradient checkpointing) make a CPU GRPO step ~9x slower."""

from __future__ import annotations

import os

import torch


def has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def resolve_device_defaults(config) -> None:
    """Fill `bf16` and `gradient_checkpointing` when the user left them unset (None), and pick gloo for CPU
    multi-process runs.

    With an accelerator: TRL's defaults (bf16 unless fp16, gradient checkpointing on). Without one: fp32 and no
    gradient checkpointing. Call before the TRL config's own `__post_init__`.
    """
    gpu = has_accelerator()
    if config.bf16 is None:
        config.bf16 = (not config.fp16) if gpu else False
    if config.gradient_checkpointing is None:
        config.gradient_checkpointing = gpu
    # accelerate + DeepSpeed on CPU leaves the process-group backend unset; TrainingArguments then counts one
    # process while DeepSpeed counts all of them and fails its batch-size check. gloo is the CPU backend.
    if not gpu and getattr(config, "ddp_backend", None) is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        config.ddp_backend = "gloo"
