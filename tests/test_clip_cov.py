"""Clip-Cov (tokrl/weighting/clip_cov.py): a hand computation of Cov_t and the band/count rule, PPO-clipped tokens
left alone, and a 2-step `tokrl train` run of the shipped recipe on the tiny model."""

import math
from pathlib import Path

import pytest
import torch

from tokrl.weighting import TokenView
from tokrl.weighting.clip_cov import ClipCov

ROOT = Path(__file__).resolve().parents[1]
LOGPS = torch.tensor([[-0.1, -2.0, -0.5], [-3.0, -0.2, -7.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
ADV = torch.tensor([2.0, -1.0])


def view(old=LOGPS):
    return TokenView(completion_ids=torch.zeros(2, 3, dtype=torch.long), completion_mask=MASK, logps=LOGPS,
                     old_logps=old, advantages=ADV)


def test_cov_and_selection_match_a_hand_computation():
    # mean A over the 5 tokens = (3*2 - 2)/5 = 0.8; mean log pi = -5.8/5 = -1.16
    # Cov = [[1.2*1.06, 1.2*-0.84, 1.2*0.66], [-1.8*-1.84, -1.8*0.96, .]] = [[1.272, -1.008, 0.792], [3.312, -1.728, .]]
    # band (1, 5): tokens (0, 0) and (1, 0); ratio 0.5 -> max(1, int(2.5)) = 2 tokens: both get weight 0
    v = view()
    w = ClipCov(ratio=0.5)(v)
    torch.testing.assert_close(v.values["cov"], torch.tensor([[1.272, -1.008, 0.792], [3.312, -1.728, 0.0]]))
    torch.testing.assert_close(w, torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]]))
    assert v.stats["clip_cov_frac"] == pytest.approx(2 / 5)
    torch.manual_seed(0)
    for _ in range(5):  # ratio 2e-4 (verl's default) -> exactly max(1, int(0.001)) = 1 of the two, at random
        w = ClipCov()(view())
        zeroed = ((w == 0) & MASK.bool()).nonzero().tolist()
        assert len(zeroed) == 1 and zeroed[0] in ([0, 0], [1, 0])


def test_tokens_already_clipped_by_ppo_are_not_candidates():
    old = LOGPS.clone()
    old[1, 0] = LOGPS[1, 0] + 0.5  # ratio exp(-0.5) = 0.61 < 1 - 0.2 with A < 0: PPO already clips it
    w = ClipCov(ratio=0.5)(view(old))
    torch.testing.assert_close(w, torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="lower < upper"):
        ClipCov(lower=5.0, upper=1.0)


def test_two_step_run_of_the_shipped_recipe(tmp_path):
    from tokrl.runs import train_recipe
    from tokrl.models import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "tiny")
    overrides = [f"model={model_dir}", f"output_dir={tmp_path / 'run'}", "task.num_train=16", "eval.before=false",
                 "eval.after=false", "trainer.max_steps=2", "trainer.per_device_train_batch_size=8",
                 "trainer.num_generations=4", "trainer.max_completion_length=6", "trainer.save_strategy='no'",
                 "weighting.lower=-100.0"]  # a wide band, so the tiny model's tokens are candidates
    trainer = train_recipe(ROOT / "recipes" / "clip_cov_grpo_arithmetic.yaml", overrides)["trainer"]
    assert isinstance(trainer.weighter, ClipCov)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    fracs = [h["weights/clip_cov_frac"] for h in trainer.state.log_history if "weights/clip_cov_frac" in h]
    assert len(fracs) == 2 and all(0 < f < 0.1 for f in fracs)
