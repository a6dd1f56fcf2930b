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
