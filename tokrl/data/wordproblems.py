"""Seeded grade-school word problems in GSM8K's format: `question`, and `answer` = worked steps ending '#### N'.

Each problem takes two or three arithmetic steps (the steps carry GSM8K's `<<a*b=c>>` calculator notes), so a
small model solves some and not others: enough signal for GRPO on a CPU without downloading GSM8K. The same
seed always gives the same problems; the eval split never shares a question with the train split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from datasets import DatasetDict

from tokrl.data.generated import distinct_splits

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Mateo",
         "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara"]
ITEMS = ["apples", "stickers", "marbles", "pencils", "cookies", "cards", "shells", "stamps", "books", "beads"]


def _step(a: int, op: str, b: int) -> tuple[int, str]:
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    return value, f"{a}{op}{b}={value}"


def buy_and_share(rng: random.Random):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    packs, per, given = rng.randint(2, 9), rng.randint(3, 12), rng.randint(1, 15)
    total, note1 = _step(packs, "*", per)
    if given >= total:
        given = total - 1
    left, note2 = _step(total, "-", given)
    q = (f"{name} buys {packs} packs of {item} with {per} {item} in each pack. {name} gives {given} {item} to a "
         f"friend. How many {item} does {name} have left?")
    steps = [f"{name} buys {packs} * {per} = <<{note1}>>{total} {item}.",
             f"After giving some away, {name} has {total} - {given} = <<{note2}>>{left} {item} left."]
    return q, steps, left


def earnings(rng: random.Random):
    name = rng.choice(NAMES)
    rate, hours, days, spend = rng.randint(5, 20), rng.randint(2, 8), rng.randint(2, 6), rng.randint(5, 40)
    per_day, note1 = _step(rate, "*", hours)
    total, note2 = _step(per_day, "*", days)
    spend = min(spend, total - 1)
    left, note3 = _step(total, "-", spend)
    q = (f"{name} earns ${rate} an hour and works {hours} hours a day for {days} days. Then {name} spends ${spend} "
         f"on a gift. How many dollars does {name} have left?")
    steps = [f"Each day {name} earns {rate} * {hours} = $<<{note1}>>{per_day}.",
             f"In {days} days that is {per_day} * {days} = $<<{note2}>>{total}.",
             f"After the gift {name} has {total} - {spend} = $<<{note3}>>{left}."]
    return q, steps, left


def split_evenly(rng: random.Random):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    friends, each = rng.randint(2, 8), rng.randint(3, 10)
    total, note1 = _step(friends, "*", each)
    extra = rng.randint(1, total - 1)
    start, note2 = _step(total, "-", extra)
    q = (f"{name} has some {item}. After finding {extra} more, {name} has enough to give each of {friends} friends "
         f"{each} {item} with none left over. How many {item} did {name} have at first?")
    steps = [f"The friends get {friends} * {each} = <<{note1}>>{total} {item} in all.",
             f"Before finding {extra}, {name} had {total} - {extra} = <<{note2}>>{start} {item}."]
    return q, steps, start


def rows_and_more(rng: random.Random):
    name = rng.choice(NAMES)
    rows, per, added, removed = rng.randint(3, 12), rng.randint(4, 15), rng.randint(2, 20), rng.randint(1, 10)
    base, note1 = _step(rows, "*", per)
    more, note2 = _step(base, "+", added)
    removed = min(removed, more - 1)
    final, note3 = _step(more, "-", removed)
    q = (f"A garden has {rows} rows of {per} tulips. {name} plants {added} more tulips, and then {removed} tulips "
         f"are picked. How many tulips are in the garden now?")
    steps = [f"The rows hold {rows} * {per} = <<{note1}>>{base} tulips.",
             f"After planting there are {base} + {added} = <<{note2}>>{more} tulips.",
             f"After picking there are {more} - {removed} = <<{note3}>>{final} tulips."]
    return q, steps, final


def halves(rng: random.Random):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    start = 2 * rng.randint(5, 40)
    bought = rng.randint(3, 25)
    half, note1 = _step(start, "/", 2)
    total, note2 = _step(half, "+", bought)
    q = (f"{name} had {start} {item} and gave half of them to a sister. Then {name} bought {bought} more. How many "
         f"{item} does {name} have now?")
    steps = [f"Half of {start} is {start} / 2 = <<{note1}>>{half}, so {name} kept {half} {item}.",
             f"After buying more, {name} has {half} + {bought} = <<{note2}>>{total} {item}."]
    return q, steps, total


KINDS = {"buy_and_share": buy_and_share, "earnings": earnings, "split_evenly": split_evenly,
         "rows_and_more": rows_and_more, "halves": halves}


def word_problem(rng: random.Random, kind: str | None = None) -> dict:
    """One problem as a GSM8K row: {"question", "answer": steps + '#### N'} plus its `kind`."""
    kind = kind or rng.choice(sorted(KINDS))
    question, steps, value = KINDS[kind](rng)
    return {"question": question, "answer": "\n".join(steps) + f"\n#### {value}", "kind": kind}


@dataclass
class WordProblemsTask:
    """`num_train` + `num_eval` distinct GSM8K-format problems from `seed` (a few hundred by default)."""

    num_train: int = 300
    num_eval: int = 100
    seed: int = 0

    def build(self) -> DatasetDict:
        return distinct_splits(word_problem, "question", self.num_train, self.num_eval, self.seed)
