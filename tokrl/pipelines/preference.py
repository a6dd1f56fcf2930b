"""Preference pairs from a verifiable task, shared by cDPO and T-REG: `sample`, then `select`.

`sample`: n completions per training prompt from the base model (batched `generate`), each graded by the task's
verifiable reward (a TRL-style reward function: `f(completions, **columns) -> list[float]`).

`select` (the rules of the cDPO release, github.com/chenzhiling9954/Critical-Tokens-Matter, as defaults):
per prompt, completions are grouped by their extracted final answer (completions with no answer are dropped),
groups are ordered by size (ties broken by a seeded shuffle) and one random member represents each group.
- positive SFT set: representatives of the `positive_top_k` (default 1) largest *correct* groups;
- negative SFT set: representatives of the largest *wrong* groups, taken until they cover `negative_top_p`
  (default 0.5) of the prompt's wrong completions; after the first, only groups of size > 1 are taken;
- pairs: chosen = representative of the largest correct group, rejected = representative of the largest wrong
  group (`pairs_per_prompt` > 1 pairs the i-th correct with the i-th wrong group).
"Correct" means reward > `correct_above` (default 0.5, i.e. a 0/1 accuracy reward of 1).

The pairs are in TRL's preference format: conversational prompts (lists of messages) give conversational
`chosen`/`rejected` (`[{"role": "assistant", "content": ...}]`), plain-text prompts give strings. Any other
DPO-format dataset works as input to the scoring stages too: `load_preference_dataset(path)`.

`run_pair_pipeline`: what both pipelines do around their own scoring stages: the shared recipe sections, sample
and select, then eval before, train, eval after and a plain-DPO baseline at the same budget (`train_and_eval`;
the generic stage runner and training stage live in `tokrl.pipelines.runner`).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset

from tokrl.data.dataset import build_data, data_spec, read_table, resolve_path
from tokrl.evaluation import generate, headline
from tokrl.pipelines.runner import (
    EvalSettings,
    PipelineRecipe,
    Runner,
    StopPipeline,
    eval_stage,
    load_trained,
    lora_config,
    recipe_rewards,
    settings_from,
    train_preference_stage,
)
from tokrl.pipelines.stage import (
    MANIFEST,
    config_hash,
    dataset_fingerprint,
    load_stage,
    run_stage,
    shard_seed,
    stage_fingerprint,
    stage_metadata,
)
from tokrl.recipe import RecipeError, build_config, check_keys
from tokrl.rewards import extract_answer
from tokrl.run_dir import write_run_info
from tokrl.trainers.weighted_dpo import WeightedDPOTrainer
from tokrl.trainers.weighted_dpo_config import WeightedDPOConfig

# ---- sampling ---------------------------------------------------------------------------------------------------


@dataclass
class SampleSettings:
    """How `sample` draws completions (spec defaults: n = 64, top_p 0.95, temperature tuned per model)."""

    num_samples: int = 64
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 1024
    batch_size: int = 8  # prompts per `generate` call (each gives num_samples sequences)
    seed: int = 0
    stop: list[str] | None = None  # stop strings (e.g. "\n\nQuestion:" after few-shot prompts); cut from the text


def generate_completions(model, tokenizer, prompts: list, settings: SampleSettings, seed: int) -> list[list[str]]:
    """`settings.num_samples` sampled completion strings per prompt (special tokens dropped, whitespace stripped)."""
    groups = generate(model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens,
                      batch_size=settings.batch_size, num_samples=settings.num_samples, do_sample=True,
                      temperature=settings.temperature, top_p=settings.top_p, stop=settings.stop, seed=seed,
                      progress=False)
    return [[cut_at_stop(text, settings.stop).strip() for text in group] for group in groups]


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    """The text before the first stop string (generation stops after it, so it is still in the output)."""
    for s in stop or ():
        at = text.find(s)
        if at >= 0:
            text = text[:at]
    return text


def grade(reward_fn: Callable, rows: Dataset, completions: list[list[str]]) -> list[list[float]]:
    """Call a TRL-style reward with one entry per completion and the dataset's other columns repeated alongside."""
    flat = [c for group in completions for c in group]
    columns = {name: [v for v, group in zip(rows[name], completions) for _ in group]
               for name in rows.column_names if name not in ("completion", "completions")}
    scores = reward_fn(completions=flat, prompts=columns.pop("prompt"), **columns)
    if len(scores) != len(flat):
        raise ValueError(f"reward returned {len(scores)} scores for {len(flat)} completions")
    scores = iter([float("nan") if s is None else float(s) for s in scores])  # None: the reward could not grade
    return [[next(scores) for _ in group] for group in completions]


