"""TREGTrainer: the spec's hand-checked pair (loss, per-token gradients, static ablation, detach), the per-token-weight
identity on a tiny model (weights 1 + alpha r on chosen, 1 - alpha r on rejected, margin unweighted), alpha = 0 ==
TRL's DPO, column and metadata errors, logged terms."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from tokrl.models import tiny_model
from tokrl.trainers.token_columns import completion_token_ids, token_columns_metadata
from tokrl.trainers.treg import TREGConfig, TREGTrainer
from tokrl.trainers.weighted_dpo import DPOTokenParts

PAIRS = [
    ("Q: 12+3=? A:", " 15", " 16 I think"),
    ("Q: 2*4=? A:", " 8 yes", " 6"),
    ("Q: 9-7=?", " 2", " 3!"),
]


def reward(side, row, k):
    """Made-up token rewards in (-0.5, 0.5): mostly positive on chosen, mostly negative on rejected."""
    base = [0.3, -0.1, 0.45, 0.2, -0.4][(k + row) % 5]
    return base if side == "chosen" else -base


def dataset(tok, fn=reward, drop=None, meta=None):
    def add(example, idx):
        ids = completion_token_ids(tok, example)
        out = {}
        for s in ("chosen", "rejected"):
            n = len(ids[s]) - (1 if drop == (s, idx) else 0)
            out[f"{s}_token_rewards"] = [fn(s, idx, k) for k in range(n)]
        return out

    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    ds = Dataset.from_list(rows).map(add, with_indices=True)
    if meta is not None:
        ds = ds.add_column("token_columns_meta", [meta] * len(ds))
    return ds


def config(tmp_path, cls=TREGConfig, **kw):
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


def make(cls, cfg, models, ds, **kw):
    policy, ref, tok = models
    return cls(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(ref),
        args=cfg,
        train_dataset=ds,
        processing_class=tok,
        **kw,
    )


def batch_of(trainer):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(3)])


def token_logps(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return torch.gather(logits.log_softmax(-1), 2, batch["input_ids"][:, 1:, None]).squeeze(-1)


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


# ---- the spec's hand-checked pair (treg.md 4.3, tests 5-9) --------------------------------------------------------


def hand_pair(garbage: float = 0.0):
    """One pair with 2 tokens a side (a third, padded position holds garbage rewards and log-probs)."""
    policy = torch.tensor([[-1.0, -2.0, garbage], [-3.0, -0.5, garbage]], requires_grad=True)
    ref = torch.tensor([[-1.2, -1.5, garbage], [-2.0, -0.7, garbage]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    rewards = torch.tensor([[0.3, -0.1, garbage], [-0.3, 0.1, garbage]])
    ids = torch.tensor([[5, 6, 0], [7, 8, 0]])
    return policy, DPOTokenParts(policy, ref, None, mask.clone(), mask, {"token_rewards": rewards}, ids)


def hand_loss(trainer, parts):
    """TRL's sigmoid DPO on these per-token numbers (what TRL computes from them) + the trainer's T-REG term."""
    chosen, rejected = parts.logratios()
    dpo = -F.logsigmoid(trainer.beta * (chosen - rejected)).mean()
    extra = trainer.extra_token_loss(parts)
    return dpo, (dpo + extra) if extra is not None else dpo


@pytest.fixture(scope="module")
def pair_trainer(models, tmp_path_factory):
    def build(**kw):
        cfg = config(tmp_path_factory.mktemp("t"), beta=0.1, treg_alpha=0.5, **kw)
        return make(TREGTrainer, cfg, models, dataset(models[2]))

    return build


def test_spec_hand_example_loss_and_token_gradients(pair_trainer):
    trainer = pair_trainer()
    policy, parts = hand_pair()
    dpo, total = hand_loss(trainer, parts)
    assert dpo.item() == pytest.approx(0.668460, abs=1e-6)
    assert total.item() == pytest.approx(0.650178, abs=1e-6)
    total.backward()
    torch.testing.assert_close(
        policy.grad[:, :2], torch.tensor([[-0.056063, -0.046313], [0.056063, 0.046313]]), atol=1e-6, rtol=0
    )
    # the logged terms: L_REG(chosen) = 0.01, L_REG(rejected) = -0.085, w = sigmoid(-0.05)
    m = trainer._metrics["train"]
    assert m["treg/reg_chosen"][-1] == pytest.approx(0.01, abs=1e-7)
    assert m["treg/reg_rejected"][-1] == pytest.approx(-0.085, abs=1e-7)
    assert m["treg/seq_weight_mean"][-1] == pytest.approx(0.487503, abs=1e-6)
    assert m["treg/token_reward_mean_chosen"][-1] == pytest.approx(0.1, abs=1e-7)
    assert m["treg/token_reward_mean_rejected"][-1] == pytest.approx(-0.1, abs=1e-7)


def test_spec_gradient_identity_formula(pair_trainer):
    """d loss / d logp = -beta w (1 + alpha r) on chosen, +beta w (1 - alpha r) on rejected (treg.md 2.5)."""
    trainer = pair_trainer()
    policy, parts = hand_pair()
    hand_loss(trainer, parts)[1].backward()
    w = torch.sigmoid(torch.tensor(0.1 * (-0.8 + 0.3)))  # sigmoid(h_l - h_w), h = beta * sum of log-ratios
    r = parts.columns["token_rewards"][:, :2]
    expected = torch.stack([-0.1 * w * (1 + 0.5 * r[0]), 0.1 * w * (1 - 0.5 * r[1])])
    torch.testing.assert_close(policy.grad[:, :2], expected, atol=1e-7, rtol=1e-6)


def test_static_ablation_and_detach(pair_trainer):
    policy, parts = hand_pair()
    assert hand_loss(pair_trainer(treg_sequence_weight="static"), parts)[1].item() == pytest.approx(0.630960, abs=1e-6)
    # without the stop-gradient, d w / d logp adds a term: the gradient differs from the detached one
    _, parts = hand_pair()
    hand_loss(pair_trainer(treg_detach_weight=False), parts)[1].backward()
    undetached = parts.policy_logps.grad.clone()
    _, parts = hand_pair()
    hand_loss(pair_trainer(), parts)[1].backward()
    assert (undetached[:, :2] - parts.policy_logps.grad[:, :2]).abs().min() > 1e-4


def test_mean_normalisation_option(pair_trainer):
    """treg_normalize='mean' divides each L_REG by its completion length (2 here): 0.668460 + 0.5 w (-0.0375)."""
    _, parts = hand_pair()
    total = hand_loss(pair_trainer(treg_normalize="mean"), parts)[1]
    assert total.item() == pytest.approx(0.668460 + 0.5 * 0.487503 * (-0.075 / 2), abs=1e-6)


def test_padded_positions_are_ignored(pair_trainer):
    trainer = pair_trainer()
    clean = hand_loss(trainer, hand_pair(0.0)[1])[1]
    noisy = hand_loss(trainer, hand_pair(7.5)[1])[1]
    assert noisy.item() == pytest.approx(clean.item(), abs=1e-7)


# ---- on a tiny model ----------------------------------------------------------------------------------------------


def test_alpha_zero_equals_trl_dpo(models, tmp_path):
    ds = dataset(models[2])
    trl = make(DPOTrainer, config(tmp_path, DPOConfig), models, ds)
    mine = make(TREGTrainer, config(tmp_path, treg_alpha=0.0), models, ds)
    a = trl.compute_loss(trl.model, batch_of(trl))
    b = mine.compute_loss(mine.model, batch_of(mine))
    a.backward()
    b.backward()
    torch.testing.assert_close(b, a, rtol=0, atol=0)
    ga, gb = grads(trl.model), grads(mine.model)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=0, atol=0)
    # the regulariser terms are still logged with alpha = 0
    assert len(mine._metrics["train"]["treg/reg_chosen"]) == 1


def test_loss_and_per_token_weight_identity_on_a_model(models, tmp_path):
    """Loss = DPO + alpha w (L_REG_w + L_REG_l) from full logits; its gradient = that of a DPO surrogate with per-token
    weights 1 + alpha r (chosen) and 1 - alpha r (rejected) and the unweighted, detached w."""
    policy, ref, tok = models
    alpha, beta = 0.4, 0.5
    trainer = make(TREGTrainer, config(tmp_path, treg_alpha=alpha), models, dataset(tok))
    batch = batch_of(trainer)
    r = batch["tokrl_column.token_rewards"][:, 1:].clone()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    got = grads(trainer.model)

    mask = batch["completion_mask"][:, 1:].float()
    with torch.no_grad():
        lr = token_logps(ref, batch) * mask

    # (1) the literal T-REG loss
    p1 = copy.deepcopy(policy)
    lp = token_logps(p1, batch) * mask
    h_w, h_l = (beta * (lp - lr).sum(1)).chunk(2)
    w = torch.sigmoid(h_l - h_w).detach()
    reg_w, reg_l = (-beta * (r * lp * mask).sum(1)).chunk(2)
    expected = (-F.logsigmoid(h_w - h_l) + alpha * w * (reg_w + reg_l)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)

    # (2) the per-token-weight surrogate: same gradient
    p2 = copy.deepcopy(policy)
    lp2 = token_logps(p2, batch) * mask
    a_w, a_l = (1 + alpha * r[:3]), (1 - alpha * r[3:])
    c, rj = lp2.chunk(2)
    surrogate = (-beta * w * ((a_w * c).sum(1) - (a_l * rj).sum(1))).mean()
    surrogate.backward()
    for name, p in p2.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-6)
    # and it is not plain DPO's gradient
    p3 = copy.deepcopy(policy)
    lp3 = token_logps(p3, batch) * mask
    h3w, h3l = (beta * (lp3 - lr).sum(1)).chunk(2)
    (-F.logsigmoid(h3w - h3l)).mean().backward()
    diff = max((got[n] - p.grad).abs().max().item() for n, p in p3.named_parameters())
    assert diff > 1e-5
    # logged reward means over completion tokens
    assert trainer._metrics["train"]["treg/token_reward_mean_chosen"][0] == pytest.approx(
        r[:3][mask[:3].bool()].mean().item(), rel=1e-6
    )


def test_precompute_ref_log_probs_gives_the_same_loss(models, tmp_path):
    """The regulariser needs no per-token reference log-probs, so TRL's cached reference sums work."""
    ds = dataset(models[2])
    live = make(TREGTrainer, config(tmp_path), models, ds)
    cached = make(TREGTrainer, config(tmp_path, precompute_ref_log_probs=True), models, ds)
    a = live.compute_loss(live.model, batch_of(live))
    b = cached.compute_loss(cached.model, batch_of(cached))
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_trains_two_steps_and_logs(models, tmp_path):
    trainer = make(TREGTrainer, config(tmp_path, max_steps=2, logging_steps=1), models, dataset(models[2]))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    for key in ("treg/reg_chosen", "treg/reg_rejected", "treg/seq_weight_mean", "treg/token_reward_mean_chosen"):
        assert key in logs[0]
    assert 0 < logs[0]["treg/seq_weight_mean"] < 1


