"""A GRPO-family recipe (grpo, forking_grpo, thr_grpo) end to end: check it, build the trainer, train, evaluate."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from trl.models.utils import unwrap_model_for_generation

from tokrl.console import say
from tokrl.data.dataset import build_data, data_spec, is_local
from tokrl.diagnostics import METRICS, MetricsLogCallback
from tokrl.evaluation import check_eval_settings, evaluate, headline
from tokrl.models import load_model, recipe_model_source
from tokrl.pipelines.runner import lora_config, recipe_rewards
from tokrl.recipe import RecipeError, build_config, check_keys, load_recipe, section
from tokrl.run_dir import claim_run_dir, write_run_info
from tokrl.utils import load_object
from tokrl.weighting import build_weighter

# method -> (trainer class, config class), loaded by path so that a method's missing extra breaks only that method
GRPO_METHODS = {
    "grpo": ("tokrl.trainers.weighted_grpo:WeightedGRPOTrainer", "tokrl.trainers.weighted_grpo_config:WeightedGRPOConfig"),
    "forking_grpo": ("tokrl.trainers.forking_grpo:ForkingGRPOTrainer", "tokrl.trainers.forking_grpo:ForkingGRPOConfig"),
    "thr_grpo": ("tokrl.trainers.thr_grpo:THRGRPOTrainer", "tokrl.trainers.thr_grpo:THRGRPOConfig"),
}
RECIPE_KEYS = ("method", "model", "trust_remote_code", "task", "data", "reward", "weighting", "trainer", "eval",
               "output_dir", "peft", "description")
EVAL_KEYS = ("before", "after", "max_new_tokens", "batch_size", "num_prompts", "pass_k", "num_samples", "temperature")
DEFAULT_EVAL = {"before": True, "after": True, "max_new_tokens": None, "batch_size": 50, "num_prompts": None,
                "pass_k": [], "num_samples": None, "temperature": 1.0}


def grpo_method(name: str, file) -> tuple[type, type]:
    """(TrainerClass, ConfigClass) of a GRPO-family method."""
    if name not in GRPO_METHODS:
        raise RecipeError(f"{file}: method '{name}' is not a GRPO-family method ({', '.join(GRPO_METHODS)})")
    try:
        return tuple(load_object(path, "method class") for path in GRPO_METHODS[name])
    except ValueError as exc:
        raise RecipeError(f"{file}: method '{name}' is not available in this install: {exc}") from None


def preset_weighting(config_cls, weighting):
    """A weighting mapping without a `name` changes the preset's default spec (`forking_grpo` + `{rho: 0.3}`)."""
    if not isinstance(weighting, dict) or "name" in weighting:
        return weighting
    field = {f.name: f for f in dataclasses.fields(config_cls)}.get("weighting")
    default = None
    if field is not None:
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    return {**default, **weighting} if isinstance(default, dict) and "name" in default else weighting


def prepare_run(recipe_path, overrides=()) -> dict:
    """Parse and check a GRPO-family recipe without loading the model: every error names the key and the file."""
    file = recipe_path
    recipe = load_recipe(recipe_path, list(overrides))
    config_fields = []
    if "method" in recipe:  # the method's config lets a misplaced `max_steps:` be pointed to `trainer.max_steps`
        trainer_cls, config_cls = grpo_method(recipe["method"], file)
        config_fields = [f.name for f in dataclasses.fields(config_cls) if f.init]
    check_keys(recipe, RECIPE_KEYS, "", file, required=("method", "model"),
               sections={"trainer": config_fields, "eval": EVAL_KEYS})
    recipe_model_source(recipe["model"], file)
    eval_cfg = {**DEFAULT_EVAL, **check_keys(recipe.get("eval"), EVAL_KEYS, "eval", file)}
    check_eval_settings(eval_cfg, lambda key: f"{file}: eval.{key}")
    trainer_section = section(recipe, "trainer", file)
    output_dir = recipe.get("output_dir") or trainer_section.get("output_dir") or f"runs/{Path(file).stem}"
    trainer_section["output_dir"] = str(output_dir)
    recipe["weighting"] = preset_weighting(config_cls, recipe.get("weighting"))
    try:  # validate the weighting spec before the config (whose error would be less specific)
        build_weighter(recipe.get("weighting"))
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"{file}: invalid 'weighting': {exc}") from None
    if recipe.get("weighting") is not None:
        trainer_section["weighting"] = recipe["weighting"]
    config = build_config(config_cls, trainer_section, file, "trainer", report_to="none")
    spec = data_spec(recipe, file)
    data = build_data(spec) if is_local(spec) else None  # a hub dataset is fetched by the run, not by validate
    rewards = recipe_rewards(recipe, file, data["train"].column_names if data is not None else None)
    peft_config = lora_config(recipe.get("peft") or None, "peft", file)
    return {"file": file, "recipe": recipe, "trainer_cls": trainer_cls, "config": config, "data": data, "data_spec": spec,
            "rewards": rewards, "eval": eval_cfg, "output_dir": Path(output_dir), "peft_config": peft_config}


