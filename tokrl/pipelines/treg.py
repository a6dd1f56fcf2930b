"""T-REG's offline stage: self-generated token rewards by contrastive prompting (Zhou et al. 2024, arXiv 2412.02685).

For each side of each pair, with the trainer's completion ids C (TRL's DPO tokenisation, EOS / end-of-turn
included) and a frozen evaluator (default: the reference model, i.e. the base model):

    l+_t = log p_eval(C_t | better(x, y), C_<t)      l-_t = log p_eval(C_t | worse(x, y), C_<t)
    r_t  = sigmoid(l+_t - l-_t) - 0.5                 in (-0.5, 0.5)

The contexts are chat prompts (with the generation prompt) rendered with the evaluator's chat template; the same
ids C are appended to both (never re-tokenised inside the new context). Both log-probs come from the shared
chunked scorer (`tokrl.scoring.score_tokens`: no `[B, T, V]` logits, length-bucketed batches).
Written columns: `chosen_token_rewards` / `rejected_token_rewards` (one float per id of C), `chosen_token_ids` /
`rejected_token_ids` (the ids scored, checked by the trainer) and `token_columns_meta` (tokenizer fingerprint,
evaluator, template hash), which `TREGTrainer` validates.

Source notes: the formula for r_t, the choice of the reference model as evaluator and the sum-form regulariser
are as two independent secondary write-ups of the paper report them (the paper body and github.com/wzhouad/T-REG
could not be read). The paper's prompt wording is unknown: the two templates
below are tokrl's own paraphrases ("revision": the draft answer is shown and the model is asked to rewrite it
better / worse, the spec's default because the paper frames the method as self-refinement; "instruction": the
request with a short quality instruction, no draft). Users can pass their own.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import Dataset

from tokrl.pipelines.preference import RECIPE_KEYS, run_pair_pipeline
from tokrl.pipelines.runner import model_loader, open_pipeline_recipe, settings_from
from tokrl.pipelines.stage import run_stage
from tokrl.recipe import RecipeError, build_config
from tokrl.rewards.arithmetic import completion_text
from tokrl.scoring import score_tokens
from tokrl.trainers.token_columns import SIDES, token_columns_metadata, tokenize_preference, tokenizer_fingerprint
from tokrl.trainers.treg import TREGConfig, TREGTrainer
from tokrl.utils import did_you_mean


_DRAFT = "Below is a request and a draft reply to it.\n\nRequest:\n{prompt}\n\nDraft reply:\n{response}\n\n"
TEMPLATES = {
    "revision": {
        "better": _DRAFT + "Rewrite the draft into a stronger reply: more helpful, correct, coherent and concise. "
                           "Output only the new reply.",
        "worse": _DRAFT + "Rewrite the draft into a weaker reply: less helpful, incorrect, incoherent and wordy. "
                          "Output only the new reply.",
    },
    "instruction": {
        "better": "{prompt}\n\nGive a helpful, correct, coherent and concise answer.",
        "worse": "{prompt}\n\nGive an unhelpful, incorrect, incoherent and wordy answer.",
    },
}


@dataclass
class TREGScoreSettings:
    """The `score` section of a T-REG recipe."""

    template: str = "revision"  # a name in TEMPLATES, or "custom" with better/worse given below
    better: str | None = None  # custom templates: placeholders {prompt} and (optionally) {response}
    worse: str | None = None
    max_context_length: int | None = 4096  # context + completion; the draft inside the context is cut first
    batch_size: int = 8
    shard_size: int = 256
    evaluator: str | None = None  # None: the recipe's model (the reference model)

    templates: dict = field(init=False, repr=False)

    def __post_init__(self):
        if self.template == "custom" or self.better is not None or self.worse is not None:
            if not self.better or not self.worse:
                raise ValueError("score: custom templates need both 'better' and 'worse'")
            self.templates = {"better": self.better, "worse": self.worse}
        elif self.template in TEMPLATES:
            self.templates = dict(TEMPLATES[self.template])
        else:
            raise ValueError(f"score.template: unknown template '{self.template}'"
                             f"{did_you_mean(self.template, TEMPLATES)}; known: {', '.join(TEMPLATES)}, custom")
        for side, text in self.templates.items():
            if "{prompt}" not in text:
                raise ValueError(f"score.{side} template must contain the placeholder {{prompt}}")
            try:
                text.format(prompt="", response="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"score.{side} template: bad placeholder {exc}; use {{prompt}} and {{response}}")\
                    from None

    def template_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.templates, sort_keys=True).encode()).hexdigest()[:16]


def prompt_text(prompt) -> str:
    """The request as plain text: a single user turn is its content; longer chats are written out by role."""
    if isinstance(prompt, list):
        turns = [m for m in prompt if isinstance(m, dict)]
        users = [m for m in turns if m.get("role") == "user"]
        if len(users) == 1 and all(m.get("role") in ("user", "system") for m in turns):
            return users[0].get("content", "")
        return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in turns)
    return str(prompt)


def context_ids(tokenizer, template: str, prompt, draft: str) -> list[int]:
    """The evaluator's prompt ids for one contrastive context (chat template + generation prompt, or plain text)."""
    text = template.format(prompt=prompt_text(prompt), response=draft)
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                            add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def fit_context(tokenizer, template: str, prompt, draft: str, completion_len: int, max_length: int | None):
    """Context ids, cutting the draft (from its end) until context + completion fits `max_length`.

    Returns (ids, truncated). If even an empty draft does not fit, the context is kept whole (the completion is
    never cut: its rewards must cover every trainer token).
    """
    ids = context_ids(tokenizer, template, prompt, draft)
    if max_length is None or len(ids) + completion_len <= max_length or "{response}" not in template:
        return ids, False
    draft_ids = tokenizer(draft, add_special_tokens=False)["input_ids"]
    keep = len(draft_ids)
    while keep > 0:
        keep = max(0, keep - (len(ids) + completion_len - max_length) - 1)
        ids = context_ids(tokenizer, template, prompt, tokenizer.decode(draft_ids[:keep]))
        if len(ids) + completion_len <= max_length:
            break
    return ids, True


