"""The `data:` section: the user's own files, column mapping, prompt formatting, rewards beside the recipe, and
`tokrl train` / `tokrl eval --recipe` on them with the tiny model."""

import json
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from tokrl.cli import main
from tokrl.data.dataset import build_data, data_spec, gold_answer, recipe_data
from tokrl.recipe import RecipeError

ROWS = [{"q": f"What is {a} + {b}?", "gold": f"{a} + {b} = {a + b}\n#### {a + b}", "level": a % 3}
        for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4), (6, 1), (8, 3)]]


def write_jsonl(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def spec(tmp_path, **section):
    return data_spec({"data": section}, str(tmp_path / "recipe.yaml"))


def test_gold_answers_from_solutions():
    assert gold_answer("a\nb\n#### 1,234") == "1,234"
    assert gold_answer(r"so $x = \boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert gold_answer(" 42 ") == "42" and gold_answer(7) == "7"


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_every_file_type_reads_the_same_rows(tmp_path, suffix):
    path = tmp_path / f"rows{suffix}"
    ds = Dataset.from_list(ROWS)
    {".jsonl": lambda: write_jsonl(path), ".json": lambda: ds.to_json(str(path)),
     ".parquet": lambda: ds.to_parquet(str(path)), ".csv": lambda: ds.to_csv(str(path), index=False)}[suffix]()
    data = build_data(spec(tmp_path, path=str(path), question_column="q", answer_column="gold"))
    assert data["train"]["answer"] == ["3", "7", "11", "15", "11", "8", "7", "11"]
    assert data["train"]["prompt"][0] == [{"role": "user", "content": "What is 1 + 2?"}]
    assert data["train"]["level"] == [r["level"] for r in ROWS]  # extra columns pass through
    assert len(data["eval"]) == 0


def test_save_to_disk_splits_and_a_relative_path_beside_the_recipe(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    DatasetDict(train=Dataset.from_list(ROWS[:6]), test=Dataset.from_list(ROWS[6:])).save_to_disk(str(folder / "ds"))
    monkeypatch.chdir(tmp_path)  # "ds" is not in the working directory: it is found beside the recipe
    section = {"path": "ds", "eval_split": "test", "question_column": "q", "answer_column": "gold"}
    data = recipe_data({"data": section}, str(folder / "recipe.yaml"))
    assert len(data["train"]) == 6 and data["eval"]["answer"] == ["7", "11"]
    with pytest.raises(RecipeError, match=r"no split 'tset' \(did you mean 'test'\?\)"):
        recipe_data({"data": {**section, "eval_split": "tset"}}, str(folder / "recipe.yaml"))


def test_eval_fraction_is_seeded_and_disjoint(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl")
    a = build_data(spec(tmp_path, path=str(path), question_column="q", eval_fraction=0.25, seed=3))
    b = build_data(spec(tmp_path, path=str(path), question_column="q", eval_fraction=0.25, seed=3))
    c = build_data(spec(tmp_path, path=str(path), question_column="q", eval_fraction=0.25, seed=4))
    held_out, trained = list(a["eval"]["q"]), list(a["train"]["q"])
    assert len(held_out) == 2 and len(trained) == 6 and held_out == list(b["eval"]["q"])
    assert sorted(held_out + trained) == sorted(r["q"] for r in ROWS)
    assert list(c["eval"]["q"]) != held_out


def test_filter_and_a_separate_eval_file(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl")
    DatasetDict(test=Dataset.from_list(ROWS[:3])).save_to_disk(str(tmp_path / "ev"))
    data = build_data(spec(tmp_path, path=str(path), question_column="q", answer_column="gold",
                           filter={"level": [0, 2]}, eval_path=str(tmp_path / "ev"), eval_split="test"))
    assert sorted(set(data["train"]["level"])) == [0, 2] and len(data["train"]) == sum(r["level"] != 1 for r in ROWS)
    assert list(data["eval"]["q"]) == [r["q"] for r in ROWS[:3] if r["level"] != 1]


def test_template_system_prompt_few_shot_and_plain_text(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl")
    common = dict(path=str(path), answer_column="gold", template="Q (level {level}): {q}\nA:",
                  few_shot="Q: 1+1?\nA: 2\n\n", system_prompt="Be brief.")
    chat = build_data(spec(tmp_path, **common))["train"][0]["prompt"]
    assert chat == [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Q: 1+1?\nA: 2\n\nQ (level 1): What is 1 + 2?\nA:"}]
    text = build_data(spec(tmp_path, **common, chat_template=False))["train"][0]["prompt"]
    assert text == "Be brief.\n\nQ: 1+1?\nA: 2\n\nQ (level 1): What is 1 + 2?\nA:"


def test_task_shorthand_equals_the_data_section():
    a = recipe_data({"task": {"name": "arithmetic", "num_train": 5, "num_eval": 3}}, "r.yaml")
    b = recipe_data({"data": {"task": {"name": "arithmetic", "num_train": 5, "num_eval": 3}}}, "r.yaml")
    assert list(a["train"]["prompt"]) == list(b["train"]["prompt"])
    assert list(a["eval"]["answer"]) == list(b["eval"]["answer"])
    words = recipe_data({"data": {"task": "wordproblems", "system_prompt": "Think."}}, "r.yaml")
    assert len(words["train"]) == 300 and len(words["eval"]) == 100
    assert words["eval"][0]["prompt"][0] == {"role": "system", "content": "Think."}
    assert words["eval"][0]["solution"].endswith("#### " + words["eval"][0]["answer"])


@pytest.mark.parametrize("section,match", [
    ({"path": "d.jsonl", "question_column": "question"},
     r"d.jsonl\).*no column 'question' \(data.question_column; columns: \['q', 'gold', 'level'\]\)"),
    ({"path": "d.jsonl"}, r"none of the columns \['prompt', 'question', 'problem'\] \(columns: \['q', 'gold', 'level'\]\)"),
    ({"path": "d.jsonl", "template": "{q} {hint}"}, r"\{hint\}.*no column 'hint' \(columns: \['q', 'gold', 'level'\]\)"),
    ({"path": "d.jsonl", "question_column": "q", "answer_column": "answer"}, r"no column 'answer'"),
    ({"path": "openai/gsm8k"}, r"'openai/gsm8k' not found .*hub: true"),
    ({"path": "d.txt"}, r"unsupported file type '.txt'"),
    ({"path": "d.jsonl", "eval_fraction": 1.5}, r"eval_fraction' must be in \(0, 1\)"),
    ({"path": "d.jsonl", "eval_fraction": 0.2, "eval_split": "test"}, r"set one of eval_split, eval_fraction"),
    ({"path": "d.jsonl", "question_column": "q", "filter": {"lvl": [1]}}, r"filter names column 'lvl'.*columns: \["),
    ({"path": "d.jsonl", "filter": {"level": 1}}, r"maps a column to the list of values"),
    ({"path": "d.jsonl", "colums": 1}, r"unknown key 'data.colums'"),
    ({"task": "wordproblem"}, r"unknown task 'wordproblem' \(did you mean 'wordproblems'\?\)"),
])
def test_bad_data_sections_name_the_file_and_the_column(tmp_path, monkeypatch, section, match):
    write_jsonl(tmp_path / "d.jsonl")
    (tmp_path / "d.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=match):
        recipe_data({"data": section}, "recipe.yaml")


# ---- rewards and weighters from the user's own modules --------------------------------------------------------

REWARD_MODULE = '''
import json, os

def score(completions, answer, level, scale=1.0, **kwargs):
    """Log what TRL passed (to check the columns arrive), reward the level."""
    with open(os.environ["TOKRL_TEST_SEEN"], "a") as f:
        f.write(json.dumps({"level": list(level), "answer": list(answer), "keys": sorted(kwargs)}) + "\\n")
    return [scale * x for x in level]
'''


def user_project(tmp_path, model_dir, method="forking_grpo", module="user_rewards_a") -> Path:
    project = tmp_path / "project"
    project.mkdir()
    write_jsonl(project / "problems.jsonl")
    (project / f"{module}.py").write_text(REWARD_MODULE)
    recipe = project / "recipe.yaml"
    recipe.write_text(
        f"method: {method}\n"
        f"model: {model_dir}\n"
        "data: {path: problems.jsonl, question_column: q, answer_column: gold, eval_fraction: 0.25, seed: 0}\n"
        f"reward: [math, {{name: '{module}:score', kwargs: {{scale: 0.5}}}}]\n"
        f"output_dir: {tmp_path / 'run'}\n"
        "trainer: {per_device_train_batch_size: 8, num_generations: 4, max_completion_length: 6, max_steps: 2,\n"
        "          logging_steps: 1, save_strategy: 'no', use_cpu: true}\n"
        "eval: {before: true, after: true, max_new_tokens: 6, batch_size: 4}\n"
    )
    return recipe


def test_jsonl_with_a_reward_module_beside_the_recipe_trains_and_evaluates(tmp_path, monkeypatch, capsys):
    from tokrl.models import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "tiny")
    recipe = user_project(tmp_path, model_dir)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the working directory nor PYTHONPATH holds the reward module
    seen = tmp_path / "seen.jsonl"
    monkeypatch.setenv("TOKRL_TEST_SEEN", str(seen))
    assert main(["train", str(recipe)]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    calls = [json.loads(line) for line in seen.read_text().splitlines()]
    # eval before (2 eval rows) + 2 training steps of 8 completions + eval after (2 rows)
    assert [len(c["level"]) for c in calls] == [2, 8, 8, 2]
    levels = {r["q"]: r["level"] for r in ROWS}
    assert set(calls[1]["level"]) <= set(levels.values()) and "trainer_state" in calls[1]["keys"]
    assert "q" in calls[1]["keys"] and "gold" in calls[1]["keys"]  # every column reaches the reward
    eval_levels = calls[0]["level"]
    # math is 0 on a random model's 6 characters; the user's reward is 0.5 * level: mean_reward is exact
    assert summary["eval_before"]["accuracy"] == 0.0
    assert summary["eval_before"]["mean_reward"] == pytest.approx(0.5 * sum(eval_levels) / 2)
    assert summary["eval_before"]["num_prompts"] == 2
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(m.get("step", 0) for m in metrics) == 2

    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert main(["eval", "--recipe", str(recipe), "--model", str(tmp_path / "run" / "final"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    # the command evaluates the recipe's eval split with the recipe's rewards: the in-run eval's numbers
    after = {k: v for k, v in summary["eval_after"].items() if k != "per_prompt"}
    assert {k: result[k] for k in after} == after


def test_reward_signature_is_checked_before_any_model_loads(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "d.jsonl")
    (tmp_path / "user_rewards_b.py").write_text(
        "def needs_hint(completions, hint, **kwargs):\n    return [0.0] * len(completions)\n"
        "def no_kwargs(completions, answer):\n    return [0.0] * len(completions)\n")
    monkeypatch.chdir(tmp_path)
    base = "method: grpo\nmodel: someone/a-model\ndata: {path: d.jsonl, question_column: q, answer_column: gold}\n"
    cases = {"[user_rewards_b:needs_hint]": r"needs column 'hint', which the dataset lacks \(columns: \[",
             "[user_rewards_b:no_kwargs]": r"must accept \*\*kwargs",
             "[user_rewards_b:missing]": r"could not be imported",
             "[{name: math, kwargs: {strct: true}}]": r"has no argument 'strct' \(did you mean 'strict'\?\)",
             "[maths]": r"unknown reward 'maths' \(did you mean 'math'\?\)"}
    from tokrl.runs import check_recipe as validate_recipe

    for reward, match in cases.items():
        (tmp_path / "r.yaml").write_text(base + f"reward: {reward}\n")
        with pytest.raises(RecipeError, match=match):
            validate_recipe(tmp_path / "r.yaml")


def test_imports_register_the_users_weighter(tmp_path):
    from tokrl.weighting import build_weighter
    from tokrl.weighting.registry import WEIGHTERS

    (tmp_path / "user_weighters_c.py").write_text(
        "import torch\nfrom tokrl.weighting import TokenWeighter, register_weighter\n\n"
        "@register_weighter('user_late_c')\nclass Late(TokenWeighter):\n    needs = frozenset()\n\n"
        "    def weigh(self, view):\n        return view.mask.float().cumsum(-1)\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("imports: [user_weighters_c]\nmethod: grpo\nmodel: x\nweighting: {name: user_late_c}\n")
    from tokrl.recipe import load_recipe

    loaded = load_recipe(recipe)
    assert "user_late_c" in WEIGHTERS and type(build_weighter(loaded["weighting"])).__name__ == "Late"
    recipe.write_text("imports: [no_such_module_c]\nmethod: grpo\n")
    with pytest.raises(RecipeError, match="imports: cannot import 'no_such_module_c'"):
        load_recipe(recipe)
