"""A comparison spec: arms (a recipe plus overrides, any method), seeds, and one budget shared by every arm.

    name: embedded                       # optional; the report's title
    output_dir: runs/compare/embedded    # default runs/compare/<spec file stem>
    seeds: [0, 1, 2]
    baseline: grpo                       # the arm the others are compared with (default: the first); an arm may
                                         # name its own (`baseline: sft_all`), e.g. two families in one spec
    overrides: {trainer.learning_rate: 1.0e-5}      # applied to every arm (before the budget)
    share_stages: true                   # offline pipelines: a stage identical in several runs (same name, config
                                         # and input: sampling, contrast models, scoring) is computed once
    budget:
      max_steps: 12                      # optimizer steps (GRPO family and DPO pipelines)
      completions_per_step: 16           # GRPO family: completions per optimizer step
      save_steps: 4                      # checkpoints, so a killed run resumes
      eval: {num_prompts: 100, pass_k: [1, 4], num_samples: 4}
    arms:
      grpo: {recipe: ../recipes/grpo_arithmetic.yaml}
      random20:
        recipe: ../recipes/grpo_arithmetic.yaml
        overrides: {weighting: {name: random_quantile, rho: 0.2}, trainer.weight_normalizer: selected}

Recipe paths are relative to the spec's folder (then to the working directory). Overrides are `tokrl train`'s
`key=value` overrides written as a mapping; arm overrides come last, so an arm may deviate from the budget only
where its spec says so. Each arm x seed becomes one ordinary run of the arm's own command (`tokrl train`, or the
pipeline command of an offline method) in `output_dir/runs/<arm>/seed<seed>`.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tokrl.recipe import RecipeError, check_keys, load_recipe, load_yaml

SPEC_KEYS = ("name", "description", "output_dir", "seeds", "baseline", "overrides", "share_stages", "budget",
             "arms")
ARM_KEYS = ("recipe", "overrides", "baseline", "description")
BUDGET_KEYS = ("max_steps", "completions_per_step", "save_steps", "eval")
ONLINE = "online"
PREFERENCE = "preference"
CLEANING = "token_cleaning"
PIPELINE_COMMANDS = {"cdpo": ("cdpo", PREFERENCE), "treg": ("treg", PREFERENCE), "token_cleaning": ("clean", CLEANING)}

# Where each budget item goes in a recipe, per family of methods (None: the family has no such knob).
BUDGET_TARGETS = {
    ONLINE: {"max_steps": "trainer.max_steps", "completions_per_step": "trainer.per_device_train_batch_size",
             "save_steps": "trainer.save_steps", "seed": "trainer.seed", "eval": "eval"},
    PREFERENCE: {"max_steps": "trainer.max_steps", "completions_per_step": None, "save_steps": "trainer.save_steps",
                 "seed": "trainer.seed", "eval": "eval"},
    CLEANING: {"max_steps": None, "completions_per_step": None, "save_steps": None, "seed": "seed", "eval": "eval"},
}
# The budget's eval keys in each family's own eval section (a key a family lacks is left out for that family:
# offline pipelines report greedy accuracy only).
EVAL_NAMES = {
    ONLINE: {k: k for k in ("before", "after", "max_new_tokens", "batch_size", "num_prompts", "pass_k",
                            "num_samples", "temperature")},
    PREFERENCE: {k: k for k in ("before", "after", "num_prompts", "max_new_tokens", "batch_size")},
    CLEANING: {"num_prompts": "max_examples", "max_new_tokens": "max_new_tokens", "batch_size": "batch_size"},
}


@dataclass
class Run:
    """One arm x seed: the command that trains it and the run dir it owns."""

    arm: str
    seed: int
    method: str
    family: str
    command: str
    recipe: Path
    overrides: list[str]
    run_dir: Path
    max_steps: int | None

    @property
    def argv(self) -> list[str]:
        return [self.command, str(self.recipe), *self.overrides]


@dataclass
class Spec:
    file: Path
    name: str
    output_dir: Path
    seeds: list[int]
    baseline: str
    budget: dict
    arms: dict
    runs: list[Run] = field(default_factory=list)
    raw: dict = field(default_factory=dict)
    share_stages: bool = True


def _override_items(mapping, where: str, file) -> list[tuple[str, object]]:
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        raise RecipeError(f"{file}: '{where}' must be a mapping of key: value overrides")
    return [(str(k), v) for k, v in mapping.items()]


def _flat(key: str, value) -> str:
    """`key=value` with the value in YAML flow style, so `tokrl train` parses it back to the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
    if text.endswith("\n...") or text.endswith("..."):
        text = text.rsplit("...", 1)[0].strip()
    return f"{key}={text}"


