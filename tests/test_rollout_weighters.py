"""The rollout-weighter contract of WeightedGRPOTrainer: needs checked at construction, rewards and group ids filled
(for rollout and loss-time weighters), whole groups at generation time, the weights carried to the loss."""

import pytest
import torch
from tests.test_thr_trainer import G, generation_output, make, parity_reward

from tokrl.trainers.weighted_grpo import WeightedGRPOTrainer
from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig
from tokrl.weighting import TokenWeighter


class GroupRank(TokenWeighter):
    """Rollout weighter: weight = 1 + the response's reward rank inside its group (needs rewards and group ids)."""

    rollout = True
    needs = frozenset({"rewards", "group_ids"})
    seen = None

    def weigh(self, view):
        GroupRank.seen = view
        ranks = torch.zeros_like(view.rewards)
        for g in view.group_ids.unique():
            rows = (view.group_ids == g).nonzero().flatten()
            ranks[rows] = view.rewards[rows].argsort().argsort().float()
        view.stats["groups"] = float(view.group_ids.unique().numel())
        return (1 + ranks)[:, None].expand_as(view.mask)


class SeesRewards(TokenWeighter):
    """A loss-time weighter asking for rewards and group ids (carried as tokrl_rewards / tokrl_group_ids)."""

    needs = frozenset({"rewards", "group_ids", "entropies"})
    seen = None

    def weigh(self, view):
        SeesRewards.seen = view
        return torch.ones_like(view.mask)


def grpo(tmp_path, weighter):
    return make(tmp_path, cls=WeightedGRPOTrainer, cfg_cls=WeightedGRPOConfig, weighting=weighter)


def test_rollout_weighter_gets_rewards_and_group_ids_and_its_weights_reach_the_loss(tmp_path):
    trainer = grpo(tmp_path, GroupRank())
    out = generation_output(trainer)
    view = GroupRank.seen
    ids = out["completion_ids"] * out["completion_mask"]
    texts = trainer.processing_class.batch_decode(ids, skip_special_tokens=True)
    torch.testing.assert_close(view.rewards, torch.tensor(parity_reward(texts)))
    assert view.group_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert trainer.rollout_passes == {"reused": 0, "generation": 0, "extra": 0}  # no old-policy states asked for
    assert trainer._metrics["train"]["grouprank/groups"] == [2.0]
    assert out["tokrl_grouprank_weight"].shape == out["completion_mask"].shape
    shuffled = {k: v.flip(0) if isinstance(v, torch.Tensor) and v.dim() >= 1 else v for k, v in out.items()}
    trainer.compute_loss(trainer.model, shuffled)  # a shuffled micro-batch reads the carried column, row by row
    torch.testing.assert_close(trainer.last_view.values["weight"], out["tokrl_grouprank_weight"].flip(0))


def test_loss_time_weighter_gets_rewards_and_group_ids(tmp_path):
    trainer = grpo(tmp_path, SeesRewards())
    out = generation_output(trainer)
    assert out["tokrl_group_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    trainer.compute_loss(trainer.model, out)
    assert torch.equal(SeesRewards.seen.rewards, out["tokrl_rewards"])
    assert torch.equal(SeesRewards.seen.group_ids, out["tokrl_group_ids"])


def test_unknown_and_unfillable_needs_fail_at_construction(tmp_path):
    class Typo(TokenWeighter):
        needs = frozenset({"entropy"})

    class LossTimeHead(TokenWeighter):
        needs = frozenset({"unembedding"})

    with pytest.raises(ValueError, match="needs 'entropy', which is not a known need"):
        grpo(tmp_path, Typo())
    with pytest.raises(ValueError, match="'unembedding' only to rollout weighters"):
        grpo(tmp_path, LossTimeHead())
