"""`tokrl eval`: greedy accuracy, mean reward and pass@k of a model or checkpoint on a recipe's eval split.

With `--recipe`, the eval rows, their prompt format and the reward come from the recipe's `data:` (or `task:`)
and `reward:` sections, and its `eval:` section gives the defaults of the generation settings: the numbers are
those the in-run eval before/after training reports (the same code). Without it: the embedded arithmetic task.
"""

from __future__ import annotations

import json

from tokrl.data.dataset import recipe_data
from tokrl.evaluation import check_eval_settings, evaluate
from tokrl.models import load_model
from tokrl.pipelines.token_cleaning_run import check_recipe, load_data
from tokrl.recipe import RecipeError, load_recipe
from tokrl.rewards import resolve_rewards

HELP = "evaluate a model/checkpoint on a recipe's eval split (or the arithmetic task): accuracy, mean reward, pass@k"
SETTINGS = ("num_prompts", "max_new_tokens", "batch_size", "pass_k", "num_samples", "temperature")
DEFAULTS = {"num_prompts": None, "max_new_tokens": 24, "batch_size": 32, "pass_k": [], "num_samples": None,
            "temperature": 1.0}


def add_arguments(parser):
    parser.add_argument("--model", default=None, help="embedded name, HF id or local checkpoint directory "
                                                      "(default: the recipe's model)")
    parser.add_argument("--recipe", default=None, help="take the eval split, prompt format and reward from this recipe")
    parser.add_argument("--num-prompts", type=int, default=None, help="evaluate on the first N eval prompts")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the recipe's eval.max_new_tokens, "
                                                                          "else trainer.max_completion_length, else 24")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--pass-k", type=int, nargs="*", default=None, help="k values for pass@k, e.g. 1 8")
    parser.add_argument("--num-samples", type=int, default=None, help="samples per prompt for pass@k (default max k)")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature for pass@k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the result as JSON here")


def eval_settings(recipe: dict, args) -> dict:
    """CLI flags over the recipe's `eval:` section over the defaults."""
    section = recipe.get("eval") if isinstance(recipe.get("eval"), dict) else {}
    settings = {**DEFAULTS, **{k: section[k] for k in SETTINGS if section.get(k) is not None}}
    if section.get("max_examples") is not None:  # token cleaning's name for it
        settings["num_prompts"] = section["max_examples"]
    if section.get("max_new_tokens") is None and (recipe.get("trainer") or {}).get("max_completion_length"):
        settings["max_new_tokens"] = recipe["trainer"]["max_completion_length"]
    for key in SETTINGS:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings


def eval_rows(recipe: dict, file):
    """The recipe's eval split: token-cleaning recipes read theirs through the pipeline (its data: adds SFT keys)."""
    if recipe.get("method") == "token_cleaning":
        return load_data(check_recipe(recipe, file), file)["eval"]
    return recipe_data(recipe, file)["eval"]


def run(args) -> int:
    file = args.recipe or "<default task>"
    recipe = load_recipe(args.recipe) if args.recipe else {}
    settings = eval_settings(recipe, args)

    def name(key):
        return f"--{key.replace('_', '-')}" if getattr(args, key) is not None else f"{file}: eval.{key}"

    check_eval_settings(settings, name)
    if args.recipe and recipe.get("data") is None and recipe.get("task") is None:
        raise RecipeError(f"{file}: no 'data' (or 'task') section: nothing to evaluate on")
    data = eval_rows(recipe, file)
    if data is None or len(data) == 0:
        raise RecipeError(f"{file}: the data has no eval rows (set data.eval_split, data.eval_path or "
                          "data.eval_fraction)")
    try:
        rewards = resolve_rewards(recipe.get("reward") or ["accuracy"], columns=data.column_names)
    except ValueError as exc:
        raise RecipeError(f"{file}: {exc}") from None
    if settings["num_prompts"]:
        data = data.select(range(min(int(settings["num_prompts"]), len(data))))
    model_id = args.model or recipe.get("model")
    if model_id is None:
        raise RecipeError("tokrl eval: give --model (or a --recipe with a model)")
    model, tokenizer = load_model(str(model_id), trust_remote_code=bool(recipe.get("trust_remote_code", False)))
    result = evaluate(model, tokenizer, data, max_new_tokens=settings["max_new_tokens"],
                      batch_size=settings["batch_size"], k=settings["pass_k"] or [],
                      num_samples=settings["num_samples"], temperature=settings["temperature"],
                      reward=rewards, seed=args.seed, progress=True)
    result["model"] = str(model_id)
    if args.recipe:
        result["recipe"] = str(args.recipe)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0
