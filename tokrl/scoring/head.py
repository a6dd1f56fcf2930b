"""TRL's chunked log-prob kernel applied to hidden states we already hold.

Why not `model(..., labels=..., fused_lm_head=True)` (TRL's `add_fused_lm_head`) here:
- it fixes the temperature when the head is patched in and monkey-patches the caller's model for good, while the
  scorer takes a temperature per call and must leave the model as it found it;
- off Triton devices (every CPU) it projects every position, prompt and padding included, in one
  `[min(N, 4096), 32768]` tile, so neither the work nor the peak memory can be bounded by the caller;
- the contrastive score needs both models' hidden states, which that forward does not return.
So the scorer runs the backbone itself and hands the positions it wants to `trl.kernels.ChunkedLogProbFunction`,
TRL's own online-logsumexp kernel (log-probs, entropies and their backward), in tiles of our choosing.
"""

from __future__ import annotations

import torch
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import maybe_gather_lm_head_ctx

from tokrl.model_head import Head

# Positions per kernel call and vocabulary columns per tile: one fp32 tile is 256 x 8192 x 4 B = 8 MiB
# (cache-friendlier than bigger tiles on CPU: the head matmul then runs at the speed of one big matmul).
TOKEN_CHUNK = 256
VOCAB_CHUNK = 8192


def chunked_logprobs(
    hidden: torch.Tensor,
    head: Head,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    compute_entropy: bool = False,
    token_chunk: int | None = None,
    vocab_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(targets | hidden) `[N]` (and entropies `[N]`) in fp32, `token_chunk x vocab_chunk` logits at a time.

    Differentiable w.r.t. `hidden` and the head (TRL's kernel recomputes tiles in backward). The chunk sizes
    default to the module's `TOKEN_CHUNK` / `VOCAB_CHUNK`, read at call time.
    """
    token_chunk = token_chunk or TOKEN_CHUNK
    vocab_chunk = vocab_chunk or VOCAB_CHUNK
    outputs = ("log_probs", "entropy") if compute_entropy else ("log_probs",)
    logps, entropies = [], []
    weight, bias = head.weight, head.bias
    # The kernel computes in the hidden dtype: fp32 logits, the head cast tile by tile. With a model split across
    # devices the backbone can end on another device than the head.
    hidden = hidden.to(weight.device, torch.float32)
    targets = targets.to(weight.device)
    with torch.autocast(hidden.device.type, enabled=False), maybe_gather_lm_head_ctx(
        *(p for p in (weight, bias) if p is not None)
    ):
        for start in range(0, hidden.shape[0], token_chunk):
            lp, ent, *_ = ChunkedLogProbFunction.apply(
                hidden[start : start + token_chunk],
                weight,
                bias,
                targets[start : start + token_chunk],
                temperature,
                vocab_chunk,
                head.softcap,
                head.logit_scale,
                outputs,
            )
            logps.append(lp)
            entropies.append(ent)
    empty = hidden.new_zeros((0,))
    logp = torch.cat(logps) if logps else empty
    entropy = (torch.cat(entropies) if entropies else empty) if compute_entropy else None
    return logp, entropy
