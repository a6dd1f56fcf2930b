"""Token Cleaning pipeline: scores by hand on a tiny model, corrupted-token bookkeeping, a real cleaning signal
end to end through `tokrl clean`, the self-evolving round structure, and the shipped recipes."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from tokrl.data.corrupted_sft import CorruptedArithmeticSFT, corrupt_answer, corrupted_token_mask, removal_quality
from tokrl.models import save_tiny_model, tiny_model
from tokrl.pipelines import token_cleaning as tc
from tokrl.pipelines.stage import run_stage
from tokrl.pipelines.token_cleaning_run import check_recipe, load_cleaned
from tokrl.recipe import build_config, load_recipe
from tokrl.trainers.token_cleaning_sft_config import TokenCleaningSFTConfig

ROOT = Path(__file__).resolve().parents[1]


def full_logps(model, ids):
    """log p(ids[t] | ids[:t]) for t >= 1 from the full logits (index 0 -> 0)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    out = torch.zeros(len(ids), dtype=torch.float64)
    out[1:] = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    return out


def test_scores_equal_hand_computation(tmp_path):
    base, tok = tiny_model(seed=0)
    ref, _ = tiny_model(seed=1)
    data = CorruptedArithmeticSFT(num_pool=9, num_trusted=0, seed=3, task={"num_eval": 2}).build()["pool"]
    tokens = tc.tokenize_stage(data, tok, tmp_path / "tok", max_length=None)
    cut = min(len(ids) for ids in tokens["input_ids"]) - 2  # truncation cuts every per-token column together
    short = tc.tokenize_stage(data, tok, tmp_path / "tok_short", max_length=cut)
    for row in short:
        assert len(row["input_ids"]) == len(row["completion_mask"]) == len(row["corrupted"]) == cut
    lp_base = tc.score_stage(base, tokens, tmp_path / "base", model_id="base", batch_size=4)
    lp_ref = tc.score_stage(ref, tokens, tmp_path / "ref", model_id="ref", batch_size=4)
    selected = tc.select_stage(tokens, lp_base, lp_ref, tmp_path / "sel", keep_ratio=0.6)
    n_resp = 0
    all_scores = []
    for row, scores, keep in zip(tokens, selected["token_scores"], selected["token_mask"]):
        ids, resp = row["input_ids"], np.array(row["completion_mask"], dtype=bool)
        assert len(scores) == len(keep) == len(ids)
        # influence = loss under base - loss under reference = log p_ref - log p_base, on response tokens only
        expected = (full_logps(ref, ids) - full_logps(base, ids)).numpy()
        np.testing.assert_allclose(np.array(scores)[resp], expected[resp], rtol=1e-4, atol=2e-5)
        assert not np.any(np.array(scores)[~resp]) and not np.any(np.array(keep)[~resp])
        n_resp += int(resp.sum())
        all_scores.extend(np.array(scores)[resp].tolist())
    kept = sum(sum(k) for k in selected["token_mask"])
    assert kept == int(0.6 * n_resp)
    kept_scores = [s for ks, ss in zip(selected["token_mask"], selected["token_scores"]) for k, s in zip(ks, ss) if k]
    assert min(kept_scores) >= sorted(all_scores, reverse=True)[kept - 1] - 1e-6  # the top of the ranking is kept
    meta = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert meta["kept_tokens"] == kept and meta["threshold"]["k"] == kept and meta["response_tokens"] == n_resp


def test_corrupted_token_mask_marks_the_recorded_characters():
    _, tok = tiny_model()  # one token per character, so the expected mask can be read off the text
    rng = random.Random(0)
    for kind in ("none", "wrong_digit", "filler"):
        for _ in range(5):
            text, spans = corrupt_answer("147", kind, rng)
            prompt = [{"role": "user", "content": "q"}]
            ids = tok.apply_chat_template(prompt + [{"role": "assistant", "content": text}], tokenize=True)
            ids = list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids)
            start = len(ids) - len(text) - 2  # the response is text + <|im_end|> + "\n"
            mask = [0] * start + [1] * (len(ids) - start)
            got = corrupted_token_mask(tok, ids, mask, spans)
            expected = [0] * len(ids)
            for s, e in spans:
                for c in range(s, e):
                    expected[start + c] = 1
            assert got == expected
            if kind == "wrong_digit":
                assert sum(got) == 1 and text != "147" and len(text) == 3
            if kind == "filler":
                assert "147" in text and sum(got) == len(text) - 3
    q = removal_quality([[1, 1, 0, 0]], [[0, 1, 1, 1]], [[0, 0, 1, 0]])
    assert q["removal_precision"] == 0.5 and q["removal_recall"] == 1.0 and q["kept_frac"] == pytest.approx(1 / 3)


