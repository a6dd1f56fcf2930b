"""WeightedDPOTrainer: uniform weights == TRL's DPOTrainer (loss and grads), weights on policy and reference, column
alignment with TRL's tokenisation, LoRA reference, precompute refusal, pinned TRL internals.

The references here compute per-token log-probs from the full logits of the model (never through TRL or tokrl)."""

from __future__ import annotations

import copy
import inspect
import json

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from tokrl.models import tiny_model
from tokrl.trainers.token_columns import (
    align_row,
    completion_token_ids,
    kept_span,
    token_columns_metadata,
    tokenize_preference,
)
from tokrl.trainers.weighted_dpo import WeightedDPOTrainer
from tokrl.trainers.weighted_dpo_config import WeightedDPOConfig
from tokrl.weighting import TokenWeighter

PAIRS = [
    ("Q: 12+3=? A:", " 15", " 16 I think"),
    ("Q: 2*4=? A:", " 8 yes", " 6"),
    ("Q: 9-7=?", " 2", " 3!"),
]


def plain_dataset(extra=None):
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    ds = Dataset.from_list(rows)
    return ds.map(extra) if extra else ds


def with_weights(tok, fn, max_length=None, name="token_weights"):
    """Add chosen_/rejected_<name> columns: fn(side, row, n) -> list of n floats, aligned with TRL's ids."""

    def add(example, idx):
        ids = completion_token_ids(tok, example, max_length=max_length)
        return {f"{s}_{name}": fn(s, idx, len(ids[s])) for s in ("chosen", "rejected")}

    return plain_dataset().map(add, with_indices=True)


def config(tmp_path, cls=DPOConfig, **kw):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=3,
        max_length=64,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        beta=0.5,
        seed=0,
    )
    base.update(kw)
    return cls(**base)


