"""GTPO entropy share (tokrl/weighting/gtpo.py): a hand computation of the formula, the rollout path on the tiny
model (generation-time entropies = a full forward's), and a 2-step `tokrl train` run of the shipped recipe."""

import math
from pathlib import Path

import pytest
import torch

from tokrl.weighting import TokenView, build_weighter
from tokrl.weighting.gtpo import GTPOEntropyShare

ROOT = Path(__file__).resolve().parents[1]


def test_weights_match_a_hand_computation():
    # group 0: rows 0, 1 correct, row 2 incorrect; group 1: rows 3, 4 incorrect, row 5 advantage 0
    H = torch.tensor([[1.0, 2.0, 0.5], [3.0, 2.0, 9.0], [0.5, 1.0, 2.0], [1.0, 4.0, 9.0], [2.0, 1.0, 9.0],
                      [7.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 0], [1, 0, 0]])
    view = TokenView(completion_ids=torch.zeros(6, 3, dtype=torch.long), completion_mask=mask, entropies=H,
                     advantages=torch.tensor([1.0, 0.5, -1.5, -1.0, -1.0, 0.0]),
                     group_ids=torch.tensor([0, 0, 0, 7, 7, 7]))
    # t=0, correct of group 0: d=2, shares 1/4, 3/4 -> 0.5 + 0.5*2*share; incorrect row 2 alone: d=1, share 1
    # t=1: shares 2/4, 2/4; t=2: row 0 alone. Group 1 incorrect, inverse entropies: t=0 1/1, 1/2 (sum 1.5),
    # t=1 1/4, 1/1 (sum 1.25); row 5 (A = 0) keeps 1.
    expected = torch.tensor([
        [0.75, 1.0, 1.0],
        [1.25, 1.0, 0.0],
        [1.0, 1.0, 1.0],
        [0.5 + 1 / 1.5, 0.5 + 0.25 / 1.25, 0.0],
        [0.5 + 0.5 / 1.5, 0.5 + 1 / 1.25, 0.0],
        [1.0, 0.0, 0.0],
    ])
    torch.testing.assert_close(GTPOEntropyShare()(view), expected)
    alpha = GTPOEntropyShare(alpha1=0.0, alpha2=1.0)(view)
    assert alpha[0, 0] == pytest.approx(0.5) and alpha[1, 0] == pytest.approx(1.5)
    assert build_weighter({"name": "gtpo", "alpha2": 1.0}).rollout


def test_rollout_weights_use_generation_entropies_equal_to_a_forward(tmp_path):
    from tests.test_thr_trainer import generation_output, make
    from tokrl.trainers.weighted_grpo import WeightedGRPOTrainer
    from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig

    trainer = make(tmp_path, cls=WeightedGRPOTrainer, cfg_cls=WeightedGRPOConfig, temperature=0.05,
                   weighting={"name": "gtpo", "alpha1": 0.0, "alpha2": 1.0})
    out = generation_output(trainer)
    assert trainer.rollout_passes == {"reused": 0, "generation": 1, "extra": 0}
    _, _, entropies = trainer.old_policy_states(out, entropies=True)
    view = TokenView(completion_ids=out["completion_ids"], completion_mask=out["completion_mask"],
                     entropies=entropies, advantages=out["advantages"], group_ids=out["tokrl_group_ids"])
    torch.testing.assert_close(out["tokrl_gtpo_weight"], GTPOEntropyShare(0.0, 1.0)(view), rtol=1e-5, atol=1e-5)
    assert ((out["tokrl_gtpo_weight"] - 1).abs() * out["completion_mask"] > 1e-2).any()
    trainer.compute_loss(trainer.model, out)  # at loss time the carried column is read back, unchanged
    torch.testing.assert_close(trainer.last_view.values["weight"], out["tokrl_gtpo_weight"])


def test_two_step_run_of_the_shipped_recipe(tmp_path):
    from tokrl.runs import train_recipe
    from tokrl.models import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "tiny")
    overrides = [f"model={model_dir}", f"output_dir={tmp_path / 'run'}", "task.num_train=16", "eval.before=false",
                 "eval.after=false", "trainer.max_steps=2", "trainer.per_device_train_batch_size=8",
                 "trainer.num_generations=4", "trainer.max_completion_length=6", "trainer.save_strategy='no'"]
    trainer = train_recipe(ROOT / "recipes" / "gtpo_grpo_arithmetic.yaml", overrides)["trainer"]
    assert isinstance(trainer.weighter, GTPOEntropyShare)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert len([h for h in trainer.state.log_history if "gtpo/from_generation" in h]) == 2
