"""CDPOTrainer: all-ones weights == TRL's DPO (sequence granularity), the spec's hand example, both granularities
against formulas computed from full logits, and the config's guard rails."""

from __future__ import annotations

import copy
import math
import re
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from tokrl.models import tiny_model
from tokrl.trainers.cdpo import CDPOConfig, CDPOTrainer, position_loss
from tokrl.trainers.token_columns import completion_token_ids
from tokrl.trainers.weighted_dpo import DPOTokenParts

PAIRS = [
    ("Q: 12+3=? A:", " 15", " 16 I think"),
    ("Q: 2*4=? A:", " 8 yes", " 6"),
    ("Q: 9-7=?", " 2", " 3!"),
]


def cdpo_weight(side, row, k):
    """Chosen 1 (the released only_neg config), rejected a made-up 1 - p_CE in [0, 1)."""
    return 1.0 if side == "chosen" else [0.05, 0.9, 0.4, 0.7][(k + row) % 4]


def dataset(tok, fn=cdpo_weight):
    def add(example, idx):
        ids = completion_token_ids(tok, example)
        return {f"{s}_token_weights": [fn(s, idx, k) for k in range(len(ids[s]))] for s in ("chosen", "rejected")}

    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    return Dataset.from_list(rows).map(add, with_indices=True)


def config(tmp_path, cls=CDPOConfig, **kw):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=3,
        max_length=64,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        beta=0.5,
    )
    base.update(kw)
    return cls(**base)


@pytest.fixture(scope="module")
def models():
    policy, tok = tiny_model(seed=0)
    ref, _ = tiny_model(seed=1)
    return policy, ref, tok


def make(cls, cfg, models, ds):
    policy, ref, tok = models
    return cls(
        model=copy.deepcopy(policy), ref_model=copy.deepcopy(ref), args=cfg, train_dataset=ds, processing_class=tok
    )


def batch_of(trainer):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(3)])


def token_logps(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return torch.gather(logits.log_softmax(-1), 2, batch["input_ids"][:, 1:, None]).squeeze(-1)


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


# ---- formulas on hand-made numbers --------------------------------------------------------------------------------


def test_spec_hand_example_sequence_granularity():
    """Spec 4.5 test 3: chosen ratios [0.5, -0.2] (w 1), rejected [0.3, -1.0, 0.4] (w 0.1, 0.9, 1.0), beta 0.1."""
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    policy = torch.tensor([[0.5, -0.2, 0.0], [0.3, -1.0, 0.4]])
    weights = torch.tensor([[1.0, 1.0, 0.0], [0.1, 0.9, 1.0]])
    parts = DPOTokenParts(policy, torch.zeros_like(policy), None, weights, mask)
    chosen, rejected = parts.logratios()
    assert (chosen - rejected).item() == pytest.approx(0.77, abs=1e-6)
    assert -F.logsigmoid(0.1 * (chosen - rejected)).item() == pytest.approx(0.655388, abs=1e-6)
    chosen, rejected = parts.logratios(weighted=False)
    assert -F.logsigmoid(0.1 * (chosen - rejected)).item() == pytest.approx(0.663597, abs=1e-6)


def test_position_granularity_hand_example():
    """Per position j: -log sigma(beta (w+_j lr+_j - w-_j lr-_j)), mean over all B x (L-1) positions incl. masked."""
    # one pair, 5 log-prob positions: position 0 is prompt (both masked), chosen has 2 tokens, rejected 3
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0, 0.0]])
    policy = torch.tensor([[0.0, -1.0, -2.0, 0.0, 0.0], [0.0, -3.0, -0.5, -1.0, 0.0]], requires_grad=True)
    ref = torch.tensor([[0.0, -1.5, -1.8, 0.0, 0.0], [0.0, -3.3, -1.5, -0.6, 0.0]])
    weights = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0], [0.0, 0.1, 0.9, 1.0, 0.0]])
    parts = DPOTokenParts(policy, ref, None, weights, mask)
    beta = 0.1
    # chosen ratios (0, .5, -.2, 0, 0); weighted rejected (0, .03, .9, -.4, 0)
    margins = [0.0, 0.5 - 0.03, -0.2 - 0.9, 0.0 + 0.4, 0.0]
    expected = sum(math.log1p(math.exp(-beta * m)) for m in margins) / 5
    loss = position_loss(parts, beta)
    assert loss.item() == pytest.approx(expected, abs=1e-7)
    assert expected == pytest.approx(0.695845, abs=2e-6)  # (2 log 2 + 0.669930 + 0.749658 + 0.673347) / 5
    loss.backward()
    # masked positions (log 2 each) get no gradient; token 1 of the rejected side gets -w * (chosen-side gradient)
    assert policy.grad[:, 0].abs().sum() == 0 and policy.grad[:, 4].abs().sum() == 0
    g1 = -beta * torch.sigmoid(torch.tensor(-beta * margins[1])).item() / 5
    assert policy.grad[0, 1].item() == pytest.approx(g1, rel=1e-5)
    assert policy.grad[1, 1].item() == pytest.approx(-0.1 * g1, rel=1e-5)


