"""cDPO pipeline: the weight rule by hand, and the whole pipeline end to end on the tiny model."""

import math

import pytest
import torch
import yaml

from tokrl.models import save_tiny_model
from tokrl.pipelines.cdpo import ce_weights, contrast_model, end_positions, run_cdpo
from tokrl.pipelines.stage import is_complete, load_stage, read_manifest
from tokrl.recipe import RecipeError
from tokrl.rewards import REWARDS
from tokrl.trainers.token_columns import completion_token_ids


def test_weight_rule_by_hand():
    eos = 2
    logps = [math.log(0.9), math.log(0.2), math.log(0.5)]
    w, p = ce_weights(logps, [5, 6, eos], {eos}, rejected=True, weight_chosen=False, eos_weight=1.0)
    assert w == pytest.approx([0.1, 0.8, 1.0]) and p == pytest.approx([0.9, 0.2, 0.5])
    w, _ = ce_weights(logps, [5, 6, eos], {eos}, rejected=False, weight_chosen=False, eos_weight=1.0)
    assert w == [1.0, 1.0, 1.0]
    w, _ = ce_weights(logps, [5, 6, eos], {eos}, rejected=False, weight_chosen=True, eos_weight=1.0)
    assert w == pytest.approx([0.9, 0.2, 1.0])
    # chat templates put a newline after the end-of-turn token: both are end tokens
    w, _ = ce_weights(logps, [5, eos, 10], {eos}, rejected=True, weight_chosen=False, eos_weight=1.0)
    assert w == pytest.approx([0.1, 1.0, 1.0])
    assert end_positions([5, 6], {eos}) == 2


def even_length(completions, **kwargs):
    """A reward the tiny random model can earn: 1 for an even number of characters."""
    return [float(len(c) % 2 == 0) for c in completions]


def _recipe(tmp_path, **extra):
    model_dir = save_tiny_model(tmp_path / "model", seed=0)
    recipe = {
        "model": str(model_dir),
        "task": {"name": "arithmetic", "max_value": 9, "num_train": 6, "num_eval": 4, "seed": 0},
        "reward": "even_length",
        "output_dir": str(tmp_path / "run"),
        "sample": {"num_samples": 6, "max_new_tokens": 6, "batch_size": 6, "top_p": 1.0, "shard_size": 3},
        "select": {"group_by": "text"},
        "contrast": {"trainer": {"max_steps": 2, "per_device_train_batch_size": 2, "warmup_steps": 0,
                                 "learning_rate": 1e-2}},
        "score": {"batch_size": 4, "shard_size": 2},
        "trainer": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1,
                    "save_strategy": "no", "max_length": 256},
        "eval": {"num_prompts": 4, "max_new_tokens": 4, "batch_size": 4},
        **extra,
    }
    path = tmp_path / "cdpo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _full_logits_ce_prob(model, prompt_ids, ids, beta=1.0):
    """Reference p_CE with full logits of each adapter: softmax((1+b) z_pos - b z_neg) at the realised token."""
    full = torch.tensor([list(prompt_ids) + list(ids)])
    with torch.no_grad():
        model.set_adapter("positive")
        z_pos = model(full).logits[0].float()
        model.set_adapter("negative")
        z_neg = model(full).logits[0].float()
    g = torch.log_softmax((1 + beta) * z_pos - beta * z_neg, -1)
    p = len(prompt_ids)
    return [math.exp(g[p + t - 1, tok].item()) for t, tok in enumerate(ids)]


