"""The shared chunked scorer equals a plain full-logits computation (fp32, tight tolerance)."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import PretrainedConfig
from transformers.modeling_outputs import BaseModelOutputWithPast

from tokrl.models import tiny_model
from tokrl.scoring import contrastive_token_logprobs, score_batch, score_tokens
from tokrl.scoring.batching import length_buckets

TOL = dict(atol=1e-5, rtol=1e-5)


def ragged_examples(vocab: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 5), (1, 9), (7, 2), (2, 1), (5, 8), (4, 4), (1, 1)]  # (prompt, completion) lengths
    return [
        {
            "prompt_ids": torch.randint(3, vocab, (p,), generator=g).tolist(),
            "completion_ids": torch.randint(3, vocab, (c,), generator=g).tolist(),
        }
        for p, c in shapes
    ]


def full_logits(model, ids: list[int]) -> torch.Tensor:
    """[L, V] logits of one unpadded row: the plain computation the scorer must reproduce."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def reference(model, example, temperature=1.0):
    ids = example["prompt_ids"] + example["completion_ids"]
    logprobs = torch.log_softmax(full_logits(model, ids) / temperature, dim=-1)
    p = len(example["prompt_ids"])
    rows = logprobs[p - 1 : len(ids) - 1]
    targets = torch.tensor(example["completion_ids"])
    logps = rows.gather(-1, targets[:, None]).squeeze(-1)
    entropies = -(rows.exp() * rows).sum(-1)
    return logps, entropies


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_score_tokens_equals_full_logits_ragged_and_bucketed(temperature):
    model, tok = tiny_model(seed=0)
    model.train()  # the scorer must switch dropout off and restore the flag
    examples = ragged_examples(len(tok))
    out = score_tokens(model, examples, batch_size=3, compute_entropy=True, temperature=temperature)
    assert model.training
    assert len(out) == len(examples)
    for example, got in zip(examples, out):
        logps, entropies = reference(model.eval(), example, temperature)
        model.train()
        assert len(got["logps"]) == len(example["completion_ids"]) == len(got["entropies"])
        torch.testing.assert_close(torch.tensor(got["logps"]), logps, **TOL)
        torch.testing.assert_close(torch.tensor(got["entropies"]), entropies, **TOL)
    # the batch size (hence the bucketing and padding) does not change any number
    single = score_tokens(model, examples, batch_size=1, temperature=temperature)
    assert "entropies" not in single[0]
    for a, b in zip(out, single):
        torch.testing.assert_close(torch.tensor(a["logps"]), torch.tensor(b["logps"]), **TOL)


def test_length_buckets_sort_longest_first_and_cover_all():
    assert length_buckets([3, 9, 1, 9, 5], 2) == [[1, 3], [4, 0], [2]]
    with pytest.raises(ValueError, match="batch_size"):
        length_buckets([1], 0)


def test_score_batch_gradients_equal_full_logits():
    model, tok = tiny_model(seed=1)
    g = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, len(tok), (2, 7), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0  # right padding on row 1
    target_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    target_mask[0, 3:] = True
    target_mask[1, 2:5] = True
    weights = torch.randn(2, 7, generator=g)

    logp, entropy = score_batch(model, input_ids, attention_mask, target_mask, compute_entropy=True, token_chunk=3)
    ((logp * weights).sum() + entropy.sum()).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    logprobs = torch.log_softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1], -1)
    ref = torch.zeros(2, 7)
    ref[:, 1:] = logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    ref_ent = torch.zeros(2, 7)
    ref_ent[:, 1:] = -(logprobs.exp() * logprobs).sum(-1)
    ref, ref_ent = ref * target_mask, ref_ent * target_mask
    torch.testing.assert_close(logp.detach(), ref.detach(), **TOL)
    torch.testing.assert_close(entropy.detach(), ref_ent.detach(), **TOL)
    ((ref * weights).sum() + ref_ent.sum()).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


def lora(model, name="default", seed=0):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    torch.manual_seed(seed)
    if name == "default":
        return get_peft_model(model, config)
    model.add_adapter(name, config)
    return model


def test_score_tokens_on_peft_lora_uses_the_adapter():
    base, tok = tiny_model(seed=0)
    plain_examples = ragged_examples(len(tok), seed=1)
    before = [reference(base, e)[0] for e in plain_examples]
    model = lora(base)
    out = score_tokens(model, plain_examples, batch_size=4)
    changed = False
    for example, got, old in zip(plain_examples, out, before):
        logps, _ = reference(model, example)
        torch.testing.assert_close(torch.tensor(got["logps"]), logps, **TOL)
        changed |= not torch.allclose(logps, old, atol=1e-4)
    assert changed  # the adapter is really active


