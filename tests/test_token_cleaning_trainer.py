"""TokenCleaningSFTTrainer: masked loss by hand, all-ones mask == TRL SFTTrainer (loss, grads, a step), the
selected-token normaliser under gradient accumulation, alignment errors, and tokenisation pinned to TRL's."""

import copy

import pytest
import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from tokrl.models import tiny_model
from tokrl.trainers.token_cleaning_tokens import tokenize_sft_row
from tokrl.trainers.token_cleaning_sft import TokenCleaningSFTTrainer
from tokrl.trainers.token_cleaning_sft_config import TokenCleaningSFTConfig

ARGS = dict(report_to="none", per_device_train_batch_size=3, max_steps=1, logging_steps=1, use_cpu=True,
            save_strategy="no", seed=0, bf16=False, gradient_checkpointing=False)


def chat_rows(n=6):
    return [
        {"prompt": [{"role": "user", "content": f"What is {i} + {i + 3}?"}],
         "completion": [{"role": "assistant", "content": str(2 * i + 3) + " ok" * (i % 3)}]}
        for i in range(n)
    ]


def tokenised(rows, tok, masks=None):
    out = [tokenize_sft_row(r, tok) for r in rows]
    for i, row in enumerate(out):
        row["token_mask"] = masks[i] if masks else list(row["completion_mask"])
    return Dataset.from_list(out)


def nll_by_hand(model, input_ids):
    """Per-token NLL [L-1] from the full logits (independent of the fused head): position t predicts token t+1."""
    logits = model(input_ids=input_ids[None]).logits[0, :-1].float()
    return -torch.log_softmax(logits, -1).gather(-1, input_ids[1:, None])[:, 0]


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_tokenisation_matches_trl_sft_trainer(tmp_path):
    model, tok = tiny_model()
    chat = chat_rows(4)
    text = [{"prompt": f"Q: {i}+{i}=", "completion": f" {2 * i}"} for i in range(4)]
    messages = [{"messages": [{"role": "system", "content": "be brief"}, *r["prompt"], *r["completion"]]} for r in chat]
    for rows in (chat, text):
        trl = SFTTrainer(model=model, args=SFTConfig(str(tmp_path), **ARGS), train_dataset=Dataset.from_list(rows),
                         processing_class=tok)
        for row, prepared in zip(rows, trl.train_dataset):
            mine = tokenize_sft_row(row, tok)
            assert mine["input_ids"] == prepared["input_ids"]
            assert [t if m else -100 for t, m in zip(mine["input_ids"], mine["completion_mask"])] == prepared["labels"]
    # messages rows: the last assistant turn is the completion, earlier turns the prompt
    split = [{"prompt": [m["messages"][0], m["messages"][1]], "completion": [m["messages"][2]]} for m in messages]
    assert [tokenize_sft_row(m, tok) for m in messages] == [tokenize_sft_row(s, tok) for s in split]


def test_masked_loss_equals_hand_computation(tmp_path):
    model, tok = tiny_model()
    rows = chat_rows(3)
    base = [tokenize_sft_row(r, tok) for r in rows]
    masks = []
    for b in base:  # keep every other response token
        idx = [i for i, m in enumerate(b["completion_mask"]) if m]
        masks.append([1 if (i in idx and idx.index(i) % 2 == 0) else 0 for i in range(len(b["input_ids"]))])
    trainer = TokenCleaningSFTTrainer(model=model, args=TokenCleaningSFTConfig(str(tmp_path), **ARGS),
                                      train_dataset=tokenised(rows, tok, masks), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    calls, head_inputs = [], []
    forward = model.forward  # TRL's fused-head forward, patched in at init

    def recording_forward(*args, **kwargs):
        calls.append(bool(kwargs.get("fused_lm_head")))
        return forward(*args, **kwargs)

    model.forward = recording_forward
    hook = model.lm_head.register_forward_hook(lambda m, i, o: head_inputs.append(tuple(i[0].shape)))
    loss = trainer.compute_loss(model, dict(batch))
    hook.remove()
    model.forward = forward
    assert calls == [True]  # one forward, through TRL's fused, vocabulary-chunked head
    assert all(shape[:2] != tuple(batch["input_ids"].shape) for shape in head_inputs)  # never [B, T, V] logits
    loss.backward()
    got = grads(model)
    model.zero_grad()

    total, count = 0.0, 0
    for b, m in zip(base, masks):
        nll = nll_by_hand(model, torch.tensor(b["input_ids"]))
        keep = torch.tensor(m[1:], dtype=torch.bool)
        total = total + nll[keep].sum()
        count += int(keep.sum())
    expected = total / count
    assert count == sum(sum(m) for m in masks) > 0
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    expected.backward()
    for name, g in grads(model).items():
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6)
    assert abs(trainer._metrics["train"]["token_cleaning/kept_frac"][-1]
               - count / sum(sum(b["completion_mask"]) for b in base)) < 1e-6