def tiny_recipe(tmp_path, model_dir):
    return {
        "output_dir": str(tmp_path / "run"),
        "model": str(model_dir),
        "seed": 0,
        "data": {"source": "corrupted_arithmetic", "max_length": 96,
                 "corrupted_arithmetic": {"num_pool": 64, "num_trusted": 32, "corrupt_fraction": 0.5,
                                          "task": {"num_eval": 8}}},
        "cleaning": {"variants": ["fixed", "random", "self_evolving"], "keep_ratio": 0.6, "score_batch_size": 16,
                     "num_chunks": 2},
        "reference_trainer": {"per_device_train_batch_size": 8, "learning_rate": 3e-3, "num_train_epochs": 2},
        "trainer": {"per_device_train_batch_size": 16, "learning_rate": 1e-3},
        "eval": {"max_new_tokens": 2, "batch_size": 4, "max_examples": 4},
    }


def test_clean_command_removes_corrupted_tokens_and_resumes(tmp_path):
    """After the reference has seen clean data, corrupted tokens are kept far less often than clean ones."""
    import yaml

    from tokrl.cli import main

    model_dir = save_tiny_model(tmp_path / "tiny")
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(tiny_recipe(tmp_path, model_dir)))
    assert main(["clean", str(recipe_path)]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    fixed, rand = report["variants"]["fixed"]["removal"], report["variants"]["random"]["removal"]
    assert fixed["corrupted_tokens"] > 20 and fixed["kept_frac"] == pytest.approx(0.6, abs=0.01)
    assert fixed["kept_rate_corrupted"] < fixed["kept_rate_clean"] - 0.3
    assert fixed["removal_precision"] > rand["removal_precision"] + 0.2
    assert abs(rand["kept_rate_corrupted"] - rand["kept_rate_clean"]) < 0.25  # no signal without scores
    assert report["variants"]["fixed"]["train"]["steps"] >= 1
    evolving = report["variants"]["self_evolving"]
    assert [r["rows"] for r in evolving["rounds"]] == [[0, 32], [32, 64]]
    assert evolving["removal"]["kept_frac"] == pytest.approx(0.6, abs=0.01)
    # one base-model pass serves fixed-model cleaning and every self-evolving round
    assert (tmp_path / "run" / "logps_base" / "manifest.json").is_file()
    assert not (tmp_path / "run" / "fixed" / "logps_base").exists()
    assert not (tmp_path / "run" / "self_evolving" / "logps_base").exists()
    for name in ("base", "fixed", "random", "self_evolving"):  # greedy eval of every model on the same prompts
        result = report["variants"][name]["eval"]
        assert result["num_prompts"] == 4 and len(result["examples"]) == 4 and 0 <= result["accuracy"] <= 1
    recipe = yaml.safe_load(recipe_path.read_text())  # the recipe's seed is every SFT run's seed (none set its own)
    trained = json.loads((tmp_path / "run" / "model_fixed" / "manifest.json").read_text())["config"]["trainer"]
    assert trained["seed"] == recipe.get("seed", 0) and "seed" not in (recipe.get("trainer") or {})
    stamp = (tmp_path / "run" / "model_fixed" / "manifest.json").stat().st_mtime_ns
    assert main(["clean", str(recipe_path)]) == 0  # every stage is complete: a no-op
    assert (tmp_path / "run" / "model_fixed" / "manifest.json").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "run" / "report.json").read_text())["variants"]["fixed"]["removal"] == fixed
    cleaned = load_cleaned(tmp_path / "run")
    assert len(cleaned) == 64 and {"input_ids", "completion_mask", "corrupted", "token_scores", "token_mask"} <= set(
        cleaned.column_names)
    assert removal_quality(cleaned["token_mask"], cleaned["completion_mask"], cleaned["corrupted"]) == fixed
    chunk = load_cleaned(tmp_path / "run", round_index=1)
    assert len(chunk) == 32 and chunk["input_ids"] == cleaned["input_ids"][32:]


def test_self_evolving_rounds(tmp_path):
    """Chunks in order; round 0 trains the base on all tokens; round t scores chunk t with the round t-1 model
    against the base and trains from the round t-1 model on that chunk, cleaned with its own threshold."""
    n_rows = 11
    tokens = Dataset.from_dict({"input_ids": [[5] * 6 for _ in range(n_rows)],
                                "completion_mask": [[0, 0, 1, 1, 1, 1]] * n_rows})

    class Names:
        def get(self, name):
            return name

    scored, trained = [], []

    def score(model, rows, stage_dir, *, model_id, batch_size, overwrite, input_fingerprint):
        scored.append((model, len(rows), Path(stage_dir).parent.name))
        rng = np.random.default_rng(len(scored))
        logps = [[0.0, 0.0, *rng.normal(size=4).tolist()] for _ in range(len(rows))]  # one shard: < 256 rows
        return run_stage("logps", stage_dir, lambda shard, i: {"logps": logps}, rows, {"model": model_id})

    def train(stage_dir, init, dataset, weighting, fingerprint):
        trained.append((init, len(dataset), weighting, sum(map(sum, dataset["token_mask"]))
                        if "token_mask" in dataset.column_names else None))
        return f"ckpt-{Path(stage_dir).parent.name}"

    final, rounds = tc.self_evolving_cleaning(tokens, tmp_path, base="base", keep_ratio=0.6, num_chunks=3,
                                              batch_size=2, models=Names(), train=train, score=score)
    assert tc.chunk_bounds(11, 3) == [(0, 4), (4, 7), (7, 11)]
    assert [r["rows"] for r in rounds] == [[0, 4], [4, 7], [7, 11]]
    assert scored == [("base", 11, tmp_path.name), ("ckpt-round_00", 3, "round_01"), ("ckpt-round_01", 4, "round_02")]
    assert trained == [("base", 4, "uniform", None),
                       ("ckpt-round_00", 3, tc.MASK_WEIGHTING, int(0.6 * 12)),
                       ("ckpt-round_01", 4, tc.MASK_WEIGHTING, int(0.6 * 16))]
    assert final == "ckpt-round_02" and rounds[2]["reference"] == "ckpt-round_01"
    with pytest.raises(ValueError, match="num_chunks"):
        tc.chunk_bounds(10, 1)