def contrastive_reference(logits_pos, logits_neg, example, beta):
    g = torch.log_softmax((1 + beta) * logits_pos - beta * logits_neg, dim=-1)
    p = len(example["prompt_ids"])
    n = len(example["completion_ids"])
    return g[p - 1 : p - 1 + n].gather(-1, torch.tensor(example["completion_ids"])[:, None]).squeeze(-1)


def test_contrastive_two_models_equals_full_vocab():
    pos, tok = tiny_model(seed=0)
    neg, _ = tiny_model(seed=5)
    examples = ragged_examples(len(tok), seed=2)
    got = contrastive_token_logprobs(pos, neg, examples, beta=1.0, batch_size=3, chunk_size=4)
    for example, values in zip(examples, got):
        ids = example["prompt_ids"] + example["completion_ids"]
        want = contrastive_reference(full_logits(pos, ids), full_logits(neg, ids), example, 1.0)
        assert len(values) == len(example["completion_ids"])
        torch.testing.assert_close(torch.tensor(values), want, **TOL)


def test_contrastive_one_peft_model_two_adapters():
    base, tok = tiny_model(seed=2)
    model = lora(base, seed=1)  # adapter "default", then two named ones
    lora(model, "positive", seed=2)
    lora(model, "negative", seed=3)
    model.set_adapter("default")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    examples = ragged_examples(len(tok), seed=3)
    beta = 0.5
    got = contrastive_token_logprobs(model, model, examples, beta=beta, batch_size=2, adapters=("positive", "negative"))
    assert model.active_adapter == "default"
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    for example, values in zip(examples, got):
        ids = example["prompt_ids"] + example["completion_ids"]
        model.set_adapter("positive")
        zp = full_logits(model, ids)
        model.set_adapter("negative")
        zn = full_logits(model, ids)
        assert not torch.allclose(zp, zn, atol=1e-3)
        torch.testing.assert_close(torch.tensor(values), contrastive_reference(zp, zn, example, beta), **TOL)
    with pytest.raises(ValueError, match="adapter 'nope' not found"):
        contrastive_token_logprobs(model, model, examples, beta=1.0, adapters=("positive", "nope"))


class HandLM(torch.nn.Module):
    """A 3-token 'language model' whose logits at a position are a fixed row picked by the current token."""

    base_model_prefix = "model"

    class Backbone(torch.nn.Module):
        def __init__(self, rows):
            super().__init__()
            self.table = torch.nn.Embedding.from_pretrained(torch.tensor(rows, dtype=torch.float32))

        def forward(self, input_ids, attention_mask=None, use_cache=False):
            return BaseModelOutputWithPast(last_hidden_state=self.table(input_ids))

    def __init__(self, rows):
        super().__init__()
        self.config = PretrainedConfig()
        self.model = self.Backbone(rows)
        self.lm_head = torch.nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.lm_head.weight.copy_(torch.eye(3))

    def get_output_embeddings(self):
        return self.lm_head


def test_contrastive_hand_three_token_vocab_with_normaliser():
    # z_pos = [2, 0, 0], z_neg = [0, 1, 0] after token 0; beta = 1 => g = [4, -1, 0] (cdpo.md section 4.5)
    pos = HandLM([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    neg = HandLM([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    examples = [{"prompt_ids": [0], "completion_ids": [v]} for v in range(3)]
    got = [v[0] for v in contrastive_token_logprobs(pos, neg, examples, beta=1.0)]
    lse = math.log(math.exp(4) + math.exp(-1) + math.exp(0))
    assert got == pytest.approx([4 - lse, -1 - lse, 0 - lse], abs=1e-6)
    assert [math.exp(v) for v in got] == pytest.approx([0.975559, 0.006573, 0.017868], abs=1e-6)
    # replacing the logits by their log-softmax changes nothing (per-position constants cancel)
    neg_ls = HandLM([torch.log_softmax(torch.tensor([0.0, 1.0, 0.0]), 0).tolist(), [0.0] * 3, [0.0] * 3])
    got_ls = [v[0] for v in contrastive_token_logprobs(pos, neg_ls, examples, beta=1.0)]
    assert got_ls == pytest.approx(got, abs=1e-6)
    # the unnormalised log-ratio is NOT the score: the normaliser matters
    assert got[0] != pytest.approx(4.0, abs=1e-3)


def test_bad_examples_name_the_example_and_key():
    model, _ = tiny_model()
    with pytest.raises(ValueError, match="example 1: missing key 'completion_ids'"):
        score_tokens(model, [{"prompt_ids": [1], "completion_ids": [2]}, {"prompt_ids": [1]}])
    with pytest.raises(ValueError, match="example 0: 'prompt_ids' is empty"):
        score_tokens(model, [{"prompt_ids": [], "completion_ids": [2]}])
