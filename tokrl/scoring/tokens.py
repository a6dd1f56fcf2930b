"""`score_tokens`: per-token log-probs (and entropies) of completions under a model, never holding `[B, T, V]`."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from tokrl.model_head import backbone_hidden, lm_head_of
from tokrl.scoring.batching import iter_batches
from tokrl.scoring.head import chunked_logprobs


@contextlib.contextmanager
def eval_mode(*models: torch.nn.Module):
    """Dropout off while scoring; each model's train/eval flag is restored afterwards."""
    flags = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(models, flags):
            m.train(flag)


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def score_batch(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_mask: torch.Tensor,
    *,
    compute_entropy: bool = False,
    temperature: float = 1.0,
    token_chunk: int | None = None,
    vocab_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Tensor form of the scorer: `[B, L]` log p(input_ids[t] | input_ids[:t]) where `target_mask`, else 0.

    `target_mask[:, 0]` must be False (the first token has no context). Only the masked positions reach the LM head.
    Differentiable when called with grad enabled.
    """
    if target_mask[:, 0].any():
        raise ValueError("target_mask[:, 0] is set: the first token of a row has no context to be scored under")
    hidden = backbone_hidden(model, input_ids, attention_mask)[:, :-1]
    mask = target_mask[:, 1:]
    logp, entropy = chunked_logprobs(
        hidden[mask],
        lm_head_of(model),
        input_ids[:, 1:][mask],
        temperature=temperature,
        compute_entropy=compute_entropy,
        token_chunk=token_chunk,
        vocab_chunk=vocab_chunk,
    )

    def place(values):
        values = values.to(mask.device)
        out = values.new_zeros(input_ids.shape)
        out[:, 1:] = out[:, 1:].masked_scatter(mask, values)
        return out

    return place(logp), (place(entropy) if compute_entropy else None)


def score_tokens(
    model: torch.nn.Module,
    examples: Sequence[dict],
    *,
    batch_size: int = 8,
    compute_entropy: bool = False,
    temperature: float = 1.0,
    progress: bool = False,
    desc: str = "scoring",
) -> list[dict]:
    """Score every completion token of every example under `model` (with its prompt as context).

    `examples`: dicts with `prompt_ids` and `completion_ids` (lists of ints; `prompt_ids` non-empty).
    Returns, in input order, `{"logps": [...]}` (+ `"entropies"` if `compute_entropy`), one float per completion
    token: `logps[t] = log p(completion_ids[t] | prompt_ids + completion_ids[:t])` with logits / `temperature`.
    Rows are bucketed by length so padding stays within a bucket; the model runs in eval mode without grad.
    For a PEFT model the active adapter is used.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    results: list[dict | None] = [None] * len(examples)
    device = device_of(model)
    with torch.no_grad(), eval_mode(model):
        for batch in iter_batches(examples, batch_size, device, progress=progress, desc=desc):
            logp, entropy = score_batch(
                model,
                batch.input_ids,
                batch.attention_mask,
                batch.target_mask,
                compute_entropy=compute_entropy,
                temperature=temperature,
            )
            for b, i in enumerate(batch.indices):
                row = batch.target_mask[b]
                results[i] = {"logps": logp[b][row].tolist()}
                if compute_entropy:
                    results[i]["entropies"] = entropy[b][row].tolist()
    return results  # type: ignore[return-value]