def sample_stage(stage_dir: str | Path, model, tokenizer, prompts: Dataset, reward_fn: Callable,
                 settings: SampleSettings, *, model_id: str, reward_id: str, shard_size: int = 64,
                 overwrite: bool = False) -> Dataset:
    """Rows of `prompts` plus `completions` (list[str]) and `rewards` (list[float]); crash-safe and resumable."""
    if "prompt" not in prompts.column_names:
        raise ValueError(f"sample: the prompt dataset has no 'prompt' column (columns: {prompts.column_names})")
    if settings.num_samples < 1:
        raise ValueError(f"sample.num_samples must be >= 1, got {settings.num_samples}")

    def fn(shard: Dataset, index: int):
        completions = generate_completions(model, tokenizer, list(shard["prompt"]), settings,
                                           seed=shard_seed(settings.seed, index))
        rewards = grade(reward_fn, shard, completions)
        return shard.add_column("completions", completions).add_column("rewards", rewards)

    config = {"settings": asdict(settings), "model": model_id, "reward": reward_id}
    return run_stage("sample", stage_dir, fn, prompts, config, shard_size=shard_size, overwrite=overwrite)


# ---- selection --------------------------------------------------------------------------------------------------


@dataclass
class SelectRules:
    """cDPO's selection rules (spec section 2.1) as options."""

    correct_above: float = 0.5
    positive_top_k: int = 1
    negative_top_p: float = 0.5
    pairs_per_prompt: int = 1
    group_by: str = "answer"  # "answer": the final number (tokrl.rewards.extract_answer); "text": the whole string
    seed: int = 0

    def __post_init__(self):
        if self.group_by not in ("answer", "text"):
            raise ValueError(f"select.group_by must be 'answer' or 'text', got {self.group_by!r}")
        if not 0 < self.negative_top_p <= 1:
            raise ValueError(f"select.negative_top_p must be in (0, 1], got {self.negative_top_p}")
        if self.positive_top_k < 1 or self.pairs_per_prompt < 1:
            raise ValueError("select.positive_top_k and select.pairs_per_prompt must be >= 1")


def _groups(completions, rewards, correct: bool, rules: SelectRules, rng: random.Random) -> list[list[str]]:
    """Completions of one kind grouped by answer, largest group first (ties: seeded shuffle), members shuffled."""
    members: dict[str, list[str]] = {}
    for text, reward in zip(completions, rewards):
        if reward != reward or (reward > rules.correct_above) != correct:  # NaN: ungradable
            continue
        key = extract_answer(text) if rules.group_by == "answer" else text
        if key is None:
            continue
        members.setdefault(key, []).append(text)
    keys = list(members)
    rng.shuffle(keys)
    keys.sort(key=lambda k: -len(members[k]))  # stable: the shuffle breaks ties
    for key in keys:
        rng.shuffle(members[key])
    return [members[key] for key in keys]


def select_row(row: dict, rules: SelectRules, rng: random.Random) -> dict[str, list]:
    """{"pairs": [(chosen, rejected), ...], "positive": [completion, ...], "negative": [completion, ...]}."""
    correct = _groups(row["completions"], row["rewards"], True, rules, rng)
    wrong = _groups(row["completions"], row["rewards"], False, rules, rng)
    positive = [g[0] for g in correct[: rules.positive_top_k]]
    negative, covered = [], 0
    total_wrong = sum(len(g) for g in wrong)
    for group in wrong:
        if covered >= rules.negative_top_p * total_wrong:
            break
        if negative and len(group) <= 1:
            break  # after the first pick only repeated wrong answers (groups are sorted, so none follow)
        negative.append(group[0])
        covered += len(group)
    pairs = [(c[0], w[0]) for c, w in zip(correct, wrong)][: rules.pairs_per_prompt]
    return {"pairs": pairs, "positive": positive, "negative": negative}


