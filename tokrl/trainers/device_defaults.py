"""Precision and checkpointing defaults per device, chosen by measurement (benchmarks/README.md, "CPU defaults").

With an accelerator: TRL's defaults. On a CPU with native bf16 dot products (AVX512-BF16 or AMX on x86, the BF16
extension on Arm) a GRPO step under bf16 autocast takes ~0.65x the fp32 time; without them bf16 is emulated and
slower, so fp32 stays. Gradient checkpointing costs CPU time (recomputed forwards) and is off on every CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# /proc/cpuinfo flags that mean bf16 matmuls run natively (x86: "flags"; Arm: "Features")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when this CPU computes bf16 dot products in hardware (else torch emulates them, slower than fp32)."""
    forced = os.environ.get("TOKRL_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return any(flag in cpu_flags(cpuinfo) for flag in NATIVE_BF16_FLAGS)


def distributed_cpu_run(config=None) -> bool:
    """Several processes or DeepSpeed on a CPU: test and debugging set-ups, kept in fp32 (DeepSpeed's bf16 mode
    would also switch its optimizer to bf16 weights, which was not measured here)."""
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or deepspeed or getattr(config, "deepspeed", None) is not None


def default_precision(config=None) -> dict:
    """`bf16` and `gradient_checkpointing` for this machine: TRL's with an accelerator; on a CPU bf16 autocast only
    where it is native (single-process runs), never checkpointing."""
    if has_accelerator():
        return {"bf16": True, "gradient_checkpointing": True}
    return {"bf16": cpu_has_native_bf16() and not distributed_cpu_run(config), "gradient_checkpointing": False}


def precision_kwargs() -> dict:
    """`default_precision()` as fields for a TRL config that resolves no device defaults itself (SFTConfig), with
    `use_cpu=True` where that means bf16 on a CPU (transformers requires it for bf16 without a GPU)."""
    fields = default_precision()
    return {**fields, "use_cpu": True} if fields["bf16"] and not has_accelerator() else fields


def resolve_device_defaults(config) -> None:
    """Fill `bf16` and `gradient_checkpointing` when the user left them unset (None), and pick gloo for CPU
    multi-process runs. Call before the TRL config's own `__post_init__`.

    With an accelerator: TRL's defaults (bf16 unless fp16, gradient checkpointing on). On a CPU: `default_precision`
    (bf16 autocast where native, with `use_cpu=True`, which transformers requires for bf16 without a GPU).
    `TOKRL_CPU_BF16=0` (or 1) overrides the detection.
    """
    gpu = has_accelerator()
    defaults = default_precision(config)
    if config.bf16 is None:
        config.bf16 = (not config.fp16) if gpu else defaults["bf16"]
        if config.bf16 and not gpu:
            config.use_cpu = True
    if config.gradient_checkpointing is None:
        config.gradient_checkpointing = defaults["gradient_checkpointing"]
    # accelerate + DeepSpeed on CPU leaves the process-group backend unset; TrainingArguments then counts one
    # process while DeepSpeed counts all of them and fails its batch-size check. gloo is the CPU backend.
    if not gpu and getattr(config, "ddp_backend", None) is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        config.ddp_backend = "gloo"
