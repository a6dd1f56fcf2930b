"""Preference pairs from a verifiable task, shared by cDPO and T-REG: `sample`, then `select`.

`sample`: n completions per training prompt from the base model (batched `generate`), each graded by the task's
verifiable reward (a TRL-style reward function: `f(completions, **columns) -> list[float]`).

`select` (the rules of the cDPO release, /work/shared/methods/cdpo.md section 2.1, as defaults):
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
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from tokrl.pipelines.stage import run_stage, shard_seed, stage_fingerprint

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


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


def render_prompt(tokenizer, prompt) -> str:
    """Chat prompts (lists of messages) through the chat template with a generation prompt; text unchanged."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return str(prompt)


@torch.no_grad()
def generate_completions(model, tokenizer, prompts: list, settings: SampleSettings, seed: int) -> list[list[str]]:
    """`settings.num_samples` sampled completion strings per prompt (special tokens dropped, whitespace stripped)."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    texts = [render_prompt(tokenizer, p) for p in prompts]
    torch.manual_seed(seed)
    out: list[list[str]] = []
    try:
        for start in range(0, len(texts), settings.batch_size):
            batch = tokenizer(texts[start : start + settings.batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)
            ids = model.generate(
                **batch,
                do_sample=True,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=0,
                max_new_tokens=settings.max_new_tokens,
                num_return_sequences=settings.num_samples,
                pad_token_id=pad_id,
            )
            decoded = tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            decoded = [d.strip() for d in decoded]
            n = settings.num_samples
            out.extend(decoded[i : i + n] for i in range(0, len(decoded), n))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def grade(reward_fn: Callable, rows: Dataset, completions: list[list[str]]) -> list[list[float]]:
    """Call a TRL-style reward with one entry per completion and the dataset's other columns repeated alongside."""
    flat = [c for group in completions for c in group]
    columns = {}
    for name in rows.column_names:
        if name in ("prompt", "completion", "completions"):
            continue
        values = rows[name]
        columns[name] = [v for v, group in zip(values, completions) for _ in group]
    prompts = [p for p, group in zip(rows["prompt"], completions) for _ in group]
    scores = reward_fn(completions=flat, prompts=prompts, **columns)
    if len(scores) != len(flat):
        raise ValueError(f"reward returned {len(scores)} scores for {len(flat)} completions")
    out, start = [], 0
    for group in completions:
        chunk = [float("nan") if s is None else float(s) for s in scores[start : start + len(group)]]
        out.append(chunk)
        start += len(group)
    return out


def sample_stage(
    stage_dir: str | Path,
    model,
    tokenizer,
    prompts: Dataset,
    reward_fn: Callable,
    settings: SampleSettings,
    *,
    model_id: str,
    reward_id: str,
    shard_size: int = 64,
    overwrite: bool = False,
) -> Dataset:
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
    from tokrl.rewards import extract_answer

    members: dict[str, list[str]] = {}
    for text, reward in zip(completions, rewards):
        if reward != reward:  # NaN: ungradable
            continue
        if (reward > rules.correct_above) != correct:
            continue
        key = extract_answer(text) if rules.group_by == "answer" else text
        if key is None:
            continue
        members.setdefault(key, []).append(text)
    keys = list(members)
    rng.shuffle(keys)
    keys.sort(key=lambda k: -len(members[k]))  # stable: the shuffle breaks ties
    groups = []
    for key in keys:
        group = list(members[key])
        rng.shuffle(group)
        groups.append(group)
    return groups


def select_row(row: dict, rules: SelectRules, rng: random.Random) -> dict[str, list]:
    """{"pairs": [(chosen, rejected, chosen_reward, rejected_reward)], "positive": [...], "negative": [...]}."""
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


def _extra_columns(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("prompt", "completions", "rewards")}


def select_stage(
    stage_dir: str | Path, samples: Dataset, samples_dir: str | Path, kind: str, rules: SelectRules,
    *, overwrite: bool = False,
) -> Dataset:
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
            extra = _extra_columns(row)
            if kind == "pairs":
                for chosen, rejected in picked["pairs"]:
                    out.append({"prompt": row["prompt"], "chosen": _response(row["prompt"], chosen),
                                "rejected": _response(row["prompt"], rejected), **extra})
            else:
                for text in picked[kind]:
                    out.append({"prompt": row["prompt"], "completion": _response(row["prompt"], text), **extra})
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
    A hub dataset name is used only with `allow_hub=True` (recipes: `data.hub: true`).
    """
    from datasets import load_dataset, load_from_disk

    p = Path(path)
    if p.is_dir():
        from tokrl.pipelines.stage import MANIFEST, load_stage

        if (p / MANIFEST).is_file():
            ds = load_stage(p)
        else:
            ds = load_from_disk(str(p))
            if hasattr(ds, "keys"):  # a DatasetDict
                if split not in ds:
                    raise ValueError(f"{path}: no split '{split}' (splits: {list(ds.keys())})")
                ds = ds[split]
    elif p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".parquet":
            ds = load_dataset("parquet", data_files=str(p), split="train")
        elif suffix in (".jsonl", ".json"):
            ds = load_dataset("json", data_files=str(p), split="train")
        else:
            raise ValueError(f"{path}: unsupported file type '{suffix}' (use a dataset directory, .parquet or .jsonl)")
    elif allow_hub:
        ds = load_dataset(str(path), split=split)
    else:
        raise FileNotFoundError(f"{path}: no such file or directory (hub datasets need data.hub: true)")
    check_preference_columns(ds, str(path))
    return ds


def check_preference_columns(ds: Dataset, where: str) -> None:
    missing = [c for c in ("chosen", "rejected") if c not in ds.column_names]
    if missing:
        raise ValueError(f"{where}: preference dataset is missing column '{missing[0]}' (columns: {ds.column_names})")
    if len(ds) == 0:
        raise ValueError(f"{where}: preference dataset is empty")


def response_text(response: Any) -> str:
    """The text of a plain or conversational response (assistant turns joined)."""
    if isinstance(response, list):
        return "".join(m.get("content", "") for m in response if isinstance(m, dict))
    return str(response)
