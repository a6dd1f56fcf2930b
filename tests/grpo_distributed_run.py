"""Run under `accelerate launch --num_processes 2`: forking GRPO on a tiny model, plus the global entropy threshold
on a fixed global batch split across ranks. Rank 0 writes the results as JSON for tests/test_distributed.py."""

import json
import math
import sys

import torch

from tokrl.data import make_arithmetic_dataset
from tokrl.rewards import accuracy_reward
from tokrl.trainers import ForkingGRPOConfig, ForkingGRPOTrainer
from tokrl.weighting import EntropyQuantile, TokenView


def fixed_global_entropies():
    g = torch.Generator().manual_seed(7)
    entropies = torch.rand(4, 9, generator=g) * 3
    lengths = torch.tensor([9, 2, 6, 4])
    mask = (torch.arange(9)[None] < lengths[:, None]).long()
    return entropies, mask


def main(model_dir: str, out_path: str, select: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = ForkingGRPOConfig(output_dir=f"{out_path}.run", per_device_train_batch_size=4, num_generations=4,
                             max_completion_length=8, max_steps=2, logging_steps=1, save_strategy="no",
                             report_to="none", seed=0,
                             weighting={"name": "entropy_quantile", "rho": 0.3, "select": select})
    data = make_arithmetic_dataset(num_train=32, num_eval=2)
    trainer = ForkingGRPOTrainer(model=model, reward_funcs=[accuracy_reward], args=args, train_dataset=data["train"],
                                 processing_class=tokenizer)
    trainer.train()
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes

    # The weighter on this rank's half of a fixed global batch, with the trainer's cross-process gather.
    entropies, mask = fixed_global_entropies()
    rows = slice(rank * 4 // world, (rank + 1) * 4 // world)
    view = TokenView(completion_ids=mask[rows], completion_mask=mask[rows], entropies=entropies[rows],
                     gather=trainer.gather_flat)
    weights = trainer.weighter(view)
    all_weights = trainer.accelerator.gather(weights)

    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    thresholds = [log["weights/entropy_threshold"] for log in trainer.state.log_history
                  if "weights/entropy_threshold" in log]
    if trainer.accelerator.is_main_process:
        plugin = trainer.accelerator.state.deepspeed_plugin
        result = {
            "world_size": world,
            "deepspeed": bool(trainer.is_deepspeed_enabled),
            "zero_stage": plugin.zero_stage if plugin is not None else None,
            "losses": losses,
            "finite": all(math.isfinite(x) for x in losses),
            "train_thresholds": thresholds,
            "threshold": view.stats["entropy_threshold"],
            "weights": all_weights.tolist(),
        }
        with open(out_path, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    from distributed_exit import shut_down

    main(*sys.argv[1:4])
    shut_down()
