"""Exact resume: a run interrupted after k steps and resumed from its checkpoint reproduces the uninterrupted run."""

import copy

import pytest
import torch

from conftest import grpo_args
from tokrl.data import make_arithmetic_dataset
from tokrl.rewards import accuracy_reward
from tokrl.trainers import ForkingGRPOConfig, ForkingGRPOTrainer, WeightedGRPOConfig, WeightedGRPOTrainer


def length_reward(completions, **kwargs):
    """A dense reward so that advantages are non-zero and every step really moves the weights."""
    return [float(len(c[0]["content"] if isinstance(c, list) else c)) / 8 for c in completions]


def run(trainer_cls, config_cls, tiny, out, max_steps, resume=None, **overrides):
    model, tokenizer = tiny
    data = make_arithmetic_dataset(num_train=64, num_eval=2)
    args = grpo_args(config_cls, out, max_steps=4, save_strategy="steps", save_steps=2, learning_rate=1e-2,
                     **overrides)
    trainer = trainer_cls(model=copy.deepcopy(model), reward_funcs=[length_reward, accuracy_reward], args=args,
                          train_dataset=data["train"], processing_class=tokenizer)
    if max_steps < 4:  # stop early, as if the job died right after the checkpoint at step 2
        from transformers import TrainerCallback

        class Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step >= max_steps:
                    control.should_training_stop = True

        trainer.add_callback(Stop())
    trainer.train(resume_from_checkpoint=resume)
    losses = {log["step"]: log["loss"] for log in trainer.state.log_history if "loss" in log}
    kept = {log["step"]: log.get("weights/kept_frac") for log in trainer.state.log_history if "loss" in log}
    return losses, kept, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("trainer_cls,config_cls,extra", [
    (WeightedGRPOTrainer, WeightedGRPOConfig, {}),
    (ForkingGRPOTrainer, ForkingGRPOConfig, {"weighting": {"name": "entropy_quantile", "rho": 0.3}}),
])
def test_interrupted_and_resumed_run_matches_the_uninterrupted_one(tiny, tmp_path, trainer_cls, config_cls, extra):
    full_losses, full_kept, full_state = run(trainer_cls, config_cls, tiny, tmp_path / "full", 4, **extra)
    run(trainer_cls, config_cls, tiny, tmp_path / "cut", 2, **extra)
    assert (tmp_path / "cut" / "checkpoint-2").is_dir()
    res_losses, res_kept, res_state = run(trainer_cls, config_cls, tiny, tmp_path / "cut", 4,
                                          resume=str(tmp_path / "cut" / "checkpoint-2"), **extra)
    assert sorted(res_losses) == [1, 2, 3, 4]  # steps 1-2 come back from the checkpoint's trainer state
    for step in (1, 2, 3, 4):
        assert res_losses[step] == pytest.approx(full_losses[step], abs=1e-6)
        assert res_kept[step] == pytest.approx(full_kept[step], abs=1e-9)
    assert any(abs(v) > 0 for v in full_losses.values())  # the run actually trained
    for name, value in full_state.items():
        torch.testing.assert_close(res_state[name], value, rtol=0, atol=1e-6, msg=name)
