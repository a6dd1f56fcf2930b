"""cDPO's optional diagnostic: do CE-critical tokens really doom a rejected trajectory? (spec section 2.6)

The paper's check walks every prefix of 100 rejected trajectories with 64 rollouts each (~65 T generations per
trajectory). This bounded version keeps the comparison and caps the cost: for `num_trajectories` rejected
responses it takes the `positions` tokens with the lowest p_CE (the critical candidates) and as many random
positions (the control), and at each position samples from the base model
- "with token": `num_continuations` continuations of the prefix that keeps the token;
- "without token": `num_continuations` replacement tokens drawn from the base model's next-token distribution
  with the original token's probability set to 0, one continuation after each;
then grades every continuation with the task's reward (the pair's `answer` column). Cost:
2 x num_continuations x (2 x positions) generations per trajectory. The report gives, per group, the mean
fraction correct with / without the token and unbiased pass@k (k = 1 and num_continuations); the paper's finding
is that replacing a critical token raises pass@k much more than replacing a random one.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from datasets import Dataset

from tokrl.evaluation import pass_at_k
from tokrl.pipelines.stage import run_artifact_stage, stage_metadata
from tokrl.rewards import accuracy_reward
from tokrl.trainers.token_columns import end_positions, end_token_ids, tokenize_preference


@dataclass
class RolloutSettings:
    """The `rollout_check` section (off unless `enabled`)."""

    enabled: bool = False
    num_trajectories: int = 8
    positions: int = 2  # lowest-p_CE positions per trajectory (and as many random control positions)
    num_continuations: int = 8
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 32
    seed: int = 0

    def __post_init__(self):
        if self.num_trajectories < 1 or self.positions < 1 or self.num_continuations < 1:
            raise ValueError("rollout_check: num_trajectories, positions and num_continuations must be >= 1")


def _graded(model, tokenizer, reward_fn, prompt_ids, heads: list[list[int]], answer, settings) -> int:
    """How many of the sampled continuations of `prompt_ids + head`, one per head, the reward grades correct
    (all heads have the same length, so no padding is needed)."""
    ids = torch.tensor([list(prompt_ids) + head for head in heads], device=next(model.parameters()).device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                         temperature=settings.temperature, top_p=settings.top_p, top_k=0,
                         max_new_tokens=settings.max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    texts = [tokenizer.decode(head + row[ids.shape[1]:].tolist(), skip_special_tokens=True)
             for head, row in zip(heads, out)]
    return int(sum(reward_fn(texts, answer=[answer] * len(heads))))


@torch.no_grad()
def check_position(model, tokenizer, reward_fn, prompt_ids, ids, i, answer, settings, rng) -> dict:
    """Graded continuations with and without token `ids[i]` (see the module docstring)."""
    m = settings.num_continuations
    with_correct = _graded(model, tokenizer, reward_fn, prompt_ids, [list(ids[: i + 1])] * m, answer, settings)
    logits = model(input_ids=torch.tensor([list(prompt_ids) + list(ids[:i])], device=model.device)).logits[0, -1]
    probs = torch.softmax(logits.float(), -1)
    probs[ids[i]] = 0.0
    if float(probs.sum()) <= 0:
        probs = torch.ones_like(probs)
        probs[ids[i]] = 0.0
    generator = torch.Generator(device="cpu").manual_seed(rng.randrange(2**31))
    alternatives = torch.multinomial(probs.cpu() / probs.sum().cpu(), m, replacement=True, generator=generator).tolist()
    without_correct = _graded(model, tokenizer, reward_fn, prompt_ids, [list(ids[:i]) + [a] for a in alternatives],
                              answer, settings)
    return {"position": i, "token": tokenizer.decode([ids[i]]), "with_correct": with_correct,
            "without_correct": without_correct, "replacements": alternatives}


def rollout_report(model, tokenizer, scored: Dataset, settings: RolloutSettings, reward_fn=None) -> dict:
    """Run the bounded check on the first `num_trajectories` scored pairs; returns the report."""
    reward_fn = reward_fn or accuracy_reward
    if "answer" not in scored.column_names:
        raise ValueError("rollout_check needs the pairs' 'answer' column to grade continuations")
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    model.eval()
    end_ids = end_token_ids(tokenizer)
    records = {"critical": [], "random": []}
    for row in scored.select(range(min(settings.num_trajectories, len(scored)))):
        ids = list(row["rejected_token_ids"])
        content = end_positions(ids, end_ids)
        if content == 0:
            continue
        probs = row["rejected_ce_prob"][:content]
        critical = sorted(range(content), key=lambda t: probs[t])[: settings.positions]
        others = [t for t in range(content) if t not in critical]
        control = rng.sample(others, min(settings.positions, len(others)))
        prompt_ids = tokenize_preference(tokenizer, row)["prompt_ids"]
        for group, positions in (("critical", critical), ("random", control)):
            for i in positions:
                rec = check_position(model, tokenizer, reward_fn, prompt_ids, ids, i, row["answer"], settings, rng)
                rec["p_ce"] = probs[i]
                records[group].append(rec)
    m = settings.num_continuations
    summary = {}
    for group, recs in records.items():
        if not recs:
            summary[group] = {"positions": 0}
            continue
        summary[group] = {
            "positions": len(recs),
            "mean_p_ce": sum(r["p_ce"] for r in recs) / len(recs),
            "correct_with_token": sum(r["with_correct"] for r in recs) / (m * len(recs)),
            "correct_without_token": sum(r["without_correct"] for r in recs) / (m * len(recs)),
            **{f"pass@{k}_{side}": sum(pass_at_k(m, r[f"{side}_correct"], k) for r in recs) / len(recs)
               for side in ("with", "without") for k in {1, m}},
        }
    return {"settings": asdict(settings), "summary": summary, "records": records}


def rollout_check_stage(stage_dir: Path, load_base, scored: Dataset, settings: RolloutSettings, *,
                        input_fingerprint: str, overwrite: bool) -> dict:
    """The diagnostic as a stage: `artifact/report.json`, and the summary in the manifest metadata."""
    def build(tmp: Path):
        model, tokenizer = load_base()
        report = rollout_report(model, tokenizer, scored, settings)
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
        return report["summary"]

    run_artifact_stage("rollout_check", stage_dir, build, {"settings": asdict(settings)},
                       input_fingerprint=input_fingerprint, overwrite=overwrite)
    return stage_metadata(stage_dir)
