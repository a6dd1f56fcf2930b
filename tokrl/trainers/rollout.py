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

from tokrl.trainers.hidden_states import backbone_of, unwrap_model
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
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        self.states.append(hidden[:, -1].detach())

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


def zero3_rows(weight: torch.nn.Parameter, ids: torch.Tensor) -> torch.Tensor:
    """Rows `ids` of a DeepSpeed ZeRO-3 partitioned 2-D parameter, gathered without materialising the whole matrix.

    ZeRO-3 keeps rank r's slice [r*n, (r+1)*n) of the flattened parameter in `weight.ds_tensor` (n = its numel).
    Every rank fills the elements of the requested rows it owns and an all-reduce sums them: |ids| x d floats move,
    not V x d. Collective: every rank must call it with the same ids.
    """
    import torch.distributed as dist

    group = weight.ds_process_group
    part = weight.ds_tensor
    size = part.ds_numel if hasattr(part, "ds_numel") else part.numel()
    rank = dist.get_rank(group=group)
    shape = tuple(weight.ds_shape)
    width = shape[1] if len(shape) > 1 else 1
    device = ids.device
    flat = ids.unsqueeze(1) * width + torch.arange(width, device=device)  # [n, d] flat element indices
    start = rank * size
    owned = (flat >= start) & (flat < start + size)
    out = torch.zeros(flat.shape, dtype=torch.float32, device=device)
    local = part.data.view(-1).to(device)
    out[owned] = local[flat[owned] - start].float()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out if len(shape) > 1 else out.squeeze(1)


def logit_scale(config) -> tuple[float, float | None]:
    """(logit_scale, final_logit_softcapping) read from the model config as TRL's fused LM head reads them."""
    text = config.get_text_config()
    softcap = getattr(text, "final_logit_softcapping", None)
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        value = getattr(text, name, None)
        if value is not None:
            return float(value), softcap
    scaling = getattr(text, "logits_scaling", None)
    if scaling is not None:
        return (float(scaling) if text.model_type == "hyperclovax" else 1.0 / float(scaling)), softcap
    return 1.0, softcap


def unembedding_of(model, accelerator, temperature: float, needed: torch.Tensor, all_rows: bool) -> Unembedding:
    """The LM head rows for token ids `needed` (this process's; every row with `all_rows`). Collective."""
    model = unwrap_model(model)
    head = model.get_output_embeddings()
    if hasattr(head, "lora_A"):
        raise NotImplementedError("rollout weighters do not support a LoRA adapter on the LM head; drop it from "
                                  "target_modules")
    weight, bias = head.weight, head.bias
    scale, softcap = logit_scale(model.config)
    common = dict(temperature=temperature, logit_scale=scale, softcap=softcap)
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
