"""The one chunked scorer the offline pipelines share (cDPO, T-REG, token cleaning): per-token log-probs,
entropies and cDPO's contrastive log-probs, batched by length, never holding `[B, T, V]` logits."""

from tokrl.scoring.contrastive import contrastive_token_logprobs
from tokrl.scoring.head import chunked_logprobs
from tokrl.scoring.tokens import score_batch, score_tokens

__all__ = ["score_tokens", "contrastive_token_logprobs", "score_batch", "chunked_logprobs"]
