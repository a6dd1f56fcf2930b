"""`tokrl train RECIPE.yaml` (method: token_cleaning; alias `tokrl clean`): read a token-cleaning recipe and run
its stages (finished stages are skipped).

Recipe sections (strict: unknown keys are errors naming the key and the file):
    output_dir, model, seed (the data split, random selections, and every SFT run's seed unless its section sets one)
    data:      the SFT pool. Either the `data:` keys every method reads (tokrl.data.dataset: task or path,
               split / eval_split / eval_fraction, question_column, answer_column, template, system_prompt, ...):
               the train rows' prompt and their `completion` (else `solution`, the full answer text) are the pool,
               the eval rows are scored with the recipe's `reward`; or `source` (corrupted_arithmetic | file |
               hub | disk) with corrupted_arithmetic (CorruptedArithmeticSFT fields), path, name, split.
               Both take trusted_path, trusted_split, trusted_rows, max_rows, max_length, truncation_mode, and
               chat_template as a Jinja string set on the tokenizer for every stage (e.g. for a base model)
    reward:    reward functions for the eval (default [accuracy]), as in every recipe
    cleaning:  variants (all_tokens, fixed, per_sample, random, self_evolving), keep_ratio, num_chunks,
               score_batch_size, reference_model
    lora:      peft LoraConfig fields, or null for full fine-tuning
    reference_trainer, trainer: TokenCleaningSFTConfig fields (reference / warm-up SFT, and every cleaned run)
    eval:      max_new_tokens, batch_size, max_examples (greedy accuracy on the task's eval split), or null
The report (`report.json`) holds, per variant, the selection summary, the removal precision/recall of corrupted
tokens when the data records them, the training summary and the eval accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict, concatenate_datasets

from tokrl.data.corrupted_sft import CorruptedArithmeticSFT, removal_quality
from tokrl.data.dataset import build_data, data_spec, read_table
from tokrl.evaluation import as_completions, dataset_rows, generate
from tokrl.models import load_model, recipe_model_source, resolve_model_path
from tokrl.pipelines.runner import Runner, check_method, lora_config, recipe_rewards
from tokrl.pipelines.stage import (config_hash, dataset_fingerprint, load_stage, run_artifact_stage, stage_fingerprint,
                                  stage_metadata)
from tokrl.pipelines.token_cleaning import (
    MASK_WEIGHTING,
    Models,
    chunk_bounds,
    cleaned_dataset,
    fixed_model_cleaning,
    model_stage,
    self_evolving_cleaning,
    tokenize_stage,
    trained_model_fingerprint,
)
from tokrl.recipe import RecipeError, build_config, check_keys, load_recipe
from tokrl.rewards import accuracy_reward, format_reward, score_completions
from tokrl.trainers.token_cleaning_sft_config import TokenCleaningSFTConfig

TOP_KEYS = ("method", "output_dir", "model", "seed", "data", "reward", "cleaning", "lora", "reference_trainer",
            "trainer", "eval")
SFT_KEYS = ("trusted_path", "trusted_split", "trusted_rows", "max_rows", "max_length", "truncation_mode")
DATA_KEYS = ("source", "corrupted_arithmetic", "path", "name", "split", *SFT_KEYS, "chat_template")
CLEANING_KEYS = ("variants", "keep_ratio", "num_chunks", "score_batch_size", "reference_model")
EVAL_KEYS = ("max_new_tokens", "batch_size", "max_examples")
VARIANTS = ("all_tokens", "fixed", "per_sample", "random", "self_evolving")
# Stage directories under output_dir, in the order they run (fixed/ and self_evolving/ hold nested stages).
STAGES = ("tokenize", "model_all_tokens", "trusted_tokenize", "model_reference", "fixed", "model_fixed",
          "model_per_sample", "model_random", "self_evolving", "eval")
SOURCES = ("corrupted_arithmetic", "file", "hub", "disk")


def check_recipe(recipe: dict, file) -> dict:
    """Every section's keys and values, and the SFT configs, checked before any stage runs (no model loaded)."""
    check_keys(recipe, TOP_KEYS, "", file, required=("output_dir", "model"))
    recipe_model_source(recipe["model"], file)
    check_method(recipe, "token_cleaning", file, "clean")
    data = recipe.get("data")
    if isinstance(data, dict) and "source" not in data:
        pool_data(recipe, file)  # the shared data section: read now (local files), so bad columns fail first
        data = {"source": "data"}
    data = check_keys(data, DATA_KEYS, "data", file, required=("source",))
    if data["source"] not in SOURCES + ("data",):
        raise RecipeError(f"{file}: data.source must be one of {SOURCES}, got {data['source']!r}")
    if data["source"] not in ("corrupted_arithmetic", "data") and not data.get("path"):
        raise RecipeError(f"{file}: data.path is required for data.source={data['source']!r}")
    cleaning = check_keys(recipe.get("cleaning"), CLEANING_KEYS, "cleaning", file)
    variants = cleaning.get("variants", ["all_tokens", "fixed", "self_evolving"])
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise RecipeError(f"{file}: cleaning.variants: unknown {bad}; choose from {VARIANTS}")
    ratio = cleaning.get("keep_ratio", 0.6)
    if not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise RecipeError(f"{file}: cleaning.keep_ratio must be in (0, 1], got {ratio!r}")
    check_keys(recipe.get("eval"), EVAL_KEYS, "eval", file)
    lora_config(recipe.get("lora") or None, "lora", file)
    for section in ("trainer", "reference_trainer"):
        build_config(TokenCleaningSFTConfig, recipe.get(section), file, section, output_dir="unused",
                     report_to="none")
    if data["source"] == "corrupted_arithmetic":
        corrupted_splits(data, file, recipe.get("seed", 0))
        recipe_rewards(recipe, file, ["prompt", "question", "answer"])
    return recipe


