"""Rewards for tasks whose answer is one number: exact match of the final number, and a format reward."""

from __future__ import annotations

import re

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def completion_text(completion) -> str:
    """A TRL completion is a string, or a list of messages for conversational prompts."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def extract_answer(text: str) -> str | None:
    """The last number in the text (commas dropped), or None."""
    found = NUMBER.findall(text.replace(",", ""))
    return found[-1] if found else None


def _same_number(pred: str | None, answer) -> bool:
    if pred is None:
        return False
    try:
        return float(pred) == float(answer)
    except ValueError:
        return False


def accuracy_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 when the completion's final number equals `answer` (a dataset column), else 0.0."""
    return [float(_same_number(extract_answer(completion_text(c)), a)) for c, a in zip(completions, answer)]


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 when the completion is just a number (what the prompt asks for), else 0.0."""
    return [float(bool(re.fullmatch(r"\s*-?\d+(?:\.\d+)?\s*\.?\s*", completion_text(c)))) for c in completions]


def answer_spans_reward(completions, answer, **kwargs) -> list[list]:
    """A process reward on spans of the text: `((start, end), reward)` pairs per completion.

    The final number's characters get +1 when it equals `answer`, -1 otherwise; text before it and text after it
    (other than spaces and a closing period) get -0.5 each; a completion without a number gets -1 on all of it.
    With `token_advantage: process` each span's reward sits on its last token.
    """
    out = []
    for c, a in zip(completions, answer):
        text = completion_text(c)
        found = list(NUMBER.finditer(text))
        if not found:
            out.append([((0, len(text)), -1.0)] if text else [])
            continue
        start, end = found[-1].span()
        spans = [((start, end), 1.0 if _same_number(found[-1].group(), a) else -1.0)]
        if text[:start].strip():
            spans.insert(0, ((0, start), -0.5))
        if text[end:].strip().strip(".").strip():
            spans.append(((end, len(text)), -0.5))
        out.append(spans)
    return out
