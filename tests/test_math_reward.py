"""The `math` reward (math-verify) on hand-written completions: boxed fractions, '####' answers, units, wrong ones."""

import pytest

from tokrl.rewards import math_reward, resolve_rewards
from tokrl.rewards.math import normalize, stated_answer

# (completion, gold answer, expected reward)
CASES = [
    # boxed fractions and equivalent forms
    (r"The sum is \boxed{\frac{7}{12}}.", r"\frac{7}{12}", 1.0),
    (r"So the answer is $\boxed{\dfrac{1}{2}}$", r"\frac{1}{2}", 1.0),
    (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
    (r"\boxed{1/2}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\frac12}", "0.5", 1.0),
    (r"x equals \boxed{-\frac{5}{8}}", r"-\frac{5}{8}", 1.0),
    (r"\boxed{-0.625}", r"-\frac{5}{8}", 1.0),
    (r"\boxed{\frac{5}{8}}", r"-\frac{5}{8}", 0.0),  # sign wrong
    (r"\boxed{\frac{2}{4}}", r"\frac{1}{2}", 1.0),  # unreduced but equal in value
    (r"\boxed{\frac{7}{13}}", r"\frac{7}{12}", 0.0),
    # radicals, pi, nested braces
    (r"$\sqrt{72} = \boxed{6\sqrt{2}}$", r"6\sqrt{2}", 1.0),
    (r"\boxed{\sqrt{72}}", r"6\sqrt{2}", 1.0),
    (r"\boxed{6\sqrt{3}}", r"6\sqrt{2}", 0.0),
    (r"The area is \boxed{144\pi}.", r"144\pi", 1.0),
    (r"\boxed{144}", r"144\pi", 0.0),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}", 1.0),
    # GSM8K-style '####' answers
    ("She has 12 - 4 = 8 left.\n#### 8", "8", 1.0),
    ("#### 72", "#### 72", 1.0),  # a raw GSM8K answer cell works as gold too
    ("Total: 1,000 dollars\n#### 1,000", "1000", 1.0),
    ("#### 1000", "1,000", 1.0),
    ("#### 7.50", "7.5", 1.0),
    ("#### 73", "72", 0.0),
    ("The answer is #### -4", "-4", 1.0),
    ("#### 4", "-4", 0.0),
    # units and currency
    ("#### 72 dollars", "72", 1.0),
    (r"\boxed{\$18}", "18", 1.0),
    (r"\boxed{18 \text{ cm}}", "18", 1.0),
    (r"\boxed{5\,\text{m}^{}}", "5", 1.0),
    ("#### $18.00", "18", 1.0),
    (r"\boxed{50\%}", "50", 1.0),
    ("#### 19 apples", "18", 0.0),
    # later of #### and \boxed{} wins; no final answer falls back to the last number
    ("#### 3 ... on reflection \\boxed{4}", "4", 1.0),
    ("\\boxed{3} ... so\n#### 4", "4", 1.0),
    ("I think it is 41, no wait, 42", "42", 1.0),
    ("I think it is 42, no wait, 41", "42", 0.0),
    ("no idea", "42", 0.0),
    (r"\boxed{}", "42", 0.0),
    (r"\boxed{x}", "42", 0.0),
]


@pytest.mark.parametrize("completion,gold,expected", CASES)
def test_math_reward_case(completion, gold, expected):
    assert math_reward([completion], answer=[gold]) == [expected]


def test_there_are_at_least_30_cases_with_right_and_wrong_answers():
    assert len(CASES) >= 30
    assert sum(e == 0.0 for *_, e in CASES) >= 10 and sum(e == 1.0 for *_, e in CASES) >= 20


def test_conversational_completions_and_batches():
    completions = [[{"role": "assistant", "content": r"\boxed{3}"}], "#### 4", "5"]
    assert math_reward(completions, answer=["3", "4", "6"]) == [1.0, 1.0, 0.0]


def test_strict_needs_a_boxed_or_hash_answer():
    assert math_reward(["the answer is 42"], answer=["42"], strict=True) == [0.0]
    assert math_reward(["#### 42"], answer=["42"], strict=True) == [1.0]
    fn = resolve_rewards([{"name": "math", "kwargs": {"strict": True}}])[0]
    assert fn(completions=["the answer is 42", r"\boxed{42}"], answer=["42", "42"]) == [0.0, 1.0]
    assert fn.__name__ == "math_reward"


def test_answer_extraction_by_hand():
    assert stated_answer(r"a \boxed{\frac{1}{\sqrt{2}}} b") == r"\frac{1}{\sqrt{2}}"
    assert stated_answer("x\n#### 12\nmore text") == "12"
    assert stated_answer("nothing") is None
    assert normalize(r"18 \text{ cm}") == "18" and normalize(r"\$1,000") == "1,000"