def load_data(recipe: dict, file) -> dict[str, Dataset | None]:
    """{"pool", "trusted", "eval"} datasets (trusted/eval may be None)."""
    data = recipe["data"]
    if "source" not in data:
        out = pool_data(recipe, file)
    elif data["source"] == "corrupted_arithmetic":
        splits = corrupted_splits(data, file, recipe.get("seed", 0))
        out = {"pool": splits["pool"], "trusted": splits["trusted"], "eval": splits["eval"]}
    else:
        out = {"pool": _load(data["source"], data["path"], data.get("name"), data.get("split", "train"), file),
               "trusted": None, "eval": None}
    if data.get("trusted_path"):
        out["trusted"] = _load(data.get("source", "file"), data["trusted_path"], None,
                               data.get("trusted_split", "train"), file)
    if data.get("trusted_rows"):  # the first N pool rows double as the trusted warm-up set
        out["trusted"] = out["pool"].select(range(min(int(data["trusted_rows"]), len(out["pool"]))))
    if data.get("max_rows"):
        out["pool"] = out["pool"].select(range(min(int(data["max_rows"]), len(out["pool"]))))
    return out


def corrupted_splits(data: dict, file, seed: int) -> DatasetDict:
    """The pool/trusted/eval splits of `data.corrupted_arithmetic` (its seed defaults to the recipe's); built when
    a recipe is checked too (small and synthetic), so a bad value is one line before any model loads."""
    try:
        return CorruptedArithmeticSFT(**{"seed": seed, **(data.get("corrupted_arithmetic") or {})}).build()
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{file}: data.corrupted_arithmetic: {exc}") from None


def _load(source: str, path: str, name, split: str, file) -> Dataset:
    return read_table(path, split=split, name=name, hub=source == "hub", base_dir=str(Path(file).parent),
                      where=f"{file}: data")


def pool_data(recipe: dict, file) -> dict[str, Dataset | None]:
    """The SFT pool from the shared `data:` keys: prompt + completion (else the full answer text, `solution`)."""
    section = {k: v for k, v in recipe["data"].items()
               if k not in SFT_KEYS and not (k == "chat_template" and isinstance(v, str))}
    built = build_data(data_spec({"data": section}, file))
    columns = built["train"].column_names
    source = next((c for c in ("completion", "solution") if c in columns), None)
    if source is None:
        raise RecipeError(f"{file}: data: the pool rows need a 'completion' column, or a full 'answer' / 'solution' "
                          f"text to train on (columns: {columns})")

    def to_sft(row):
        text = row[source]
        return {"completion": [{"role": "assistant", "content": text}] if isinstance(row["prompt"], list) else text}

    pool = built["train"].map(to_sft)
    eval_rows = built["eval"] if len(built["eval"]) else None
    if eval_rows is not None:
        recipe_rewards(recipe, file, eval_rows.column_names)
    return {"pool": pool, "trusted": None, "eval": eval_rows}


def evaluate_model(path: str, eval_data: Dataset, cfg: dict, rewards=None, out_dir: Path | None = None) -> dict:
    """Greedy accuracy (the first reward: by default final number == answer) and format rate (reply is just a
    number), from one generation; rewards are called as in training (tokrl.rewards.score_completions). Written to
    `out_dir/eval.json` when given."""
    model, tokenizer = load_model(path)
    if torch.cuda.is_available():
        model.to("cuda")
    if cfg.get("max_examples"):
        eval_data = eval_data.select(range(min(int(cfg["max_examples"]), len(eval_data))))
    outputs = generate(model, tokenizer, list(eval_data["prompt"]), max_new_tokens=cfg.get("max_new_tokens", 8),
                       batch_size=cfg.get("batch_size", 32))
    texts = [o[0] for o in outputs]
    accuracy = score_completions(rewards or [accuracy_reward], dataset_rows(eval_data),
                                 as_completions(list(eval_data["prompt"]), texts))[0]
    result = {"accuracy": sum(accuracy) / len(texts), "format_rate": sum(format_reward(texts)) / len(texts),
              "num_prompts": len(texts), "examples": texts[:5], "per_prompt": {"accuracy": list(accuracy)}}
    if out_dir is not None:
        (out_dir / "eval.json").write_text(json.dumps(result, indent=1))
    return result


