"""A user's own reward, beside the recipe that names it (`reward: [my_rewards:shows_work]`): no PYTHONPATH needed.

TRL calls every reward with the completions and every dataset column as keyword arguments; this one reads the
`kind` column the dataset carries (problems.jsonl) to know how many steps a full solution takes.
"""

import re

STEPS = {"buy_and_share": 2, "earnings": 3, "split_evenly": 2, "rows_and_more": 3, "halves": 2}


def shows_work(completions, kind, weight=0.1, **kwargs):
    """`weight` x the fraction of the problem's steps written out as equations ('a * b = c')."""
    out = []
    for completion, k in zip(completions, kind):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        equations = len(re.findall(r"\d\s*[-+*/x]\s*\d+\s*=\s*\$?\d", text))
        out.append(weight * min(equations, STEPS.get(k, 2)) / STEPS.get(k, 2))
    return out