def _resolve_recipe(value, arm: str, file: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise RecipeError(f"{file}: arms.{arm}.recipe must name a recipe file")
    for base in (file.parent, Path.cwd()):
        candidate = (base / value).resolve()
        if candidate.is_file():
            return candidate
    raise RecipeError(f"{file}: arms.{arm}.recipe: '{value}' not found beside the spec or in the working directory")


def family_of(method: str) -> tuple[str, str]:
    """(command, family) for a recipe's method: offline pipelines by their command, everything else `train`."""
    command, family = PIPELINE_COMMANDS.get(method, ("train", ONLINE))
    if command != "train" and importlib.util.find_spec(f"tokrl.commands.{command}") is None:
        command = "train"  # one command for every method
    return command, family


def load_spec(path, output_dir: str | None = None) -> Spec:
    """Parse and check a spec (every arm's recipe and overrides included) without loading a model."""
    file = Path(path)
    raw = load_yaml(file)
    check_keys(raw, SPEC_KEYS, "", file, required=("seeds", "arms"))
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds) or len(set(seeds)) != len(seeds):
        raise RecipeError(f"{file}: 'seeds' must be a list of distinct integers, e.g. [0, 1, 2]")
    arms = raw["arms"]
    if not isinstance(arms, dict) or not arms:
        raise RecipeError(f"{file}: 'arms' must map arm names to {{recipe: ..., overrides: ...}}")
    for name in arms:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            raise RecipeError(f"{file}: arm name '{name}' may use only letters, digits, '_', '-' and '.'")
    baseline = raw.get("baseline", next(iter(arms)))
    if baseline not in arms:
        raise RecipeError(f"{file}: baseline '{baseline}' is not an arm; arms: {', '.join(arms)}")
    budget = dict(check_keys(raw.get("budget"), BUDGET_KEYS, "budget", file))
    if "eval" in budget and not isinstance(budget["eval"], dict):
        raise RecipeError(f"{file}: budget.eval must be a mapping of eval settings")
    shared = _override_items(raw.get("overrides"), "overrides", file)
    if not isinstance(raw.get("share_stages", True), bool):
        raise RecipeError(f"{file}: 'share_stages' must be true or false")
    out = Path(output_dir or raw.get("output_dir") or Path("runs") / "compare" / file.stem)
    spec = Spec(file=file, name=str(raw.get("name") or file.stem), output_dir=out, seeds=list(seeds),
                baseline=str(baseline), budget=budget, arms={}, raw=raw,
                share_stages=raw.get("share_stages", True))
    for arm, entry in arms.items():
        if not isinstance(entry, dict):
            raise RecipeError(f"{file}: arms.{arm} must be a mapping with a 'recipe' key")
        check_keys(entry, ARM_KEYS, f"arms.{arm}", file, required=("recipe",))
        recipe_path = _resolve_recipe(entry["recipe"], arm, file)
        own = _override_items(entry.get("overrides"), f"arms.{arm}.overrides", file)
        base_items = [_flat(k, v) for k, v in shared]
        method = load_recipe(recipe_path, base_items + [_flat(k, v) for k, v in own]).get("method")
        if not method:
            raise RecipeError(f"{recipe_path}: the recipe has no 'method'")
        command, family = family_of(str(method))
        arm_baseline = str(entry.get("baseline", spec.baseline))
        if arm_baseline not in arms:
            raise RecipeError(f"{file}: arms.{arm}.baseline '{arm_baseline}' is not an arm; arms: {', '.join(arms)}")
        spec.arms[arm] = {"recipe": str(recipe_path), "method": method, "command": command, "family": family,
                          "overrides": dict(own), "baseline": arm_baseline}
        for seed in spec.seeds:
            run_dir = out / "runs" / str(arm) / f"seed{seed}"
            items = base_items + budget_overrides(budget, family, seed, arm, file) + [_flat(k, v) for k, v in own]
            items.append(_flat("output_dir", str(run_dir.resolve())))
            load_recipe(recipe_path, items)  # every override applies to a mapping
            spec.runs.append(Run(arm=str(arm), seed=seed, method=str(method), family=family, command=command,
                                 recipe=recipe_path, overrides=items, run_dir=run_dir,
                                 max_steps=budget.get("max_steps") if BUDGET_TARGETS[family]["max_steps"] else None))
    # seed-major order: a comparison stopped early still has whole seeds of every arm
    spec.runs.sort(key=lambda r: (spec.seeds.index(r.seed), list(spec.arms).index(r.arm)))
    return spec


def budget_overrides(budget: dict, family: str, seed: int, arm: str, file) -> list[str]:
    """The budget as `key=value` overrides in this family's recipe keys (the seed included)."""
    targets = BUDGET_TARGETS[family]
    items = [_flat(targets["seed"], seed)]
    for key, value in budget.items():
        if key == "eval":
            names = EVAL_NAMES[family]
            unknown = [k for k in value if k not in EVAL_NAMES[ONLINE]]
            if unknown:
                raise RecipeError(f"{file}: unknown key 'budget.eval.{unknown[0]}'; "
                                  f"known: {', '.join(EVAL_NAMES[ONLINE])}")
            items += [_flat(f"{targets['eval']}.{names[k]}", v) for k, v in value.items() if k in names]
        elif targets.get(key):
            items.append(_flat(targets[key], value))
    return items