def train_recipe(recipe_path, overrides=(), callbacks=(), *, resume: bool = False, overwrite: bool = False):
    """Run a GRPO-family recipe; returns a summary dict (accuracy before/after, run dir, trainer).

    An earlier run in the output dir is continued only with `resume` (or `trainer.resume_from_checkpoint`) and
    replaced only with `overwrite`; see `claim_run_dir`."""
    run = prepare_run(recipe_path, overrides)
    recipe, config, eval_cfg, run_dir = run["recipe"], run["config"], run["eval"], run["output_dir"]
    if resume and not config.resume_from_checkpoint:
        config.resume_from_checkpoint = True
    claim_run_dir(run_dir, resume=config.resume_from_checkpoint, overwrite=overwrite, file=recipe_path)
    data = run["data"]
    if data is None:  # hub data: read now, and the rewards checked against its columns
        data = build_data(run["data_spec"])
        recipe_rewards(recipe, recipe_path, data["train"].column_names)
    model, tokenizer = load_model(recipe["model"], trust_remote_code=bool(recipe.get("trust_remote_code", False)))

    eval_data = data["eval"]
    if eval_cfg["num_prompts"]:
        eval_data = eval_data.select(range(min(int(eval_cfg["num_prompts"]), len(eval_data))))
    eval_kwargs = dict(max_new_tokens=eval_cfg["max_new_tokens"] or config.max_completion_length,
                       batch_size=eval_cfg["batch_size"], k=eval_cfg["pass_k"] or (),
                       num_samples=eval_cfg["num_samples"], temperature=eval_cfg["temperature"], per_prompt=True,
                       reward=run["rewards"])
    summary = {"method": recipe["method"], "output_dir": str(run_dir)}
    write_run_info(run_dir, recipe, recipe_path)

    if eval_cfg["before"] and len(eval_data):
        t0 = time.time()
        summary["eval_before"] = evaluate(model, tokenizer, eval_data, **eval_kwargs)
        say(f"eval before training: {headline(summary['eval_before'])} ({time.time() - t0:.0f}s)")

    trainer = run["trainer_cls"](model=model, reward_funcs=run["rewards"], args=config, train_dataset=data["train"],
                                 processing_class=tokenizer, peft_config=run["peft_config"],
                                 callbacks=list(callbacks))
    MetricsLogCallback.attach(trainer, run_dir / METRICS)  # token dumps are attached by the trainers themselves
    t0 = time.time()
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    summary["train_seconds"] = round(time.time() - t0, 1)
    trainer.save_model(str(run_dir / "final"))

    if eval_cfg["after"] and len(eval_data):
        t0 = time.time()
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as policy:  # ZeRO-3: gathered
            summary["eval_after"] = evaluate(policy, tokenizer, eval_data, **eval_kwargs)
        say(f"eval after training: {headline(summary['eval_after'])} ({time.time() - t0:.0f}s)")
    if trainer.accelerator.is_main_process:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    summary["trainer"] = trainer
    return summary
