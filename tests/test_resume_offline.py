"""Exact resume for the THR, cDPO, T-REG and token-cleaning trainers: stop after 2 steps at a checkpoint, resume,
and the losses and weights equal the uninterrupted 4-step run (CPU, fp32)."""

import copy

import pytest
import torch
from transformers import TrainerCallback

import test_cdpo_trainer as cdpo_t
import test_token_cleaning_trainer as tc_t
import test_treg_trainer as treg_t
from test_resume import run as run_grpo
from tokrl.models import tiny_model
from tokrl.trainers import THRGRPOConfig, THRGRPOTrainer
from tokrl.trainers.cdpo import CDPOConfig, CDPOTrainer
from tokrl.trainers.token_cleaning_sft import TokenCleaningSFTTrainer
from tokrl.trainers.token_cleaning_sft_config import TokenCleaningSFTConfig
from tokrl.trainers.treg import TREGConfig, TREGTrainer

RESUME = dict(max_steps=4, save_strategy="steps", save_steps=2, logging_steps=1, learning_rate=5e-3, seed=0,
              per_device_train_batch_size=1)


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.step:
            control.should_training_stop = True


def build(kind, out):
    policy, tok = tiny_model(seed=0)
    ref, _ = tiny_model(seed=1)
    if kind == "cdpo":
        cfg = cdpo_t.config(out, cls=CDPOConfig, **RESUME)
        return CDPOTrainer(model=policy, ref_model=ref, args=cfg, train_dataset=cdpo_t.dataset(tok),
                           processing_class=tok)
    if kind == "treg":
        cfg = treg_t.config(out, cls=TREGConfig, **RESUME)
        return TREGTrainer(model=policy, ref_model=ref, args=cfg, train_dataset=treg_t.dataset(tok),
                           processing_class=tok)
    args = {**tc_t.ARGS, **RESUME}
    masks = None
    data = tc_t.tokenised(tc_t.chat_rows(6), tok)
    return TokenCleaningSFTTrainer(model=policy, args=TokenCleaningSFTConfig(str(out), **args), train_dataset=data,
                                   processing_class=tok)


def train(kind, out, stop=None, resume=None):
    trainer = build(kind, out)
    if stop:
        trainer.add_callback(StopAt(stop))
    trainer.train(resume_from_checkpoint=resume)
    losses = {log["step"]: log["loss"] for log in trainer.state.log_history if "loss" in log}
    return losses, {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("kind", ["cdpo", "treg", "token_cleaning"])
def test_offline_trainers_resume_exactly(tmp_path, kind):
    full_losses, full_state = train(kind, tmp_path / "full")
    train(kind, tmp_path / "cut", stop=2)
    res_losses, res_state = train(kind, tmp_path / "cut", resume=str(tmp_path / "cut" / "checkpoint-2"))
    assert sorted(full_losses) == sorted(res_losses) == [1, 2, 3, 4]
    for step in (3, 4):
        assert res_losses[step] == pytest.approx(full_losses[step], abs=1e-6)
    assert len(set(round(v, 6) for v in full_losses.values())) > 1  # the loss moved: the run really trained
    for name, value in full_state.items():
        torch.testing.assert_close(res_state[name], value, rtol=0, atol=1e-6, msg=name)


THR = {"name": "thr", "p": 0.3}  # THR's arguments live in the weighting spec


def test_thr_trainer_resumes_exactly(tiny, tmp_path):
    full_losses, _, full_state = run_grpo(THRGRPOTrainer, THRGRPOConfig, tiny, tmp_path / "full", 4, weighting=THR)
    run_grpo(THRGRPOTrainer, THRGRPOConfig, tiny, tmp_path / "cut", 2, weighting=THR)
    res_losses, _, res_state = run_grpo(THRGRPOTrainer, THRGRPOConfig, tiny, tmp_path / "cut", 4,
                                        resume=str(tmp_path / "cut" / "checkpoint-2"), weighting=THR)
    for step in (3, 4):
        assert res_losses[step] == pytest.approx(full_losses[step], abs=1e-6)
    for name, value in full_state.items():
        torch.testing.assert_close(res_state[name], value, rtol=0, atol=1e-6, msg=name)
