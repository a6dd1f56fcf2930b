"""Where a DPO-family step's time goes: `python -m benchmarks.dpo_profile [--contenders treg weighted] [--steps 6]`.

The `dpo` case's set-up (SmolLM2's first 4 layers, policy and reference, 2 arithmetic pairs a step, tokrl's
precision for this machine), trained under cProfile. Printed per contender: the whole run's profiled seconds and
the cumulative seconds of every function in tokrl's own code, so a time ratio against TRL's `DPOTrainer` can be
traced to tokrl's bookkeeping or ruled out as its cause.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats


def profile(contender: str, steps: int) -> pstats.Stats:
    from benchmarks.cases.dpo import LAYERS, preference_data
    from benchmarks.cases.grpo import smollm2, trainer_args
    from tokrl.trainers import TREGConfig, TREGTrainer, WeightedDPOConfig, WeightedDPOTrainer

    common = trainer_args(True, per_device_train_batch_size=2, max_steps=steps, beta=0.1)
    if contender == "treg":
        trainer_cls, args = TREGTrainer, TREGConfig(**common, treg_alpha=0.25)
    else:
        trainer_cls, args = WeightedDPOTrainer, WeightedDPOConfig(
            **common, weighting={"name": "column", "column": "token_weights"})
    policy, tokenizer = smollm2(LAYERS)
    reference, _ = smollm2(LAYERS)
    trainer = trainer_cls(model=policy, ref_model=reference, args=args, train_dataset=preference_data(tokenizer),
                          processing_class=tokenizer)
    profiler = cProfile.Profile()
    profiler.runcall(trainer.train)
    return pstats.Stats(profiler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contenders", nargs="+", default=["treg", "weighted"], choices=["treg", "weighted"])
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    for contender in args.contenders:
        stats = profile(contender, args.steps)
        out = io.StringIO()
        stats.stream = out
        stats.sort_stats("cumulative").print_stats(r"/tokrl/", 12)
        print(f"== {contender}: {stats.total_tt:.2f} s profiled over {args.steps} steps; tokrl's own functions:")
        print("\n".join(line for line in out.getvalue().splitlines() if "/tokrl/" in line or "ncalls" in line))


if __name__ == "__main__":
    main()