def token_rewards(logps_better: list[float], logps_worse: list[float]) -> list[float]:
    """r_t = sigmoid(l+_t - l-_t) - 0.5 = tanh((l+_t - l-_t) / 2) / 2, per token (the tanh form cannot overflow;
    -inf log-probs give +-0.5)."""
    diffs = [a - b for a, b in zip(logps_better, logps_worse)]
    if any(d != d for d in diffs):
        raise ValueError("T-REG score: a log-prob difference is NaN (inf - inf): the evaluator gives a token -inf")
    return [0.5 * math.tanh(d / 2) for d in diffs]


def build_scoring_examples(tokenizer, example: dict, settings: TREGScoreSettings) -> tuple[dict, list[dict], int]:
    """For one pair: the trainer's completion ids per side and the 4 scorer examples (side x better/worse).

    Returns ({"chosen": ids, "rejected": ids}, [examples in order chosen-better, chosen-worse, rejected-better,
    rejected-worse], number of contexts whose draft was cut).
    """
    tok = tokenize_preference(tokenizer, example)
    completion = {side: tok[f"{side}_ids"] for side in SIDES}
    examples, cut = [], 0
    for side in SIDES:
        draft = completion_text(example[side])
        for which in ("better", "worse"):
            ctx, truncated = fit_context(tokenizer, settings.templates[which], example["prompt"], draft,
                                         len(completion[side]), settings.max_context_length)
            cut += int(truncated)
            examples.append({"prompt_ids": ctx, "completion_ids": completion[side]})
    return completion, examples, cut


def score_pairs(model, tokenizer, pairs: Dataset, settings: TREGScoreSettings, meta: str) -> list[dict]:
    """Rows of `pairs` plus T-REG's per-token columns (see the module docstring) and `treg_contexts_cut` (how many
    of the row's 4 contexts had their draft shortened to fit `max_context_length`)."""
    if "prompt" not in pairs.column_names:
        raise ValueError("T-REG score: the pairs need an explicit 'prompt' column")
    rows = list(pairs)
    built = [build_scoring_examples(tokenizer, row, settings) for row in rows]
    examples = [example for _, four, _ in built for example in four]
    scores = score_tokens(model, examples, batch_size=settings.batch_size) if examples else []
    out = []
    for i, (row, (completion, _, n_cut)) in enumerate(zip(rows, built)):
        cb, cw, rb, rw = (s["logps"] for s in scores[4 * i : 4 * i + 4])
        out.append({
            **row,
            "chosen_token_rewards": token_rewards(cb, cw),
            "rejected_token_rewards": token_rewards(rb, rw),
            "chosen_token_ids": completion["chosen"],
            "rejected_token_ids": completion["rejected"],
            "token_columns_meta": meta,
            "treg_contexts_cut": n_cut,
        })
    return out


