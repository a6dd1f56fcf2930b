"""THR-GRPO with each hidden-state source vs uniform GRPO (`WeightedGRPOTrainer`), same config and data.

Model: SmolLM2-135M-Instruct truncated to its first 4 of 30 decoder layers (real weights, tokenizer and 49,152-token
vocabulary; `benchmarks.cases.grpo.smollm2`), so a step is several times cheaper and THR's own work (the group's
prediction-error vectors over V*, the captured states) weighs correspondingly more against the step than in a full
model: the ratios here are an upper bound for the full model. Per step: 2 prompts x 4 completions of exactly 10
tokens; step 1 is a warm-up, step 2 is timed. The reward is the fraction of digit characters in the completion
(`digit_fraction`), so rewards differ inside every group and THR's weighting runs on every group (arithmetic
accuracy is 0 for nearly all groups of a truncated model, which would skip it). THR with p = 0.2.

Hidden-state sources (`WeightedGRPOTrainer`'s rollout weighters, `tokrl/trainers/rollout.py`) and their
like-for-like baselines:
- `thr-generation` (`rollout_state_source="auto"`, default config): states captured during generation;
- `thr-extra` (`rollout_state_source="forward"`): one extra no-grad forward per generation batch (exempt from the
  bars; reported);
  both against `uniform` (one generation per optimizer step, TRL runs no old-log-prob pass);
- `thr-reused` vs `uniform-2gen`: `steps_per_generation=2`, so TRL runs its no-grad old-log-prob pass and THR reuses
  its states. A generation serves two optimizer steps, so the unit is the mean of a generation step and the step
  after it (steps 3 and 4; steps 1 and 2 are the warm-up).
"""

from __future__ import annotations

from benchmarks.cases.grpo import ForwardCounter, StepTimer, build_trainer, grpo_config, step_result
from benchmarks.registry import Case, Result, Target, register

LAYERS = 4
SOURCES = {
    "uniform": dict(),
    "thr-generation": dict(rollout_state_source="auto"),
    "thr-extra": dict(rollout_state_source="forward"),
    "uniform-2gen": dict(steps_per_generation=2),
    "thr-reused": dict(rollout_state_source="auto", steps_per_generation=2),
}


def digit_fraction(completions, **kwargs):
    """Fraction of digit characters in each completion: a reward that differs inside every group."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def load(contender: str, quick: bool):
    from tokrl.trainers import THRGRPOConfig, THRGRPOTrainer, WeightedGRPOConfig, WeightedGRPOTrainer

    overrides = dict(SOURCES[contender])
    two_gen = "steps_per_generation" in overrides
    # two-generation configs: steps 1-2 warm up, 3-4 timed (max_steps = 1 + timed_steps; the median of two is
    # their mean); otherwise step 1 warms up and step 2 is timed
    timed = 3 if two_gen else 1
    s = {"completion_length": 6 if quick else 10, "group": 4, "prompts": 2, "timed_steps": timed}
    common = grpo_config(s, **overrides)
    if contender.startswith("thr"):
        trainer_cls, args = THRGRPOTrainer, THRGRPOConfig(**common, weighting={"name": "thr", "p": 0.2})
    else:
        trainer_cls, args = WeightedGRPOTrainer, WeightedGRPOConfig(**common)
    timer = StepTimer()
    trainer = build_trainer(trainer_cls, args, callbacks=[timer], layers=LAYERS, reward_funcs=[digit_fraction])
    forwards = ForwardCounter(trainer)

    def run() -> Result:
        trainer.train()
        result = step_result(timer, args, forwards, skip=2 if two_gen else 1)
        result.extra["rollout_passes"] = getattr(trainer, "rollout_passes", None)
        return result

    return run


register(
    Case(
        name="thr",
        description="THR-GRPO per hidden-state source vs uniform GRPO (SmolLM2 first 4 layers, 8 x 10 tokens a step)",
        contenders=list(SOURCES),
        load=load,
        targets=[
            Target("thr-generation time vs uniform", "time", "thr-generation", "uniform", 1.15),
            Target("thr-generation memory vs uniform", "memory", "thr-generation", "uniform", 1.10),
            Target("thr-reused time vs uniform-2gen", "time", "thr-reused", "uniform-2gen", 1.15),
            Target("thr-reused memory vs uniform-2gen", "memory", "thr-reused", "uniform-2gen", 1.10),
            Target("thr-extra time vs uniform (exempt, reported)", "time", "thr-extra", "uniform", 1.15),
            Target("thr-extra memory vs uniform (exempt, reported)", "memory", "thr-extra", "uniform", 1.10),
        ],
        notes=__doc__,
    )
)
