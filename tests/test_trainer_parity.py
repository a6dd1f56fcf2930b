"""DPO and SFT parity with GRPO: any weighter whose needs the trainer can fill (logps, ref_logps, entropies,
hidden_states, columns) is accepted, the rest refused at construction naming the need, and weight statistics,
token dumps and TensorBoard histograms are logged as the GRPO trainers log them (one shared `WeightLogging`)."""

import copy

import pytest
import torch
from tests.test_token_cleaning_trainer import ARGS, chat_rows, nll_by_hand, tokenised
from tests.test_weighted_dpo import PAIRS, batch_of, config, plain_dataset, token_logps

from tokrl.diagnostics.token_dump import TOKEN_VALUES, read_token_values
from tokrl.models import tiny_model
from tokrl.trainers.token_cleaning_sft import TokenCleaningSFTTrainer
from tokrl.trainers.token_cleaning_sft_config import TokenCleaningSFTConfig
from tokrl.trainers.weighted_dpo import WeightedDPOTrainer
from tokrl.trainers.weighted_dpo_config import WeightedDPOConfig
from tokrl.weighting import TokenWeighter


class SeesAll(TokenWeighter):
    """Records its view; weight 1 + sigmoid(entropy) so the weights are not uniform."""

    needs = frozenset({"logps", "entropies", "hidden_states"})
    view = None

    def weigh(self, view):
        SeesAll.view = view
        return 1 + torch.sigmoid(view.entropies)


class SeesRef(SeesAll):
    needs = frozenset({"logps", "entropies", "hidden_states", "ref_logps"})


def test_dpo_fills_logps_entropies_hidden_states_and_ref_logps(tmp_path):
    policy, tok = tiny_model(seed=0)
    ref, _ = tiny_model(seed=1)
    trainer = WeightedDPOTrainer(model=copy.deepcopy(policy), ref_model=ref, args=config(tmp_path, WeightedDPOConfig),
                                 train_dataset=plain_dataset(), processing_class=tok, weighter=SeesRef())
    batch = batch_of(trainer)
    trainer.compute_loss(trainer.model, batch)
    view, mask = SeesAll.view, batch["completion_mask"][:, 1:].bool()
    with torch.no_grad():
        lp = token_logps(trainer.model, batch["input_ids"], batch["attention_mask"])
        lr = token_logps(ref, batch["input_ids"], batch["attention_mask"])
        from_hidden = torch.log_softmax(trainer.model.lm_head(view.hidden_states), -1)
    from_hidden = from_hidden.gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    torch.testing.assert_close(view.logps[mask], lp[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(view.ref_logps[mask], lr[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(from_hidden[mask], lp[mask], rtol=1e-5, atol=1e-5)  # the states that made the logps
    metrics = trainer._metrics["train"]
    weights = (1 + torch.sigmoid(view.entropies))[mask]
    assert metrics["weights/mean"][-1] == pytest.approx(weights.mean().item(), rel=1e-5)
    assert metrics["weights/kept_frac"][-1] == 1.0
    assert trainer.last_view is view
    torch.testing.assert_close(view.values["weight"], (1 + torch.sigmoid(view.entropies)) * view.mask)


@pytest.mark.parametrize("make", ["dpo", "sft"])
def test_weighters_with_needs_the_trainer_cannot_fill_are_refused_naming_the_need(tmp_path, make):
    model, tok = tiny_model(seed=0)
    if make == "dpo":
        with pytest.raises(ValueError, match="WeightedDPOTrainer cannot give weighter GTPOEntropyShare its need "
                                             "'advantages'"):
            WeightedDPOTrainer(model=model, args=config(tmp_path, WeightedDPOConfig, weighting="gtpo"),
                               train_dataset=plain_dataset(), processing_class=tok)
    else:
        with pytest.raises(ValueError, match="TokenCleaningSFTTrainer cannot give weighter SeesRef its need "
                                             "'ref_logps'"):
            TokenCleaningSFTTrainer(model=model, args=TokenCleaningSFTConfig(str(tmp_path), **ARGS),
                                    train_dataset=tokenised(chat_rows(3), tok), processing_class=tok,
                                    weighter=SeesRef())


def test_sft_online_weighter_loss_equals_hand_computation(tmp_path):
    """An entropy weighter on SFT: every completion token labelled, loss = sum(w * nll) / #completion tokens."""
    model, tok = tiny_model()
    rows = chat_rows(3)
    trainer = TokenCleaningSFTTrainer(model=model, args=TokenCleaningSFTConfig(str(tmp_path), **ARGS),
                                      train_dataset=tokenised(rows, tok), processing_class=tok, weighter=SeesAll())
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    loss = trainer.compute_loss(model, dict(batch))
    view = SeesAll.view
    total, count = 0.0, 0
    for b in range(3):
        ids = torch.tensor(trainer.train_dataset[b]["input_ids"])
        n = len(ids) - 1
        completion = torch.tensor(trainer.train_dataset[b]["completion_mask"][1:]).bool()
        with torch.no_grad():
            nll = nll_by_hand(model, ids)
            logps = torch.log_softmax(model.lm_head(view.hidden_states[b, :n]), -1).gather(-1, ids[1:, None])[:, 0]
        torch.testing.assert_close(-logps[completion], nll[completion], rtol=1e-5, atol=1e-5)
        total += ((1 + torch.sigmoid(view.entropies[b, :n])) * nll)[completion].sum()
        count += int(completion.sum())
    torch.testing.assert_close(loss.detach(), torch.as_tensor(total / count), rtol=1e-5, atol=1e-6)
    assert trainer._metrics["train"]["weights/kept_frac"][-1] == 1.0


@pytest.mark.parametrize("make", ["dpo", "sft"])
def test_two_steps_write_token_dumps_and_tensorboard_histograms(tmp_path, make, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, tok = tiny_model(seed=0)
    common = dict(max_steps=2, logging_steps=1, save_strategy="no", report_to="tensorboard", token_dump_steps=1,
                  token_dump_samples=2)
    if make == "dpo":
        trainer = WeightedDPOTrainer(model=model, ref_model=tiny_model(seed=1)[0],
                                     args=config(tmp_path, WeightedDPOConfig, **common),
                                     train_dataset=plain_dataset(), processing_class=tok,
                                     weighter={"name": "entropy_quantile", "rho": 0.5})
    else:
        args = TokenCleaningSFTConfig(str(tmp_path), **{**ARGS, **common})
        trainer = TokenCleaningSFTTrainer(model=model, args=args, train_dataset=tokenised(chat_rows(6), tok),
                                          processing_class=tok, weighter={"name": "entropy_quantile", "rho": 0.5})
    trainer.train()
    records = read_token_values(tmp_path / TOKEN_VALUES)
    assert [r["step"] for r in records] == [1, 1, 2, 2]
    assert all({"weight", "entropy"} <= set(r["values"]) and r["prompt"] for r in records)
    assert all(set(r["values"]["weight"]) <= {0.0, 1.0} and len(r["values"]["weight"]) == len(r["pieces"])
               for r in records)
    logged = [h for h in trainer.state.log_history if "weights/kept_frac" in h]
    assert len(logged) == 2 and all(0.4 < h["weights/kept_frac"] < 0.7 for h in logged)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0})
    events.Reload()
    assert {"weights/histogram", "weights/entropy_histogram"} <= set(events.Tags()["histograms"])
