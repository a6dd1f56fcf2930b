"""The embedded arithmetic task and its verifiable rewards."""

import pytest

from tokrl.data import ArithmeticTask, make_arithmetic_dataset
from tokrl.rewards import accuracy_reward, extract_answer, format_reward, resolve_rewards


def test_splits_are_disjoint_deterministic_and_correct():
    a = make_arithmetic_dataset(num_train=300, num_eval=50, seed=1)
    b = make_arithmetic_dataset(num_train=300, num_eval=50, seed=1)
    assert a["train"]["question"] == b["train"]["question"] and a["eval"]["answer"] == b["eval"]["answer"]
    assert not set(a["train"]["question"]) & set(a["eval"]["question"])
    assert len(a["train"]) == 300 and len(a["eval"]) == 50
    for row in a["eval"]:
        x, y = row["question"].split("What is ")[1].split("?")[0].split(" + ")
        assert int(row["answer"]) == int(x) + int(y) and 0 <= int(x) <= 20
        assert row["prompt"] == [{"role": "user", "content": row["question"]}]
    assert make_arithmetic_dataset(num_train=10, num_eval=5, seed=2)["eval"]["question"] != a["eval"]["question"][:5]


def test_word_problems_and_other_operators():
    data = ArithmeticTask(ops=("-", "*"), style="word", num_train=20, num_eval=10, max_value=9).build()
    for row in data["eval"]:
        assert row["question"].endswith("Reply with only the final number.")
        assert int(row["answer"]) >= 0


@pytest.mark.parametrize("kwargs,match", [({"ops": ("/",)}, "unknown operator"), ({"style": "poem"}, "style"),
                                          ({"num_eval": 10_000}, "leaves no training"),
                                          ({"max_value": -1}, "max_value")])
def test_bad_task_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ArithmeticTask(**kwargs).build()


def test_rewards_by_hand():
    completions = ["21", "The answer is 21.", "2 + 19 = 21", "20", "twenty-one", [{"role": "assistant", "content": "21"}]]
    assert accuracy_reward(completions, answer=["21"] * 6) == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert format_reward(completions) == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    assert extract_answer("1,234 apples") == "1234" and extract_answer("none") is None


def test_reward_names_resolve_and_typos_suggest():
    assert resolve_rewards(["accuracy", "format"]) == [accuracy_reward, format_reward]
    assert resolve_rewards("tokrl.rewards:format_reward") == [format_reward]
    with pytest.raises(ValueError, match="did you mean 'format'"):
        resolve_rewards(["formt"])


def test_word_problems_are_seeded_distinct_and_their_steps_add_up():
    import re

    from tokrl.data import WordProblemsTask

    a, b = WordProblemsTask(seed=3).build(), WordProblemsTask(seed=3).build()
    assert list(a["eval"]["question"]) == list(b["eval"]["question"]) and len(a["train"]) == 300
    questions = list(a["train"]["question"]) + list(a["eval"]["question"])
    assert len(set(questions)) == 400
    for row in a["eval"]:
        notes = re.findall(r"<<([^=]+)=(-?\d+)>>", row["answer"])
        assert notes and all(eval(expr.replace("/", "//")) == int(value) for expr, value in notes)  # noqa: S307
        final = row["answer"].rsplit("#### ", 1)[1]
        assert final == notes[-1][1] and int(final) >= 0


def test_latex_problems_gold_answers_are_what_their_solutions_box():
    from tokrl.data import LatexProblemsTask
    from tokrl.rewards import math_reward

    data = LatexProblemsTask(num_train=40, num_eval=10).build()
    rows = list(data["train"]) + list(data["eval"])
    assert math_reward([r["solution"] for r in rows], answer=[r["answer"] for r in rows]) == [1.0] * 50
    assert math_reward([r"\boxed{0}" for r in rows], answer=[r["answer"] for r in rows]).count(1.0) <= 2
