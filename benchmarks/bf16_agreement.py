"""Does CPU bf16 autocast change what a GRPO step learns? `python -m benchmarks.bf16_agreement [--seeds 0 1]`.

A learning check cheap enough for a shared CPU. For each seed: one rollout of `recipes/grpo_arithmetic.yaml`'s step
(SmolLM2-135M-Instruct, 2 prompts x 8 completions of <= 24 tokens, temperature 1, accuracy reward, beta 0), then
the gradient of TRL's GRPO loss on that same batch twice: by a `WeightedGRPOTrainer` in fp32 and by one with
`bf16=True` (accelerate's CPU autocast, the path the bf16 default takes), same weights. Printed: the cosine and the
relative norm difference of the two gradients per seed, and the cosine between the fp32 gradients of different
seeds (what a different sample of completions changes). bf16 does not change what is learned when its gradient
is much closer to fp32's than one seed's gradient is to another's.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile

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


def trainers(seed: int):
    from benchmarks.cases.grpo import build_trainer, grpo_config, recipe_settings
    from tokrl.rewards import accuracy_reward
    from tokrl.trainers import WeightedGRPOConfig, WeightedGRPOTrainer

    s = recipe_settings(False)
    common = grpo_config(s, force_length=False, learning_rate=1e-5, temperature=1.0, beta=0.0, seed=seed)
    out = {}
    for name, precision in (("fp32", dict(bf16=False)), ("bf16", dict(bf16=True, use_cpu=True))):
        args = WeightedGRPOConfig(**{**common, "output_dir": tempfile.mkdtemp()}, gradient_checkpointing=False,
                                  **precision)
        trainer = build_trainer(WeightedGRPOTrainer, args, reward_funcs=[accuracy_reward])
        trainer.current_gradient_accumulation_steps = 1  # set by train(), read by TRL's loss
        out[name] = trainer
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bf16_agreement", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    fp32_grads = {}
    print("| seed | rewards (mean, groups with spread) | cos(fp32, bf16) | norm(bf16 - fp32) / norm(fp32) |")
    print("| --- | --- | --- | --- |")
    for seed in args.seeds:
        pair = trainers(seed)
        torch.manual_seed(seed)
        pair["fp32"].model.train()
        batch = next(iter(pair["fp32"].get_train_dataloader()))
        inputs = pair["fp32"]._prepare_inputs(batch)  # generation + rewards + advantages, fp32 policy
        pair["bf16"].model.load_state_dict(pair["fp32"].model.state_dict())
        pair["bf16"].model.train()
        g32 = gradient(pair["fp32"], inputs)
        g16 = gradient(pair["bf16"], inputs)
        fp32_grads[seed] = g32
        cos, rel = compare(g32, g16)
        del g16
        rewards = pair["fp32"]._metrics["train"]["reward"][-1]
        spread = 1 - pair["fp32"]._metrics["train"]["frac_reward_zero_std"][-1]
        print(f"| {seed} | {rewards:.3f}, {spread:.2f} | {cos:.4f} | {rel:.4f} |", flush=True)
        del pair, inputs
    for a, b in itertools.combinations(args.seeds, 2):
        cos, rel = compare(fp32_grads[a], fp32_grads[b])
        print(f"fp32 gradients of seed {a} and seed {b}: cos {cos:.4f}, norm(difference) / norm(seed {a}) {rel:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