def run_clean(recipe_path, overrides=(), *, overwrite: bool = False, stage: str | None = None,
              dry_run: bool = False) -> dict:
    """`tokrl train RECIPE.yaml` for method: token_cleaning: every stage in order, finished ones skipped; returns
    (and writes to output_dir/report.json) the report."""
    file = str(recipe_path)
    recipe = check_recipe(load_recipe(recipe_path, list(overrides)), file)
    if stage is not None:
        raise RecipeError(f"{file}: token cleaning runs its stages in order (finished ones are skipped); --stage is "
                          "for the cdpo and treg pipelines")
    if dry_run:  # every section checked, nothing loaded or written
        return {"recipe": file, "ok": True}
    root = Path(recipe["output_dir"])
    seed = recipe.get("seed", 0)
    base = resolve_model_path(recipe["model"])
    data_cfg, cleaning = recipe["data"], recipe.get("cleaning") or {}
    variants = cleaning.get("variants", ["all_tokens", "fixed", "self_evolving"])
    ratio = float(cleaning.get("keep_ratio", 0.6))
    batch = int(cleaning.get("score_batch_size", 16))
    lora, trainer_cfg = recipe.get("lora"), recipe.get("trainer")
    torch.manual_seed(seed)
    runner = Runner(root, STAGES, overwrite=overwrite, file=file)

    splits = load_data(recipe, file)
    _, tokenizer = load_model(base)
    chat_template = data_cfg.get("chat_template") if isinstance(data_cfg.get("chat_template"), str) else None
    if chat_template:
        tokenizer.chat_template = chat_template

    def tokenize(name, rows):
        return runner.step(name, lambda ow: tokenize_stage(
            rows, tokenizer, runner.dir(name), max_length=data_cfg.get("max_length", 1024),
            truncation_mode=data_cfg.get("truncation_mode", "keep_start"), tokenizer_id=base, overwrite=ow))

    tokens = tokenize("tokenize", splits["pool"])
    token_fp = stage_fingerprint(root / "tokenize")
    models = Models()
    report: dict = {"output_dir": str(root), "model": base, "keep_ratio": ratio, "pool_rows": len(tokens),
                    "variants": {}}

    def train(stage_dir, init, dataset, weighting, fingerprint, overwrite, where="trainer", cfg=None):
        # the SFT runs truncate like the tokenize stage and take the recipe's seed unless their section says otherwise
        cfg = {"max_length": data_cfg.get("max_length", 1024), "seed": seed,
               **(cfg if cfg is not None else trainer_cfg or {})}
        return model_stage(stage_dir, init_model=init, dataset=dataset, trainer=cfg,
                           weighting=weighting, lora=lora, data_fingerprint=fingerprint, file=file, where=where,
                           overwrite=overwrite, chat_template=chat_template)

    def train_step(name, dataset, weighting, fingerprint, **kw) -> tuple[str, dict]:
        """SFT of the base model as stage `name`: (saved model path, training summary)."""
        path = runner.step(name, lambda ow: train(runner.dir(name), base, dataset, weighting, fingerprint, ow, **kw))
        return str(path), stage_metadata(runner.dir(name))

    def quality(cleaned: Dataset) -> dict:
        if "corrupted" not in cleaned.column_names:
            return {}
        c = cleaned.select_columns(["token_mask", "completion_mask", "corrupted"])
        return removal_quality(c["token_mask"], c["completion_mask"], c["corrupted"])

    finals: dict[str, str] = {}
    if "all_tokens" in variants:
        finals["all_tokens"], summary = train_step("model_all_tokens", tokens, "uniform", token_fp)
        report["variants"]["all_tokens"] = {"train": summary}

    fixed_like = [v for v in variants if v in ("fixed", "per_sample", "random")]
    if fixed_like:
        reference = cleaning.get("reference_model")
        if reference is None and any(v != "random" for v in fixed_like):
            if splits["trusted"] is None:
                raise RecipeError(f"{file}: fixed-model cleaning needs cleaning.reference_model or a trusted set "
                                  "(data.trusted_path / data.trusted_rows)")
            trusted = tokenize("trusted_tokenize", splits["trusted"])
            reference, summary = train_step("model_reference", trusted, "uniform",
                                            stage_fingerprint(root / "trusted_tokenize"), where="reference_trainer",
                                            cfg=recipe.get("reference_trainer") or trainer_cfg)
            report["reference"] = {"model": reference, "train": summary}
        elif reference is not None:
            reference = resolve_model_path(reference)
            report["reference"] = {"model": reference}
        for variant in fixed_like:
            selection = {"fixed": "global", "per_sample": "per_sample", "random": "random"}[variant]
            cleaned, summary = runner.step("fixed", lambda ow, s=selection: fixed_model_cleaning(
                tokens, runner.dir("fixed"), base=base, reference=reference, keep_ratio=ratio, selection=s,
                batch_size=batch, models=models, seed=seed, overwrite=ow, tokens_fingerprint=token_fp,
                base_dir=root / "logps_base"))
            fp = config_hash([token_fp, stage_fingerprint(root / "fixed" / f"select_{selection}")])
            finals[variant], trained = train_step(f"model_{variant}", cleaned, MASK_WEIGHTING, fp)
            report["variants"][variant] = {"selection": summary, "removal": quality(cleaned), "train": trained}

    if "self_evolving" in variants:
        final, rounds = runner.step("self_evolving", lambda ow: self_evolving_cleaning(
            tokens, runner.dir("self_evolving"), base=base, keep_ratio=ratio,
            num_chunks=int(cleaning.get("num_chunks", 5)), batch_size=batch, models=models,
            train=lambda stage_dir, init, dataset, weighting, fp: train(stage_dir, init, dataset, weighting, fp, ow),
            overwrite=ow, tokens_fingerprint=token_fp, base_dir=root / "logps_base"))
        finals["self_evolving"] = final
        report["variants"]["self_evolving"] = {"rounds": rounds}
        if "corrupted" in tokens.column_names:  # removal over the cleaned chunks 1..T
            report["variants"]["self_evolving"]["removal"] = quality(concatenate_datasets([cleaned_dataset(
                tokens.select(range(*r["rows"])), load_stage(root / "self_evolving" / f"round_{r['round']:02d}" /
                                                             "select_global")) for r in rounds[1:]]))

    eval_cfg = recipe.get("eval")
    if eval_cfg is not None and splits["eval"] is not None:
        rewards = recipe_rewards(recipe, file, splits["eval"].column_names)
        models._model = None
        targets = {"base": base, **finals}
        eval_fp = dataset_fingerprint(splits["eval"])  # in the key: a changed eval split is never a stale result
        for name, path in targets.items():
            runner.step(f"eval/{name}", lambda ow, n=name, p=path: run_artifact_stage(
                "eval", runner.dir(f"eval/{n}"), lambda tmp: evaluate_model(p, splits["eval"], eval_cfg, rewards, tmp),
                {"model": p, "eval": eval_cfg, "eval_data": eval_fp}, input_fingerprint=model_fingerprint(p),
                overwrite=ow))
            report["variants"].setdefault(name, {})["eval"] = stage_metadata(runner.dir(f"eval/{name}"))
    (root / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def model_fingerprint(path) -> str:
    """What an eval stage is keyed by besides its config: see `trained_model_fingerprint` (a path otherwise)."""
    return trained_model_fingerprint(path) or config_hash([str(path)])


def summary_table(report: dict) -> str:
    """One line per variant: kept fraction, removal precision/recall, eval accuracy."""
    lines = [f"{'variant':<14} {'kept':>6} {'prec':>6} {'recall':>6} {'acc':>6} {'format':>6}"]
    for name, v in report["variants"].items():
        values = [(v.get("removal") or {}).get(k) for k in ("kept_frac", "removal_precision", "removal_recall")]
        values += [(v.get("eval") or {}).get(k) for k in ("accuracy", "format_rate")]
        cells = [f"{x:6.3f}" if isinstance(x, (int, float)) else f"{'-':>6}" for x in values]
        lines.append(" ".join([f"{name:<14}", *cells]))
    return "\n".join(lines)



def load_cleaned(output_dir, selection: str = "global", round_index: int | None = None) -> Dataset:
    """A finished run's cleaned dataset (tokenised rows + `token_scores` + `token_mask`), read from its stages:
    fixed-model cleaning by default, or the chunk of self-evolving round `round_index` (>= 1)."""
    root = Path(output_dir)
    tokens = load_stage(root / "tokenize")
    if round_index is None:
        return cleaned_dataset(tokens, load_stage(root / "fixed" / f"select_{selection}"))
    num_chunks = len(list((root / "self_evolving").glob("round_*")))
    a, b = chunk_bounds(len(tokens), num_chunks)[round_index]
    selected = load_stage(root / "self_evolving" / f"round_{round_index:02d}" / "select_global")
    return cleaned_dataset(tokens.select(range(a, b)), selected)
