"""Where a GRPO step's time goes: wrappers around a trainer's TRL methods, timing each phase (wall and CPU).

Nothing of TRL is copied: the trainer's own methods are wrapped on the instance (`trainer.<name> = wrapped`), so
TRL's `self.<name>(...)` calls go through the stopwatch. Phases nest (the loss forward runs inside
`compute_loss`, generation inside `_generate_and_score_completions`), so each phase is charged its *exclusive*
time: its own seconds minus those of the phases it called. The optimizer step is timed from the
`on_pre_optimizer_step` to the `on_optimizer_step` callback, the whole step from `on_step_begin` to `on_step_end`;
what no phase claims is `other` (data loading, gradient clipping, logging, callbacks).
"""

from __future__ import annotations

import functools
from collections import defaultdict

import torch
from transformers import TrainerCallback

from benchmarks import clock

# (phase, object attribute path on the trainer, method name); the forward's phase depends on grad mode
WRAPPED = (
    ("generation", None, "_generate_single_turn"),
    ("reward", None, "_calculate_rewards"),
    ("forward", None, "_get_per_token_logps_and_entropies"),
    ("weighting", None, "get_high_entropy_mask"),
    ("rollout bookkeeping", None, "_generate_and_score_completions"),
    ("loss (rest of compute_loss)", None, "compute_loss"),
    ("backward", "accelerator", "backward"),
)
ORDER = (
    "generation",
    "reward",
    "log-prob forward (no grad: old/ref policy)",
    "log-prob/entropy forward (with grad)",
    "loss (rest of compute_loss)",
    "weighting",
    "backward",
    "optimizer",
    "rollout bookkeeping",
    "other",
)


class PhaseTimer(TrainerCallback):
    """Per optimizer step: exclusive wall and CPU seconds of each phase, and the completion tokens generated."""

    def __init__(self, trainer):
        self.steps: list[dict[str, tuple[float, float]]] = []
        self.step_totals: list[tuple[float, float]] = []
        self.generated: list[int] = []  # completion tokens generated in each step
        self.decode_steps: list[int] = []  # longest completion of each generation call (= decode iterations)
        self.prefill: list[int] = []  # prompt positions run through the model at prefill (rows x padded length)
        self._phases: dict = defaultdict(lambda: [0.0, 0.0])
        self._stack: list[list] = []
        self._tokens = self._decode = self._prefill = 0
        self._step_start = self._opt_start = (0.0, 0.0)
        for phase, owner, name in WRAPPED:
            target = getattr(trainer, owner) if owner else trainer
            setattr(target, name, self._wrap(phase, getattr(target, name)))
        trainer.add_callback(self)

    def _wrap(self, phase, method):
        @functools.wraps(method)
        def timed(*args, **kwargs):
            name = phase
            if phase == "forward":
                name = ("log-prob/entropy forward (with grad)" if torch.is_grad_enabled()
                        else "log-prob forward (no grad: old/ref policy)")
            frame = [name, clock.now(), 0.0, 0.0]  # name, start, children wall, children CPU
            self._stack.append(frame)
            try:
                out = method(*args, **kwargs)
            finally:
                wall, cpu = clock.since(frame[1])
                self._stack.pop()
                self._phases[name][0] += wall - frame[2]
                self._phases[name][1] += cpu - frame[3]
                if self._stack:
                    self._stack[-1][2] += wall
                    self._stack[-1][3] += cpu
            if phase == "generation":
                prompts = args[0]
                self._prefill += len(prompts) * max((len(p) for p in prompts), default=0)
                completions = out[0]
                self._tokens += sum(len(c) for c in completions)
                self._decode = max(self._decode, max((len(c) for c in completions), default=0))
            return out

        return timed

    def on_step_begin(self, args, state, control, **kwargs):
        self._phases = defaultdict(lambda: [0.0, 0.0])
        self._tokens = self._decode = self._prefill = 0
        self._step_start = clock.now()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._opt_start = clock.now()

    def on_optimizer_step(self, args, state, control, **kwargs):
        wall, cpu = clock.since(self._opt_start)
        self._phases["optimizer"][0] += wall
        self._phases["optimizer"][1] += cpu

    def on_step_end(self, args, state, control, **kwargs):
        total = clock.since(self._step_start)
        phases = {k: tuple(v) for k, v in self._phases.items()}
        phases["other"] = (total[0] - sum(v[0] for v in phases.values()), total[1] - sum(v[1] for v in phases.values()))
        self.steps.append(phases)
        self.step_totals.append(total)
        self.generated.append(self._tokens)
        self.decode_steps.append(self._decode)
        self.prefill.append(self._prefill)