def _response(prompt, text: str):
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


def select_stage(stage_dir: str | Path, samples: Dataset, samples_dir: str | Path, kind: str, rules: SelectRules,
                 *, overwrite: bool = False) -> Dataset:
    """One of the three selections (`kind` = "pairs", "positive" or "negative") as a crash-safe stage.

    pairs: `prompt, chosen, rejected` (+ the sample's other columns); positive/negative: `prompt, completion`.
    """
    if kind not in ("pairs", "positive", "negative"):
        raise ValueError(f"select kind must be 'pairs', 'positive' or 'negative', got {kind!r}")

    def fn(shard: Dataset, index: int):
        rng = random.Random(shard_seed(rules.seed, index))
        out = []
        for row in shard:
            picked = select_row(row, rules, rng)
            extra = {k: v for k, v in row.items() if k not in ("prompt", "train_prompt", "completions", "rewards")}
            prompt = row.get("train_prompt") or row["prompt"]  # `train_prompt`: the sampler used another prompt
            if kind == "pairs":
                for chosen, rejected in picked["pairs"]:
                    out.append({"prompt": prompt, "chosen": _response(prompt, chosen),
                                "rejected": _response(prompt, rejected), **extra})
            else:
                for text in picked[kind]:
                    out.append({"prompt": prompt, "completion": _response(prompt, text), **extra})
        return out

    config = {"rules": asdict(rules), "kind": kind}
    return run_stage(f"select_{kind}", stage_dir, fn, samples, config, shard_size=256, overwrite=overwrite,
                     input_fingerprint=stage_fingerprint(samples_dir))


def selection_stats(samples: Dataset, rules: SelectRules) -> dict[str, float]:
    """What the spec asks to log: prompts with >= 1 wrong answer, mean wrong answers per prompt, pairable prompts."""
    n = len(samples)
    if n == 0:
        return {"prompts": 0}
    wrong = [sum(1 for r in rewards if r == r and r <= rules.correct_above) for rewards in samples["rewards"]]
    right = [sum(1 for r in rewards if r == r and r > rules.correct_above) for rewards in samples["rewards"]]
    total = sum(len(r) for r in samples["rewards"])
    return {
        "prompts": n,
        "samples_per_prompt": total / n,
        "sample_accuracy": sum(right) / max(total, 1),
        "prompts_with_a_wrong_answer": sum(1 for w in wrong if w > 0),
        "mean_wrong_per_prompt": sum(wrong) / n,
        "pairable_prompts": sum(1 for w, c in zip(wrong, right) if w > 0 and c > 0),
    }


# ---- any DPO-format dataset -------------------------------------------------------------------------------------


def load_preference_dataset(path: str, *, split: str = "train", allow_hub: bool = False) -> Dataset:
    """A DPO-format dataset (prompt/chosen/rejected, plain or conversational) from a local path.

    `path`: a `save_to_disk` directory (or a tokrl stage directory), a `.parquet` or `.jsonl`/`.json` file.
    A hub dataset name is used only with `allow_hub=True` (recipes: `pairs.hub: true`).
    """
    p = Path(path)
    if (p / MANIFEST).is_file():
        ds = load_stage(p)
    elif p.exists():
        ds = read_table(str(p), split=split, where="pairs.path")
    elif allow_hub:
        ds = load_dataset(str(path), split=split)
    else:
        raise FileNotFoundError(f"{path}: no such file or directory (hub datasets need pairs.hub: true)")
    missing = [c for c in ("chosen", "rejected") if c not in ds.column_names]
    if missing:
        raise ValueError(f"{path}: preference dataset is missing column '{missing[0]}' (columns: {ds.column_names})")
    if len(ds) == 0:
        raise ValueError(f"{path}: preference dataset is empty")
    return ds


# ---- pairs for a pipeline: from the recipe's task or prompts (sample + select), or a DPO-format dataset --------

