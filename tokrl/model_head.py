"""The model's ends as plain modules and tensors: backbone hidden states, the LM head and its logit transform.

Scoring and the trainers reach a causal LM only through this module, so both unwrap it, read its unembedding and
its logit scale the same way, and the way TRL's fused LM head does (`trl.models.utils.add_fused_lm_head`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The `*ForCausalLM` module under DDP/DeepSpeed, `torch.compile` and PEFT wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            break
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder backbone (`model.model` of a `*ForCausalLM`), through every wrapper."""
    model = unwrap_model(model)
    backbone = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if not isinstance(backbone, torch.nn.Module) or backbone is model:
        raise ValueError(f"cannot find the decoder backbone of {type(model).__name__} (expected a `.model` module)")
    return backbone


def last_hidden(output) -> torch.Tensor:
    """The final-norm hidden states of a backbone's output (a ModelOutput or a tuple)."""
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]


def backbone_hidden(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final-norm hidden states `[B, L, H]` from the decoder backbone alone (the LM head is never called)."""
    return last_hidden(backbone_of(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False))


class HiddenStateCapture(contextlib.AbstractContextManager):
    """Hold the final-norm output of every forward of `model`'s backbone while the context is open.

    `only_grad=True` keeps only forwards run with autograd on (the training forward), so the no-grad old/ref
    scoring passes do not overwrite it. The states are `[B, L, H]`, unshifted: the state at position t produced
    the prediction of token t+1.
    """

    def __init__(self, model: torch.nn.Module, only_grad: bool = True):
        self.backbone = backbone_of(model)
        self.only_grad = only_grad
        self.states: list[torch.Tensor] = []
        self._handle = None

    def _hook(self, module, args, output):
        if self.only_grad and not torch.is_grad_enabled():
            return
        self.states.append(last_hidden(output))

    def __enter__(self):
        self._handle = self.backbone.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False


def completion_hidden_states(hidden: torch.Tensor, completion_length: int) -> torch.Tensor:
    """States that produced the last `completion_length` tokens: positions L-C-1 .. L-2 of `[B, L, H]`."""
    return hidden[:, -completion_length - 1 : -1]


def logit_transform(config) -> tuple[float, float | None]:
    """(logit_scale, final_logit_softcapping) of a model config, read as TRL's fused LM head reads them.

    Logits are `softcap * tanh(scale * z / softcap)` (softcap None: `scale * z`) with `z = h @ W.T + b`. The scale
    is `logit_scale` (Cohere), `output_multiplier`, `lm_head_multiplier` (Falcon-H1), or `1 / logits_scaling`
    (Granite, MiniCPM3; HyperCLOVA X multiplies by it), the first one set.
    """
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


@dataclass
class Head:
    """What turns a final hidden state into logits: `transform(h @ weight.T + bias)`, see `logit_transform`."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    logit_scale: float = 1.0
    softcap: float | None = None


def lm_head_of(model: torch.nn.Module) -> Head:
    """The output projection and logit transform of `model` (any wrapper); an adapter on the head is refused."""
    base = unwrap_model(model)
    head = base.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ValueError(f"{type(base).__name__} has no output embeddings (lm_head)")
    if hasattr(head, "base_layer") or hasattr(head, "lora_A"):
        raise ValueError("the lm_head carries a PEFT adapter; leave lm_head out of the LoRA target_modules (or merge "
                         "the adapter with merge_and_unload)")
    scale, softcap = logit_transform(base.config)
    return Head(weight=head.weight, bias=getattr(head, "bias", None), logit_scale=scale, softcap=softcap)


def zero3_rows(weight: torch.nn.Parameter, ids: torch.Tensor) -> torch.Tensor:
    """Rows `ids` of a DeepSpeed ZeRO-3 partitioned 2-D parameter, gathered without materialising the whole matrix.

    ZeRO-3 keeps rank r's slice [r*n, (r+1)*n) of the flattened parameter in `weight.ds_tensor` (n = its numel).
    Every rank fills the elements of the requested rows it owns and an all-reduce sums them: |ids| x d floats move,
    not V x d. Collective: every rank must call it with the same ids.
    """
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
