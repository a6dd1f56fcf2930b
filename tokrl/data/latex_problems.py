"""Seeded problems with LaTeX answers in MATH's format: `problem`, `solution` ending in \\boxed{...}, `answer`.

Fractions, square roots, multiples of pi and negative numbers: answers that a last-number match gets wrong and
the `math` reward (math-verify) compares symbolically. Small and offline, for examples and tests.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction

from datasets import DatasetDict

from tokrl.data.generated import distinct_splits


def latex_fraction(q: Fraction) -> str:
    if q.denominator == 1:
        return str(q.numerator)
    sign = "-" if q < 0 else ""
    return f"{sign}\\frac{{{abs(q.numerator)}}}{{{q.denominator}}}"


def add_fractions(rng: random.Random):
    a, b = Fraction(rng.randint(1, 9), rng.randint(2, 9)), Fraction(rng.randint(1, 9), rng.randint(2, 9))
    s = a + b
    problem = (f"Compute $\\frac{{{a.numerator}}}{{{a.denominator}}} + \\frac{{{b.numerator}}}{{{b.denominator}}}$. "
               "Express your answer as a common fraction.")
    solution = (f"With the common denominator {s.denominator}, the sum is ${latex_fraction(s)}$, so the answer is "
                f"$\\boxed{{{latex_fraction(s)}}}$.")
    return problem, solution, latex_fraction(s), 2


def simplify_root(rng: random.Random):
    outer, inner = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7])
    n = outer * outer * inner
    answer = f"{outer}\\sqrt{{{inner}}}"
    problem = f"Simplify $\\sqrt{{{n}}}$."
    solution = f"Since ${n} = {outer * outer} \\cdot {inner}$, $\\sqrt{{{n}}} = {answer}$. The answer is $\\boxed{{{answer}}}$."
    return problem, solution, answer, 3


def circle_area(rng: random.Random):
    r = rng.randint(2, 15)
    answer = f"{r * r}\\pi"
    problem = f"A circle has radius {r}. What is its area? Express your answer in terms of $\\pi$."
    solution = f"The area is $\\pi r^2 = \\pi \\cdot {r}^2 = {answer}$, so the answer is $\\boxed{{{answer}}}$."
    return problem, solution, answer, 2


def linear_equation(rng: random.Random):
    a, b, c = rng.randint(2, 9), rng.randint(-20, 20), rng.randint(-20, 20)
    x = Fraction(c - b, a)
    problem = f"Solve for $x$: ${a}x {'+' if b >= 0 else '-'} {abs(b)} = {c}$."
    solution = (f"Subtracting gives ${a}x = {c - b}$, so $x = {latex_fraction(x)}$. The answer is "
                f"$\\boxed{{{latex_fraction(x)}}}$.")
    return problem, solution, latex_fraction(x), 3 if x.denominator > 1 else 1


def gcd_lcm(rng: random.Random):
    a, b = rng.randint(4, 60), rng.randint(4, 60)
    lcm = a * b // math.gcd(a, b)
    problem = f"What is the least common multiple of {a} and {b}?"
    solution = f"$\\gcd({a}, {b}) = {math.gcd(a, b)}$, so the least common multiple is $\\boxed{{{lcm}}}$."
    return problem, solution, str(lcm), 2


KINDS = {"add_fractions": add_fractions, "simplify_root": simplify_root, "circle_area": circle_area,
         "linear_equation": linear_equation, "gcd_lcm": gcd_lcm}


def latex_problem(rng: random.Random, kind: str | None = None) -> dict:
    kind = kind or rng.choice(sorted(KINDS))
    problem, solution, answer, level = KINDS[kind](rng)
    return {"problem": problem, "solution": solution, "answer": answer, "level": f"Level {level}", "type": kind}


@dataclass
class LatexProblemsTask:
    """`num_train` + `num_eval` distinct MATH-format problems from `seed`."""

    num_train: int = 150
    num_eval: int = 50
    seed: int = 0

    def build(self) -> DatasetDict:
        return distinct_splits(latex_problem, "problem", self.num_train, self.num_eval, self.seed)
