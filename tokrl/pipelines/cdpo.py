"""cDPO end to end (Lin et al., "Critical Tokens Matter", arXiv 2411.19943): sample -> select -> contrast ->
score -> train, each a crash-safe stage under the recipe's `output_dir`.

- `contrast`: two LoRA adapters on the base model, trained with TRL's SFTTrainer (completion-only loss) on the
  positive (correct) and negative (incorrect) SFT sets. Spec defaults (section 2.2 of the official release):
  r 8, alpha 16, dropout 0.1 on gate/up/down_proj (MLP only, no lm_head), lr 3e-4, cosine, 1 epoch, batch 6.
- `score`: for every chosen and rejected completion token (the DPO trainer's own ids, EOS / end-of-turn
  included), log p_CE(y_t) = log softmax((1 + b) z_pos - b z_neg)[y_t] with b = beta_ce = 1, over the FULL
  vocabulary at each position (never over the sequence), by the shared contrastive scorer with both adapters on
  one base model. Weights: rejected `1 - p_CE`, chosen 1 (`weight_chosen: true` gives `p_CE`), and the trailing
  EOS / end-of-turn tokens `eos_weight` (1; the release gives EOS a CE prob of 0). Written columns:
  `rejected_token_weights`, `chosen_token_weights` (for `CDPOTrainer`), `rejected_ce_prob`, `chosen_ce_prob`
  (raw p_CE, for the heatmap), `chosen_token_ids` / `rejected_token_ids` and `token_columns_meta` (checked by the
  trainer).
- `train`: `CDPOTrainer` (reference = the base model, adapter disabled) on the scored pairs; `eval_before` /
  `eval_after` greedy accuracy; optional `train_dpo` / `eval_dpo` (plain DPO, same budget) and `rollout_check`.

Checked against the official code (github.com/chenzhiling9954/Critical-Tokens-Matter @ 228991e, src/pipeline.py
`calculate_ce_score`): `softmax(2 * pos_logits - neg_logits)` gathered at the realised
next token, weight `1 - p` on rejected tokens, chosen weight 1 with `only_neg`, EOS weight 1.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from datasets import Dataset
from peft import PeftModel
from transformers import AutoTokenizer
from trl import SFTConfig, SFTTrainer

from tokrl.models import resolve_model_path
from tokrl.pipelines.preference import RECIPE_KEYS, run_pair_pipeline
from tokrl.pipelines.rollout_check import RolloutSettings, rollout_check_stage
from tokrl.pipelines.runner import lora_config, open_pipeline_recipe, settings_from
from tokrl.pipelines.stage import (
    StageError,
    config_hash,
    run_artifact_stage,
    run_stage,
    stage_fingerprint,
    stage_metadata,
)
from tokrl.recipe import build_config, check_keys
from tokrl.scoring import contrastive_token_logprobs
from tokrl.trainers.cdpo import CDPOConfig, CDPOTrainer
from tokrl.trainers.device_defaults import precision_kwargs
from tokrl.trainers.token_columns import (
    SIDES,
    end_positions,
    end_token_ids,
    token_columns_metadata,
    tokenize_preference,
    tokenizer_fingerprint,
)


STAGES = ("sample", "select_pairs", "sft_positive", "sft_negative", "contrast_positive", "contrast_negative",
          "score", "eval_before", "train", "eval_after", "train_dpo", "eval_dpo", "rollout_check")
# Spec section 2.2 (positive/negative models) and 3.1 (cDPO policy LoRA).
CONTRAST_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["gate_proj", "up_proj", "down_proj"],
                 "bias": "none"}
CONTRAST_TRAINER = {"learning_rate": 3e-4, "lr_scheduler_type": "cosine", "warmup_steps": 100, "num_train_epochs": 1,
                    "per_device_train_batch_size": 6, "max_length": 1024, "logging_steps": 10, "save_strategy": "no"}
POLICY_LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
               "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


@dataclass
class CDPOScoreSettings:
    """The `score` section: contrastive estimation and the weight rule."""

    beta_ce: float = 1.0
    weight_chosen: bool = False  # False: chosen weights 1 (the release's only_neg); True: chosen weights p_CE
    eos_weight: float = 1.0  # weight of the trailing EOS / end-of-turn tokens
    batch_size: int = 8
    chunk_size: int = 1024
    shard_size: int = 256

    def __post_init__(self):
        if self.beta_ce < 0:
            raise ValueError(f"score.beta_ce must be >= 0, got {self.beta_ce}")


# ---- contrast ---------------------------------------------------------------------------------------------------


def contrast_config(trainer_spec: dict, file, output_dir: str) -> SFTConfig:
    """The contrast models' SFTConfig: the release's settings under the recipe's. SFTConfig resolves no device
    defaults itself, so it gets tokrl's (`default_precision`), the precision the DPO stage's config resolves to:
    one process trains both, and accelerate refuses a second mixed-precision setting."""
    return build_config(SFTConfig, {**CONTRAST_TRAINER, **trainer_spec}, file, "contrast.trainer",
                        **precision_kwargs(), report_to="none", output_dir=output_dir)


def contrast_stage(stage_dir: Path, side: str, sft: Dataset, load_base, contrast: dict, file, *,
                   input_fingerprint: str, overwrite: bool) -> Path:
    """Train one LoRA adapter (the positive or the negative model) with SFTTrainer, as the recipe's `contrast`
    section says over the release's defaults; saved under `artifact/`."""
    lora_spec, trainer_spec = contrast.get("lora", CONTRAST_LORA), contrast.get("trainer") or {}
    if len(sft) == 0:
        raise StageError(f"stage 'contrast_{side}': the {side} SFT set is empty (no "
                         f"{'correct' if side == 'positive' else 'incorrect'} samples); sample more or change the "
                         "temperature")
    lora = lora_config(lora_spec, "contrast.lora", file)

    def build(tmp: Path):
        model, tokenizer = load_base()
        config = contrast_config(trainer_spec, file, str(tmp / "run"))
        trainer = SFTTrainer(model=model, args=config, train_dataset=sft, processing_class=tokenizer,
                             peft_config=lora)
        t0 = time.time()
        result = trainer.train()
        trainer.model.save_pretrained(str(tmp / "adapter"))
        shutil.rmtree(tmp / "run", ignore_errors=True)
        return {"train_loss": result.training_loss, "steps": trainer.state.global_step, "examples": len(sft),
                "seconds": time.time() - t0}

    record = {"side": side, "lora": lora_spec, "trainer": {**CONTRAST_TRAINER, **trainer_spec}}
    path = run_artifact_stage(f"contrast_{side}", stage_dir, build, record, input_fingerprint=input_fingerprint,
                              overwrite=overwrite)
    return path / "adapter"


