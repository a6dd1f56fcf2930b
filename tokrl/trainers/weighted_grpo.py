"""`WeightedGRPOTrainer`: TRL's GRPOTrainer with a per-token weight on the policy-gradient loss.

Where the weight enters (TRL 1.16 `GRPOTrainer._compute_loss`): TRL multiplies the per-token surrogate by
`get_high_entropy_mask(...)` after clipping and before the KL term and the aggregation, for every `loss_type`.
That public method is our hook: it receives the current policy's entropies from the fused LM head, and we
return the weighter's `[B, T]` weights there (times TRL's own entropy mask if `top_entropy_quantile < 1`).
TRL's control flow, clipping and aggregation are not copied. Consequences, pinned by tests:
- weights scale the clipped surrogate, not the KL term (as TRL's forking mask does);
- an entropy bonus (`entropy_coef`) becomes a weight-weighted mean of entropies.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict

import torch
from trl import GRPOTrainer

from tokrl.trainers.hidden_states import HiddenStateCapture, completion_hidden_states
from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig
from tokrl.weighting import TokenView, TokenWeighter, build_weighter, weight_stats

logger = logging.getLogger(__name__)

_SEQUENCE_LOSSES = ("grpo", "sapo")
_LOCAL_TOKEN_LOSSES = ("bnpo",)


class WeightedGRPOTrainer(GRPOTrainer):
    """GRPO whose per-token policy loss is multiplied by `weighter(view)` before TRL's aggregation.

    Args:
        weighter: a `TokenWeighter` (or a registry spec); defaults to `args.weighting`, then uniform.
        Everything else is passed to `trl.GRPOTrainer` unchanged.
    """

    _tag_names = ["trl", "grpo", "tokrl"]
    config_class = WeightedGRPOConfig

    def __init__(self, *args, weighter: TokenWeighter | dict | str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        spec = weighter if weighter is not None else getattr(self.args, "weighting", None)
        self.weighter = build_weighter(spec)
        self.weight_normalizer = getattr(self.args, "weight_normalizer", "all")
        if self.weight_normalizer == "selected" and self.loss_type == "luspo":
            raise ValueError("weight_normalizer='selected' is not defined for loss_type='luspo'")
        # TRL calls our get_high_entropy_mask only when top_entropy_quantile < 1; keep the user's value for
        # composing TRL's own mask, and set the attribute TRL reads so the hook always fires.
        self.trl_top_entropy_quantile = self.top_entropy_quantile
        self.top_entropy_quantile = -1.0
        self._batch = None
        self._logps = None
        self._capture = None
        self.last_view: TokenView | None = None
        self._histogram_values: list[torch.Tensor] = []
        self.last_prompt = None
        if getattr(self.args, "token_dump_steps", 0):
            from tokrl.diagnostics.token_dump import TokenDumpCallback

            TokenDumpCallback.attach(self)

    # ---- hooks into TRL -------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        self._batch, self._logps = inputs, None
        wants_hidden = "hidden_states" in self.weighter.all_needs()
        self._capture = HiddenStateCapture(model) if wants_hidden else None
        try:
            if self._capture is None:
                return super()._compute_loss(model, inputs)
            with self._capture:
                return super()._compute_loss(model, inputs)
        finally:
            self._batch, self._logps, self._capture = None, None, None

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._batch is not None and torch.is_grad_enabled():
            self._logps = out[0]
        return out

    def get_high_entropy_mask(self, entropies, mask, threshold):
        """TRL's entropy-mask hook, returning token weights (see the module docstring)."""
        if self._batch is None:  # called outside _compute_loss (e.g. a user's code): TRL's behaviour
            return super().get_high_entropy_mask(entropies, mask, threshold)
        view = self.build_view(self._batch, entropies, mask)
        weights = self.weighter(view)
        if self.trl_top_entropy_quantile < 1.0:
            weights = weights * super().get_high_entropy_mask(entropies, mask, 1 - self.trl_top_entropy_quantile)
        self.log_weights(view, weights, mask)
        self.last_view = view
        self.last_prompt = (self._batch["prompt_ids"], self._batch["prompt_mask"])
        view.values["weight"] = weights
        advantages = self._batch["advantages"]
        view.values["advantage"] = advantages[:, None].expand_as(weights) if advantages.dim() == 1 else advantages
        return self.normalize_weights(weights, mask)

    # ---- the token view ---------------------------------------------------------------------------------

    def gather_flat(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate a tensor across processes along dim 0 (lengths may differ per process)."""
        if self.accelerator.num_processes == 1:
            return x
        pad = torch.finfo(torch.float32).min
        x = x.float()
        n = torch.tensor([x.shape[0]], device=x.device)
        sizes = self.accelerator.gather(n)
        padded = self.accelerator.pad_across_processes(x, dim=0, pad_index=pad)
        gathered = self.accelerator.gather(padded)
        chunk = padded.shape[0]
        parts = [gathered[i * chunk : i * chunk + int(s)] for i, s in enumerate(sizes.tolist())]
        return torch.cat(parts, dim=0)

    def build_view(self, inputs, entropies, mask) -> TokenView:
        """Collect what the weighter asked for from the batch and the forward TRL just ran."""
        needs = self.weighter.all_needs()
        view = TokenView(
            completion_ids=inputs["completion_ids"],
            completion_mask=mask,
            entropies=entropies.detach(),
            gather=self.gather_flat,
        )
        if "logps" in needs or "old_logps" in needs:
            view.logps = self._logps.detach() if self._logps is not None else None
        if "old_logps" in needs:
            old = inputs.get("old_per_token_logps")
            view.old_logps = old if old is not None else view.logps
        if "ref_logps" in needs:
            view.ref_logps = inputs.get("ref_per_token_logps")
        if "advantages" in needs:
            view.advantages = inputs["advantages"]
        if "hidden_states" in needs:
            if self._capture is None or not self._capture.states:
                raise RuntimeError("hidden states were requested but the training forward did not run the backbone")
            hidden = completion_hidden_states(self._capture.states[-1], inputs["completion_ids"].size(1))
            view.hidden_states = hidden.detach()
        for key in ("rewards", "group_ids"):
            if key in needs:
                setattr(view, key, inputs.get(f"tokrl_{key}"))
        for column in self.weighter.all_columns():
            if column not in inputs:
                raise KeyError(f"weighter {type(self.weighter).__name__} needs column '{column}' in the batch")
            view.columns[column] = inputs[column]
        return view

    # ---- normalisation and logging -------------------------------------------------------------------------

    def normalize_weights(self, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """With `weight_normalizer='selected'`, rescale weights so TRL's token-count denominators count weight."""
        if self.weight_normalizer == "all":
            return weights
        mask = mask.float()
        if self.loss_type in _SEQUENCE_LOSSES:
            count, mass = mask.sum(-1, keepdim=True), weights.sum(-1, keepdim=True)
        else:
            totals = torch.stack([mask.sum(), weights.sum()])
            if self.loss_type not in _LOCAL_TOKEN_LOSSES:
                totals = self.accelerator.reduce(totals, reduction="sum")
            count, mass = totals[0], totals[1]
        scale = torch.where(mass > 0, count / mass.clamp(min=1e-12), torch.zeros_like(mass))
        return weights * scale

    def log_weights(self, view: TokenView, weights: torch.Tensor, mask: torch.Tensor) -> None:
        mode = "train" if self.model.training else "eval"
        valid = self.gather_flat(weights[mask.bool()].float())
        ones = torch.ones_like(valid)
        for key, value in weight_stats(valid, ones).items():
            self._metrics[mode][f"weights/{key}"].append(value)
        for key, value in view.stats.items():
            self._metrics[mode][f"weights/{key}"].append(value)
        if mode == "train" and self._tensorboard() is not None:
            self._histogram_values.append(valid.detach().cpu())

    def _tensorboard(self):
        """The TensorBoard writer of TRL's callback, when `report_to` includes tensorboard."""
        for callback in self.callback_handler.callbacks:
            if type(callback).__name__ == "TensorBoardCallback":
                return getattr(callback, "tb_writer", None)
        return None

    def log(self, logs, start_time=None):
        super().log(logs, start_time)
        writer = self._tensorboard() if self._histogram_values else None
        if writer is not None and self.accelerator.is_main_process:
            values = torch.cat(self._histogram_values).float().numpy()
            writer.add_histogram("weights/histogram", values, self.state.global_step)
            entropies = self.last_view.values.get("entropy") if self.last_view is not None else None
            if entropies is not None:
                mask = self.last_view.completion_mask.bool()
                writer.add_histogram("weights/entropy_histogram", entropies[mask].float().cpu().numpy(),
                                     self.state.global_step)
            writer.flush()
        self._histogram_values = []
