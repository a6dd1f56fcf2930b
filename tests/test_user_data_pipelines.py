"""cDPO, T-REG and token cleaning on the user's own JSONL (the shared `data:` keys), with a reward module beside
the recipe, on the tiny model; `tokrl eval --recipe` on the same data."""

import json

import pytest
import yaml

from tokrl.cli import main
from tokrl.models import save_tiny_model

ROWS = [{"q": f"What is {a} + {b}?", "solution": f"{a} + {b} = {a + b}\n#### {a + b}", "bonus": a % 2}
        for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4), (6, 1), (8, 3), (9, 9), (0, 5)]]
REWARD_MODULE = '''
def even_or_bonus(completions, bonus, **kwargs):
    """A reward the tiny random model earns sometimes: an even number of characters, or the row's bonus."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(len(t) % 2 == 0 or b == 1) for t, b in zip(texts, bonus)]
'''


def project(tmp_path, module: str):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (folder / f"{module}.py").write_text(REWARD_MODULE)
    return folder


DATA = {"path": "qa.jsonl", "question_column": "q", "answer_column": "solution", "eval_fraction": 0.4, "seed": 0}
PREFERENCE = {
    "sample": {"num_samples": 6, "max_new_tokens": 6, "batch_size": 6, "top_p": 1.0},
    "select": {"group_by": "text"},
    "trainer": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1,
                "save_strategy": "no", "max_length": 256},
    "eval": {"max_new_tokens": 4, "batch_size": 4},
}
EXTRA = {
    "cdpo": {"contrast": {"trainer": {"max_steps": 2, "per_device_train_batch_size": 2, "warmup_steps": 0,
                                      "learning_rate": 1e-2}},
             "score": {"batch_size": 4}},
    "treg": {"score": {"template": "instruction", "batch_size": 8}},
}


@pytest.mark.parametrize("method", ["cdpo", "treg"])
def test_preference_pipelines_on_a_local_jsonl(tmp_path, monkeypatch, method):
    module = f"user_pipeline_rewards_{method}"
    folder = project(tmp_path, module)
    model_dir = save_tiny_model(tmp_path / "model")
    recipe = {"method": method, "model": str(model_dir), "data": DATA, "reward": f"{module}:even_or_bonus",
              "output_dir": str(tmp_path / "run"), **PREFERENCE, **EXTRA[method]}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)  # the data file and the reward module are found beside the recipe
    assert main([method, str(path)]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["train"]["steps"] == 2
    from tokrl.pipelines.stage import load_stage

    sampled = load_stage(tmp_path / "run" / "sample")
    assert len(sampled) == 6 and set(sampled["answer"]) <= {r["solution"].split("#### ")[1] for r in ROWS}
    for row in sampled:  # the user's reward on the user's column: bonus rows score 1 on every sample
        if row["bonus"] == 1:
            assert row["rewards"] == [1.0] * 6
    # eval: the 4 held-out rows, scored with the recipe's reward; `tokrl eval --recipe` gives the same numbers
    assert summary["eval_before"]["num_prompts"] == 4
    out = tmp_path / "eval.json"
    assert main(["eval", "--recipe", str(path), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_prompts"] == 4
    assert result["accuracy"] == pytest.approx(summary["eval_before"]["accuracy"])
    assert result["mean_reward"] == pytest.approx(summary["eval_before"]["mean_reward"])


def test_clean_on_a_local_jsonl(tmp_path, monkeypatch):
    module = "user_pipeline_rewards_clean"
    folder = project(tmp_path, module)
    model_dir = save_tiny_model(tmp_path / "model")
    recipe = {"method": "token_cleaning", "model": str(model_dir), "output_dir": str(tmp_path / "run"), "seed": 0,
              "data": {**DATA, "trusted_rows": 2, "max_length": 96}, "reward": [f"{module}:even_or_bonus"],
              "cleaning": {"variants": ["all_tokens", "fixed"], "keep_ratio": 0.5, "score_batch_size": 8},
              "reference_trainer": {"per_device_train_batch_size": 2, "max_steps": 2},
              "trainer": {"per_device_train_batch_size": 2, "max_steps": 2},
              "eval": {"max_new_tokens": 4, "batch_size": 4}}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    assert main(["clean", str(path)]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["pool_rows"] == 6
    assert report["variants"]["fixed"]["train"]["steps"] == 2
    from tokrl.pipelines.stage import load_stage

    tokens = load_stage(tmp_path / "run" / "tokenize")
    assert all(sum(m) > 0 for m in tokens["completion_mask"])  # the solutions are the completions trained on
    # the held-out rows with bonus = 1 score 1 under the user's reward whatever the model writes
    from tokrl.data.dataset import recipe_data

    held_out = recipe_data({"data": DATA}, str(path))["eval"]
    floor = sum(held_out["bonus"]) / len(held_out)
    for name in ("base", "all_tokens", "fixed"):
        ev = report["variants"][name]["eval"]
        assert ev["num_prompts"] == 4 and floor <= ev["accuracy"] <= 1.0
    out = tmp_path / "eval.json"
    assert main(["eval", "--recipe", str(path), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(report["variants"]["base"]["eval"]["accuracy"])