# ---- against TRL and full-logit formulas on a tiny model ----------------------------------------------------------


def test_all_ones_sequence_equals_trl_dpo(models, tmp_path):
    _, _, tok = models
    ds = dataset(tok, lambda s, i, k: 1.0)
    trl = make(DPOTrainer, config(tmp_path, DPOConfig), models, ds)
    mine = make(CDPOTrainer, config(tmp_path), models, ds)
    assert mine.weighter.column == "token_weights" and not mine.uniform
    a = trl.compute_loss(trl.model, batch_of(trl))
    b = mine.compute_loss(mine.model, batch_of(mine))
    a.backward()
    b.backward()
    torch.testing.assert_close(b, a, rtol=0, atol=0)
    ga, gb = grads(trl.model), grads(mine.model)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("granularity", ["sequence", "position"])
def test_hand_weights_match_full_logit_formula(models, tmp_path, granularity):
    policy, ref, tok = models
    trainer = make(CDPOTrainer, config(tmp_path, loss_granularity=granularity), models, dataset(tok))
    batch = batch_of(trainer)
    w = batch["tokrl_column.token_weights"][:, 1:].clone()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()

    p2 = copy.deepcopy(policy)
    mask = batch["completion_mask"][:, 1:].float()
    lp = token_logps(p2, batch)
    with torch.no_grad():
        lr = token_logps(ref, batch)
    ratios = (lp - lr) * mask * w
    chosen, rejected = ratios.chunk(2)
    if granularity == "sequence":
        expected = -F.logsigmoid(0.5 * (chosen.sum(1) - rejected.sum(1))).mean()
    else:
        expected = -F.logsigmoid(0.5 * (chosen - rejected)).mean()  # every position of the padded [B, L-1] grid
        assert chosen.numel() == 3 * (batch["input_ids"].shape[1] - 1)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    g = grads(trainer.model)
    for name, p in p2.named_parameters():
        torch.testing.assert_close(g[name], p.grad, rtol=1e-4, atol=1e-6)
    # the rejected weights really are non-trivial: unweighted DPO differs
    unweighted = -F.logsigmoid(
        0.5 * ((lp - lr) * mask).sum(1).chunk(2)[0] - 0.5 * ((lp - lr) * mask).sum(1).chunk(2)[1]
    ).mean()
    assert abs(unweighted.item() - loss.item()) > 1e-4
    assert trainer._metrics["train"]["weights/chosen_mean"] == [1.0]
    assert 0 < trainer._metrics["train"]["weights/rejected_frac_above_0.5"][0] < 1


def test_position_granularity_trains_with_lora(models, tmp_path):
    from peft import LoraConfig

    policy, _, tok = models
    cfg = config(tmp_path, loss_granularity="position", max_steps=2, logging_steps=1)
    trainer = CDPOTrainer(
        model=copy.deepcopy(policy),
        args=cfg,
        train_dataset=dataset(tok),
        processing_class=tok,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    # at step 1 the adapter is zero, so policy == reference and every position gives log 2
    assert logs[0]["cdpo/position_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert math.isfinite(logs[1]["loss"])


# ---- config -------------------------------------------------------------------------------------------------------


def test_config_guard_rails(tmp_path):
    with pytest.raises(ValueError, match="loss_granularity must be one of"):
        config(tmp_path, loss_granularity="token")
    with pytest.raises(ValueError, match="precompute_ref_log_probs=False"):
        config(tmp_path, loss_granularity="position", precompute_ref_log_probs=True)
    with pytest.raises(ValueError, match="loss_type='sigmoid'"):
        config(tmp_path, loss_granularity="position", loss_type="ipo")
    with pytest.raises(ValueError, match="label_smoothing"):
        config(tmp_path, label_smoothing=0.1)
    with pytest.raises(TypeError, match="needs a CDPOConfig"):
        CDPOTrainer(model=None, args=DPOConfig(output_dir=str(tmp_path), bf16=False), train_dataset=None)


def _documented_fields(cls):
    """Fields documented in the "> Parameters that control ..." sections of this class and of its tokrl parents."""
    names = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("tokrl.") and "> Parameters that control " in (klass.__doc__ or ""):
            doc = klass.__doc__.split("> Parameters that control ", 1)[1]
            names |= set(re.findall(r"^    (\w+) \(`", doc, flags=re.M))
    return names


@pytest.mark.parametrize("cls_path", ["cdpo.CDPOConfig", "treg.TREGConfig", "weighted_dpo_config.WeightedDPOConfig"])
def test_docstring_lists_every_new_field_with_help(cls_path):
    import importlib

    from trl import DPOConfig as Base

    module, name = cls_path.split(".")
    cls = getattr(importlib.import_module(f"tokrl.trainers.{module}"), name)
    base = {f.name for f in fields(Base)}
    new = {f.name for f in fields(cls) if f.name not in base}
    assert new == _documented_fields(cls)
    for f in fields(cls):
        if f.name in new:
            assert f.metadata.get("help"), f.name
