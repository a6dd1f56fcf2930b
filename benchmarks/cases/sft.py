"""Token-cleaning SFT (`TokenCleaningSFTTrainer`) vs TRL's `SFTTrainer`: same model, tokenised data and config.

Model: SmolLM2-135M-Instruct truncated to its first 4 of 30 decoder layers (real weights, tokenizer and vocabulary;
see `benchmarks.cases.dpo` for why: the ratio is an upper bound for the full model). Data: 24 arithmetic chat rows
(~45 prompt tokens, a ~25-token worked answer), tokenised once with TRL's own tokenisation
(`tokrl.trainers.token_cleaning_tokens.tokenize_sft_row`); both trainers get these `input_ids` and
`completion_mask` columns, and the token-cleaning trainer also a seeded 0/1 `token_mask` keeping ~60 % of the
response tokens (the paper's ratio). 8 rows a step, step 1 a warm-up, step 2 timed; lr 1e-6, the
precision tokrl resolves on this machine for both.
"""

from __future__ import annotations

import random

from benchmarks.cases.grpo import StepTimer, smollm2, timed_training, trainer_args
from benchmarks.registry import Case, Target, register

LAYERS = 4


def sft_data(tokenizer, with_mask: bool, rows: int = 24):
    from datasets import Dataset

    from tokrl.data.arithmetic import ArithmeticTask
    from tokrl.trainers.token_cleaning_tokens import tokenize_sft_row

    task = ArithmeticTask(num_train=rows, num_eval=0, seed=0).build()["train"]
    rng = random.Random(0)
    out = []
    for row in task:
        answer = row["answer"]
        text = f"Adding the two numbers step by step gives {answer}. Checking it once more: {answer}. Answer: {answer}"
        tokens = tokenize_sft_row({"prompt": row["prompt"], "completion": [{"role": "assistant", "content": text}]},
                                  tokenizer)
        if with_mask:
            tokens["token_mask"] = [int(m and rng.random() < 0.6) for m in tokens["completion_mask"]]
        out.append(tokens)
    return Dataset.from_list(out)


def load(contender: str, quick: bool):
    from trl import SFTConfig, SFTTrainer

    from tokrl.trainers import TokenCleaningSFTConfig, TokenCleaningSFTTrainer

    common = trainer_args(True, per_device_train_batch_size=4 if quick else 8, max_steps=2)
    cleaning = contender == "token-cleaning"
    trainer_cls, config_cls = (TokenCleaningSFTTrainer, TokenCleaningSFTConfig) if cleaning else (SFTTrainer, SFTConfig)
    args = config_cls(**common)
    model, tokenizer = smollm2(LAYERS)
    timer = StepTimer()
    trainer = trainer_cls(model=model, args=args, train_dataset=sft_data(tokenizer, cleaning),
                          processing_class=tokenizer, callbacks=[timer])
    return timed_training(trainer, timer, args)


register(
    Case(
        name="sft",
        description="token-cleaning SFT vs TRL SFTTrainer (SmolLM2 first 4 layers, 8 rows a step)",
        contenders=["trl", "token-cleaning"],
        load=load,
        targets=[
            Target("token-cleaning time vs TRL SFT", "time", "token-cleaning", "trl", 1.05),
            Target("token-cleaning memory vs TRL SFT", "memory", "token-cleaning", "trl", 1.05),
        ],
        notes=__doc__,
    )
)