PAIRS_KEYS = ("path", "split", "hub", "num_pairs")
# The top-level keys of a preference-pipeline recipe (cDPO adds its own sections).
RECIPE_KEYS = ("method", "model", "trust_remote_code", "task", "prompts", "data", "pairs", "reward", "output_dir",
               "sample", "select", "score", "train", "trainer", "baseline", "eval", "description")
NO_PAIRS = "set 'data' (or its shorthand 'task': pairs are sampled from its prompts) or 'pairs' (a DPO-format dataset)"


@dataclass
class PairsSource:
    """Where the pairs come from: the prompts of `data:` (sample + select) or a DPO-format dataset (`pairs:`)."""

    pairs: Dataset
    fingerprint: str
    eval_data: Dataset | None
    stats: dict
    rewards: list | None = None  # the recipe's reward functions (eval scores with them too)


def sample_sections(recipe: dict, file) -> tuple[SampleSettings, SelectRules, int | None, int]:
    """The `sample` and `select` sections: (settings, rules, sample.num_prompts, sample.shard_size). The last two
    are kept out of `SampleSettings`, whose fields are the sample stage's config record."""
    spec = dict(recipe.get("sample") or {})
    num_prompts, shard_size = spec.pop("num_prompts", None), int(spec.pop("shard_size", 64))
    return (settings_from(SampleSettings, spec, "sample", file),
            settings_from(SelectRules, recipe.get("select"), "select", file), num_prompts, shard_size)


def task_pairs(runner: Runner, p: PipelineRecipe,
               kinds: tuple[str, ...] = ("pairs",)) -> tuple[PairsSource, dict[str, tuple[Dataset, str]]]:
    """Run `sample` and the `select_*` stages for `kinds` from the recipe's task, or load `data:` instead.

    Returns the pairs and, per extra kind ("positive", "negative"), (dataset, fingerprint).
    """
    recipe, file = p.recipe, p.file
    extra: dict[str, tuple[Dataset, str]] = {}
    built = recipe_prompts(recipe, file)
    eval_data = built["eval"] if built is not None and len(built["eval"]) else None
    rewards = recipe_rewards(recipe, file, built["train"].column_names) if built is not None else None
    if recipe.get("pairs") is not None:
        pairs_spec = check_keys(recipe["pairs"], PAIRS_KEYS, "pairs", file, required=("path",))
        pairs = load_preference_dataset(str(pairs_spec["path"]), split=pairs_spec.get("split", "train"),
                                        allow_hub=bool(pairs_spec.get("hub", False)))
        if pairs_spec.get("num_pairs"):
            pairs = pairs.select(range(min(int(pairs_spec["num_pairs"]), len(pairs))))
        fp = dataset_fingerprint(pairs)
        for kind, side in (("positive", "chosen"), ("negative", "rejected")):
            if kind in kinds:
                sft = pairs.map(lambda r, s=side: {"completion": r[s]},
                                remove_columns=[c for c in pairs.column_names if c != "prompt"])
                extra[kind] = (sft, config_hash([fp, kind]))
        return PairsSource(pairs, fp, eval_data, {"pairs": len(pairs), "source": str(pairs_spec["path"])},
                           rewards=rewards), extra
    if built is None:
        raise RecipeError(f"{file}: {NO_PAIRS}")
    settings, rules, num_prompts, shard_size = sample_sections(recipe, file)
    prompts = built["train"]
    if num_prompts:
        prompts = prompts.select(range(min(int(num_prompts), len(prompts))))

    def reward_fn(**kwargs):  # several rewards add up, as in TRL's default multi-reward aggregation
        per = [fn(**kwargs) for fn in rewards]
        return [sum(vals) if all(v is not None for v in vals) else None for vals in zip(*per)]

    def sample(overwrite):
        model, tokenizer = p.load_base()
        return sample_stage(runner.dir("sample"), model, tokenizer, prompts, reward_fn, settings, model_id=p.model_id,
                            reward_id=str(recipe.get("reward") or "accuracy"), shard_size=shard_size,
                            overwrite=overwrite)

    samples = runner.step("sample", sample)
    stats = selection_stats(samples, rules)
    print(f"[tokrl] sampled: {stats}", flush=True)
    out = {}
    for kind in kinds:
        name = "select_pairs" if kind == "pairs" else f"sft_{kind}"
        out[kind] = runner.step(name, lambda ow, k=kind, n=name: select_stage(
            runner.dir(n), samples, runner.dir("sample"), k, rules, overwrite=ow))
        if kind != "pairs":
            extra[kind] = (out[kind], stage_fingerprint(runner.dir(name)))
    pairs = out["pairs"] if "pairs" in out else load_stage(runner.dir("select_pairs"))
    stats["pairs"] = len(pairs)
    return PairsSource(pairs, stage_fingerprint(runner.dir("select_pairs")), eval_data, stats, rewards), extra


