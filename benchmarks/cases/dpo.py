"""Token-weighted DPO, cDPO and T-REG vs TRL's `DPOTrainer`: same model, reference, data and config.

Model: SmolLM2-135M-Instruct truncated to its first 4 of 30 decoder layers, policy and reference (real weights,
tokenizer and vocabulary; `benchmarks.cases.grpo.smollm2`): a step is several times cheaper and the per-token extras
(column collation, weighted sums, T-REG's regulariser) weigh correspondingly more against it than in the full model,
so the ratios are an upper bound for it. Data: 16 arithmetic preference pairs (the embedded task's chat prompts, ~45
tokens; chosen and rejected answers of ~20 tokens, the rejected one with a wrong sum), with seeded per-token columns
aligned with TRL's tokenisation (`tokrl.trainers.token_columns.completion_token_ids`): `token_weights` in [0, 1]
(cDPO's rejected `1 - p_CE`; chosen 1) and `token_rewards` in (-0.5, 0.5) (T-REG). 4 pairs a step, step 1 a warm-up,
step 2 timed. Every contender gets the same config (lr 1e-6, beta 0.1, the precision tokrl resolves on this
machine).

Contenders: `trl` (`trl.DPOTrainer`), `weighted` (`WeightedDPOTrainer` reading `token_weights`), `cdpo`
(`CDPOTrainer`, sequence granularity, its default), `treg` (`TREGTrainer`, alpha 0.25).
"""

from __future__ import annotations

import random

from benchmarks.cases.grpo import StepTimer, smollm2, timed_training, trainer_args
from benchmarks.registry import Case, Target, register

LAYERS = 4
CONTENDERS = ("trl", "weighted", "cdpo", "treg")


def preference_data(tokenizer, rows: int = 16):
    from datasets import Dataset

    from tokrl.data.arithmetic import ArithmeticTask
    from tokrl.trainers.token_columns import completion_token_ids

    task = ArithmeticTask(num_train=rows, num_eval=0, seed=0).build()["train"]
    rng = random.Random(0)
    out = []
    for i, row in enumerate(task):
        answer = int(row["answer"])
        wrong = answer + rng.choice([-3, -2, -1, 1, 2, 3])
        say = "Adding the two numbers step by step gives {}, so the answer is {}."
        example = {
            "prompt": row["prompt"],
            "chosen": [{"role": "assistant", "content": say.format(answer, answer)}],
            "rejected": [{"role": "assistant", "content": say.format(wrong, wrong)}],
        }
        ids = completion_token_ids(tokenizer, example)
        for side in ("chosen", "rejected"):
            n = len(ids[side])
            example[f"{side}_token_weights"] = [1.0] * n if side == "chosen" else [rng.random() for _ in range(n)]
            example[f"{side}_token_rewards"] = [rng.uniform(-0.49, 0.49) for _ in range(n)]
        out.append(example)
    return Dataset.from_list(out)


def load(contender: str, quick: bool):
    from trl import DPOConfig, DPOTrainer

    from tokrl.trainers import CDPOConfig, CDPOTrainer, TREGConfig, TREGTrainer, WeightedDPOConfig, WeightedDPOTrainer

    common = trainer_args(True, per_device_train_batch_size=2 if quick else 4, max_steps=2, beta=0.1)
    if contender == "trl":
        trainer_cls, args = DPOTrainer, DPOConfig(**common)
    elif contender == "weighted":
        weighting = {"name": "column", "column": "token_weights"}
        trainer_cls, args = WeightedDPOTrainer, WeightedDPOConfig(**common, weighting=weighting)
    elif contender == "cdpo":
        trainer_cls, args = CDPOTrainer, CDPOConfig(**common)
    elif contender == "treg":
        trainer_cls, args = TREGTrainer, TREGConfig(**common, treg_alpha=0.25)
    else:
        raise ValueError(contender)
    policy, tokenizer = smollm2(LAYERS)
    reference, _ = smollm2(LAYERS)
    timer = StepTimer()
    trainer = trainer_cls(
        model=policy, ref_model=reference, args=args, train_dataset=preference_data(tokenizer),
        processing_class=tokenizer, callbacks=[timer],
    )
    return timed_training(trainer, timer, args)


register(
    Case(
        name="dpo",
        description="weighted DPO, cDPO, T-REG vs TRL DPOTrainer (SmolLM2 first 4 layers, 4 pairs a step)",
        contenders=list(CONTENDERS),
        load=load,
        targets=[
            target
            for name in CONTENDERS[1:]
            for target in (
                Target(f"{name} time vs TRL DPO", "time", name, "trl", 1.05),
                Target(f"{name} memory vs TRL DPO", "memory", name, "trl", 1.05),
            )
        ],
        notes=__doc__,
    )
)
