"""Token Cleaning (Pang et al., ICML 2025, arXiv 2502.01968) as resumable on-disk stages.

Score (checked against the official code, UCSC-REAL/TokenCleaning `calculate_token_loss.py` +
`generate_token_label.py`): for every response token, influence = loss under the base model minus loss under the
reference model = log p_ref(x_j | x_<j) - log p_base(x_j | x_<j). Higher = the reference learned it = kept; the
top `keep_ratio` (0.6) of all response tokens of the set are kept (floor(rho * N), stable sort: ties go to the
earlier token in dataset order). The "base" side is the pre-trained model in every round, also in the
self-evolving variant, where only the reference side evolves.

Stages (each a directory under the run's output dir; a finished stage is skipped on rerun):
    tokenize      rows -> input_ids, completion_mask (+ corrupted, for the embedded corrupted task),
                  tokenised exactly as TRL's SFTTrainer does and truncated once
    logps_<name>  per-token log-probs of the response under one model (the shared chunked scorer)
    select_<name> token_scores, token_mask (+ metadata: threshold, k, ties, zero-kept rows)
    model_<name>  an SFT run (TokenCleaningSFTTrainer) -> a saved model
Fixed-model cleaning: reference = SFT of the base on the trusted set (or a given model); score the pool; select
globally; SFT the base on the cleaned pool. Self-evolving: the pool is cut into `num_chunks` contiguous chunks;
round 0 trains the base on chunk 0 with all tokens; round t scores chunk t with the round t-1 model as reference,
selects within the chunk, and trains on it starting from the round t-1 model (fresh optimiser and schedule).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Features, Sequence, Value, concatenate_datasets

from tokrl.data.corrupted_sft import corrupted_token_mask
from tokrl.models import load_model
from tokrl.pipelines.runner import lora_config
from tokrl.pipelines.stage import ARTIFACT, config_hash, is_complete, run_artifact_stage, run_stage, stage_fingerprint
from tokrl.pipelines.token_cleaning_select import (
    GlobalSelector,
    Threshold,
    count_ties,
    random_scores,
    select_per_sample,
    streaming_threshold,
)
from tokrl.recipe import build_config
from tokrl.scoring import score_tokens
from tokrl.trainers.token_cleaning_sft import TokenCleaningSFTTrainer
from tokrl.trainers.token_cleaning_sft_config import TokenCleaningSFTConfig
from tokrl.trainers.token_cleaning_tokens import completion_span, tokenize_sft_row, truncation_slice

SELECTIONS = ("global", "per_sample", "random")
MASK_WEIGHTING = {"name": "column", "column": "token_mask"}
_READ_BATCH = 512


# ---- stage 0: tokenise ----------------------------------------------------------------------------------------


def tokenize_rows(rows: Dataset, tokenizer, *, max_length: int | None, truncation_mode: str = "keep_start",
                  row_offset: int = 0) -> dict:
    """input_ids / completion_mask (+ `corrupted` when rows carry `corrupt_spans`), truncated together."""
    sl = truncation_slice(max_length, truncation_mode)
    has_spans = "corrupt_spans" in rows.column_names
    out: dict[str, list] = {key: [] for key in ["input_ids", "completion_mask"] + ["corrupted"] * has_spans}
    for i, example in enumerate(rows):
        tok = tokenize_sft_row(example, tokenizer, row=row_offset + i)
        if has_spans:
            tok["corrupted"] = corrupted_token_mask(tokenizer, tok["input_ids"], tok["completion_mask"],
                                                    example["corrupt_spans"])
        for key in out:
            out[key].append(tok[key][sl])
    return out


def tokenize_stage(dataset: Dataset, tokenizer, stage_dir, *, max_length, truncation_mode="keep_start",
                   tokenizer_id: str = "", overwrite: bool = False) -> Dataset:
    config = {"tokenizer": tokenizer_id, "max_length": max_length, "truncation_mode": truncation_mode,
              "vocab": len(tokenizer), "chat_template": config_hash(getattr(tokenizer, "chat_template", None))}

    def fn(shard, index):
        return tokenize_rows(shard, tokenizer, max_length=max_length, truncation_mode=truncation_mode,
                             row_offset=index * 256)

    tokens = run_stage("tokenize", stage_dir, fn, dataset, config, shard_size=256, overwrite=overwrite)
    return concatenate_datasets([dataset, tokens], axis=1)


# ---- stage 1: score -------------------------------------------------------------------------------------------


def row_logps_examples(rows: Dataset) -> list[dict]:
    examples = []
    for i, row in enumerate(rows.select_columns(["input_ids", "completion_mask"])):
        start = completion_span(row["completion_mask"], i)
        examples.append({"prompt_ids": row["input_ids"][:start], "completion_ids": row["input_ids"][start:]})
    return examples


def trained_model_fingerprint(path) -> str | None:
    """The content of a model this pipeline trained (its training stage's fingerprint), None for any other model.
    Stages that read a model key it by this, not by its path alone: a model retrained at the same path (another
    seed in the same run dir, the shared stage cache) must not get the earlier model's scores or eval."""
    stage = Path(str(path)).parent
    return stage_fingerprint(stage) if Path(str(path)).name == ARTIFACT and is_complete(stage) else None


def score_stage(model, tokens: Dataset, stage_dir, *, model_id: str, batch_size: int = 8,
                overwrite: bool = False, shard_size: int = 512, input_fingerprint: str | None = None) -> Dataset:
    """Column `logps` (float32, aligned with input_ids, 0 on prompt positions) of the response under `model`.
    `input_fingerprint` (e.g. the tokenize stage's) saves hashing the token ids again."""
    features = Features({"logps": Sequence(Value("float32"))})

    def fn(shard, index):
        examples = row_logps_examples(shard)
        scored = score_tokens(model, examples, batch_size=batch_size, progress=True,
                              desc=f"scoring {Path(stage_dir).name} shard {index}")
        return {"logps": [[0.0] * len(ex["prompt_ids"]) + s["logps"] for ex, s in zip(examples, scored)]}

    config = {"model": model_id, "what": "response token log-probs"}
    content = trained_model_fingerprint(model_id)
    if content is not None:
        config["model_content"] = content
    sub = tokens.select_columns(["input_ids", "completion_mask"])
    return run_stage(f"logps:{model_id}", stage_dir, fn, sub, config, shard_size=shard_size, overwrite=overwrite,
                     features=features, input_fingerprint=input_fingerprint)


# ---- stage 2: select ------------------------------------------------------------------------------------------


def influence(base_logps, ref_logps, mask) -> np.ndarray:
    """s = nll_base - nll_ref = logp_ref - logp_base on response tokens (float32), 0 elsewhere."""
    base = np.asarray(base_logps, dtype=np.float32)
    ref = np.asarray(ref_logps, dtype=np.float32)
    return np.where(np.asarray(mask, dtype=bool), ref - base, np.float32(0.0)).astype(np.float32)


def _iter_rows(tokens: Dataset, base: Dataset | None, ref: Dataset | None, selection: str, seed: int,
               start: int = 0, stop: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(scores, completion_mask) per row, read in batches from the on-disk datasets (bounded memory)."""
    stop = len(tokens) if stop is None else stop
    for lo in range(start, stop, _READ_BATCH):
        hi = min(lo + _READ_BATCH, stop)
        masks = tokens.select_columns(["completion_mask"])[lo:hi]["completion_mask"]
        if selection == "random":
            for j, m in enumerate(masks):
                m = np.asarray(m, dtype=bool)
                yield np.where(m, random_scores(seed, lo + j, len(m)), np.float32(0.0)), m
            continue
        b = base[lo:hi]["logps"]
        r = ref[lo:hi]["logps"]
        for m, lb, lr in zip(masks, b, r):
            m = np.asarray(m, dtype=bool)
            yield influence(lb, lr, m), m


def select_stage(tokens: Dataset, base: Dataset | None, ref: Dataset | None, stage_dir, *, keep_ratio: float = 0.6,
                 selection: str = "global", seed: int = 0, models: dict | None = None, overwrite: bool = False,
                 shard_size: int = 512, input_fingerprint: str | None = None) -> Dataset:
    """Columns `token_scores` (float32) and `token_mask` (int8, subset of completion_mask); metadata with the
    threshold. Global selection reads the on-disk scores twice (exact streaming threshold), plus once more to
    place the tie quota when there are ties at the threshold."""
    if selection not in SELECTIONS:
        raise ValueError(f"cleaning.selection must be one of {SELECTIONS}, got {selection!r}")
    if selection != "random" and (base is None or ref is None):
        raise ValueError(f"selection '{selection}' needs base and reference log-probs")
    if base is not None and len(base) != len(tokens) or ref is not None and len(ref) != len(tokens):
        raise ValueError("log-prob stages and the tokenised dataset have different row counts")
    rows = lambda a=0, b=None: _iter_rows(tokens, base, ref, selection, seed, a, b)  # noqa: E731

    threshold: Threshold | None = None
    ties_before = None
    if selection in ("global", "random"):
        threshold = streaming_threshold(lambda: (s[m] for s, m in rows()), keep_ratio)
        if threshold.c_eq > 1 and threshold.keep_ties < threshold.c_eq:
            # the tie quota is spent in dataset order: count ties before each shard (rows, not tokens, in memory)
            counts = np.fromiter((count_ties(s, m, threshold) for s, m in rows()), dtype=np.int64, count=len(tokens))
            ties_before = np.concatenate([[0], np.cumsum(counts)])

    features = Features({"token_scores": Sequence(Value("float32")), "token_mask": Sequence(Value("int8"))})

    def fn(shard, index):
        a = index * shard_size
        b = a + len(shard)
        if threshold is not None:
            selector = GlobalSelector(threshold, int(ties_before[a]) if ties_before is not None else 0)
        else:
            selector = lambda s, m: select_per_sample(s, m, keep_ratio)  # noqa: E731
        out = {"token_scores": [], "token_mask": []}
        for s, m in rows(a, b):
            out["token_scores"].append(s.tolist())
            out["token_mask"].append(selector(s, m).tolist())
        return out

    config = {"keep_ratio": keep_ratio, "selection": selection, "seed": seed if selection == "random" else None,
              "models": models or {}}
    meta = {"keep_ratio": keep_ratio, "selection": selection, "models": models or {},
            "threshold": threshold.to_dict() if threshold else None}
    sub = tokens.select_columns(["completion_mask"])
    out = run_stage(f"select:{selection}", stage_dir, fn, sub, config, shard_size=shard_size, overwrite=overwrite,
                    features=features, metadata=meta, input_fingerprint=input_fingerprint)
    _write_selection_summary(stage_dir, out, tokens, meta)
    return out


def _write_selection_summary(stage_dir, selected: Dataset, tokens: Dataset, meta: dict) -> None:
    """Side JSON: counts, zero-kept rows and the per-sample kept-fraction histogram (global selection leaves
    some rows at 0 % and others near 100 %: expected, not a bug)."""
    path = Path(stage_dir) / "selection.json"
    kept, total, zero, fracs = 0, 0, 0, []
    for lo in range(0, len(selected), _READ_BATCH):
        for keep, resp in zip(selected[lo:lo + _READ_BATCH]["token_mask"],
                              tokens.select_columns(["completion_mask"])[lo:lo + _READ_BATCH]["completion_mask"]):
            k, n = int(np.sum(keep)), int(np.sum(resp))
            kept, total, zero = kept + k, total + n, zero + (k == 0)
            fracs.append(k / max(n, 1))
    hist, edges = np.histogram(fracs, bins=10, range=(0.0, 1.0))
    summary = {**meta, "response_tokens": total, "kept_tokens": kept, "kept_frac": kept / max(total, 1),
               "rows": len(selected), "rows_with_zero_kept": zero,
               "per_sample_kept_frac_hist": {"counts": hist.tolist(), "edges": edges.round(2).tolist()}}
    path.write_text(json.dumps(summary, indent=1))


def cleaned_dataset(tokens: Dataset, selected: Dataset) -> Dataset:
    """The tokenised rows plus `token_scores` and `token_mask`: what TokenCleaningSFTTrainer trains on."""
    return concatenate_datasets([tokens, selected], axis=1)


# ---- stage 3: train -------------------------------------------------------------------------------------------


def train_sft(init_model: str, dataset: Dataset, out_dir: Path, *, trainer: dict | None, weighting: Any,
              lora: dict | None = None, file: str = "<recipe>", where: str = "trainer",
              chat_template: str | None = None) -> dict:
    """SFT `init_model` on `dataset` with TokenCleaningSFTTrainer; save the (LoRA-merged) model to `out_dir`."""
    model, tokenizer = load_model(init_model)
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.padding_side = "right"
    defaults = dict(output_dir=str(out_dir / "trainer"), report_to="none", save_strategy="no", logging_steps=10,
                    num_train_epochs=1)
    args = build_config(TokenCleaningSFTConfig, trainer, file, where, **defaults)
    args.weighting = weighting
    peft_config = lora_config(lora or None, "lora", file)
    sft = TokenCleaningSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                  peft_config=peft_config)
    result = sft.train()
    model = sft.model
    if peft_config is not None:
        model = model.merge_and_unload()
    model.save_pretrained(out_dir)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out_dir)
    return {"train_loss": result.training_loss, "steps": result.global_step, "rows": len(sft.train_dataset),
            "rows_without_selected_tokens": sft.empty_rows.get("train", 0), "init_model": init_model}


def model_stage(stage_dir, *, init_model: str, dataset: Dataset, trainer: dict | None, weighting: Any,
                lora: dict | None, data_fingerprint: str, file: str = "<recipe>", where: str = "trainer",
                overwrite: bool = False, chat_template: str | None = None) -> Path:
    config = {"init_model": init_model, "trainer": trainer, "weighting": weighting, "lora": lora,
              "chat_template": chat_template}
    return run_artifact_stage("sft", stage_dir, lambda tmp: train_sft(
        init_model, dataset, tmp, trainer=trainer, weighting=weighting, lora=lora, file=file, where=where,
        chat_template=chat_template), config, input_fingerprint=data_fingerprint, overwrite=overwrite)


# ---- orchestration --------------------------------------------------------------------------------------------


class Models:
    """Loads one scoring model at a time (the base, a reference, a round's checkpoint), on the GPU when there is
    one (bf16 weights there; the scorer's log-softmax runs in fp32), else fp32 on the CPU."""

    def __init__(self):
        self._name, self._model = None, None

    def get(self, name: str):
        if name != self._name:
            self._model = None
            gpu = torch.cuda.is_available()
            self._model, _ = load_model(name, dtype=torch.bfloat16 if gpu else torch.float32)
            if gpu:
                self._model.to("cuda")
            self._name = name
        return self._model


def fixed_model_cleaning(tokens: Dataset, root: Path, *, base: str, reference: str, keep_ratio: float,
                         selection: str, batch_size: int, models: Models, seed: int = 0,
                         overwrite: bool = False, tokens_fingerprint: str | None = None,
                         base_dir: Path) -> tuple[Dataset, dict]:
    """Score the whole pool with base and reference, select; returns (cleaned dataset, selection summary).
    The base model's pass (`base_dir`) is shared with the other variants."""
    if selection == "random":
        base_lp = ref_lp = None
        names = {}
    else:
        base_lp = score_stage(models.get(base), tokens, base_dir, model_id=base, batch_size=batch_size,
                              overwrite=overwrite, input_fingerprint=tokens_fingerprint)
        ref_lp = score_stage(models.get(reference), tokens, root / "logps_reference", model_id=reference,
                             batch_size=batch_size, overwrite=overwrite, input_fingerprint=tokens_fingerprint)
        names = {"base": base, "reference": reference}
    stage = root / f"select_{selection}"
    fp = _fingerprints(base_dir, root / "logps_reference") if names else None
    selected = select_stage(tokens, base_lp, ref_lp, stage, keep_ratio=keep_ratio, selection=selection, seed=seed,
                            models=names, overwrite=overwrite, input_fingerprint=fp)
    return cleaned_dataset(tokens, selected), json.loads((stage / "selection.json").read_text())


def _fingerprints(*stage_dirs) -> str:
    return config_hash([stage_fingerprint(d) for d in stage_dirs])


def chunk_bounds(n: int, num_chunks: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal chunks in dataset order (no shuffling), as in the official self-evolving script."""
    if num_chunks < 2:
        raise ValueError(f"cleaning.num_chunks must be >= 2 for self-evolving cleaning, got {num_chunks}")
    if n < num_chunks:
        raise ValueError(f"self-evolving cleaning needs at least num_chunks={num_chunks} rows, got {n}")
    edges = np.linspace(0, n, num_chunks + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def self_evolving_cleaning(tokens: Dataset, root: Path, *, base: str, keep_ratio: float, num_chunks: int,
                           batch_size: int, models: Models, train: Callable[..., Path], overwrite: bool = False,
                           score: Callable | None = None, tokens_fingerprint: str | None = None,
                           base_dir: Path | None = None) -> tuple[str, list[dict]]:
    """Run the rounds; `train(stage_dir, init_model, dataset, weighting, fingerprint)` trains one round (its input
    fingerprint: the tokens, the round and its selection) and returns the saved model's path. Every stage is
    resumable, so a killed run resumes at the first unfinished round. The base model's pass over the whole pool
    (`base_dir`, default `root/logps_base`) is computed once."""
    score = score or score_stage
    base_dir = Path(base_dir) if base_dir is not None else root / "logps_base"
    bounds = chunk_bounds(len(tokens), num_chunks)
    base_lp = score(models.get(base), tokens, base_dir, model_id=base, batch_size=batch_size,
                    overwrite=overwrite, input_fingerprint=tokens_fingerprint)
    rounds = []
    chunk0 = tokens.select(range(*bounds[0]))
    current = str(train(root / "round_00" / "model", base, chunk0, "uniform",
                        config_hash([tokens_fingerprint, "round_00", len(chunk0), None])))
    rounds.append({"round": 0, "rows": list(bounds[0]), "init_model": base, "model": current, "cleaned": False})
    for t, (a, b) in enumerate(bounds[1:], start=1):
        chunk = tokens.select(range(a, b))
        rdir = root / f"round_{t:02d}"
        ref_lp = score(models.get(current), chunk, rdir / "logps_reference", model_id=current,
                       batch_size=batch_size, overwrite=overwrite,
                       input_fingerprint=config_hash([tokens_fingerprint, a, b]) if tokens_fingerprint else None)
        chunk_base = base_lp.select(range(a, b))
        logps_fp = config_hash([_fingerprints(base_dir, rdir / "logps_reference"), a, b])
        selected = select_stage(chunk, chunk_base, ref_lp, rdir / "select_global", keep_ratio=keep_ratio,
                                selection="global", models={"base": base, "reference": current}, overwrite=overwrite,
                                input_fingerprint=logps_fp)
        cleaned = cleaned_dataset(chunk, selected)
        summary = json.loads((rdir / "select_global" / "selection.json").read_text())
        init = current
        current = str(train(rdir / "model", init, cleaned, MASK_WEIGHTING, config_hash(
            [tokens_fingerprint, rdir.name, len(cleaned), stage_fingerprint(rdir / "select_global")])))
        rounds.append({"round": t, "rows": [a, b], "init_model": init, "reference": init, "model": current,
                       "cleaned": True, "selection": summary})
    return current, rounds