@pytest.mark.parametrize("name", ["token_cleaning_arithmetic.yaml", "token_cleaning_paper.yaml"])
def test_shipped_recipes_are_valid(name):
    path = ROOT / "recipes" / name
    text = path.read_text()
    assert text.startswith("#") and "tokrl train recipes/" + name in text and "2502.01968" in text
    recipe = check_recipe(load_recipe(path), path)
    for section in ("reference_trainer", "trainer"):
        config = build_config(TokenCleaningSFTConfig, recipe.get(section), path, section, output_dir="unused",
                              use_cpu=True)
        assert config.remove_unused_columns is False
    assert recipe["cleaning"]["keep_ratio"] == 0.6
    from tokrl.cli import main

    assert main(["validate", str(path)]) == 0


def test_bad_recipe_fails_before_any_stage(tmp_path, capsys):
    from tokrl.cli import main

    path = ROOT / "recipes" / "token_cleaning_arithmetic.yaml"
    out = tmp_path / "run"
    assert main(["clean", str(path), f"output_dir={out}", "trainer.learning_rat=0.1"]) == 2
    assert "unknown key 'trainer.learning_rat' (did you mean 'learning_rate'?)" in capsys.readouterr().err
    assert main(["clean", str(path), f"output_dir={out}", "cleaning.variants=[fixd]"]) == 2
    assert "cleaning.variants" in capsys.readouterr().err
    assert main(["clean", str(path), f"output_dir={out}", "method=treg"]) == 2
    assert "method 'treg' is not run by `tokrl clean` (an alias for method: token_cleaning); `tokrl train RECIPE` " \
        "runs every method" in capsys.readouterr().err
    assert not out.exists()


def test_lora_training_stage_saves_a_merged_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from tokrl.trainers.token_cleaning_tokens import tokenize_sft_row

    model_dir = save_tiny_model(tmp_path / "tiny")
    _, tok = tiny_model()
    rows = [tokenize_sft_row({"prompt": [{"role": "user", "content": f"{i}+1"}],
                              "completion": [{"role": "assistant", "content": str(i + 1)}]}, tok) for i in range(8)]
    for r in rows:
        r["token_mask"] = [m * (j % 2) for j, m in enumerate(r["completion_mask"])]
    out = tmp_path / "out"
    out.mkdir()
    meta = tc.train_sft(str(model_dir), Dataset.from_list(rows), out, weighting=tc.MASK_WEIGHTING,
                        trainer={"per_device_train_batch_size": 4, "learning_rate": 1e-2, "use_cpu": True},
                        lora={"r": 4, "lora_alpha": 8, "target_modules": "all-linear"})
    assert meta["steps"] == 2 and meta["rows"] == 8
    merged = AutoModelForCausalLM.from_pretrained(out)
    init = AutoModelForCausalLM.from_pretrained(model_dir)
    assert not any("lora" in name for name in merged.state_dict())
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, init.model.layers[0].self_attn.q_proj.weight)


def test_an_eval_is_keyed_by_the_model_it_evaluates_not_its_path(tmp_path, tiny):
    """A retrained model at the same path (another seed in the same run dir, a shared stage cache) gets a new eval
    and new token scores."""
    from tokrl.pipelines.stage import config_hash, run_artifact_stage, stage_fingerprint
    from tokrl.pipelines.token_cleaning_run import model_fingerprint

    def build(tmp):
        (tmp / "model.safetensors").write_text("weights")

    first = run_artifact_stage("sft", tmp_path / "model_fixed", build, {"seed": 0})
    before = model_fingerprint(first)
    assert before == stage_fingerprint(tmp_path / "model_fixed")
    again = run_artifact_stage("sft", tmp_path / "model_fixed", build, {"seed": 1}, overwrite=True)
    assert again == first and model_fingerprint(again) != before
    assert model_fingerprint("/models/base") == config_hash(["/models/base"])  # a model no stage trained
    from datasets import Dataset

    from tokrl.pipelines.token_cleaning import score_stage
    from tokrl.pipelines.stage import read_manifest

    tokens = Dataset.from_dict({"input_ids": [[1, 2, 3]], "completion_mask": [[0, 1, 1]]})
    score_stage(tiny[0], tokens, tmp_path / "logps", model_id=str(again))
    assert read_manifest(tmp_path / "logps")["config"]["model_content"] == model_fingerprint(again)