def recipe_prompts(recipe: dict, file, load: bool = True) -> DatasetDict | None:
    """The prompts pairs are sampled from: the recipe's `data:` section (or `task:`), read by tokrl.data.dataset.

    With `few_shot`, rows also get `train_prompt`, the prompt without the exemplars: pairs, SFT sets and scoring
    use it (the cDPO release samples few-shot but trains and scores zero-shot). `load=False` checks the section
    and reads only local data (a hub dataset is not fetched to validate a recipe). None when neither is set.
    """
    if recipe.get("prompts") is not None:
        raise RecipeError(f"{file}: 'prompts' moved to 'data' (path, hub, name, split, eval_split, question_column, "
                          "answer_column, template, few_shot, chat_template)")
    section = recipe.get("data")
    if isinstance(section, dict) and "num_pairs" in section:
        raise RecipeError(f"{file}: a DPO-format dataset goes under 'pairs' (path, split, hub, num_pairs); 'data' "
                          "holds the prompts pairs are sampled from")
    if section is None and recipe.get("task") is None:
        return None
    spec = data_spec(recipe, file)
    if not load and spec.task is None and resolve_path(spec.path, spec.base_dir) is None and spec.hub:
        return None
    built = build_data(spec)
    if {"chosen", "rejected"} <= set(built["train"].column_names):
        raise RecipeError(f"{file}: data: {spec.path} has chosen/rejected columns: a preference dataset goes under "
                          "'pairs' (path, split, hub, num_pairs)")
    if spec.few_shot:
        zero_shot = build_data(dataclasses.replace(spec, few_shot=None))
        built = DatasetDict({k: built[k].add_column("train_prompt", list(zero_shot[k]["prompt"])) for k in built})
    return built


def check_pair_sections(recipe: dict, file) -> None:
    """Validate the sections `task_pairs` reads (data/task, pairs, sample, select, reward) without running; local
    data is read now (a missing or empty file, a missing column), a hub dataset is not fetched."""
    built = recipe_prompts(recipe, file, load=False)
    if recipe.get("pairs") is not None:
        pairs = check_keys(recipe["pairs"], PAIRS_KEYS, "pairs", file, required=("path",))
        if not pairs.get("hub"):
            try:
                load_preference_dataset(str(pairs["path"]), split=pairs.get("split", "train"))
            except (ValueError, FileNotFoundError) as exc:
                raise RecipeError(f"{file}: {exc}") from None
    elif recipe.get("data") is None and recipe.get("task") is None:
        raise RecipeError(f"{file}: {NO_PAIRS}")
    sample_sections(recipe, file)
    recipe_rewards(recipe, file, built["train"].column_names if built is not None else None)


# ---- what cDPO and T-REG share around their scoring: the recipe prelude, train and evaluate, the summary ---------


