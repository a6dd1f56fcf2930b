"""Verifiable rewards, in TRL's reward-function signature, registered by name for recipes."""

from tokrl.rewards.arithmetic import REWARDS, accuracy_reward, extract_answer, format_reward, resolve_rewards

__all__ = ["REWARDS", "accuracy_reward", "format_reward", "extract_answer", "resolve_rewards"]
