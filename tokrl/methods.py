"""Method name (as written in a recipe's `method:`) -> trainer and config classes, imported lazily."""

from __future__ import annotations

import importlib

from tokrl.recipe import RecipeError, did_you_mean

# Online (GRPO-family) methods, trained by `tokrl train`.
GRPO_METHODS = {
    "grpo": ("tokrl.trainers.weighted_grpo:WeightedGRPOTrainer", "tokrl.trainers.weighted_grpo_config:WeightedGRPOConfig"),
    "forking_grpo": ("tokrl.trainers.forking_grpo:ForkingGRPOTrainer", "tokrl.trainers.forking_grpo:ForkingGRPOConfig"),
    "thr_grpo": ("tokrl.trainers.thr_grpo:THRGRPOTrainer", "tokrl.trainers.thr_grpo:THRGRPOConfig"),
}
# Offline-scored methods: a pipeline command runs their stages (sample, score, train).
PIPELINE_METHODS = {"cdpo": "cdpo", "treg": "treg", "token_cleaning": "clean", "dpo": "dpo"}


def _load(path: str):
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise RecipeError(f"method class {path} is not available in this install: {exc}") from None


def grpo_method(name: str, file) -> tuple[type, type]:
    """(TrainerClass, ConfigClass) for a GRPO-family method."""
    if name in PIPELINE_METHODS:
        raise RecipeError(f"{file}: method '{name}' is an offline pipeline: run `tokrl {PIPELINE_METHODS[name]} {file}`")
    if name not in GRPO_METHODS:
        known = list(GRPO_METHODS) + list(PIPELINE_METHODS)
        raise RecipeError(f"{file}: unknown method '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}")
    trainer_path, config_path = GRPO_METHODS[name]
    return _load(trainer_path), _load(config_path)
