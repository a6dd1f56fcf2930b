"""DPO weights from data: a per-pair weight column and per-token weight columns, against TRL and by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from trl import DPOTrainer

from test_weighted_dpo import batch_of, config, grads, make, models, plain_dataset, ramp, token_logps, with_weights
from tokrl.trainers.weighted_dpo import WeightedDPOTrainer
from tokrl.trainers.weighted_dpo_config import WeightedDPOConfig

__all__ = ["models"]  # the fixture, shared with test_weighted_dpo

PAIR_WEIGHTS = [0.5, 2.0, 0.0]


def with_pair_weights(ds, values):
    return ds.add_column("pair_weight", list(values))


def test_all_ones_pair_weights_reproduce_trl_loss_and_grads(models, tmp_path):
    policy, ref, tok = models
    trl = make(DPOTrainer, config(tmp_path), policy, ref, tok, plain_dataset())
    mine = make(WeightedDPOTrainer, config(tmp_path, WeightedDPOConfig, pair_weight_column="pair_weight"), policy,
                ref, tok, with_pair_weights(plain_dataset(), [1.0, 1.0, 1.0]))
    loss_trl = trl.compute_loss(trl.model, batch_of(trl))
    loss_trl.backward()
    loss_mine = mine.compute_loss(mine.model, batch_of(mine))
    loss_mine.backward()
    torch.testing.assert_close(loss_mine, loss_trl, rtol=0, atol=1e-6)
    g_trl, g_mine = grads(trl.model), grads(mine.model)
    assert g_trl.keys() == g_mine.keys()
    for name in g_trl:
        torch.testing.assert_close(g_mine[name], g_trl[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("token_weights", [False, True])
def test_pair_and_token_weights_match_the_hand_computed_loss(models, tmp_path, token_weights):
    """L = mean_i p_i * -log sigma(beta (sum_t w+ (lp - lr)+ - sum_t w- (lp - lr)-)), full logits, distinct ref."""
    policy, ref, tok = models
    ds = with_weights(tok, ramp) if token_weights else plain_dataset()
    spec = {"name": "column", "column": "token_weights"} if token_weights else None
    cfg = config(tmp_path, WeightedDPOConfig, weighting=spec, pair_weight_column="pair_weight")
    trainer = make(WeightedDPOTrainer, cfg, policy, ref, tok, with_pair_weights(ds, PAIR_WEIGHTS))
    batch = batch_of(trainer)
    assert batch["tokrl_pair_weight"].tolist() == PAIR_WEIGHTS
    mask = batch["completion_mask"][:, 1:].float()
    w = batch["tokrl_column.token_weights"][:, 1:] if token_weights else torch.ones_like(mask)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()

    hand_policy = trainer.model
    g_mine = grads(hand_policy)
    hand_policy.zero_grad(set_to_none=True)
    lp = token_logps(hand_policy, batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        lr = token_logps(ref, batch["input_ids"], batch["attention_mask"])
    chosen, rejected = ((lp - lr) * mask * w).sum(1).chunk(2)
    per_pair = -F.logsigmoid(0.5 * (chosen - rejected))
    expected = sum(p * l for p, l in zip(PAIR_WEIGHTS, per_pair)) / 3
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    expected.backward()
    for name, g in grads(hand_policy).items():
        torch.testing.assert_close(g_mine[name], g, rtol=1e-4, atol=1e-6, msg=name)
    assert per_pair[1] != per_pair[0]  # the pairs differ, so the weights matter


def test_a_zero_weight_pair_gives_no_gradient(models, tmp_path):
    policy, ref, tok = models
    cfg = config(tmp_path, WeightedDPOConfig, pair_weight_column="pair_weight", per_device_train_batch_size=1)
    trainer = make(WeightedDPOTrainer, cfg, policy, ref, tok, with_pair_weights(plain_dataset(), [0.0, 1.0, 1.0]))
    loss = trainer.compute_loss(trainer.model, trainer.data_collator([trainer.train_dataset[0]]))
    loss.backward()
    assert loss.item() == 0.0 and all(g.abs().max() == 0 for g in grads(trainer.model).values())


def test_bad_pair_weights_are_one_line_errors(models, tmp_path):
    policy, ref, tok = models
    cfg = config(tmp_path, WeightedDPOConfig, pair_weight_column="pair_weight")
    with pytest.raises(ValueError, match=r"column 'pair_weight' row 1 \(train\): pair weights must be finite numbers"):
        make(WeightedDPOTrainer, cfg, policy, ref, tok, with_pair_weights(plain_dataset(), [1.0, -1.0, 1.0]))
    with pytest.raises(KeyError, match="train dataset has no column 'pair_weight'"):
        make(WeightedDPOTrainer, cfg, policy, ref, tok, plain_dataset())
    with pytest.raises(ValueError, match="pair_weight_column needs loss_type='sigmoid'"):
        config(tmp_path, WeightedDPOConfig, pair_weight_column="pair_weight", loss_type="hinge")


# ---- from YAML: tokrl dpo -------------------------------------------------------------------------------------


def test_tokrl_dpo_trains_from_yaml_with_both_weight_columns(tmp_path):
    import yaml

    from tokrl.pipelines.weighted_pairs import write_weighted_pairs
    from tokrl.models import save_tiny_model, tiny_tokenizer
    from tokrl.pipelines.dpo_data import run_dpo
    from tokrl.recipe import RecipeError

    model_dir = save_tiny_model(tmp_path / "tiny")
    write_weighted_pairs(tmp_path / "pairs.jsonl", tiny_tokenizer(), num_pairs=8)
    recipe = {"method": "dpo", "model": str(model_dir), "data": {"path": "pairs.jsonl"},
              "weighting": {"name": "column", "column": "token_weights"}, "output_dir": str(tmp_path / "run"),
              "trainer": {"pair_weight_column": "pair_weight", "max_steps": 2, "per_device_train_batch_size": 4,
                          "max_length": 64, "report_to": "none", "save_strategy": "no"}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    summary = run_dpo(path)
    assert summary["steps"] == 2 and (tmp_path / "run" / "final").is_dir()
    with pytest.raises(RecipeError, match=r"r.yaml: data.path has no column\(s\) \['weight'\]"):
        run_dpo(path, ["trainer.pair_weight_column=weight"], dry_run=True)
    with pytest.raises(RecipeError, match="r.yaml: unknown key 'trainer.pair_weights'"):
        run_dpo(path, ["trainer.pair_weights=x"], dry_run=True)
