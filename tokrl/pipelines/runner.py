"""The generic half of an offline pipeline: a stage runner and the recipe sections every pipeline shares.

`Runner` runs a pipeline's stages in order under `output_dir/<stage>` (complete stages are skipped by the stages
themselves, see `tokrl.pipelines.stage`), one stage alone with `--stage`, or up to a stage with `stop_after`. The
helpers below read the recipe prelude (method, model, output dir, trainer section), LoRA and settings sections, and
train or evaluate a model as a resumable stage.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM

from tokrl.config_ranges import LORA_RANGES, out_of_range
from tokrl.evaluation import evaluate
from tokrl.models import load_model, recipe_model_source
from tokrl.pipelines.stage import (StageError, dataset_fingerprint, is_complete, load_stage, run_artifact_stage,
                                  stage_metadata)
from tokrl.recipe import RecipeError, check_keys, load_recipe
from tokrl.run_dir import last_checkpoint
from tokrl.rewards import resolve_rewards
from tokrl.utils import did_you_mean


class StopPipeline(Exception):
    """Raised by `Runner.step` after the one stage asked for with `--stage` has run; carries its result."""

    def __init__(self, name: str, result=None):
        super().__init__(name)
        self.name = name
        self.result = result


class Runner:
    """Runs a pipeline's stages in order under `output_dir/<stage>`: complete stages are skipped by the stages
    themselves; `only` runs one stage (its inputs must be complete); `overwrite` redoes the stages it applies to."""

    def __init__(self, output_dir: str | Path, stages: tuple[str, ...], *, overwrite: bool = False,
                 only: str | None = None, stop_after: str | None = None, file: str = "<recipe>"):
        if only is not None and only not in stages:
            raise RecipeError(f"{file}: unknown stage '{only}'{did_you_mean(only, stages)}; stages: "
                              f"{', '.join(stages)}")
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.only = only
        self.stop_after = stop_after

    def dir(self, name: str) -> Path:
        return self.output_dir / name

    def need(self, value, name: str):
        """`value` from an optional step that a later stage needs after all."""
        if value is None:
            raise StageError(f"stage '{self.only}' needs the output of stage '{name}' ({self.dir(name)}), which is "
                             f"not complete; run it first (--stage {name}) or run the whole pipeline")
        return value

    def step(self, name: str, compute: Callable[[bool], Any], load: Callable[[Path], Any] | None = None,
             required: bool = True):
        """`compute(overwrite)` runs (or skips) the stage; with `only` set, other stages are loaded, not run
        (an incomplete one is an error if `required`, else None: evaluations and side branches)."""
        if self.only is not None and name != self.only:
            if not is_complete(self.dir(name)):
                return self.need(None, name) if required else None
            return (load or load_stage)(self.dir(name))
        skipped = is_complete(self.dir(name)) and not self.overwrite
        print(f"[tokrl] stage {name}: {'complete, skipping' if skipped else 'running'}", flush=True)
        result = compute(self.overwrite)
        if name in (self.only, self.stop_after):
            raise StopPipeline(name, result)
        return result


def recipe_rewards(recipe: dict, file, columns=None) -> list[Callable]:
    """The recipe's `reward` (default [accuracy]) as functions, checked against the data's columns when given."""
    try:
        return resolve_rewards(recipe.get("reward") or ["accuracy"], columns=columns)
    except ValueError as exc:
        raise RecipeError(f"{file}: {exc}") from None


def settings_from(cls, mapping: dict | None, where: str, file, **defaults):
    """A settings dataclass from a recipe section (over `defaults`): unknown keys (with a suggestion) and bad values
    name the key."""
    mapping = dict(check_keys(mapping, [f.name for f in dataclasses.fields(cls) if f.init], where, file))
    try:
        return cls(**{**defaults, **mapping})
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{file}: invalid '{where}' settings: {exc}") from None


def model_loader(model_id: str, trust_remote_code: bool = False) -> Callable:
    """A function returning a fresh (model, tokenizer) each call (LoRA wrapping mutates a base model in place)."""
    return functools.partial(load_model, model_id, trust_remote_code=trust_remote_code)


def check_method(recipe: dict, method: str, file, command: str | None = None) -> None:
    """A recipe given to a method's alias command (`tokrl cdpo|treg|clean|dpo`) must be of that method."""
    if recipe.get("method", method) != method:
        raise RecipeError(f"{file}: method '{recipe['method']}' is not run by `tokrl {command or method}` (an alias "
                          f"for method: {method}); `tokrl train RECIPE` runs every method")


@dataclass
class PipelineRecipe:
    """The parts every pipeline recipe shares (`open_pipeline_recipe`)."""

    method: str
    file: str
    recipe: dict
    output_dir: Path
    model_id: str
    load_base: Callable  # a fresh (model, tokenizer) of the recipe's model each call
    trainer: dict  # the `trainer` section


