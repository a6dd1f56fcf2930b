"""T-REG scoring: r_t by hand, completion ids placed right after the contrastive contexts, trainer alignment."""

import json
import math

import pytest
import torch
from datasets import Dataset

from tokrl.models import tiny_model
from tokrl.pipelines.treg import (
    TEMPLATES,
    TREGScoreSettings,
    build_scoring_examples,
    context_ids,
    reward_stats,
    score_pairs,
    score_stage,
    token_rewards,
)
from tokrl.trainers.token_columns import completion_token_ids, read_metadata, tokenizer_fingerprint

PAIR = {
    "prompt": [{"role": "user", "content": "What is 2 + 3?"}],
    "chosen": [{"role": "assistant", "content": "5"}],
    "rejected": [{"role": "assistant", "content": "It is 6."}],
}


def test_token_reward_formula_by_hand():
    assert token_rewards([-1.0, -2.0], [-2.0, -1.0]) == pytest.approx([0.231059, -0.231059], abs=1e-6)
    assert token_rewards([0.7], [0.0]) == pytest.approx([0.168188], abs=1e-6)
    assert token_rewards([-1e4, 0.0], [0.0, -1e4]) == [-0.5, 0.5]  # saturates, never overflows


def _sharp_tiny_model(seed=2):
    """The tiny random model with a scaled-up LM head, so its distributions (and r_t) are far from uniform."""
    model, tokenizer = tiny_model(seed=seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model, tokenizer


def _full_logps(model, ids):
    """Reference: one plain forward with full logits; logp of ids[t] read at position t-1."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, -1)


@pytest.mark.parametrize("template", ["revision", "instruction"])
def test_contexts_hold_the_trainers_ids_and_rewards_match_a_full_forward(template):
    model, tokenizer = _sharp_tiny_model()
    settings = TREGScoreSettings(template=template)
    completion, examples, cut = build_scoring_examples(tokenizer, PAIR, settings)
    assert cut == 0
    assert completion == completion_token_ids(tokenizer, PAIR)  # exactly the DPO trainer's ids, EOS included
    assert tokenizer.decode(completion["rejected"]).startswith("It is 6.<|im_end|>")
    # the contexts are the rendered templates through the chat template, with the completion appended as is
    for k, (side, which) in enumerate([("chosen", "better"), ("chosen", "worse"), ("rejected", "better"),
                                       ("rejected", "worse")]):
        draft = PAIR[side][0]["content"]
        text = TEMPLATES[template][which].format(prompt="What is 2 + 3?", response=draft)
        want = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
        assert examples[k]["prompt_ids"] == tokenizer(want, add_special_tokens=False)["input_ids"]
        assert examples[k]["completion_ids"] == completion[side]
    meta = "m"
    row = score_pairs(model, tokenizer, Dataset.from_list([PAIR]), settings, meta)[0]
    for side, (better, worse) in (("chosen", examples[0:2]), ("rejected", examples[2:4])):
        ids = completion[side]
        expect, shifted = [], []
        lp_b = _full_logps(model, better["prompt_ids"] + ids)
        lp_w = _full_logps(model, worse["prompt_ids"] + ids)
        pb, pw = len(better["prompt_ids"]), len(worse["prompt_ids"])
        for t, tok in enumerate(ids):
            a, b = lp_b[pb + t - 1, tok].item(), lp_w[pw + t - 1, tok].item()
            expect.append(1 / (1 + math.exp(-(a - b))) - 0.5)
            if t + 1 < len(ids):  # off by one: the log-prob read one position late
                shifted.append(1 / (1 + math.exp(-(lp_b[pb + t, tok].item() - lp_w[pw + t, tok].item()))) - 0.5)
        assert row[f"{side}_token_rewards"] == pytest.approx(expect, abs=1e-5)
        assert max(abs(r) for r in expect) > 0.02  # a real signal, so the off-by-one check below means something
        assert row[f"{side}_token_rewards"][:-1] != pytest.approx(shifted, abs=1e-3)
        assert row[f"{side}_token_ids"] == ids
        assert all(-0.5 < r < 0.5 for r in row[f"{side}_token_rewards"])
    assert row["treg_contexts_cut"] == 0 and row["token_columns_meta"] == meta


def test_long_drafts_are_cut_inside_the_context_never_in_the_completion():
    model, tokenizer = tiny_model(seed=2)
    long_pair = dict(PAIR, rejected=[{"role": "assistant", "content": "six " * 40}])
    empty_ctx = len(context_ids(tokenizer, TEMPLATES["revision"]["worse"], PAIR["prompt"], ""))
    limit = empty_ctx + len(completion_token_ids(tokenizer, long_pair)["rejected"]) + 30
    settings = TREGScoreSettings(max_context_length=limit)
    completion, examples, cut = build_scoring_examples(tokenizer, long_pair, settings)
    assert cut == 2  # both rejected contexts (better, worse) were shortened; the chosen ones fit
    for ex in examples[2:]:
        assert ex["completion_ids"] == completion["rejected"]
        assert limit - 35 <= len(ex["prompt_ids"]) + len(ex["completion_ids"]) <= limit


def test_custom_and_unknown_templates():
    s = TREGScoreSettings(better="Good: {prompt}", worse="Bad: {prompt}")
    assert s.templates == {"better": "Good: {prompt}", "worse": "Bad: {prompt}"}
    assert s.template_hash() != TREGScoreSettings().template_hash()
    with pytest.raises(ValueError, match="did you mean 'revision'"):
        TREGScoreSettings(template="revison")
    with pytest.raises(ValueError, match="placeholder"):
        TREGScoreSettings(better="no prompt here", worse="{prompt}")
    with pytest.raises(ValueError, match="both"):
        TREGScoreSettings(better="{prompt}")


def test_score_stage_writes_aligned_columns_and_metadata(tmp_path):
    model, tokenizer = tiny_model(seed=2)
    plain = {"prompt": "Q: 1 + 1 =", "chosen": " 2", "rejected": " 3 or so"}
    pairs = Dataset.from_list([PAIR, dict(PAIR, chosen=[{"role": "assistant", "content": "five"}])])
    out = score_stage(tmp_path / "s", model, tokenizer, pairs, TREGScoreSettings(shard_size=1), evaluator_id="tiny")
    for row, example in zip(out, pairs):
        ids = completion_token_ids(tokenizer, example)
        for side in ("chosen", "rejected"):
            assert len(row[f"{side}_token_rewards"]) == len(ids[side])
    meta = read_metadata(out)
    assert meta["tokenizer"] == tokenizer_fingerprint(tokenizer) and meta["evaluator"] == "tiny"
    assert meta["template_hash"] == TREGScoreSettings().template_hash()
    stats = reward_stats(out)
    assert stats["pairs"] == 2 and 0.0 <= stats["frac_pairs_chosen_higher"] <= 1.0
    flat_c = [v for r in out["chosen_token_rewards"] for v in r]
    assert stats["mean_r_chosen"] == pytest.approx(sum(flat_c) / len(flat_c))
    # plain-text pairs: the completion carries the EOS the trainer appends
    plain_out = score_pairs(model, tokenizer, Dataset.from_list([plain]), TREGScoreSettings(), json.dumps({}))[0]
    assert plain_out["rejected_token_ids"][-1] == tokenizer.eos_token_id
    assert len(plain_out["rejected_token_rewards"]) == len(completion_token_ids(tokenizer, plain)["rejected"])


def even_length(completions, **kwargs):
    """A reward the tiny random model can earn: 1 for an even number of characters."""
    return [float(len(c) % 2 == 0) for c in completions]


def test_treg_pipeline_end_to_end_on_the_tiny_model(tmp_path, monkeypatch):
    import yaml

    from tokrl.models import load_model, save_tiny_model
    from tokrl.pipelines.stage import is_complete, load_stage
    from tokrl.pipelines.treg import run_treg
    from tokrl.rewards import REWARDS

    monkeypatch.setitem(REWARDS, "even_length", even_length)
    model_dir = save_tiny_model(tmp_path / "model", seed=0)
    recipe = {
        "model": str(model_dir),
        "task": {"name": "arithmetic", "max_value": 9, "num_train": 4, "num_eval": 4, "seed": 0},
        "reward": "even_length",
        "output_dir": str(tmp_path / "run"),
        "sample": {"num_samples": 6, "max_new_tokens": 6, "batch_size": 4, "top_p": 1.0},
        "select": {"group_by": "text"},
        "score": {"template": "instruction", "batch_size": 8},
        "trainer": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1,
                    "save_strategy": "no", "treg_alpha": 0.5},
        "baseline": {"dpo": True},
        "eval": {"num_prompts": 4, "max_new_tokens": 4, "batch_size": 4},
    }
    path = tmp_path / "treg.yaml"
    path.write_text(yaml.safe_dump(recipe))
    # `tokrl score treg` runs the pipeline up to its scoring stage and stops there
    from tokrl.cli import main

    assert main(["score", "treg", str(path)]) == 0
    assert is_complete(tmp_path / "run/score") and not (tmp_path / "run/eval_before").exists()
    summary = run_treg(path)
    run = tmp_path / "run"
    for stage in ("sample", "select_pairs", "score", "eval_before", "train", "eval_after", "train_dpo", "eval_dpo"):
        assert is_complete(run / stage), stage
    scored = load_stage(run / "score")
    _, tokenizer = load_model(str(model_dir))
    for row in scored:
        ids = completion_token_ids(tokenizer, row)
        assert len(row["chosen_token_rewards"]) == len(ids["chosen"]) and row["rejected_token_ids"] == ids["rejected"]
    meta = read_metadata(scored)
    assert meta["evaluator"] == str(model_dir)
    assert meta["template_hash"] == TREGScoreSettings(template="instruction").template_hash()
    assert summary["token_rewards"]["pairs"] == len(scored) > 0
    assert summary["train"]["steps"] == 2 and summary["train_dpo"]["steps"] == 2
    # the regulariser was active in the T-REG run and its logs reached the summary
    assert "treg/seq_weight_mean" in summary["train"]["mean_logged"]
    assert 0.0 < summary["train"]["mean_logged"]["treg/seq_weight_mean"] < 1.0
    assert summary["train"]["train_loss"] != summary["train_dpo"]["train_loss"]
    assert {"eval_before", "eval_after", "eval_dpo"} <= set(summary)
    # a rerun skips every stage
    again = run_treg(path)
    assert again["train"] == summary["train"] and again["token_rewards"] == summary["token_rewards"]
    # --stage eval_after --overwrite redoes that stage alone, reading the finished train stage
    stamps = {s: (run / s / "manifest.json").stat().st_mtime_ns for s in ("score", "train", "eval_before")}
    one = run_treg(path, stage="eval_after", overwrite=True)
    assert one["stopped_after"] == "eval_after" and one["eval_after"] == summary["eval_after"]  # greedy: same
    assert {s: (run / s / "manifest.json").stat().st_mtime_ns for s in stamps} == stamps


def test_trainer_accepts_the_scored_pairs_and_refuses_other_metadata(tmp_path):
    from tokrl.models import load_model, save_tiny_model
    from tokrl.trainers.treg import TREGConfig, TREGTrainer

    model, tokenizer = load_model(str(save_tiny_model(tmp_path / "m", seed=2)))  # TRL wants a named model
    settings = TREGScoreSettings()
    scored = score_stage(tmp_path / "s", model, tokenizer, Dataset.from_list([PAIR] * 2), settings,
                         evaluator_id="tiny")
    kw = dict(output_dir=str(tmp_path / "o"), report_to="none", max_length=512, per_device_train_batch_size=2)
    TREGTrainer(model=model, args=TREGConfig(**kw, treg_expected_evaluator="tiny",
                                             treg_expected_template_hash=settings.template_hash()),
                train_dataset=scored, processing_class=tokenizer)
    with pytest.raises(ValueError, match="token_columns_meta.*template_hash"):
        TREGTrainer(model=model, args=TREGConfig(**kw, treg_expected_template_hash="0123"), train_dataset=scored,
                    processing_class=tokenizer)
    short = scored.map(lambda r: {"rejected_token_rewards": r["rejected_token_rewards"][:-1]})
    with pytest.raises(ValueError, match="column 'rejected_token_rewards' row 0"):
        TREGTrainer(model=model, args=TREGConfig(**kw), train_dataset=short, processing_class=tokenizer)


@pytest.mark.parametrize("name", ["treg_arithmetic", "treg_ultrafeedback"])
def test_shipped_recipes_pass_every_check(name, tmp_path):
    from pathlib import Path

    from tokrl.pipelines.treg import run_treg

    recipe = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml"
    text = recipe.read_text()
    assert text.startswith("# T-REG") and "tokrl train recipes/" in text and "arXiv 2412.02685" in text
    data = []
    if name == "treg_ultrafeedback":  # the user supplies the pairs; validation reads them: a one-row stand-in
        (tmp_path / "pairs.jsonl").write_text('{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}\n')
        data = [f"pairs.path={tmp_path / 'pairs.jsonl'}"]
    assert run_treg(recipe, data, dry_run=True)["ok"]
    from tokrl.runs import check_recipe as validate_recipe

    assert validate_recipe(recipe, data) == "treg"


SCORE_CHILD = """
import json, os, signal, sys
from datasets import Dataset
import tokrl.pipelines.stage as stage
from tokrl.models import tiny_model
from tokrl.pipelines.treg import TREGScoreSettings, score_stage

out_dir, kill_at = sys.argv[1], int(sys.argv[2])
if kill_at >= 0:  # SIGKILL right after shard `kill_at` is renamed into place, before the manifest lists it
    original = stage._write_manifest
    def write(d, manifest):
        if any(s["index"] == kill_at for s in manifest["shards"]):
            os.kill(os.getpid(), signal.SIGKILL)
        original(d, manifest)
    stage._write_manifest = write
model, tokenizer = tiny_model(seed=2)
pairs = Dataset.from_list([json.loads(line) for line in open(sys.argv[3])])
ds = score_stage(out_dir, model, tokenizer, pairs, TREGScoreSettings(shard_size=1), evaluator_id="tiny")
print(json.dumps(ds.to_dict()))
"""


def test_score_stage_killed_mid_run_resumes_to_identical_output(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    pairs = [PAIR, dict(PAIR, chosen=[{"role": "assistant", "content": "five"}]),
             dict(PAIR, rejected=[{"role": "assistant", "content": "7"}])]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in pairs))
    (tmp_path / "child.py").write_text(SCORE_CHILD)

    def child(out, kill_at):
        return subprocess.run([sys.executable, str(tmp_path / "child.py"), str(out), str(kill_at),
                               str(tmp_path / "pairs.jsonl")], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    killed = child(tmp_path / "run", 1)
    assert killed.returncode == -signal.SIGKILL
    from tokrl.pipelines.stage import StageError, load_stage, read_manifest

    assert [s["index"] for s in read_manifest(tmp_path / "run")["shards"]] == [0]
    with pytest.raises(StageError, match="incomplete"):
        load_stage(tmp_path / "run")
    resumed = child(tmp_path / "run", -1)
    assert resumed.returncode == 0, resumed.stderr[-500:]
    model, tokenizer = tiny_model(seed=2)  # the uninterrupted run, in this process
    reference = score_stage(tmp_path / "ref", model, tokenizer, Dataset.from_list(pairs),
                            TREGScoreSettings(shard_size=1), evaluator_id="tiny")
    assert json.loads(resumed.stdout) == reference.to_dict()
