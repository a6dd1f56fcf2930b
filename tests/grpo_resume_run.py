"""Run under `accelerate launch --num_processes 2`: forking GRPO for 4 steps with a checkpoint at step 2, either
uninterrupted ("full"), stopped after the checkpoint ("cut"), or resumed from it ("resume"). Rank 0 writes the
logged losses and a digest of the final weights for tests/test_distributed.py."""

import json
import sys

import torch
from transformers import TrainerCallback

from tokrl.data import make_arithmetic_dataset
from tokrl.trainers import ForkingGRPOConfig, ForkingGRPOTrainer


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) / 8 for c in completions]


class StopAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= 2:
            control.should_training_stop = True


def main(model_dir: str, run_dir: str, mode: str, out_path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = ForkingGRPOConfig(output_dir=run_dir, per_device_train_batch_size=4, num_generations=4,
                             max_completion_length=8, max_steps=4, logging_steps=1, save_strategy="steps",
                             save_steps=2, report_to="none", weighting={"name": "entropy_quantile", "rho": 0.3},
                             learning_rate=1e-2, seed=0)
    data = make_arithmetic_dataset(num_train=64, num_eval=2)
    trainer = ForkingGRPOTrainer(model=model, reward_funcs=[length_reward], args=args, train_dataset=data["train"],
                                 processing_class=tokenizer)
    if mode == "cut":
        trainer.add_callback(StopAt())
    trainer.train(resume_from_checkpoint=f"{run_dir}/checkpoint-2" if mode == "resume" else None)
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if trainer.accelerator.is_main_process:
        logs = {str(h["step"]): [h["loss"], h["weights/kept_frac"]] for h in trainer.state.log_history
                if "loss" in h}
        digest = {k: float(v.float().abs().sum()) for k, v in state.items()}
        with open(out_path, "w") as f:
            json.dump({"logs": logs, "digest": digest}, f)


if __name__ == "__main__":
    from distributed_exit import shut_down

    main(*sys.argv[1:5])
    shut_down()
