"""Degenerate batches: nothing masked in, all-zero weights, equal rewards, NaN rewards and weights."""

import math

import pytest
import torch

from conftest import fixed_grpo_batch, loss_and_grads, make_grpo_trainer
from tokrl.trainers import ForkingGRPOConfig, ForkingGRPOTrainer, WeightedGRPOConfig, WeightedGRPOTrainer
from tokrl.weighting import TokenWeighter


class Const(TokenWeighter):
    def __init__(self, value):
        self.value = value

    def weigh(self, view):
        return torch.full_like(view.mask, self.value)


def finite(loss, grads):
    return bool(torch.isfinite(loss)) and bool(torch.isfinite(grads).all())


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("normalizer", ["all", "selected"])
def test_all_completions_masked(tiny, tmp_path, loss_type, normalizer):
    batch = fixed_grpo_batch()
    batch["completion_mask"].zero_()
    batch["num_items_in_batch"] = torch.tensor(0.0)
    trainer = make_grpo_trainer(ForkingGRPOTrainer, ForkingGRPOConfig, tiny, tmp_path, loss_type=loss_type,
                                weight_normalizer=normalizer)
    loss, grads = loss_and_grads(trainer, batch)
    assert finite(loss, grads) and loss.item() == 0.0 and grads.abs().max() == 0


@pytest.mark.parametrize("normalizer", ["all", "selected"])
def test_all_weights_zero_gives_zero_loss_and_gradient(tiny, tmp_path, normalizer):
    trainer = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path,
                                weight_normalizer=normalizer, weighter=Const(0.0))
    loss, grads = loss_and_grads(trainer, fixed_grpo_batch())
    assert finite(loss, grads) and loss.item() == 0.0 and grads.abs().max() == 0
    assert trainer._metrics["train"]["weights/kept_frac"][-1] == 0.0


def test_nan_weights_never_reach_the_gradient(tiny, tmp_path):
    trainer = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path, weighter=Const(float("nan")))
    loss, grads = loss_and_grads(trainer, fixed_grpo_batch())
    assert finite(loss, grads) and loss.item() == 0.0


def test_equal_rewards_in_a_group_give_zero_advantage_and_zero_loss(tiny, tmp_path):
    batch = fixed_grpo_batch()
    batch["advantages"].zero_()
    trainer = make_grpo_trainer(ForkingGRPOTrainer, ForkingGRPOConfig, tiny, tmp_path)
    loss, grads = loss_and_grads(trainer, batch)
    assert finite(loss, grads) and loss.item() == 0.0 and grads.abs().max() == 0


def test_nan_and_inf_rewards_in_a_training_step_keep_everything_finite(tiny, tmp_path):
    calls = []

    def flaky_reward(completions, **kwargs):
        calls.append(len(completions))
        values = [float(i % 3) for i in range(len(completions))]
        values[0], values[1] = float("nan"), None  # an unscorable and a missing reward
        return values

    trainer = make_grpo_trainer(ForkingGRPOTrainer, ForkingGRPOConfig, tiny, tmp_path, max_steps=2,
                                learning_rate=1e-2)
    trainer.reward_funcs = [flaky_reward]
    trainer.reward_func_names = ["flaky_reward"]
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert calls
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses and all(math.isfinite(x) for x in losses)
    for name, value in trainer.model.state_dict().items():
        assert torch.isfinite(value).all(), name
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