def open_pipeline_recipe(recipe_path, overrides, method: str, keys) -> PipelineRecipe:
    """Load and check the parts every pipeline recipe shares; errors name the file and key."""
    file = str(recipe_path)
    recipe = load_recipe(recipe_path, list(overrides))
    check_keys(recipe, keys, "", file, required=("model",))
    check_method(recipe, method, file)
    output_dir = Path(recipe.get("output_dir") or f"runs/{Path(file).stem}")
    model_id = str(recipe["model"])
    recipe_model_source(model_id, file)
    trainer_section = dict(recipe.get("trainer") or {})
    if "output_dir" in trainer_section:
        raise RecipeError(f"{file}: set the top-level 'output_dir', not 'trainer.output_dir' (stages live under it)")
    return PipelineRecipe(method, file, recipe, output_dir, model_id,
                          model_loader(model_id, bool(recipe.get("trust_remote_code", False))), trainer_section)


def lora_config(spec: dict | None, where: str, file):
    """A peft `LoraConfig` from a recipe mapping (None -> no LoRA); bad keys are one-line errors."""
    if spec is None:
        return None
    config = settings_from(LoraConfig, spec, where, file, task_type="CAUSAL_LM")
    problem = out_of_range(config, LORA_RANGES, where)
    if problem:
        raise RecipeError(f"{file}: {problem}")
    return config


def train_preference_stage(stage_dir: Path, name: str, trainer_cls, config, dataset: Dataset, load_base: Callable,
                           lora, *, config_record: dict, input_fingerprint: str, overwrite: bool) -> Path:
    """Train a DPO-family trainer into `stage_dir/artifact` (the saved adapter or model + tokenizer).

    Trainer checkpoints go to `stage_dir/checkpoints` and a killed run resumes from the newest one; the stage is
    marked complete only after the final save. `config_record` (the recipe sections) is what gets hashed.
    """
    checkpoints = stage_dir / "checkpoints"
    if overwrite and checkpoints.exists():
        shutil.rmtree(checkpoints)

    def build(tmp: Path):
        model, tokenizer = load_base()
        config.output_dir = str(checkpoints)
        trainer = trainer_cls(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                              peft_config=lora)
        resume = last_checkpoint(checkpoints)  # the newest complete one: a killed save leaves a partial folder
        t0 = time.time()
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        means: dict[str, list[float]] = {}  # of the metrics logged with the loss (rewards/..., weights/...)
        for entry in (h for h in trainer.state.log_history if "loss" in h or "train_loss" in h):
            for key, value in entry.items():
                if isinstance(value, (int, float)) and "/" in key:
                    means.setdefault(key, []).append(float(value))
        return {"train_loss": result.training_loss, "steps": trainer.state.global_step, "seconds": time.time() - t0,
                "resumed": bool(resume), "mean_logged": {k: sum(v) / len(v) for k, v in means.items()}}

    if len(dataset) == 0:
        raise StageError(f"stage '{name}': no preference pairs to train on (the select stage produced none; sample "
                         "more completions per prompt or change the sampling temperature)")
    return run_artifact_stage(name, stage_dir, build, config_record, input_fingerprint=input_fingerprint,
                              overwrite=overwrite)


def load_trained(path: Path, load_base: Callable):
    """The model a training stage saved: a LoRA adapter (merged onto a fresh base) or a full model."""
    path = Path(path)
    model, tokenizer = load_base()
    if (path / "adapter_config.json").is_file():
        return PeftModel.from_pretrained(model, str(path)).merge_and_unload(), tokenizer
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=next(model.parameters()).dtype), tokenizer


@dataclass
class EvalSettings:
    """Greedy accuracy on the task's eval split, before and after training."""

    before: bool = True
    after: bool = True
    num_prompts: int | None = None
    max_new_tokens: int = 16
    batch_size: int = 32


def eval_stage(stage_dir: Path, name: str, get_model: Callable, eval_data: Dataset, settings: EvalSettings, *,
               input_fingerprint: str, overwrite: bool, rewards=None) -> dict:
    """Greedy accuracy and mean reward (tokrl.evaluation.evaluate, with the recipe's rewards) as a stage: its
    result, with the per-prompt scores that paired comparisons need, lives in the manifest."""

    def build(tmp: Path):
        model, tokenizer = get_model()
        result = evaluate(model, tokenizer, eval_data, max_new_tokens=settings.max_new_tokens,
                          batch_size=settings.batch_size, per_prompt=True,
                          **({"reward": rewards} if rewards else {}))
        (tmp / "accuracy.json").write_text(json.dumps({k: v for k, v in result.items() if k != "per_prompt"}) + "\n")
        return {**result, "num_prompts": len(eval_data)}

    config = {"settings": asdict(settings), "eval_rows": len(eval_data), "eval_data": dataset_fingerprint(eval_data),
              "rewards": [getattr(f, "__name__", str(f)) for f in rewards or []]}
    run_artifact_stage(name, stage_dir, build, config, input_fingerprint=input_fingerprint, overwrite=overwrite)
    return stage_metadata(stage_dir)
