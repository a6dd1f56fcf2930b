"""`contrastive_token_logprobs`: cDPO's contrastive-estimation log-probability per completion token.

p_CE(y_t) = softmax_v((1 + beta) * z_pos_t(v) - beta * z_neg_t(v))[y_t], the softmax over the FULL vocabulary
(Lin et al. 2024, "Critical Tokens Matter", eq. for the CE score; the released code computes exactly
`softmax(2 * pos_logits - neg_logits)` with beta = 1 and gathers the realised token, the logits at position t-1
scoring token t: checked in chenzhiling9954/Critical-Tokens-Matter, src/pipeline.py `calculate_ce_score`, commit
228991e). The log-normaliser needs every vocabulary logit of both
models, so gathering the two target log-probs is not enough.

How it is computed without `[B, T, V]` logits: the combined logits are linear in the hidden states,
`g = (1+beta) s_p (h_p W_p^T + b_p) - beta s_n (h_n W_n^T + b_n)`. When both models share one LM head (two LoRA
adapters on one base, or the same model), `g = ((1+beta) h_p - beta h_n) W^T + b`: one combined hidden state
through the one head. Otherwise `g = [(1+beta) s_p h_p, -beta s_n h_n] @ [W_p, W_n]^T + b`: the two heads side by
side (a `[V, 2H]` copy, made once per call). Either way TRL's chunked log-prob kernel then streams over positions
and vocabulary tiles, in fp32. Softcapped logits (Gemma 2) are not linear, hence refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from tokrl.model_head import Head, backbone_hidden, lm_head_of
from tokrl.scoring.batching import iter_batches
from tokrl.scoring.head import chunked_logprobs
from tokrl.scoring.tokens import device_of, eval_mode


@contextlib.contextmanager
def active_adapter(model: torch.nn.Module, name: str | None):
    """Run with PEFT adapter `name` active; restore the previous adapter and every `requires_grad` flag after.

    (PEFT's `set_adapter` also marks the chosen adapter trainable, which a scorer must not leave behind.)
    """
    if name is None:
        yield
        return
    if not hasattr(model, "set_adapter"):
        raise ValueError(f"adapters=... needs a PEFT model with named adapters; got {type(model).__name__}")
    if name not in getattr(model, "peft_config", {}):
        raise ValueError(f"adapter '{name}' not found; the model has {sorted(model.peft_config)}")
    previous = model.active_adapter
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(previous)
        for n, p in model.named_parameters():
            p.requires_grad_(grads[n])


def _same_head(a: Head, b: Head) -> bool:
    same_bias = (a.bias is None and b.bias is None) or (a.bias is not None and a.bias is b.bias)
    return a.weight is b.weight and same_bias and a.logit_scale == b.logit_scale


def _combined_bias(pos: Head, neg: Head, beta: float) -> torch.Tensor | None:
    if pos.bias is None and neg.bias is None:
        return None
    bias = torch.zeros(pos.weight.shape[0], dtype=torch.float32, device=pos.weight.device)
    if pos.bias is not None:
        bias = bias + (1 + beta) * pos.logit_scale * pos.bias.float()
    if neg.bias is not None:
        bias = bias - beta * neg.logit_scale * neg.bias.to(bias.device).float()
    return bias


def contrastive_token_logprobs(
    model_pos: torch.nn.Module,
    model_neg: torch.nn.Module,
    examples: Sequence[dict],
    *,
    beta: float,
    batch_size: int = 8,
    chunk_size: int = 1024,
    progress: bool = False,
    adapters: tuple[str, str] | None = None,
) -> list[list[float]]:
    """log p_CE(completion_ids[t]) for every completion token of every example, in input order.

    `model_pos`/`model_neg`: two causal LMs with the same vocabulary, or one PEFT model passed twice with
    `adapters=("positive", "negative")` (adapter names), switched between the two backbone passes.
    `chunk_size`: positions per kernel call (peak extra memory ~ chunk_size x 8192 x 4 B per buffer).
    """
    if adapters is not None:
        if model_pos is not model_neg:
            raise ValueError("adapters=(pos, neg) switches adapters on one PEFT model: pass the same model twice")
        if len(adapters) != 2:
            raise ValueError(f"adapters must name two adapters (positive, negative), got {adapters!r}")
    pos_adapter, neg_adapter = adapters if adapters is not None else (None, None)
    head_pos, head_neg = lm_head_of(model_pos), lm_head_of(model_neg)
    if head_pos.weight.shape != head_neg.weight.shape:
        shapes = f"{tuple(head_pos.weight.shape)} vs {tuple(head_neg.weight.shape)}"
        raise ValueError(f"the two models' LM heads differ in shape: {shapes}")
    if head_pos.softcap is not None or head_neg.softcap is not None:
        raise ValueError("softcapped logits (final_logit_softcapping) are not supported by the contrastive scorer")
    shared = _same_head(head_pos, head_neg)
    a_pos, a_neg = (1 + beta), -beta
    if not shared:  # two heads side by side: [V, 2H], built once
        a_pos, a_neg = a_pos * head_pos.logit_scale, a_neg * head_neg.logit_scale
        combined = Head(
            weight=torch.cat([head_pos.weight, head_neg.weight.to(head_pos.weight.device)], dim=1),
            bias=_combined_bias(head_pos, head_neg, beta),
        )
    else:
        combined = Head(weight=head_pos.weight, bias=head_pos.bias, logit_scale=head_pos.logit_scale)

    results: list[list[float] | None] = [None] * len(examples)
    device = device_of(model_pos)
    with torch.no_grad(), eval_mode(model_pos, model_neg):
        for batch in iter_batches(examples, batch_size, device, progress=progress, desc="contrastive scoring"):
            mask = batch.target_mask[:, 1:]
            with active_adapter(model_pos, pos_adapter):
                h_pos = backbone_hidden(model_pos, batch.input_ids, batch.attention_mask)[:, :-1][mask].float()
            with active_adapter(model_neg, neg_adapter):
                ids, attn = batch.input_ids.to(device_of(model_neg)), batch.attention_mask.to(device_of(model_neg))
                h_neg = backbone_hidden(model_neg, ids, attn)[:, :-1][mask.to(ids.device)].float().to(h_pos.device)
            if shared:
                hidden = a_pos * h_pos + a_neg * h_neg
            else:
                hidden = torch.cat([a_pos * h_pos, a_neg * h_neg], dim=-1)
            del h_pos, h_neg
            logp, _ = chunked_logprobs(
                hidden, combined, batch.input_ids[:, 1:][mask], token_chunk=chunk_size)
            start = 0
            for i, n in zip(batch.indices, batch.completion_lengths):
                results[i] = logp[start : start + n].tolist()
                start += n
    return results  # type: ignore[return-value]