def contrast_model(load_base, positive_dir: Path, negative_dir: Path):
    """The base model with both adapters attached, named "positive" and "negative"."""
    model, tokenizer = load_base()
    model = PeftModel.from_pretrained(model, str(positive_dir), adapter_name="positive")
    model.load_adapter(str(negative_dir), adapter_name="negative")
    model.eval()
    return model, tokenizer


# ---- score ------------------------------------------------------------------------------------------------------


def ce_weights(ce_logps: list[float], ids: list[int], end_ids: set[int], *, rejected: bool, weight_chosen: bool,
               eos_weight: float) -> tuple[list[float], list[float]]:
    """(weights, p_CE) for one completion. Rejected: 1 - p_CE; chosen: 1 (or p_CE); trailing end tokens: eos_weight."""
    probs = [math.exp(v) for v in ce_logps]
    if rejected:
        weights = [1.0 - p for p in probs]
    else:
        weights = list(probs) if weight_chosen else [1.0] * len(probs)
    for i in range(end_positions(ids, end_ids), len(ids)):
        weights[i] = float(eos_weight)
    return weights, probs


def score_rows(model, tokenizer, pairs: Dataset, settings: CDPOScoreSettings, meta: str) -> list[dict]:
    """Rows of `pairs` plus cDPO's per-token columns (see the module docstring)."""
    rows = list(pairs)
    tokenised = [tokenize_preference(tokenizer, row) for row in rows]
    examples = [{"prompt_ids": tok["prompt_ids"], "completion_ids": tok[f"{side}_ids"]}
                for tok in tokenised for side in SIDES]
    logps = contrastive_token_logprobs(model, model, examples, beta=settings.beta_ce, batch_size=settings.batch_size,
                                       chunk_size=settings.chunk_size, adapters=("positive", "negative")) \
        if examples else []
    end_ids = end_token_ids(tokenizer)
    out = []
    for i, (row, tok) in enumerate(zip(rows, tokenised)):
        new = dict(row)
        for j, side in enumerate(SIDES):
            ids = tok[f"{side}_ids"]
            weights, probs = ce_weights(logps[2 * i + j], ids, end_ids, rejected=side == "rejected",
                                        weight_chosen=settings.weight_chosen, eos_weight=settings.eos_weight)
            new[f"{side}_token_weights"] = weights
            new[f"{side}_ce_prob"] = probs
            new[f"{side}_token_ids"] = ids
        new["token_columns_meta"] = meta
        out.append(new)
    return out


