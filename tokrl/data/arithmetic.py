"""Seeded arithmetic word problems with chat-formatted prompts and disjoint train/eval splits."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from datasets import Dataset, DatasetDict

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
INSTRUCTION = "Reply with only the final number."
WORD_TEMPLATES = {
    "+": [
        "{name} has {a} apples and buys {b} more. How many apples does {name} have now?",
        "A box holds {a} pens. {name} puts in {b} more pens. How many pens are in the box?",
    ],
    "-": [
        "{name} has {a} coins and spends {b}. How many coins are left?",
        "A shelf has {a} books. {name} takes away {b}. How many books remain?",
    ],
    "*": [
        "{name} buys {a} bags with {b} marbles in each. How many marbles is that?",
        "There are {a} rows of {b} chairs. How many chairs are there?",
    ],
}
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana"]


@dataclass
class ArithmeticTask:
    """Problems `a op b` with operands in [min_value, max_value].

    `style="plain"` asks "What is a + b?"; `style="word"` wraps it in a short word problem. The pairs are
    shuffled with `seed`, the first `num_eval` form the eval split and the train split is drawn from the rest,
    so no eval problem is ever trained on. Every prompt ends with an instruction to reply with the number only.
    """

    min_value: int = 0
    max_value: int = 20
    ops: tuple[str, ...] = ("+",)
    style: str = "plain"
    num_train: int = 2000
    num_eval: int = 100
    seed: int = 0
    system_prompt: str | None = None

    def __post_init__(self):
        self.ops = tuple(self.ops)
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ValueError(f"task.ops: unknown operator(s) {unknown}; choose from {list(OPS)}")
        if self.style not in ("plain", "word"):
            raise ValueError(f"task.style must be 'plain' or 'word', got {self.style!r}")
        if self.max_value < self.min_value:
            raise ValueError("task.max_value must be >= task.min_value")
        if self.num_train < 1 or self.num_eval < 0:
            raise ValueError("task.num_train must be >= 1 and task.num_eval >= 0")

    def problems(self) -> list[tuple[int, str, int]]:
        values = range(self.min_value, self.max_value + 1)
        items = [(a, op, b) for op in self.ops for a, b in itertools.product(values, values)]
        if "-" in self.ops:  # keep subtraction answers non-negative
            items = [(a, op, b) for a, op, b in items if op != "-" or a >= b]
        random.Random(self.seed).shuffle(items)
        return items

    def question(self, a: int, op: str, b: int, rng: random.Random) -> str:
        if self.style == "plain":
            return f"What is {a} {op} {b}? {INSTRUCTION}"
        template = rng.choice(WORD_TEMPLATES[op])
        return template.format(a=a, b=b, name=rng.choice(NAMES)) + " " + INSTRUCTION

    def row(self, a: int, op: str, b: int, rng: random.Random) -> dict:
        question = self.question(a, op, b, rng)
        messages = [{"role": "user", "content": question}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return {"prompt": messages, "question": question, "answer": str(OPS[op](a, b))}

    def build(self) -> DatasetDict:
        items = self.problems()
        if self.num_eval >= len(items):
            raise ValueError(f"task.num_eval={self.num_eval} leaves no training problems ({len(items)} in all)")
        eval_items, train_pool = items[: self.num_eval], items[self.num_eval :]
        rng = random.Random(self.seed + 1)
        train_items = [train_pool[i % len(train_pool)] for i in range(self.num_train)]
        rng.shuffle(train_items)
        return DatasetDict(
            train=Dataset.from_list([self.row(*it, rng) for it in train_items]),
            eval=Dataset.from_list([self.row(*it, rng) for it in eval_items]),
        )


def make_arithmetic_dataset(**kwargs) -> DatasetDict:
    return ArithmeticTask(**kwargs).build()