@pytest.mark.parametrize("cpu_bf16", ["0", "1"])
def test_cdpo_pipeline_end_to_end_on_the_tiny_model(tmp_path, monkeypatch, cpu_bf16):
    """Also under the bf16 CPU default: the contrast SFT and the DPO stage share one process, and accelerate
    refused the DPO stage's bf16 after an fp32 contrast stage (a fresh `tokrl train recipes/cdpo_arithmetic.yaml`
    crashed at its train stage on a native-bf16 CPU)."""
    monkeypatch.setenv("TOKRL_CPU_BF16", cpu_bf16)
    monkeypatch.setitem(REWARDS, "even_length", even_length)
    recipe = _recipe(tmp_path)
    summary = run_cdpo(recipe)
    run = tmp_path / "run"
    for stage in ("sample", "select_pairs", "sft_positive", "sft_negative", "contrast_positive",
                  "contrast_negative", "score", "eval_before", "train", "eval_after"):
        assert is_complete(run / stage), stage
    samples = load_stage(run / "sample")
    assert len(samples) == 6 and all(len(c) == 6 for c in samples["completions"])
    scored = load_stage(run / "score")
    assert len(scored) == summary["sampling"]["pairs"] > 0
    # columns aligned with the DPO trainer's completion ids, weights = 1 - p_CE on rejected, 1 on chosen and EOS
    from tokrl.models import load_model

    _, tokenizer = load_model(str(tmp_path / "model"))
    model, _ = contrast_model(lambda: load_model(str(tmp_path / "model")),
                              run / "contrast_positive/artifact/adapter", run / "contrast_negative/artifact/adapter")
    from tokrl.trainers.token_columns import tokenize_preference

    for row in scored.select(range(min(2, len(scored)))):
        ids = completion_token_ids(tokenizer, row)
        assert row["rejected_token_ids"] == ids["rejected"] and row["chosen_token_ids"] == ids["chosen"]
        assert len(row["rejected_token_weights"]) == len(ids["rejected"])
        ref = _full_logits_ce_prob(model, tokenize_preference(tokenizer, row)["prompt_ids"], ids["rejected"])
        assert row["rejected_ce_prob"] == pytest.approx(ref, abs=1e-5)
        end = end_positions(ids["rejected"], {tokenizer.eos_token_id})
        assert end < len(ids["rejected"])  # the end-of-turn token is part of the trainer's completion
        expect = [1 - p for p in ref[:end]] + [1.0] * (len(ref) - end)
        assert row["rejected_token_weights"] == pytest.approx(expect, abs=1e-5)
        assert row["chosen_token_weights"] == [1.0] * len(ids["chosen"])
    # the two adapters were trained (lora_B starts at zero) on different data
    from safetensors.torch import load_file

    pos = load_file(str(run / "contrast_positive/artifact/adapter/adapter_model.safetensors"))
    neg = load_file(str(run / "contrast_negative/artifact/adapter/adapter_model.safetensors"))
    b_keys = [k for k in pos if "lora_B" in k]
    assert b_keys and all(pos[k].abs().sum() > 0 and not torch.equal(pos[k], neg[k]) for k in b_keys)
    eos = tokenizer.eos_token_id
    content = [p for ids, r in zip(scored["rejected_token_ids"], scored["rejected_ce_prob"])
               for p in r[: end_positions(ids, {eos})]]
    assert summary["weights"]["rejected_tokens"] == len(content) < sum(len(r) for r in scored["rejected_ce_prob"])
    assert summary["weights"]["frac_rejected_weight_gt_0.5"] == pytest.approx(
        sum(1 - p > 0.5 for p in content) / len(content))
    assert summary["train"]["steps"] == 2 and math.isfinite(summary["train"]["train_loss"])
    assert 0.0 <= summary["eval_before"]["accuracy"] <= 1.0 and summary["eval_after"]["num_prompts"] == 4
    assert (run / "train/artifact/adapter_config.json").is_file()  # the policy is a LoRA (spec: r 16 on all proj)

    # the score stage is heatmap-ready: `tokrl inspect` decodes it with the model named in the manifest
    from tokrl.commands.inspect import inspect

    html = inspect(run / "score", out=tmp_path / "heat.html").read_text()
    assert "rejected_token_weights" in html or "token_weights" in html

    # a finished pipeline is a no-op: same summary, no stage rewritten
    stamps = {p: (run / p / "manifest.json").stat().st_mtime_ns for p in ("sample", "score", "train")}
    again = run_cdpo(recipe)
    assert {p: (run / p / "manifest.json").stat().st_mtime_ns for p in stamps} == stamps
    assert again["weights"] == summary["weights"] and again["train"] == summary["train"]

    # a changed setting is refused unless --overwrite; --stage runs one stage
    with pytest.raises(Exception, match="different config.*overwrite"):
        run_cdpo(recipe, ["score.beta_ce=0.5"])
    out = run_cdpo(recipe, ["score.beta_ce=0.5"], overwrite=True, stage="score")
    assert out["stopped_after"] == "score" and read_manifest(run / "score")["config"]["settings"]["beta_ce"] == 0.5
    assert read_manifest(run / "train")["done"]  # untouched by --stage score


