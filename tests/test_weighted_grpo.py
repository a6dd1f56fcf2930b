"""WeightedGRPOTrainer and ForkingGRPOTrainer against TRL's GRPOTrainer and hand-derived losses."""

import inspect

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from conftest import fixed_grpo_batch, loss_and_grads, make_grpo_trainer
from tokrl.trainers import ForkingGRPOConfig, ForkingGRPOTrainer, WeightedGRPOConfig, WeightedGRPOTrainer
from tokrl.weighting import EntropyQuantile, TokenWeighter

LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo"]
ATOL = 1e-6  # fp32; the weighted path multiplies by exactly 1.0, so results are in fact bit-identical


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_uniform_weights_reproduce_trl_loss_and_gradients(tiny, tmp_path, loss_type):
    batch = fixed_grpo_batch()
    ours = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path, loss_type=loss_type)
    trl = make_grpo_trainer(GRPOTrainer, GRPOConfig, tiny, tmp_path, loss_type=loss_type, bf16=False)
    loss_ours, grad_ours = loss_and_grads(ours, batch)
    loss_trl, grad_trl = loss_and_grads(trl, batch)
    torch.testing.assert_close(loss_ours, loss_trl, rtol=0, atol=ATOL)
    torch.testing.assert_close(grad_ours, grad_trl, rtol=0, atol=ATOL)
    assert ours._metrics["train"]["weights/kept_frac"][-1] == 1.0


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_uniform_with_kl_term_reproduces_trl(tiny, tmp_path, loss_type):
    batch = fixed_grpo_batch()
    batch["ref_per_token_logps"] = -torch.rand(batch["completion_ids"].shape, generator=torch.Generator().manual_seed(3)) * 4
    path = str(tmp_path / "tiny")
    tiny[0].save_pretrained(path)
    tiny[1].save_pretrained(path)
    ours = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path, loss_type=loss_type, beta=0.04,
                             model=path)
    trl = make_grpo_trainer(GRPOTrainer, GRPOConfig, tiny, tmp_path, loss_type=loss_type, beta=0.04, bf16=False,
                            model=path)
    (lo, go), (lt, gt) = loss_and_grads(ours, batch), loss_and_grads(trl, batch)
    torch.testing.assert_close(lo, lt, rtol=0, atol=ATOL)
    torch.testing.assert_close(go, gt, rtol=0, atol=ATOL)


@pytest.mark.parametrize("rho", [0.2, 0.5])
def test_forking_quantile_all_normalizer_equals_trl_top_entropy_quantile(tiny, tmp_path, rho):
    batch = fixed_grpo_batch()
    ours = make_grpo_trainer(ForkingGRPOTrainer, ForkingGRPOConfig, tiny, tmp_path, weight_normalizer="all",
                             weighting={"name": "entropy_quantile", "rho": rho, "select": "quantile", "scope": "global"})
    trl = make_grpo_trainer(GRPOTrainer, GRPOConfig, tiny, tmp_path, top_entropy_quantile=rho, bf16=False)
    (lo, go), (lt, gt) = loss_and_grads(ours, batch), loss_and_grads(trl, batch)
    torch.testing.assert_close(lo, lt, rtol=0, atol=ATOL)
    torch.testing.assert_close(go, gt, rtol=0, atol=ATOL)


class FixedMask(TokenWeighter):
    """Keeps a fixed set of tokens, so losses can be derived by hand."""

    def __init__(self, keep):
        self.keep = keep

    def weigh(self, view):
        return self.keep.float()


KEEP = torch.tensor([[1, 0, 0, 1, 0, 1, 0], [0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]])


def hand_loss(loss_type, normalizer, batch):
    """On-policy (ratio 1) the clipped surrogate of every token is -A_i; aggregate it as TRL does."""
    mask = batch["completion_mask"].float()
    keep = KEEP.float() * mask
    a = batch["advantages"][:, None].expand_as(mask)
    if loss_type == "dapo":
        denom = keep.sum() if normalizer == "selected" else mask.sum()
        return (-a * keep).sum() / denom
    per_seq_denom = keep.sum(1) if normalizer == "selected" else mask.sum(1)
    per_seq = torch.where(per_seq_denom > 0, (-a * keep).sum(1) / per_seq_denom.clamp(min=1), torch.zeros(4))
    return per_seq.mean()


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
@pytest.mark.parametrize("normalizer", ["all", "selected"])
def test_mask_and_normalizer_match_hand_computation(tiny, tmp_path, loss_type, normalizer):
    batch = fixed_grpo_batch()
    trainer = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path, loss_type=loss_type,
                                weight_normalizer=normalizer, weighter=FixedMask(KEEP))
    loss, grads = loss_and_grads(trainer, batch)
    assert loss.item() == pytest.approx(hand_loss(loss_type, normalizer, batch).item(), abs=1e-6)

    # Gradient by hand: d/dθ of sum_t c_t * (-A_i) * logp_t, with c_t the per-token coefficient of each kept token.
    mask = batch["completion_mask"].float()
    keep = KEEP.float() * mask
    if loss_type == "dapo":
        coef = keep / (keep.sum() if normalizer == "selected" else mask.sum())
    else:
        denom = keep.sum(1, keepdim=True) if normalizer == "selected" else mask.sum(1, keepdim=True)
        coef = keep / denom.clamp(min=1) / mask.size(0)
    trainer.model.zero_grad(set_to_none=True)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    logps, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, att, 7)
    (-(batch["advantages"][:, None] * coef * logps).sum()).backward()
    expected = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    torch.testing.assert_close(grads, expected, rtol=1e-5, atol=1e-7)


