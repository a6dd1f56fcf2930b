"""Advantage shapers: the clipped entropy bonus by hand, through the GRPO loss, and from a spec."""

import pytest
import torch
from trl import GRPOTrainer

from conftest import fixed_grpo_batch, loss_and_grads, make_grpo_trainer
from tokrl.trainers import WeightedGRPOConfig, WeightedGRPOTrainer
from tokrl.weighting import EntropyBonus, TokenView, build_shaper


def test_entropy_bonus_by_hand():
    view = TokenView(completion_ids=torch.zeros(2, 3, dtype=torch.long),
                     completion_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]),
                     entropies=torch.tensor([[0.5, 2.0, 0.0], [1.0, 3.0, 9.0]]),
                     advantages=torch.tensor([1.0, -0.6]))
    shaped = EntropyBonus(alpha=0.4, kappa=2)(view)
    # A + min(0.4 H, |A| / 2): row 0 A = 1: min(0.2, 0.5), min(0.8, 0.5), min(0, 0.5)
    #                          row 1 A = -0.6: min(0.4, 0.3), min(1.2, 0.3); the padded token is 0
    expected = torch.tensor([[1.2, 1.5, 1.0], [-0.3, -0.3, 0.0]])
    torch.testing.assert_close(shaped, expected)
    assert view.stats["entropy_bonus_clipped_frac"] == pytest.approx(3 / 5)
    # a [B, T] advantage (e.g. from token rewards) is shaped per token; A = 0 gets no bonus
    view.advantages = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    torch.testing.assert_close(EntropyBonus(alpha=0.4, kappa=2)(view),
                               torch.tensor([[0.0, 1.5, -1.0], [2.4, 0.0, 0.0]]))  # H = 0 at (0, 2)


def test_spec_and_argument_checks():
    shaper = build_shaper({"name": "entropy_bonus", "alpha": 0.1, "kappa": 3})
    assert isinstance(shaper, EntropyBonus) and (shaper.alpha, shaper.kappa) == (0.1, 3.0)
    assert build_shaper(None) is None
    with pytest.raises(ValueError, match="kappa must be > 1"):
        EntropyBonus(kappa=1)
    with pytest.raises(ValueError, match="has no option 'beta'"):
        build_shaper({"name": "entropy_bonus", "beta": 1})
    with pytest.raises(ValueError, match="unknown advantage shaper 'entropy_bonu'.*did you mean 'entropy_bonus'"):
        build_shaper("entropy_bonu")


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_entropy_bonus_enters_trl_loss_and_gradients_as_computed_by_hand(tiny, tmp_path, loss_type):
    batch = fixed_grpo_batch()
    spec = {"name": "entropy_bonus", "alpha": 0.4, "kappa": 2}
    trainer = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path, loss_type=loss_type,
                                advantage_shaping=spec)
    loss, grads = loss_and_grads(trainer, batch)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    trainer.model.zero_grad(set_to_none=True)
    logps, ent, _ = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, att, 7,
                                                                    compute_entropy=True)
    mask = batch["completion_mask"].float()
    a = batch["advantages"][:, None]
    shaped = a + torch.minimum(0.4 * ent.detach(), a.abs() / 2)
    # on-policy the clipped surrogate of a token is -A'_t * ratio (ratio 1, gradient d logp); TRL's aggregation
    coef = mask / mask.sum() if loss_type == "dapo" else mask / mask.sum(1, keepdim=True) / mask.size(0)
    assert loss.item() == pytest.approx((-(shaped * coef).sum()).item(), abs=1e-6)
    (-(shaped * coef * logps).sum()).backward()
    expected = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    torch.testing.assert_close(grads, expected, rtol=1e-5, atol=1e-7)
    assert not torch.equal(shaped, a.expand_as(shaped))  # the bonus did change the advantages


def test_shaping_leaves_the_buffered_batch_alone(tiny, tmp_path):
    batch = fixed_grpo_batch()
    trainer = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path,
                                advantage_shaping="entropy_bonus")
    before = batch["advantages"].clone()
    trainer._compute_loss(trainer.model, batch)
    torch.testing.assert_close(batch["advantages"], before, rtol=0, atol=0)  # num_iterations > 1 reuses it
    assert trainer.last_view.values["advantage"].shape == batch["completion_ids"].shape


def test_a_shaper_gets_the_hidden_states_it_asks_for(tiny, tmp_path):
    """The training forward captures the backbone's states when the shaper (not only the weighter) needs them."""
    from tokrl.weighting import AdvantageShaper

    seen = {}

    class HiddenNormShaper(AdvantageShaper):
        needs = frozenset({"advantages", "hidden_states"})

        def shape(self, view):
            seen["hidden"] = view.hidden_states
            return self.token_advantages(view) + 0.01 * view.hidden_states.norm(dim=-1)

    batch = fixed_grpo_batch()
    trainer = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path,
                                advantage_shaping=HiddenNormShaper())
    trainer._compute_loss(trainer.model, batch)
    hidden = seen["hidden"]
    assert hidden.shape == (*batch["completion_ids"].shape, trainer.model.config.hidden_size)
    assert not hidden.requires_grad and hidden.abs().sum() > 0
