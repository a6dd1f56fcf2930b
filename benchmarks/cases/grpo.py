"""GRPO step time and peak memory: tokrl's weighted trainers vs TRL's GRPOTrainer, and CPU defaults vs TRL's.

Same model (SmolLM2-135M-Instruct, the embedded GGUF converted once), data (arithmetic prompts), seed and config
for every contender. Generation is forced to the full `max_completion_length` (`min_new_tokens`), so every
contender does the same work in every step even after its weights have diverged.

Contenders:
- `trl`: `trl.GRPOTrainer` with the precision and checkpointing that tokrl's defaults resolve to on this machine
  (`tokrl.trainers.device_defaults.default_precision`: a like-for-like comparison);
- `tokrl-uniform`: `WeightedGRPOTrainer` with uniform weights and `WeightedGRPOConfig`'s defaults;
- `tokrl-forking`: `ForkingGRPOTrainer` with its defaults (rho = 0.2, the paper's forking mask);
- `trl-defaults` (CPU only): `GRPOConfig(use_cpu=True)` with TRL's own defaults, bf16=True (autocast) and
  gradient_checkpointing=True. Without `use_cpu=True`, `GRPOConfig()` on a CPU-only machine raises
  "Your setup doesn't support bf16/gpu".

The CPU precision settings themselves (fp32, bf16 autocast, bf16 + checkpointing) are compared per phase by the
opt-in case `grpo-profile` (`benchmarks/cases/grpo_profile.py`).
"""

from __future__ import annotations

import statistics
import tempfile

import torch
from transformers import TrainerCallback

from benchmarks import clock
from benchmarks.registry import Case, Result, Target, register

MODEL = "smollm2-135m-instruct"


class StepTimer(TrainerCallback):
    """Wall and CPU seconds of every optimizer step (generation, scoring, loss, backward, optimizer)."""

    def __init__(self):
        self.times: list[tuple[float, float]] = []
        self._start = (0.0, 0.0)

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = clock.now()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(clock.since(self._start))


class ForwardCounter:
    """Backbone forwards by kind: `train` (with grad), `score` (no-grad log-prob passes: old/ref policy),
    `generate` (the rest). A weighted trainer must add no `train` or `score` pass to TRL's."""

    def __init__(self, trainer):
        from tokrl.model_head import backbone_of

        self.counts = {"train": 0, "score": 0, "generate": 0}
        self._scoring = 0
        backbone_of(trainer.model).register_forward_hook(self._hook)
        score = trainer._get_per_token_logps_and_entropies

        def counted(*args, **kwargs):
            self._scoring += 1
            try:
                return score(*args, **kwargs)
            finally:
                self._scoring -= 1

        trainer._get_per_token_logps_and_entropies = counted

    def _hook(self, module, args, output):
        kind = "train" if torch.is_grad_enabled() else ("score" if self._scoring else "generate")
        self.counts[kind] += 1


def settings(quick: bool) -> dict:
    # per step: one group of 4 completions of a fixed length; the first step is a warm-up and not timed
    return {"completion_length": 8 if quick else 16, "timed_steps": 1 if quick else 2, "group": 4, "prompts": 1}


def recipe_settings(quick: bool) -> dict:
    """`recipes/grpo_arithmetic.yaml`'s step: 16 completions (2 prompts x 8) of at most 24 tokens."""
    if quick:
        return {"completion_length": 8, "timed_steps": 1, "group": 4, "prompts": 1}
    return {"completion_length": 24, "timed_steps": 2, "group": 8, "prompts": 2}


def trainer_args(tokrl_precision: bool = False, **fields) -> dict:
    """Config fields every trainer contender shares: a fresh output dir, lr 1e-6, seed 0, no saving or reporting;
    with `tokrl_precision`, the precision and checkpointing tokrl resolves on this machine (for TRL's parents)."""
    from tokrl.trainers.device_defaults import default_precision, has_accelerator

    common = dict(
        output_dir=tempfile.mkdtemp(prefix="tokrl-bench-"),
        learning_rate=1e-6,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
    )
    if tokrl_precision:
        common.update(default_precision(), use_cpu=not has_accelerator())
    return {**common, **fields}


def grpo_config(s: dict, force_length: bool = True, **overrides) -> dict:
    """The config every GRPO contender shares (as keyword arguments of a `GRPOConfig` subclass)."""
    common = trainer_args(
        per_device_train_batch_size=s["group"] * s["prompts"],
        num_generations=s["group"],
        max_completion_length=s["completion_length"],
        max_steps=1 + s["timed_steps"],
    )
    if force_length:
        common["generation_kwargs"] = {"min_new_tokens": s["completion_length"]}
    return {**common, **overrides}