def test_unselected_tokens_get_no_gradient(tiny, tmp_path):
    """A weighter that keeps nothing in row 0 leaves the loss independent of row 0's tokens."""
    keep = torch.ones(4, 7, dtype=torch.long)
    keep[0] = 0
    batch = fixed_grpo_batch()
    trainer = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path, weighter=FixedMask(keep))
    _, g1 = loss_and_grads(trainer, batch)
    batch2 = {k: v.clone() for k, v in batch.items()}
    batch2["advantages"][0] = 123.0  # changing row 0's advantage must not change anything
    _, g2 = loss_and_grads(trainer, batch2)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_forking_logs_kept_fraction_and_threshold(tiny, tmp_path):
    trainer = make_grpo_trainer(ForkingGRPOTrainer, ForkingGRPOConfig, tiny, tmp_path)
    loss_and_grads(trainer, fixed_grpo_batch())
    metrics = trainer._metrics["train"]
    n = int(fixed_grpo_batch()["completion_mask"].sum())
    assert metrics["weights/kept_frac"][-1] == pytest.approx(-(-0.2 * n // 1) / n)  # ceil(0.2 n) / n
    assert "weights/entropy_threshold" in metrics
    assert isinstance(trainer.weighter, EntropyQuantile) and trainer.weighter.select == "topk"


def test_forking_config_defaults_follow_the_paper_and_authors_code(tmp_path):
    cfg = ForkingGRPOConfig(output_dir=str(tmp_path), report_to="none")
    assert (cfg.weighting["rho"], cfg.weighting["select"], cfg.weight_normalizer) == (0.2, "topk", "selected")
    with pytest.raises(ValueError, match="rho must be in"):
        ForkingGRPOConfig(output_dir=str(tmp_path), weighting={"name": "entropy_quantile", "rho": 2.0})
    assert ForkingGRPOConfig.moved_fields["forking_rho"] == "weighting.rho"
    with pytest.raises(ValueError, match="weight_normalizer"):
        WeightedGRPOConfig(output_dir=str(tmp_path), weight_normalizer="kept")


def test_cpu_defaults_without_native_bf16_are_fp32_without_checkpointing(tmp_path):
    cfg = WeightedGRPOConfig(output_dir=str(tmp_path))  # conftest sets TOKRL_CPU_BF16=0
    assert cfg.bf16 is False and cfg.gradient_checkpointing is False
    assert WeightedGRPOConfig(output_dir=str(tmp_path), gradient_checkpointing=True).gradient_checkpointing


def test_trl_hooks_we_rely_on_are_unchanged():
    """Pins the private/public TRL API the weighting hook depends on: an upgrade that moves it fails here."""
    src = inspect.getsource(GRPOTrainer._compute_loss)
    assert "if self.top_entropy_quantile < 1.0:" in src
    assert "entropy_mask = self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)" in src
    assert "per_token_loss = per_token_loss * entropy_mask" in src
    # the mask multiplies the surrogate before the KL term and the aggregation
    assert src.index("per_token_loss * entropy_mask") < src.index("per_token_loss + self.beta * per_token_kl")
    assert src.index("per_token_loss * entropy_mask") < src.index('if self.loss_type in ["grpo", "sapo"]:')
    assert list(inspect.signature(GRPOTrainer.get_high_entropy_mask).parameters) == ["self", "entropies", "mask",
                                                                                     "threshold"]
    params = inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters
    assert list(params)[:6] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size"]


def test_tensorboard_gets_weight_histograms(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_grpo_trainer(ForkingGRPOTrainer, ForkingGRPOConfig, tiny, tmp_path, max_steps=2,
                                report_to="tensorboard")
    trainer.train()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0})
    events.Reload()
    assert "weights/histogram" in events.Tags()["histograms"]
    hist = events.Histograms("weights/histogram")
    assert [h.step for h in hist] == [1, 2]
    assert hist[0].histogram_value.min == 0.0 and hist[0].histogram_value.max == 1.0  # a 0/1 forking mask
    assert "train/weights/kept_frac" in events.Tags()["scalars"]