def score_stage(stage_dir: str | Path, model, tokenizer, pairs: Dataset, settings: TREGScoreSettings, *,
                evaluator_id: str, input_fingerprint: str | None = None, overwrite: bool = False,
                model_id: str | None = None) -> Dataset:
    """The crash-safe `score` stage over a pairs dataset; returns it with the reward columns."""
    meta = token_columns_metadata(tokenizer, evaluator=evaluator_id, template_hash=settings.template_hash())
    config = {"settings": {k: v for k, v in asdict(settings).items() if k not in ("batch_size", "shard_size")},
              "templates": settings.templates, "evaluator": evaluator_id,
              "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}
    return run_stage("treg_score", stage_dir, lambda shard, i: score_pairs(model, tokenizer, shard, settings, meta),
                     pairs, config, shard_size=settings.shard_size, overwrite=overwrite,
                     input_fingerprint=input_fingerprint,
                     metadata={"evaluator": evaluator_id, "template_hash": settings.template_hash(),
                               "templates": settings.templates, "model": model_id or evaluator_id})


def reward_stats(scored: Dataset) -> dict[str, float]:
    """What the spec asks to check: mean r on chosen vs rejected tokens, per-pair comparison, mean |r|."""
    chosen, rejected = scored["chosen_token_rewards"], scored["rejected_token_rewards"]
    flat_c = [v for row in chosen for v in row]
    flat_r = [v for row in rejected for v in row]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    higher = [mean(c) > mean(r) for c, r in zip(chosen, rejected) if c and r]
    return {
        "pairs": len(scored),
        "mean_r_chosen": mean(flat_c),
        "mean_r_rejected": mean(flat_r),
        "frac_pairs_chosen_higher": mean([float(h) for h in higher]),
        "frac_positive_chosen": mean([float(v > 0) for v in flat_c]),
        "frac_positive_rejected": mean([float(v > 0) for v in flat_r]),
        "mean_abs_r": mean([abs(v) for v in flat_c + flat_r]),
        "contexts_with_cut_draft": sum(scored["treg_contexts_cut"]) if "treg_contexts_cut" in scored.column_names
        else 0,
    }


# ---- the whole pipeline -----------------------------------------------------------------------------------------

STAGES = ("sample", "select_pairs", "score", "eval_before", "train", "eval_after", "train_dpo", "eval_dpo")


def run_treg(recipe_path: str, overrides=(), *, overwrite: bool = False, stage: str | None = None,
             stop_after: str | None = None, dry_run: bool = False) -> dict:
    """`tokrl train RECIPE.yaml` for method: treg: sample -> select -> score -> train (+ evals, optional DPO
    baseline), skipping complete stages; returns (and writes to `output_dir/summary.json`) a summary."""
    p = open_pipeline_recipe(recipe_path, overrides, "treg", RECIPE_KEYS)
    score_settings = settings_from(TREGScoreSettings, p.recipe.get("score"), "score", p.file)
    evaluator_id = score_settings.evaluator or p.model_id
    config = build_config(TREGConfig, p.trainer, p.file, "trainer", output_dir=str(p.output_dir / "train"),
                          report_to="none", treg_expected_evaluator=evaluator_id,
                          treg_expected_template_hash=score_settings.template_hash())

    def score(runner, source, sft, summary):
        def score_pairs(ow):
            model, tokenizer = p.load_base()
            if score_settings.evaluator and score_settings.evaluator != p.model_id:
                evaluator, eval_tok = model_loader(score_settings.evaluator,
                                                   bool(p.recipe.get("trust_remote_code", False)))()
                if tokenizer_fingerprint(eval_tok) != tokenizer_fingerprint(tokenizer):
                    raise RecipeError(f"{p.file}: score.evaluator '{score_settings.evaluator}' has another "
                                      f"tokenizer than the model '{p.model_id}'; the token rewards must use the "
                                      "trainer's ids")
                model = evaluator
            return score_stage(runner.dir("score"), model, tokenizer, source.pairs, score_settings,
                               evaluator_id=evaluator_id, input_fingerprint=source.fingerprint, overwrite=ow,
                               model_id=p.model_id)

        scored = runner.step("score", score_pairs)
        summary["token_rewards"] = reward_stats(scored)
        print(f"[tokrl] T-REG token rewards: {summary['token_rewards']}", flush=True)
        return scored

    return run_pair_pipeline(p, STAGES, config, TREGTrainer, score, summary={
        "template": score_settings.template, "treg_alpha": config.treg_alpha}, overwrite=overwrite, stage=stage,
        stop_after=stop_after, dry_run=dry_run)
