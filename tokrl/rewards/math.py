"""`math` reward: the completion's final answer (in \\boxed{} or after '####') equals the gold answer, as judged by
math-verify (symbolic comparison: 1/2 = \\frac{1}{2} = 0.5, \\sqrt{18} = 3\\sqrt{2}, 1,000 = 1000).

Units and currency around a number are dropped before the comparison ('72 dollars', '\\$18', '5\\text{ cm}').
Without a \\boxed{} or '####' the last number of the completion is taken, unless `strict=True`.
"""

from __future__ import annotations

import re

from tokrl.data.dataset import BOXED, gold_answer, last_boxed
from tokrl.rewards.arithmetic import NUMBER, completion_text

TEXT_GROUP = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
TRAILING_WORDS = re.compile(r"(?<=[\d}.])\s*[A-Za-z][A-Za-z .]*$")


def stated_answer(text: str, strict: bool = False) -> str | None:
    """The completion's final answer: whichever of the last \\boxed{} and the last '####' comes later."""
    hashes = text.rfind("####")
    boxes = [m.start() for m in BOXED.finditer(text)]
    if boxes and (hashes < 0 or boxes[-1] > hashes):
        return last_boxed(text)
    if hashes >= 0:
        return text[hashes + 4:].strip().splitlines()[0].strip() if text[hashes + 4:].strip() else None
    if strict:
        return None
    found = NUMBER.findall(text.replace(",", ""))
    return found[-1] if found else None


def normalize(answer: str) -> str:
    """Drop units, currency signs and spacing commands around the value."""
    s = TEXT_GROUP.sub(lambda m: "" if re.fullmatch(r"[A-Za-z .]*", m.group(1)) else m.group(1), answer)
    s = s.replace("\\$", "").replace("$", "").replace("\\!", "").replace("\\,", "").replace("\\ ", " ").strip()
    s = TRAILING_WORDS.sub("", s).strip().rstrip(".")
    return s


def _parse(answer: str):
    from math_verify import parse  # deferred: math-verify (sympy) is heavy and only the math reward needs it

    return parse(f"${normalize(answer)}$")


def same_answer(pred: str | None, gold) -> bool:
    """math-verify's judgement that `pred` and the gold answer are the same value (False when either won't parse).

    A gold cell holding a whole solution ('... #### 72', '... \\boxed{72}') is reduced to its final answer."""
    if pred is None or gold is None:
        return False
    from math_verify import verify  # deferred: as above

    gold_parsed, pred_parsed = _parse(gold_answer(gold)), _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    try:
        return bool(verify(gold_parsed, pred_parsed))
    except Exception:  # a sympy corner case must not stop training: count it as wrong
        return False


def math_reward(completions, answer, strict: bool = False, **kwargs) -> list[float]:
    """1.0 when the completion's final answer equals `answer` (a dataset column) per math-verify, else 0.0."""
    return [float(same_answer(stated_answer(completion_text(c), strict), a)) for c, a in zip(completions, answer)]
