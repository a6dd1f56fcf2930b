"""Value ranges TRL/transformers configs do not check themselves, so that `tokrl validate` catches them.

Without these, `temperature: 0` fails minutes into a run (a division inside sampling), a negative learning rate
trains the wrong way silently, and LoRA `r: 0` fails inside peft with a message naming no key.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

# field -> (test, what it must be). Only fields the config has are checked; None always passes (= "unset").
RANGES = {
    "learning_rate": (lambda v: v >= 0, ">= 0"),
    "temperature": (lambda v: v > 0, "> 0 (sampling temperature; greedy decoding is not a GRPO setting)"),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "beta": (lambda v: v >= 0, ">= 0"),
    "epsilon": (lambda v: v >= 0, ">= 0"),
    "epsilon_high": (lambda v: v >= 0, ">= 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "max_grad_norm": (lambda v: v >= 0, ">= 0"),
    "warmup_steps": (lambda v: v >= 0, ">= 0"),
    "num_train_epochs": (lambda v: v > 0, "> 0"),
    "max_steps": (lambda v: v >= -1 and v != 0, ">= 1 (or -1: run num_train_epochs)"),
    "per_device_train_batch_size": (lambda v: v >= 1, ">= 1"),
    "per_device_eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, ">= 1"),
    "max_completion_length": (lambda v: v >= 1, ">= 1"),
    "max_prompt_length": (lambda v: v >= 1, ">= 1"),
    "max_length": (lambda v: v >= 1, ">= 1"),
    "logging_steps": (lambda v: v > 0, "> 0"),
    "save_steps": (lambda v: v > 0, "> 0"),
    "seed": (lambda v: v >= 0, ">= 0"),
}
LORA_RANGES = {
    "r": (lambda v: v >= 1, ">= 1 (the LoRA rank)"),
    "lora_alpha": (lambda v: v > 0, "> 0"),
    "lora_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
}


def out_of_range(obj, ranges: dict = RANGES, where: str = "trainer") -> str | None:
    """The first numeric field of `obj` (a built config) outside `ranges`, as a message naming
    `where.field`; None when all are fine. The caller adds the file."""
    for key, (ok, rule) in ranges.items():
        value = getattr(obj, key, None)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value) or not ok(value):
            return f"'{where}.{key}' must be {rule}, got {value!r}"
    return None


# report_to value -> the package it needs
REPORTERS = {"wandb": "wandb", "tensorboard": "tensorboard", "mlflow": "mlflow", "comet_ml": "comet_ml",
             "trackio": "trackio", "swanlab": "swanlab", "clearml": "clearml", "neptune": "neptune",
             "dvclive": "dvclive", "codecarbon": "codecarbon", "azure_ml": "azureml"}


def missing_resources(config, where: str = "trainer") -> str | None:
    """A checkpoint to resume from that does not exist, or a `report_to` whose package is not installed: found
    here instead of after the model has loaded. None when all is there."""
    resume = getattr(config, "resume_from_checkpoint", None)
    if isinstance(resume, str) and resume.lower() not in ("true", "false") and not Path(resume).is_dir():
        return f"'{where}.resume_from_checkpoint': no checkpoint directory {resume}"
    report_to = getattr(config, "report_to", None) or []
    for name in [report_to] if isinstance(report_to, str) else report_to:
        package = REPORTERS.get(name)
        if package and importlib.util.find_spec(package) is None:
            return f"'{where}.report_to': {name} is not installed (pip install {package}, or report_to: none)"
    return None