def batch_of(trainer, n=3):
    rows = [trainer.train_dataset[i] for i in range(n)]
    return trainer.data_collator(rows)


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def token_logps(model, input_ids, attention_mask):
    """Full-logit reference: log p(input_ids[t+1] | <= t), `[rows, L-1]`."""
    with torch.set_grad_enabled(torch.is_grad_enabled()):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    return torch.gather(logits.log_softmax(-1), 2, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def hand_weighted_dpo(policy, ref, batch, weights, beta):
    """-mean log sigma(beta (sum w+ (lp - lr)+ - sum w- (lp - lr)-)) from full logits."""
    mask = batch["completion_mask"][:, 1:].float()
    lp = token_logps(policy, batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        lr = token_logps(ref, batch["input_ids"], batch["attention_mask"])
    ratios = ((lp - lr) * mask * weights).sum(1)
    chosen, rejected = ratios.chunk(2)
    return -F.logsigmoid(beta * (chosen - rejected)).mean()


@pytest.fixture(scope="module")
def models():
    policy, tok = tiny_model(seed=0)
    ref, _ = tiny_model(seed=1)  # a different reference, so weighting the reference matters
    return policy, ref, tok


def make(trainer_cls, cfg, policy, ref, tok, ds, **kw):
    return trainer_cls(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(ref),
        args=cfg,
        train_dataset=ds,
        processing_class=tok,
        **kw,
    )


# ---- tokenisation contract ----------------------------------------------------------------------------------------


def test_completion_ids_match_trl_tokenisation(models, tmp_path):
    """The helper the pipelines call gives exactly TRL's prompt/chosen/rejected ids, plain and conversational."""
    policy, ref, tok = models
    conv = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": "2+2?"}],
                "chosen": [{"role": "assistant", "content": "4"}],
                "rejected": [{"role": "assistant", "content": "five"}],
            },
        ]
    )
    for ds in (plain_dataset(), conv):
        trainer = make(DPOTrainer, config(tmp_path), policy, ref, tok, ds)
        for i in range(len(ds)):
            row = trainer.train_dataset[i]
            mine = tokenize_preference(tok, ds[i])
            assert mine == {k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
            ids = completion_token_ids(tok, ds[i])
            assert ids == {"chosen": row["chosen_ids"], "rejected": row["rejected_ids"]}
    # the plain completion includes the appended EOS; the conversational one the end-of-turn + newline
    assert completion_token_ids(tok, plain_dataset()[0])["chosen"] == tok(" 15")["input_ids"] + [tok.eos_token_id]
    assert completion_token_ids(tok, conv[0])["chosen"] == tok("4<|im_end|>\n")["input_ids"]


def bpe_tokenizer():
    """A BPE tokenizer trained here whose merges cross the prompt/completion boundary ("Q=1 A=ok" is one token)."""
    from tokenizers import Tokenizer, models, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    corpus = ["Q=1 A=ok", "Q=2 A=no", "Q=12 A=okay"] * 20
    special = ["<pad>", "</s>", "<unk>"]
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=60, special_tokens=special, show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def test_completion_ids_follow_trl_across_merged_boundaries(tmp_path):
    tok = bpe_tokenizer()
    model, _ = tiny_model(tokenizer=tok)
    ds = Dataset.from_list(
        [
            {"prompt": "Q=1 A=", "chosen": "ok", "rejected": "no"},
            {"prompt": "Q=12 A=", "chosen": "okay", "rejected": "ok"},
        ]
    )
    trainer = DPOTrainer(
        model=model, ref_model=copy.deepcopy(model), args=config(tmp_path), train_dataset=ds, processing_class=tok
    )
    naive_differs = 0
    for i in range(len(ds)):
        row = trainer.train_dataset[i]
        ids = completion_token_ids(tok, ds[i])
        assert ids == {"chosen": row["chosen_ids"], "rejected": row["rejected_ids"]}
        naive_differs += ids["chosen"] != tok(ds[i]["chosen"])["input_ids"] + [tok.eos_token_id]
    assert naive_differs == 2  # tokenising the completion on its own would misalign every column here


def test_truncation_spans_follow_the_collator():
    # prompt 5, completion 4, max_length 7
    assert kept_span(5, 4, 7, "keep_start") == slice(0, 2)
    assert kept_span(5, 4, 7, "keep_end") == slice(0, 4)
    assert kept_span(5, 4, 3, "keep_end") == slice(1, 4)
    assert kept_span(5, 4, None, "keep_start") == slice(0, 4)
    # a row: zeros on the prompt part, values on the kept completion tokens; full or kept-length columns agree
    assert align_row([1, 2, 3, 4], 5, 4, 7, "keep_start") == [0, 0, 0, 0, 0, 1, 2]
    assert align_row([1, 2], 5, 4, 7, "keep_start") == [0, 0, 0, 0, 0, 1, 2]
    assert align_row([1, 2, 3, 4], 5, 4, 7, "keep_end") == [0, 0, 0, 1, 2, 3, 4]
    assert align_row([1, 2, 3, 4], 5, 4, 3, "keep_end") == [2, 3, 4]
    with pytest.raises(ValueError, match="3 values for 4 completion tokens"):
        align_row([1, 2, 3], 5, 4, 7, "keep_start")


def test_collated_columns_are_aligned_with_the_completion_mask(models, tmp_path):
    policy, ref, tok = models
    ds = with_weights(tok, lambda s, i, n: [float(k + 1) + (100 if s == "rejected" else 0) for k in range(n)])
    cfg = config(tmp_path, WeightedDPOConfig, weighting={"name": "column", "column": "token_weights"}, max_length=15)
    trainer = make(WeightedDPOTrainer, cfg, policy, ref, tok, ds)
    batch = batch_of(trainer)
    w = batch["tokrl_column.token_weights"]
    assert w.shape == batch["input_ids"].shape
    assert torch.equal(w != 0, batch["completion_mask"].bool())
    # pair 0: prompt "Q: 12+3=? A:" is 12 tokens, so 3 completion tokens survive max_length=15 on each side
    assert len(trainer.train_dataset[0]["prompt_ids"]) == 12
    assert w[0, 12:].tolist() == [1.0, 2.0, 3.0]
    assert w[3, 12:].tolist() == [101.0, 102.0, 103.0]
    # pair 2: prompt "Q: 9-7=?" (8 tokens), chosen " 2"+eos fits whole, then padding
    assert w[2, 8:].tolist() == [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    assert batch["input_ids"].shape[1] == 15


# ---- uniform weights: the TRL oracle ------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpointing", [False, True])
def test_all_ones_weights_reproduce_trl_loss_and_grads(models, tmp_path, checkpointing):
    policy, ref, tok = models
    ds = with_weights(tok, lambda s, i, n: [1.0] * n)
    trl = make(DPOTrainer, config(tmp_path, gradient_checkpointing=checkpointing), policy, ref, tok, ds)
    cfg = config(
        tmp_path,
        WeightedDPOConfig,
        weighting={"name": "column", "column": "token_weights"},
        gradient_checkpointing=checkpointing,
    )
    mine = make(WeightedDPOTrainer, cfg, policy, ref, tok, ds)
    assert not mine.uniform  # the column weighter really runs and multiplies

    loss_trl = trl.compute_loss(trl.model, batch_of(trl))
    loss_trl.backward()
    loss_mine = mine.compute_loss(mine.model, batch_of(mine))
    loss_mine.backward()
    torch.testing.assert_close(loss_mine, loss_trl, rtol=0, atol=0)
    g_trl, g_mine = grads(trl.model), grads(mine.model)
    assert g_trl.keys() == g_mine.keys() and len(g_trl) > 0
    for name in g_trl:
        torch.testing.assert_close(g_mine[name], g_trl[name], rtol=1e-6, atol=1e-8)
    # the logged DPO metrics agree too
    for key in ("rewards/margins", "rewards/chosen", "logps/rejected"):
        assert mine._metrics["train"][key] == pytest.approx(trl._metrics["train"][key], rel=1e-6)


def test_uniform_default_is_plain_dpo(models, tmp_path):
    policy, ref, tok = models
    trl = make(DPOTrainer, config(tmp_path), policy, ref, tok, plain_dataset())
    mine = make(WeightedDPOTrainer, config(tmp_path, WeightedDPOConfig), policy, ref, tok, plain_dataset())
    assert mine.uniform
    torch.testing.assert_close(
        mine.compute_loss(mine.model, batch_of(mine)), trl.compute_loss(trl.model, batch_of(trl)), rtol=0, atol=0
    )


# ---- hand-made weights --------------------------------------------------------------------------------------------


def ramp(side, row, n):
    return [round(0.1 + 0.3 * ((k + row) % 4), 2) if side == "rejected" else 1.0 - 0.2 * (k % 2) for k in range(n)]


def test_weights_hit_policy_and_reference_per_token(models, tmp_path):
    """Loss and grads equal -log sigma(beta(sum w+ lr+ - sum w- lr-)) from full logits, with a distinct reference."""
    policy, ref, tok = models
    ds = with_weights(tok, ramp)
    cfg = config(tmp_path, WeightedDPOConfig, weighting={"name": "column", "column": "token_weights"})
    trainer = make(WeightedDPOTrainer, cfg, policy, ref, tok, ds)
    batch = batch_of(trainer)
    weights = batch["tokrl_column.token_weights"][:, 1:].clone()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()

    p2 = copy.deepcopy(policy)
    expected = hand_weighted_dpo(p2, ref, batch, weights, beta=0.5)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    g = grads(trainer.model)
    for name, p in p2.named_parameters():
        torch.testing.assert_close(g[name], p.grad, rtol=1e-4, atol=1e-6)
    # weighting only the policy (not the reference) gives a different number: the reference is weighted too
    mask = batch["completion_mask"][:, 1:].float()
    with torch.no_grad():
        lp = token_logps(policy, batch["input_ids"], batch["attention_mask"]) * mask
        lr = token_logps(ref, batch["input_ids"], batch["attention_mask"]) * mask
        c, r = ((lp * weights).sum(1) - lr.sum(1)).chunk(2)
        policy_only = -F.logsigmoid(0.5 * (c - r)).mean()
    assert abs(policy_only.item() - loss.item()) > 1e-3
    # metrics: per-side weight stats over completion tokens
    assert trainer._metrics["train"]["weights/chosen_mean"][0] == pytest.approx(
        weights[:3][mask[:3].bool()].mean().item(), rel=1e-6
    )


def test_zero_weight_token_gets_no_gradient(models, tmp_path):
    """A rejected token with weight 0 does not move its own log-prob: d loss / d logp_t = 0."""
    policy, ref, tok = models
    ds = with_weights(tok, lambda s, i, n: [0.0 if (s == "rejected" and k == 1) else 1.0 for k in range(n)])
    cfg = config(tmp_path, WeightedDPOConfig, weighting={"name": "column", "column": "token_weights"})
    trainer = make(WeightedDPOTrainer, cfg, policy, ref, tok, ds)
    batch = batch_of(trainer)
    captured = {}

    def keep(module, args, output):
        if getattr(output, "log_probs", None) is not None and output.log_probs.requires_grad and "lp" not in captured:
            output.log_probs.retain_grad()
            captured["lp"] = output.log_probs

    handle = trainer.model.register_forward_hook(keep, prepend=True)  # runs before tokrl's: sees raw log-probs
    try:
        trainer.compute_loss(trainer.model, dict(batch)).backward()
    finally:
        handle.remove()
    grad = captured["lp"].grad
    w = batch["tokrl_column.token_weights"][:, 1:]
    zero_rows, zero_cols = ((w == 0) & (batch["completion_mask"][:, 1:] == 1)).nonzero(as_tuple=True)
    assert len(zero_rows) == 3
    assert torch.all(grad[zero_rows, zero_cols] == 0)
    assert torch.all(grad[batch["completion_mask"][:, 1:] == 1][w[batch["completion_mask"][:, 1:] == 1] != 0] != 0)


# ---- errors -------------------------------------------------------------------------------------------------------


def test_misaligned_column_names_column_and_row(models, tmp_path):
    policy, ref, tok = models
    ds = with_weights(tok, lambda s, i, n: [1.0] * (n - 1 if (s == "rejected" and i == 2) else n))
    cfg = config(tmp_path, WeightedDPOConfig, weighting={"name": "column", "column": "token_weights"})
    with pytest.raises(ValueError, match=r"column 'rejected_token_weights' row 2 \(train\)"):
        make(WeightedDPOTrainer, cfg, policy, ref, tok, ds)
    with pytest.raises(KeyError, match="no column 'chosen_token_weights'"):
        make(WeightedDPOTrainer, cfg, policy, ref, tok, plain_dataset())


def test_stored_ids_must_match_the_trainer_ids(models, tmp_path):
    policy, ref, tok = models

    def ids_col(side):
        return [completion_token_ids(tok, plain_dataset()[i])[side] for i in range(3)]

    good = with_weights(tok, ramp).add_column("chosen_token_ids", ids_col("chosen"))
    cfg = config(tmp_path, WeightedDPOConfig, weighting={"name": "column", "column": "token_weights"})
    make(WeightedDPOTrainer, cfg, policy, ref, tok, good)
    wrong = ids_col("rejected")
    wrong[1] = list(reversed(wrong[1]))
    bad = with_weights(tok, ramp).add_column("rejected_token_ids", wrong)
    with pytest.raises(ValueError, match=r"column 'rejected_token_ids' row 1 \(train\)"):
        make(WeightedDPOTrainer, cfg, policy, ref, tok, bad)


def test_kept_length_columns_are_accepted(models, tmp_path):
    """A pipeline may score only the tokens the trainer keeps (completion_token_ids with max_length)."""
    policy, ref, tok = models
    full = with_weights(tok, ramp)
    kept = with_weights(tok, ramp, max_length=14)
    cfg = config(tmp_path, WeightedDPOConfig, weighting={"name": "column", "column": "token_weights"}, max_length=14)
    a = make(WeightedDPOTrainer, cfg, policy, ref, tok, full)
    b = make(WeightedDPOTrainer, cfg, policy, ref, tok, kept)
    assert len(kept[0]["rejected_token_weights"]) == 2 < len(full[0]["rejected_token_weights"])
    torch.testing.assert_close(batch_of(a)["tokrl_column.token_weights"], batch_of(b)["tokrl_column.token_weights"])


def test_metadata_with_another_tokenizer_is_refused(models, tmp_path):
    policy, ref, tok = models
    other = copy.deepcopy(tok)
    other.chat_template = "{{ messages }}"
    good = with_weights(tok, ramp).add_column("token_columns_meta", [token_columns_metadata(tok)] * 3)
    bad = with_weights(tok, ramp).add_column("token_columns_meta", [token_columns_metadata(other)] * 3)
    cfg = config(tmp_path, WeightedDPOConfig, weighting={"name": "column", "column": "token_weights"})
    make(WeightedDPOTrainer, cfg, policy, ref, tok, good)
    with pytest.raises(ValueError, match="column 'token_columns_meta'.*tokenizer"):
        make(WeightedDPOTrainer, cfg, policy, ref, tok, bad)
    assert json.loads(token_columns_metadata(tok, evaluator="m"))["evaluator"] == "m"


def test_precompute_ref_log_probs(models, tmp_path):
    """Refused with non-uniform weights (cached sums are unweighted); with uniform weights it equals TRL."""
    policy, ref, tok = models
    cfg = config(
        tmp_path,
        WeightedDPOConfig,
        weighting={"name": "column", "column": "token_weights"},
        precompute_ref_log_probs=True,
    )
    with pytest.raises(ValueError, match="precompute_ref_log_probs=True"):
        make(WeightedDPOTrainer, cfg, policy, ref, tok, with_weights(tok, ramp))
    trl = make(DPOTrainer, config(tmp_path, precompute_ref_log_probs=True), policy, ref, tok, plain_dataset())
    mine = make(
        WeightedDPOTrainer,
        config(tmp_path, WeightedDPOConfig, precompute_ref_log_probs=True),
        policy,
        ref,
        tok,
        plain_dataset(),
    )
    torch.testing.assert_close(
        mine.compute_loss(mine.model, batch_of(mine)), trl.compute_loss(trl.model, batch_of(trl)), rtol=0, atol=0
    )


def test_weighter_needing_unavailable_inputs_is_refused(models, tmp_path):
    class NeedsAdvantages(TokenWeighter):
        needs = frozenset({"advantages"})

    policy, ref, tok = models
    with pytest.raises(ValueError, match="WeightedDPOTrainer cannot give weighter NeedsAdvantages its need 'advantages'"):
        make(
            WeightedDPOTrainer,
            config(tmp_path, WeightedDPOConfig),
            policy,
            ref,
            tok,
            plain_dataset(),
            weighter=NeedsAdvantages(),
        )


def test_online_weighter_sees_policy_entropies(models, tmp_path):
    """A weighter asking for entropies gets the policy's fused-head entropies, `[2B, L-1]`, before the weights apply."""

    class Seen(TokenWeighter):
        needs = frozenset({"entropies", "logps"})
        view = None

        def weigh(self, view):
            Seen.view = view
            return torch.ones_like(view.mask)

    policy, ref, tok = models
    trainer = make(
        WeightedDPOTrainer, config(tmp_path, WeightedDPOConfig), policy, ref, tok, plain_dataset(), weighter=Seen()
    )
    batch = batch_of(trainer)
    trainer.compute_loss(trainer.model, batch)
    mask = batch["completion_mask"][:, 1:].bool()
    assert Seen.view.entropies.shape == mask.shape and (Seen.view.entropies[mask] > 0).all()
    with torch.no_grad():
        lp = token_logps(trainer.model, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(Seen.view.logps[mask], lp[mask], rtol=1e-5, atol=1e-5)


# ---- LoRA ---------------------------------------------------------------------------------------------------------


def test_lora_policy_reference_is_adapter_disabled(models, tmp_path):
    from peft import LoraConfig

    policy, _, tok = models
    ds = with_weights(tok, ramp)
    cfg = config(tmp_path, WeightedDPOConfig, weighting={"name": "column", "column": "token_weights"})
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = WeightedDPOTrainer(
        model=copy.deepcopy(policy), args=cfg, train_dataset=ds, processing_class=tok, peft_config=lora
    )
    assert trainer.ref_model is None
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # move the adapter so policy != reference
    batch = batch_of(trainer)
    weights = batch["tokrl_column.token_weights"][:, 1:].clone()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()

    model = trainer.model
    mask = batch["completion_mask"][:, 1:].float()
    lp = token_logps(model, batch["input_ids"], batch["attention_mask"])
    with torch.no_grad(), model.disable_adapter():
        lr = token_logps(model, batch["input_ids"], batch["attention_mask"])
    c, r = (((lp - lr) * mask * weights).sum(1)).chunk(2)
    expected = -F.logsigmoid(0.5 * (c - r)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)


# ---- pinned TRL internals -----------------------------------------------------------------------------------------


def test_pinned_trl_internals(models, tmp_path):
    """The private TRL pieces this layer relies on: fail loudly if an upgrade moves them."""
    import trl
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    assert trl.__version__.startswith("1.16")
    src = inspect.getsource(DPOTrainer._compute_loss)
    # policy first, then the reference, both through the fused head; per-token log-probs summed per row
    assert src.index("outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)") < src.index(
        "ref_outputs = self.ref_model(**ref_model_kwargs, labels=labels, fused_lm_head=True)"
    )
    assert "logps = per_token_logps.sum(dim=1)" in src
    assert '_non_model_keys = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}' in src
    assert list(inspect.signature(DPOTrainer.compute_ref_log_probs).parameters) == ["self", "model", "inputs"]
    policy, ref, tok = models
    # remove_unused_columns keeps our columns (signature override) and the wrapped collator adds them
    cfg = config(tmp_path, WeightedDPOConfig, weighting={"name": "column", "column": "token_weights"})
    trainer = make(WeightedDPOTrainer, cfg, policy, ref, tok, with_weights(tok, ramp))
    assert trainer.args.remove_unused_columns
    kept = trainer._remove_unused_columns(trainer.train_dataset)
    assert {"chosen_token_weights", "rejected_token_weights", "prompt_ids"} <= set(kept.column_names)
    assert isinstance(trainer.data_collator.inner, DataCollatorForPreference)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "tokrl_column.token_weights" in batch


def test_evaluate_carries_the_columns(models, tmp_path):
    policy, ref, tok = models
    cfg = config(
        tmp_path,
        WeightedDPOConfig,
        weighting={"name": "column", "column": "token_weights"},
        per_device_eval_batch_size=3,
    )
    ds = with_weights(tok, ramp)
    trainer = make(WeightedDPOTrainer, cfg, policy, ref, tok, ds, eval_dataset=ds)
    metrics = trainer.evaluate()
    batch = batch_of(trainer)
    with torch.no_grad():
        expected = hand_weighted_dpo(policy, ref, batch, batch["tokrl_column.token_weights"][:, 1:], beta=0.5)
    assert metrics["eval_loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert "eval_weights/rejected_mean" in metrics


def test_trains_two_steps(models, tmp_path):
    policy, ref, tok = models
    cfg = config(
        tmp_path,
        WeightedDPOConfig,
        weighting={"name": "column", "column": "token_weights"},
        max_steps=2,
        logging_steps=1,
    )
    trainer = make(WeightedDPOTrainer, cfg, policy, ref, tok, with_weights(tok, ramp))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logs)
    assert "weights/rejected_mean" in logs[0] and "unweighted_rewards/margins" in logs[0]
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
