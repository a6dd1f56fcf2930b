"""Let a GRPO trainer's reward functions return per-token rewards, and turn them into `[B, T]` advantages.

TRL 1.16 calls each reward function inside `_calculate_rewards` and stores its output with
`torch.tensor(output)`, one float per completion, so a list per completion cannot pass through TRL. The least
invasive route: wrap each plain (synchronous, non-module) reward function once, at trainer init. A call whose
output holds numbers is returned untouched (so runs without token rewards are TRL's, bit for bit). A call that
returns per-token entries (see `tokrl.rewards.token_rewards`) is kept aside, TRL gets the per-completion sum for
its logs and completion table, and that function's TRL weight is set to 0 so the sum does not enter the
sequence reward; its own `reward_weights` entry scales its token rewards instead.

After TRL has computed the sequence advantages, `to_advantages(output)` replaces `output["advantages"]` (`[B]`) by
`[B, T]` advantages with the configured estimator (`tokrl.rewards.token_advantages`). TRL's `_compute_loss` keeps
a 2-D advantage as is (pinned by a test), so weights from a weighter still multiply the per-token loss on top.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from tokrl.rewards.token_advantages import (
    ESTIMATORS,
    normalized_process_rewards,
    process_advantages,
    token_advantages,
)
from tokrl.rewards.token_rewards import is_token_output, sequence_summary, token_reward_tensors


class TokenRewardFunctions:
    """Wraps `trainer.reward_funcs` in place; `to_advantages` builds per-token advantages when any returned lists."""

    def __init__(self, trainer, estimator: str = "process"):
        if estimator not in ESTIMATORS:
            raise ValueError(f"token_advantage must be one of {ESTIMATORS}, got {estimator!r}")
        self.trainer = trainer
        self.estimator = estimator
        self.user_weights = trainer.reward_weights.detach().clone().float()
        self.pending: dict[int, tuple[list, list]] = {}  # function index -> (entries, completion_ids)
        for i, func in enumerate(trainer.reward_funcs):
            if not isinstance(func, nn.Module) and not inspect.iscoroutinefunction(func):
                trainer.reward_funcs[i] = self.wrap(i, func)

    def wrap(self, index: int, func):
        name = self.trainer.reward_func_names[index]

        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            out = func(*args, **kwargs)
            if out is None or not is_token_output(out, name):
                return out
            self.pending[index] = (list(out), [list(ids) for ids in kwargs.get("completion_ids") or []])
            self.trainer.reward_weights[index] = 0.0  # the sum is for TRL's logs only
            return [sequence_summary(entry) for entry in out]

        return wrapped

    # ---- advantages -----------------------------------------------------------------------------------------

    def to_advantages(self, output: dict) -> dict:
        """Replace `output["advantages"]` by `[B, T]` per-token advantages; untouched without token rewards."""
        if not self.pending:
            return output
        pending, self.pending = self.pending, {}
        trainer = self.trainer
        mask = output["completion_mask"]
        width = mask.shape[1]
        completion_ids = next(iter(pending.values()))[1]
        if len(completion_ids) != mask.shape[0]:
            raise RuntimeError("token rewards: the reward function did not receive completion_ids for every completion")
        functions = [(float(self.user_weights[i]), entries) for i, (entries, _) in sorted(pending.items())]
        names = [trainer.reward_func_names[i] for i in sorted(pending)]
        placement = "last" if self.estimator == "process" else "all"
        tokenizer = getattr(trainer, "_tokenizer", None) or trainer.processing_class
        rewards, rewarded = token_reward_tensors(functions, completion_ids, width, tokenizer, placement, names)
        rewards, rewarded = rewards.to(mask.device), rewarded.to(mask.device)
        if self.estimator == "token":
            advantages = token_advantages(rewards, mask)
        else:
            all_rewards, all_rewarded = self.gather_rows(rewards), self.gather_rows(rewarded.float()).bool()
            num_generations = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
            normalized = normalized_process_rewards(all_rewards, all_rewarded, num_generations, trainer.scale_rewards)
            rank, rows = trainer.accelerator.process_index, mask.shape[0]
            local = normalized[rank * rows : (rank + 1) * rows, :width]
            advantages = process_advantages(output["advantages"], local, mask)
        output["advantages"] = advantages
        self.log(rewards, rewarded, mask)
        return output

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate `[B, T_rank]` tensors of all processes along dim 0, right-padding T with 0."""
        accelerator = self.trainer.accelerator
        if accelerator.num_processes == 1:
            return x
        return accelerator.gather(accelerator.pad_across_processes(x.contiguous(), dim=1, pad_index=0))

    def log(self, rewards: torch.Tensor, rewarded: torch.Tensor, mask: torch.Tensor) -> None:
        trainer = self.trainer
        stats = torch.stack([(rewards * mask).sum(), (rewarded.float() * mask).sum(), mask.float().sum()])
        stats = trainer.accelerator.reduce(stats, reduction="sum") if trainer.accelerator.num_processes > 1 else stats
        total, count, tokens = stats.tolist()
        trainer.log_metric("token_rewards/mean_per_rewarded_token", total / max(count, 1.0))
        trainer.log_metric("token_rewards/rewarded_frac", count / max(tokens, 1.0))
