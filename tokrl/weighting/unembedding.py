"""`Unembedding`: the LM head as a rollout weighter sees it (some rows of W, the bias, TRL's logit transform)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Unembedding:
    """The LM head as THR needs it: the rows of W (and bias) for some token ids, and TRL's logit transform.

    `rows(ids) -> [n, d]`, `bias(ids) -> [n]` (or None). Logits are `transform(h @ W[ids].T + b) / temperature` with
    `transform(z) = softcap * tanh(logit_scale * z / softcap)` (softcap None: `logit_scale * z`), the order TRL's
    fused LM head uses.
    """

    rows: Callable[[torch.Tensor], torch.Tensor]
    vocab_size: int
    bias: Callable[[torch.Tensor], torch.Tensor] | None = None
    temperature: float = 1.0
    logit_scale: float = 1.0
    softcap: float | None = None

    def logits(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """`[n, d] x ids [m] -> [n, m]` fp32 logits over the given token ids."""
        z = hidden.float() @ self.rows(ids).float().T
        if self.bias is not None:
            z = z + self.bias(ids).float()
        z = z * self.logit_scale
        if self.softcap is not None:
            z = self.softcap * torch.tanh(z / self.softcap)
        return z / self.temperature

    def logsumexp(self, hidden: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Full-vocabulary logsumexp of the logits, in vocabulary chunks (used only when no log-probs are given)."""
        out = torch.full((hidden.size(0),), float("-inf"), device=hidden.device)
        for start in range(0, self.vocab_size, chunk):
            ids = torch.arange(start, min(start + chunk, self.vocab_size), device=hidden.device)
            out = torch.logaddexp(out, torch.logsumexp(self.logits(hidden, ids), dim=-1))
        return out
