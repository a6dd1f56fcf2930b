"""Capture the last-layer hidden states of a forward pass TRL already runs, without asking for logits."""

from __future__ import annotations

import contextlib

import torch


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The `*ForCausalLM` inside DDP/DeepSpeed and PEFT wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder backbone (`model.model` of a `*ForCausalLM`), through DDP/DeepSpeed and PEFT wrappers."""
    model = unwrap_model(model)
    backbone = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if not isinstance(backbone, torch.nn.Module) or backbone is model:
        raise ValueError(f"cannot find the decoder backbone of {type(model).__name__} (expected a `.model` module)")
    return backbone


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
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        self.states.append(hidden)

    def __enter__(self):
        self._handle = self.backbone.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False


def completion_hidden_states(hidden: torch.Tensor, completion_length: int) -> torch.Tensor:
    """States that produced the last `completion_length` tokens: positions L-C-1 .. L-2 of `[B, L, H]`."""
    return hidden[:, -completion_length - 1 : -1]
