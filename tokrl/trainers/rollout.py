"""What a rollout weighter reads about the old policy, collected while TRL generates and scores a batch.

Three sources of the old policy's per-token states (hidden states, log-probs, entropies), in order of preference:
- `reused`: TRL's own no-grad old-log-prob pass, when TRL runs one (num_iterations > 1, generation not aligned with
  optimizer steps, or vLLM importance sampling): a backbone hook captures the states during that pass;
- `generation` (plain `transformers` generation only): the states that produced each sampled token are captured
  during generation itself (backbone hook, last position of every decoding step), and the full-vocabulary
  normaliser (and entropy) from a hook on the LM head's logits at the same step, so no forward pass is added;
- `extra`: otherwise one extra no-grad forward through TRL's fused LM head (no [B, T, V] logits).
With the default num_iterations = 1 the weights at generation time are the old policy's, so all three agree.
"""

from __future__ import annotations

import torch

from tokrl.model_head import backbone_of, last_hidden, lm_head_of, unwrap_model, zero3_rows
from tokrl.weighting.unembedding import Unembedding


class GenerationCapture:
    """During `generate`: per decoding step, the backbone's last-position state, logsumexp(logits / T) and the
    entropy of softmax(logits / T)."""

    def __init__(self, model: torch.nn.Module, temperature: float):
        self.backbone = backbone_of(model)
        self.head = unwrap_model(model).get_output_embeddings()
        self.temperature = temperature
        self.states: list[torch.Tensor] = []
        self.lse: list[torch.Tensor] = []
        self.entropy: list[torch.Tensor] = []
        self._handles = []

    def _on_backbone(self, module, args, output):
        self.states.append(last_hidden(output)[:, -1].detach())

    def _on_head(self, module, args, output):
        logits = output[:, -1].float() / self.temperature
        lse = torch.logsumexp(logits, dim=-1)
        self.lse.append(lse)
        self.entropy.append(lse - (torch.softmax(logits, -1) * logits).sum(-1))

    def __enter__(self):
        self._handles = [self.backbone.register_forward_hook(self._on_backbone),
                         self.head.register_forward_hook(self._on_head)]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        return False

    def aligned(self, rows: int, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """([rows, length, d] states, [rows, length] lse, [rows, length] entropy) aligned with the completion
        tokens, or None if the capture does not match the batch (the caller then falls back to a forward pass)."""
        if not self.states or len(self.states) != len(self.lse) or self.states[0].size(0) != rows:
            return None
        pad = length - len(self.states)  # pad_to_multiple_of: the extra columns are padding (mask 0)
        parts = [self.states, self.lse, self.entropy]
        parts = [p + [torch.zeros_like(p[0])] * max(pad, 0) for p in parts]
        return tuple(torch.stack(p[:length], 1) for p in parts)


class OldPassCapture:
    """Hidden states, log-probs and entropies of the first no-grad policy scoring pass of one generation step."""

    def __init__(self, armed: bool):
        self.armed = armed
        self.hidden: torch.Tensor | None = None
        self.logps: torch.Tensor | None = None
        self.entropies: torch.Tensor | None = None


def unembedding_of(model, accelerator, temperature: float, needed: torch.Tensor, all_rows: bool) -> Unembedding:
    """The LM head rows for token ids `needed` (this process's; every row with `all_rows`). Collective."""
    head = lm_head_of(model)
    weight, bias = head.weight, head.bias
    common = dict(temperature=temperature, logit_scale=head.logit_scale, softcap=head.softcap)
    if not hasattr(weight, "ds_id"):  # not ZeRO-3: the full matrix is here
        if hasattr(weight, "full_tensor"):  # FSDP2 DTensor
            weight = weight.full_tensor()
            bias = bias.full_tensor() if bias is not None else None
        w, b = weight.detach(), (bias.detach() if bias is not None else None)
        return Unembedding(rows=lambda ids: w[ids], vocab_size=w.shape[0],
                           bias=(lambda ids: b[ids]) if b is not None else None, **common)
    vocab_size = int(weight.ds_shape[0])
    if all_rows:
        ids = torch.arange(vocab_size, device=needed.device)
    else:
        local = torch.unique(needed)
        padded = accelerator.pad_across_processes(local, dim=0, pad_index=-1)
        ids = torch.unique(accelerator.gather(padded))
        ids = ids[ids >= 0]
    rows = zero3_rows(weight, ids)
    bias_rows = zero3_rows(bias, ids) if bias is not None else None

    def lookup(table):
        return lambda q: table[torch.searchsorted(ids, q)]

    return Unembedding(rows=lookup(rows), vocab_size=vocab_size,
                       bias=lookup(bias_rows) if bias_rows is not None else None, **common)