def score_stage(stage_dir: Path, model, tokenizer, pairs: Dataset, settings: CDPOScoreSettings, *,
                evaluator_id: str, input_fingerprint: str, overwrite: bool, model_id: str | None = None) -> Dataset:
    meta = token_columns_metadata(tokenizer, evaluator=evaluator_id, beta_ce=settings.beta_ce)
    kept = {k: v for k, v in asdict(settings).items() if k not in ("batch_size", "chunk_size", "shard_size")}
    record = {"settings": kept, "evaluator": evaluator_id, "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}
    return run_stage("cdpo_score", stage_dir, lambda shard, i: score_rows(model, tokenizer, shard, settings, meta),
                     pairs, record, shard_size=settings.shard_size, input_fingerprint=input_fingerprint,
                     overwrite=overwrite,
                     metadata={"evaluator": evaluator_id, **({"model": model_id} if model_id else {})})


def weight_stats(scored: Dataset, end_ids: set[int]) -> dict[str, float]:
    """Rejected-token weight statistics the issue asks to report, over response tokens (the trailing EOS /
    end-of-turn tokens, whose weight is fixed, excluded)."""
    probs = {side: [p for ids, row in zip(scored[f"{side}_token_ids"], scored[f"{side}_ce_prob"])
                    for p in row[: end_positions(ids, end_ids)]] for side in SIDES}
    weights = [1.0 - p for p in probs["rejected"]]
    if not weights:
        return {"rejected_tokens": 0}
    mean = sum(weights) / len(weights)
    return {
        "rejected_tokens": len(weights),
        "frac_rejected_weight_gt_0.5": sum(w > 0.5 for w in weights) / len(weights),
        "mean_rejected_weight": mean,
        "std_rejected_weight": (sum((w - mean) ** 2 for w in weights) / len(weights)) ** 0.5,
        "mean_chosen_ce_prob": sum(probs["chosen"]) / max(len(probs["chosen"]), 1),
        "mean_rejected_ce_prob": sum(probs["rejected"]) / len(probs["rejected"]),
    }


# ---- the whole pipeline -----------------------------------------------------------------------------------------


def run_cdpo(recipe_path: str, overrides=(), *, overwrite: bool = False, stage: str | None = None,
             stop_after: str | None = None, dry_run: bool = False) -> dict:
    """`tokrl train RECIPE.yaml` for method: cdpo: every stage in order, skipping complete ones; returns (and
    writes) a summary."""
    p = open_pipeline_recipe(recipe_path, overrides, "cdpo", (*RECIPE_KEYS, "contrast", "rollout_check"))
    file = p.file
    contrast = check_keys(p.recipe.get("contrast"), ("lora", "trainer"), "contrast", file)
    score_settings = settings_from(CDPOScoreSettings, p.recipe.get("score"), "score", file)
    config = build_config(CDPOConfig, p.trainer, file, "trainer", output_dir=str(p.output_dir / "train"),
                          report_to="none")
    rollout = settings_from(RolloutSettings, p.recipe.get("rollout_check"), "rollout_check", file)
    lora_config(contrast.get("lora", CONTRAST_LORA), "contrast.lora", file)
    contrast_config(contrast.get("trainer") or {}, file, str(p.output_dir / "contrast"))

    def score(runner, source, sft, summary):
        adapters = {}
        for side in ("positive", "negative"):
            data, fp = sft[side]
            adapters[side] = runner.step(f"contrast_{side}", lambda ow, s=side, d=data, f=fp: contrast_stage(
                runner.dir(f"contrast_{s}"), s, d, p.load_base, contrast, file, input_fingerprint=f, overwrite=ow),
                load=lambda d: d / "artifact" / "adapter")
        contrast_fp = config_hash([stage_fingerprint(runner.dir("contrast_positive")),
                                   stage_fingerprint(runner.dir("contrast_negative")), source.fingerprint])

        def score_pairs(ow):
            model, tokenizer = contrast_model(p.load_base, adapters["positive"], adapters["negative"])
            return score_stage(runner.dir("score"), model, tokenizer, source.pairs, score_settings,
                               evaluator_id=f"{p.model_id}+contrast", input_fingerprint=contrast_fp, overwrite=ow,
                               model_id=p.model_id)

        scored = runner.step("score", score_pairs)
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(p.model_id))
        summary["weights"] = weight_stats(scored, end_token_ids(tokenizer))
        summary["heatmap_columns"] = ["rejected_token_weights", "rejected_ce_prob", "chosen_token_weights",
                                      "chosen_ce_prob"]
        print(f"[tokrl] cDPO weights: {summary['weights']}", flush=True)
        return scored

    def rollout_check(runner, scored, summary):
        if rollout.enabled:
            summary["rollout_check"] = runner.step("rollout_check", lambda ow: rollout_check_stage(
                runner.dir("rollout_check"), p.load_base, scored, rollout,
                input_fingerprint=stage_fingerprint(runner.dir("score")), overwrite=ow), load=stage_metadata,
                required=False)

    return run_pair_pipeline(p, STAGES, config, CDPOTrainer, score, summary={
        "loss_granularity": config.loss_granularity}, lora=POLICY_LORA, kinds=("pairs", "positive", "negative"),
        after=rollout_check, overwrite=overwrite, stage=stage, stop_after=stop_after, dry_run=dry_run)