def run_pair_pipeline(p: PipelineRecipe, stages, config, trainer_cls, score: Callable, *, summary: dict,
                      lora: dict | None = None, kinds=("pairs",), after: Callable | None = None,
                      overwrite: bool = False, stage: str | None = None, stop_after: str | None = None,
                      dry_run: bool = False) -> dict:
    """sample -> select -> `score(runner, source, sft, summary)` (the method's own stages; returns the scored
    pairs) -> `train_and_eval` -> `after(runner, scored, summary)`, complete stages skipped; returns the summary
    and writes it to `output_dir/summary.json`. `lora` is the method's default `train.lora`. With `dry_run` every
    section is checked, nothing loaded or written.
    """
    lora = check_keys(p.recipe.get("train"), ("lora",), "train", p.file).get("lora", lora)
    baseline = check_keys(p.recipe.get("baseline"), ("dpo",), "baseline", p.file)
    eval_settings = settings_from(EvalSettings, p.recipe.get("eval"), "eval", p.file)
    check_pair_sections(p.recipe, p.file)
    lora_config(lora, "train.lora", p.file)
    runner = Runner(p.output_dir, stages, overwrite=overwrite, only=stage, stop_after=stop_after, file=p.file)
    if dry_run:
        return {"recipe": p.file, "ok": True, "stages": list(stages)}
    p.output_dir.mkdir(parents=True, exist_ok=True)
    write_run_info(p.output_dir, p.recipe, p.file)
    summary = {"method": p.method, "output_dir": str(p.output_dir), "model": p.model_id, **summary}
    try:
        source, sft = task_pairs(runner, p, kinds)
        summary["sampling"] = source.stats
        scored = score(runner, source, sft, summary)
        train_and_eval(runner, p, scored, source, config, trainer_cls, summary, lora=lora,
                       eval_settings=eval_settings, dpo_baseline=bool(baseline.get("dpo")))
        if after is not None:
            after(runner, scored, summary)
    except StopPipeline as stop:
        summary["stopped_after"] = stop.name
        if isinstance(stop.result, dict):  # evaluations and training report a dict
            summary[stop.name] = stop.result
    (p.output_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def train_and_eval(runner: Runner, p: PipelineRecipe, scored: Dataset, source: PairsSource, config, trainer_cls,
                   out: dict, *, lora: dict | None, eval_settings: EvalSettings, dpo_baseline: bool) -> dict:
    """eval_before -> train -> eval_after (+ plain-DPO baseline at the same budget with `dpo_baseline`).

    Results go into `out` as they come, so a pipeline stopped after one stage still reports it."""
    eval_data = source.eval_data
    if eval_data is not None and eval_settings.num_prompts:
        eval_data = eval_data.select(range(min(int(eval_settings.num_prompts), len(eval_data))))
    data_fp = stage_fingerprint(runner.dir("score"))

    def evaluate(name: str, get_model: Callable, trained_in: str | None, label: str):
        # the input is the model: the base (by name) or the training stage's output, read when the stage runs
        out[name] = runner.step(name, lambda ow: eval_stage(
            runner.dir(name), name, get_model, eval_data, eval_settings, overwrite=ow, rewards=source.rewards,
            input_fingerprint=stage_fingerprint(runner.dir(trained_in)) if trained_in else config_hash([p.model_id])),
            load=stage_metadata, required=False)
        print(f"[tokrl] accuracy {label}: {headline(out[name])}", flush=True)

    def train(name: str, cls, cfg, record: dict) -> Callable:
        path = runner.step(name, lambda ow: train_preference_stage(
            runner.dir(name), name, cls, cfg, scored, p.load_base, lora_config(lora, "train.lora", p.file),
            config_record=record, input_fingerprint=data_fp, overwrite=ow), load=lambda d: d / "artifact",
            required=False)
        out[name] = stage_metadata(runner.dir(name)) if path is not None else None
        return lambda: load_trained(runner.need(path, name), p.load_base)

    if eval_data is not None and eval_settings.before:
        evaluate("eval_before", p.load_base, None, "before")
    trained = train("train", trainer_cls, config, {"trainer": p.trainer, "lora": lora,
                                                    "method": trainer_cls.__name__})
    if eval_data is not None and eval_settings.after:
        evaluate("eval_after", trained, "train", "after")
    if dpo_baseline:
        dpo_section = {k: v for k, v in p.trainer.items() if k in set(WeightedDPOConfig.__dataclass_fields__)}
        dpo_config = build_config(WeightedDPOConfig, dpo_section, p.file, "trainer",
                                  output_dir=str(runner.dir("train_dpo")), report_to="none")
        trained_dpo = train("train_dpo", WeightedDPOTrainer, dpo_config,
                            {"trainer": dpo_section, "lora": lora, "method": "DPO"})
        if eval_data is not None:
            evaluate("eval_dpo", trained_dpo, "train_dpo", "after plain DPO")
    return out