# ---- errors -------------------------------------------------------------------------------------------------------


def test_misaligned_reward_column_is_named(models, tmp_path):
    with pytest.raises(ValueError, match=r"column 'chosen_token_rewards' row 1 \(train\)"):
        make(TREGTrainer, config(tmp_path), models, dataset(models[2], drop=("chosen", 1)))


def test_metadata_mismatch_is_named(models, tmp_path):
    tok = models[2]
    meta = token_columns_metadata(tok, evaluator="smollm2-135m-instruct", template_hash="abc123")
    make(
        TREGTrainer, config(tmp_path, treg_expected_evaluator="smollm2-135m-instruct"), models, dataset(tok, meta=meta)
    )
    with pytest.raises(ValueError, match="column 'token_columns_meta': template_hash is 'abc123'"):
        make(TREGTrainer, config(tmp_path, treg_expected_template_hash="zzz"), models, dataset(tok, meta=meta))
    other = copy.deepcopy(tok)
    other.add_tokens(["<extra>"])
    with pytest.raises(ValueError, match="column 'token_columns_meta'.*tokenizer"):
        make(TREGTrainer, config(tmp_path), models, dataset(tok, meta=token_columns_metadata(other)))


def test_config_refuses_losses_the_formula_does_not_cover(tmp_path):
    with pytest.raises(ValueError, match="loss_type=\\['ipo'\\]"):
        config(tmp_path, loss_type="ipo")
    with pytest.raises(ValueError, match="loss_type"):
        config(tmp_path, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0])
    for kw in (
        {"ld_alpha": 0.5},
        {"use_weighting": True},
        {"label_smoothing": 0.1},
        {"f_divergence_type": "js_divergence"},
    ):
        with pytest.raises(ValueError, match=next(iter(kw))):
            config(tmp_path, **kw)
    with pytest.raises(ValueError, match="treg_alpha"):
        config(tmp_path, treg_alpha=-1)
    with pytest.raises(ValueError, match="treg_sequence_weight"):
        config(tmp_path, treg_sequence_weight="dynamic")
    with pytest.raises(ValueError, match="'weighting' must be None"):
        config(tmp_path, weighting="uniform")


def test_gradient_accumulation_matches_one_big_batch(models, tmp_path):
    """1 step of 3 pairs x GA 1 == 1 step of 1 pair x GA 3 (the regulariser is a per-pair mean, like DPO)."""
    ds = dataset(models[2])
    params = []
    for bs, ga in ((3, 1), (1, 3)):
        cfg = config(
            tmp_path / f"{bs}x{ga}",
            per_device_train_batch_size=bs,
            gradient_accumulation_steps=ga,
            max_steps=1,
            optim="sgd",
            learning_rate=1.0,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,
            treg_alpha=0.5,
        )
        trainer = make(TREGTrainer, cfg, models, ds)
        trainer.train()
        params.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    before = dict(models[0].named_parameters())
    moved = max((params[0][n] - before[n]).abs().max().item() for n in before)
    assert moved > 1e-4
    for name in params[0]:
        torch.testing.assert_close(params[1][name], params[0][name], rtol=1e-4, atol=1e-6)
