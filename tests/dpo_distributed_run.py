"""Two training steps of CDPOTrainer and TREGTrainer on a tiny saved model; run under `accelerate launch`.

Usage: accelerate launch --num_processes 2 --config_file configs/zero3.yaml tests/dpo_distributed_run.py OUT_DIR
Writes OUT_DIR/result.json (rank 0) with the logged losses of both runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from datasets import Dataset
from transformers import AutoTokenizer

from tokrl.models import save_tiny_model
from tokrl.trainers import CDPOConfig, CDPOTrainer, TREGConfig, TREGTrainer
from tokrl.trainers.token_columns import completion_token_ids

PAIRS = [("Q: 12+3=? A:", " 15", " 16 I think"), ("Q: 2*4=? A:", " 8 yes", " 6")] * 4


def dataset(tokenizer, name, fn):
    def add(example, idx):
        ids = completion_token_ids(tokenizer, example)
        return {f"{s}_{name}": [fn(s, idx, k) for k in range(len(ids[s]))] for s in ("chosen", "rejected")}

    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    return Dataset.from_list(rows).map(add, with_indices=True)


def run(trainer_cls, config_cls, model_dir, out, ds, tokenizer, **kw):
    args = config_cls(
        output_dir=str(out),
        per_device_train_batch_size=2,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        max_length=32,
        seed=0,
        # accelerate (1.15) leaves a CPU DeepSpeed launch without a process group backend, so it would count one
        # process while DeepSpeed counts two; naming gloo makes both see the real world size.
        ddp_backend="gloo",
        **kw,
    )
    trainer = trainer_cls(model=str(model_dir), args=args, train_dataset=ds, processing_class=tokenizer)
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h]


def main(out_dir: str) -> None:
    out = Path(out_dir)
    model_dir = out / "tiny"
    from accelerate import PartialState

    state = PartialState(backend="gloo")
    if state.is_main_process:
        save_tiny_model(model_dir)
    state.wait_for_everyone()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    weights = dataset(tokenizer, "token_weights", lambda s, i, k: 1.0 if s == "chosen" else [0.1, 0.9, 0.5][k % 3])
    rewards = dataset(tokenizer, "token_rewards", lambda s, i, k: (0.2 if s == "chosen" else -0.2) * (-1) ** k)
    result = {
        "cdpo": run(CDPOTrainer, CDPOConfig, model_dir, out / "cdpo", weights, tokenizer),
        "treg": run(TREGTrainer, TREGConfig, model_dir, out / "treg", rewards, tokenizer),
        "num_processes": state.num_processes,
        "distributed_type": str(state.distributed_type),
    }
    if state.is_main_process:
        (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    from distributed_exit import shut_down

    main(sys.argv[1])
    shut_down()
