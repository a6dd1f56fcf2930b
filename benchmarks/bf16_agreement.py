"""Does CPU bf16 autocast change what a GRPO step learns? `python -m benchmarks.bf16_agreement [--seeds 0 1]`.

A learning check cheap enough for a shared CPU. For each seed: one rollout of `recipes/grpo_arithmetic.yaml`'s step
(SmolLM2-135M-Instruct, 2 prompts x 8 completions of <= 24 tokens, temperature 1, accuracy reward, beta 0), then
the gradient of TRL's GRPO loss on that same batch twice: by a `WeightedGRPOTrainer` in fp32 and by one with
`bf16=True` (TRL's `accelerator.autocast()` around the forward, the path the bf16 default takes), same pretrained
weights. Printed: the cosine and the
relative norm difference of the two gradients per seed, and the cosine between the fp32 gradients of different
seeds (what a different sample of completions changes). bf16 does not change what is learned when its gradient
is much closer to fp32's than one seed's gradient is to another's.
"""

from __future__ import annotations

import argparse
import itertools

import torch


def gradient(trainer, inputs) -> torch.Tensor:
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    flat = torch.cat([p.grad.flatten().float() for p in trainer.model.parameters() if p.grad is not None])
    trainer.model.zero_grad(set_to_none=True)  # memory is short on a shared machine: keep only the flat copy
    return flat


def compare(a: torch.Tensor, b: torch.Tensor, chunk: int = 2**22) -> tuple[float, float]:
    """Cosine and relative difference norm(b - a) / norm(a), accumulated in float64 chunk by chunk (135M terms)."""
    ab = aa = bb = 0.0
    for i in range(0, a.numel(), chunk):
        x, y = a[i : i + chunk].double(), b[i : i + chunk].double()
        ab, aa, bb = ab + (x @ y).item(), aa + (x @ x).item(), bb + (y @ y).item()
    return ab / (aa * bb) ** 0.5, max(aa - 2 * ab + bb, 0.0) ** 0.5 / aa**0.5


def make_trainer(seed: int, precision: str):
    """A `WeightedGRPOTrainer` on the recipe's step with fresh SmolLM2 weights, in fp32 or bf16 autocast."""
    from benchmarks.cases.grpo import build_trainer, grpo_config, recipe_settings
    from tokrl.rewards import accuracy_reward
    from tokrl.trainers import WeightedGRPOConfig, WeightedGRPOTrainer

    s = recipe_settings(False)
    common = grpo_config(s, force_length=False, learning_rate=1e-5, temperature=1.0, beta=0.0, seed=seed)
    flags = dict(bf16=False) if precision == "fp32" else dict(bf16=True, use_cpu=True)
    args = WeightedGRPOConfig(**common, gradient_checkpointing=False, **flags)
    trainer = build_trainer(WeightedGRPOTrainer, args, reward_funcs=[accuracy_reward])
    trainer.current_gradient_accumulation_steps = 1  # set by train(), read by TRL's loss
    trainer.model.train()
    return trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bf16_agreement", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    # one model at a time (memory is short on a shared machine); other seeds' gradients kept in bf16, enough for
    # a cosine between seeds
    fp32_grads = {}
    print("| seed | rewards (mean, groups with spread) | cos(fp32, bf16) | norm(bf16 - fp32) / norm(fp32) |")
    print("| --- | --- | --- | --- |")
    for seed in args.seeds:
        trainer = make_trainer(seed, "fp32")
        torch.manual_seed(seed)
        batch = next(iter(trainer.get_train_dataloader()))
        inputs = trainer._prepare_inputs(batch)  # generation + rewards + advantages, fp32 policy
        g32 = gradient(trainer, inputs)
        rewards = trainer._metrics["train"]["reward"][-1]
        spread = 1 - trainer._metrics["train"]["frac_reward_zero_std"][-1]
        del trainer
        trainer = make_trainer(seed, "bf16")  # the same pretrained weights, loaded again
        g16 = gradient(trainer, inputs)
        del trainer, inputs
        cos, rel = compare(g32, g16)
        del g16
        fp32_grads[seed] = g32.to(torch.bfloat16)
        del g32
        print(f"| {seed} | {rewards:.3f}, {spread:.2f} | {cos:.4f} | {rel:.4f} |", flush=True)
    for a, b in itertools.combinations(args.seeds, 2):
        cos, rel = compare(fp32_grads[a].float(), fp32_grads[b].float())
        print(f"fp32 gradients of seed {a} and seed {b}: cos {cos:.4f}, norm(difference) / norm(seed {a}) {rel:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