def test_recipe_errors_name_the_key_and_file(tmp_path, monkeypatch):
    monkeypatch.setitem(REWARDS, "even_length", even_length)
    recipe = _recipe(tmp_path)
    with pytest.raises(RecipeError, match=r"cdpo.yaml: unknown key 'score.beta_cee' \(did you mean 'beta_ce'\?\)"):
        run_cdpo(recipe, ["score.beta_cee=1"])
    with pytest.raises(RecipeError, match=r"unknown key 'trainer.betta' \(did you mean 'beta'\?\)"):
        run_cdpo(recipe, ["trainer.betta=0.1"])
    with pytest.raises(RecipeError, match=r"unknown key 'contrast.lora.rank'"):
        run_cdpo(recipe, ["contrast.lora.rank=4"])
    with pytest.raises(RecipeError, match="unknown stage 'scor'.*did you mean 'score'"):
        run_cdpo(recipe, stage="scor")


@pytest.mark.parametrize("name", ["cdpo_arithmetic", "cdpo_gsm8k"])
def test_shipped_recipes_pass_every_check(name, tmp_path):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml"
    text = recipe.read_text()
    assert text.startswith("# cDPO") and "tokrl train recipes/" in text and "arXiv 2411.19943" in text
    data = []
    if name == "cdpo_gsm8k":  # the user supplies GSM8K; validation reads it, so give it a two-row stand-in
        (tmp_path / "gsm8k.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n'
                                              '{"question": "2+3?", "answer": "#### 5"}\n')
        data = [f"data.path={tmp_path / 'gsm8k.jsonl'}", "data.hub=false"]
    out = run_cdpo(recipe, data, dry_run=True)
    assert out["ok"] and out["stages"][-1] == "rollout_check"
    from tokrl.runs import check_recipe as validate_recipe

    assert validate_recipe(recipe, data) == "cdpo"  # `tokrl validate` routes method: cdpo here
    with pytest.raises(RecipeError, match="method 'treg' is not run by `tokrl cdpo`.*`tokrl train RECIPE` runs every"):
        run_cdpo(recipe, ["method=treg", *data], dry_run=True)


def test_rollout_check_splices_prefixes_and_replacements_correctly():
    from datasets import Dataset

    from tokrl.models import tiny_model
    from tokrl.pipelines.rollout_check import RolloutSettings, rollout_report
    from tokrl.trainers.token_columns import tokenize_preference

    model, tokenizer = tiny_model(seed=3)
    row = {"prompt": [{"role": "user", "content": "What is 2 + 3?"}],
           "chosen": [{"role": "assistant", "content": "5"}],
           "rejected": [{"role": "assistant", "content": "It is 6"}], "answer": "5"}
    ids = tokenize_preference(tokenizer, row)["rejected_ids"]  # "It is 6" + <|im_end|> + "\n"
    probs = [0.9, 0.8, 0.05, 0.7, 0.6, 0.5, 0.01, 0.99, 0.99]
    assert len(ids) == len(probs)
    scored = Dataset.from_list([dict(row, rejected_token_ids=ids, rejected_ce_prob=probs)])
    seen = []

    def reward(completions, answer, **kw):
        seen.append(list(completions))
        return [float(c.startswith("It")) for c in completions]

    settings = RolloutSettings(enabled=True, num_trajectories=1, positions=2, num_continuations=3, max_new_tokens=3)
    report = rollout_report(model, tokenizer, scored, settings, reward_fn=reward)
    critical = report["records"]["critical"]
    assert [r["position"] for r in critical] == [6, 2]  # the lowest p_CE among content tokens (end tokens excluded)
    assert all(r["position"] not in (6, 2) and r["position"] < 7 for r in report["records"]["random"])
    first = critical[0]
    assert ids[6] not in first["replacements"] and len(first["replacements"]) == 3
    with_texts, without_texts = seen[0], seen[1]
    assert all(t.startswith("It is 6") for t in with_texts)  # prefix kept up to and including the token
    for text, alt in zip(without_texts, first["replacements"]):
        assert text.startswith("It is " + tokenizer.decode([alt]))  # the token replaced in place
    assert first["with_correct"] == 3  # every "with" text starts with "It"
    summary = report["summary"]["critical"]
    assert summary["positions"] == 2 and summary["correct_with_token"] == pytest.approx(
        sum(r["with_correct"] for r in critical) / 6)
    assert summary["pass@1_with"] == pytest.approx(sum(r["with_correct"] / 3 for r in critical) / 2)


def test_cli_reports_recipe_errors_as_one_line(tmp_path, capsys):
    from tokrl.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model": "x", "task": {"name": "arithmetic"}, "scoer": {}}))
    assert main(["cdpo", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yaml: unknown key 'scoer' (did you mean 'score'?)" in err
    assert main(["treg", str(path), "--stage", "score"]) == 2
    assert "unknown key 'scoer'" in capsys.readouterr().err