def smollm2(layers: int | None = None):
    """SmolLM2-135M-Instruct and its tokenizer; `layers` keeps only the first decoder layers (real weights,
    tokenizer and vocabulary, a fraction of the compute: the per-token extras of a weighter then weigh more)."""
    from tokrl.models import load_model

    model, tokenizer = load_model(MODEL)
    if layers is not None:
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
    return model, tokenizer


def build_trainer(trainer_cls, args, callbacks=(), layers=None, reward_funcs=None, **kwargs):
    """SmolLM2 on the arithmetic task with the accuracy and format rewards (the demo's model, data and rewards)."""
    from tokrl.data.arithmetic import ArithmeticTask
    from tokrl.rewards import accuracy_reward, format_reward

    model, tokenizer = smollm2(layers)
    data = ArithmeticTask(num_train=64, num_eval=0, seed=0).build()["train"]
    return trainer_cls(
        model=model,
        reward_funcs=reward_funcs or [accuracy_reward, format_reward],
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=list(callbacks),
        **kwargs,
    )


def step_result(timer: StepTimer, args, forwards: ForwardCounter | None = None, skip: int = 1) -> Result:
    """Median wall/CPU seconds of the steps after the first `skip` (warm-up) steps."""
    timed = timer.times[skip:]
    extra = {
        "bf16": bool(args.bf16),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "step_wall_s": [round(t[0], 3) for t in timer.times],
        "step_cpu_s": [round(t[1], 3) for t in timer.times],
    }
    if forwards is not None:
        extra["forwards_per_step"] = {k: v / len(timer.times) for k, v in forwards.counts.items()}
    return Result(
        wall=statistics.median(t[0] for t in timed), cpu=statistics.median(t[1] for t in timed), extra=extra
    )


def timed_training(trainer, timer: StepTimer, args):
    """The `run()` of a trainer case: train, then the median step after the warm-up."""

    def run() -> Result:
        trainer.train()
        return step_result(timer, args)

    return run


def load(contender: str, quick: bool):
    from trl import GRPOConfig, GRPOTrainer

    from tokrl.trainers import ForkingGRPOConfig, ForkingGRPOTrainer, WeightedGRPOConfig, WeightedGRPOTrainer

    gpu = torch.cuda.is_available()
    common = grpo_config(settings(quick))
    if contender == "trl":
        trainer_cls, args = GRPOTrainer, GRPOConfig(**trainer_args(True, **common))
    elif contender == "trl-defaults":
        trainer_cls, args = GRPOTrainer, GRPOConfig(**common, use_cpu=not gpu)
    elif contender == "tokrl-uniform":
        trainer_cls, args = WeightedGRPOTrainer, WeightedGRPOConfig(**common)
    elif contender == "tokrl-forking":
        trainer_cls, args = ForkingGRPOTrainer, ForkingGRPOConfig(**common)
    else:
        raise ValueError(contender)
    timer = StepTimer()
    trainer = build_trainer(trainer_cls, args, callbacks=[timer])
    forwards = ForwardCounter(trainer)

    def run() -> Result:
        trainer.train()
        return step_result(timer, args, forwards)

    return run


register(
    Case(
        name="grpo",
        description="GRPO step on SmolLM2-135M: tokrl trainers vs TRL (same config), tokrl CPU defaults vs TRL's",
        contenders=["trl", "tokrl-uniform", "tokrl-forking"]
        + ([] if torch.cuda.is_available() else ["trl-defaults"]),
        load=load,
        targets=[
            Target("uniform time vs TRL", "time", "tokrl-uniform", "trl", 1.05),
            Target("uniform memory vs TRL", "memory", "tokrl-uniform", "trl", 1.05),
            Target("forking time vs uniform", "time", "tokrl-forking", "tokrl-uniform", 1.02),
            Target("forking memory vs uniform", "memory", "tokrl-forking", "tokrl-uniform", 1.02),
        ]
        + (
            []
            if torch.cuda.is_available()
            else [
                Target(
                    "TRL's defaults time / tokrl's CPU defaults (>= 1: tokrl's are faster)",
                    "time",
                    "trl-defaults",
                    "tokrl-uniform",
                    1.0,
                    at_least=True,
                )
            ]
        ),
        notes=__doc__,
    )
)