def test_all_ones_mask_reproduces_trl_sft(tmp_path):
    model, tok = tiny_model()
    rows = chat_rows(6)
    model_a, model_b = copy.deepcopy(model), copy.deepcopy(model)
    args = dict(ARGS, learning_rate=1e-2, max_steps=2, per_device_train_batch_size=3)
    trl = SFTTrainer(model=model_a, args=SFTConfig(str(tmp_path / "a"), **args),
                     train_dataset=Dataset.from_list(rows), processing_class=tok)
    ours = TokenCleaningSFTTrainer(model=model_b, args=TokenCleaningSFTConfig(str(tmp_path / "b"), **args),
                                   train_dataset=tokenised(rows, tok), processing_class=tok)
    batch_a = trl.data_collator([trl.train_dataset[i] for i in range(6)])
    batch_b = ours.data_collator([ours.train_dataset[i] for i in range(6)])
    assert torch.equal(batch_a["labels"], batch_b["labels"])
    loss_a = trl.compute_loss(model_a, dict(batch_a))
    loss_b = ours.compute_loss(model_b, dict(batch_b))
    assert torch.equal(loss_a, loss_b)
    loss_a.backward()
    loss_b.backward()
    ga, gb = grads(model_a), grads(model_b)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)
    model_a.zero_grad()
    model_b.zero_grad()
    out_a, out_b = trl.train(), ours.train()
    assert out_a.training_loss == out_b.training_loss
    for (na, pa), (nb, pb) in zip(model_a.named_parameters(), model_b.named_parameters()):
        assert torch.equal(pa, pb), na


def test_normaliser_counts_selected_tokens_across_accumulation(tmp_path):
    """One SGD step with (batch 2, GA 1) and (batch 1, GA 2) gives the same parameters only if both divide by the
    selected-token count of the whole step (rows keep 1 and 4 tokens: a per-micro-batch mean would differ)."""
    model, tok = tiny_model()
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": c}]}
            for c in ("abcdef", "xy")]
    base = [tokenize_sft_row(r, tok) for r in rows]
    masks = []
    for b, keep in zip(base, (1, 4)):
        idx = [i for i, m in enumerate(b["completion_mask"]) if m][:keep]
        masks.append([int(i in idx) for i in range(len(b["input_ids"]))])
    ds = tokenised(rows, tok, masks)
    params = []
    for bs, ga in ((2, 1), (1, 2)):
        m = copy.deepcopy(model)
        args = TokenCleaningSFTConfig(str(tmp_path / f"{bs}{ga}"), **dict(
            ARGS, per_device_train_batch_size=bs, gradient_accumulation_steps=ga, optim="sgd", learning_rate=1.0,
            lr_scheduler_type="constant", max_grad_norm=0.0))
        TokenCleaningSFTTrainer(model=m, args=args, train_dataset=ds, processing_class=tok).train()
        params.append([p.detach().clone() for p in m.parameters()])
    moved = max((a - b).abs().max().item() for a, b in zip(params[0], model.parameters()))
    assert moved > 1e-3
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_misaligned_mask_names_column_and_row(tmp_path):
    model, tok = tiny_model()
    rows = chat_rows(3)
    ds = tokenised(rows, tok).to_list()
    ds[1]["token_mask"] = ds[1]["token_mask"][:-2]
    with pytest.raises(ValueError, match=r"row 1: per-token column 'token_mask' has"):
        TokenCleaningSFTTrainer(model=model, args=TokenCleaningSFTConfig(str(tmp_path), **ARGS),
                                train_dataset=Dataset.from_list(ds), processing_class=tok)
    with pytest.raises(ValueError, match="token_mask"):  # raw rows cannot carry a per-token column
        TokenCleaningSFTTrainer(model=model, args=TokenCleaningSFTConfig(str(tmp_path), **ARGS),
                                train_dataset=Dataset.from_list(rows), processing_class=tok)


def test_truncation_keeps_columns_aligned(tmp_path):
    model, tok = tiny_model()
    ds = tokenised(chat_rows(3), tok)
    args = TokenCleaningSFTConfig(str(tmp_path), **dict(ARGS, max_length=33))
    trainer = TokenCleaningSFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    for row in trainer.train_dataset:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["token_mask"]) == len(row["completion_mask"])
        assert len(row["input_ids"]) <= 33


def test_config_rejects_column_dropping_settings(tmp_path):
    for bad in ({"packing": True}, {"padding_free": True}, {"remove_unused_columns": True}, {"loss_type": "dft"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TokenCleaningSFTConfig(str(tmp_path), use_cpu=True, report_to="none", **bad)
    config = TokenCleaningSFTConfig(str(tmp_path), use_cpu=True, report_to="none")
    assert config.weighting == {"name": "column", "column": "token_mask"}
    assert config.bf16 is False and config.gradient_checkpointing is False
