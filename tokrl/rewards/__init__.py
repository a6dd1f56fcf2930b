"""Verifiable rewards, in TRL's reward-function signature, registered by name for recipes."""

from tokrl.rewards.arithmetic import accuracy_reward, extract_answer, format_reward
from tokrl.rewards.math import math_reward
from tokrl.rewards.registry import REWARDS, check_reward, resolve_rewards, score_completions

__all__ = ["REWARDS", "accuracy_reward", "math_reward", "format_reward", "extract_answer", "resolve_rewards",
           "check_reward", "score_completions"]
