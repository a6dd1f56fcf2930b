"""`WeightedDPOTrainer`: TRL's DPOTrainer with per-token weights on the policy AND reference log-ratios.

Where the weights enter (TRL 1.16 `DPOTrainer._compute_loss`, not copied): TRL calls the policy and then the
reference through a fused LM head (`add_fused_lm_head`) that returns `FusedCausalLMOutput.log_probs`, `[2B, L-1]`,
zero outside the completion, and sums them per row. A forward hook on the module that head was added to (the PEFT
base model under PEFT, which serves both the policy and, adapter disabled, the reference; and the separate
reference model if there is one) multiplies `log_probs` by the weights before TRL sums them. So every log-ratio
TRL forms is `sum_t w_t (log pi_theta(y_t) - log pi_ref(y_t))`, for every loss type, and the metrics TRL logs are
the weighted ones. No extra forward pass and no logits: the weights are computed once per batch from the first
(policy) fused output (which also gives the weighter `logps` / `entropies` if it asks) and reused for the reference.

Hooks for subclasses, called after TRL's loss with a `DPOTokenParts` (the unweighted per-token log-probs the hook
captured, the weights, the mask, the per-token data columns):
- `dpo_loss(trl_loss, parts)`: replace TRL's loss (cDPO's per-position form);
- `extra_token_loss(parts)`: add a per-token term (T-REG's regulariser).

Per-pair weights (`pair_weight_column`, one number per row; `tokrl.trainers.pair_weights`): the loss becomes the
weighted mean of the per-pair sigmoid losses, recomputed from the same log-ratios (`parts.pair_weights`).

Loss types that divide by the completion length (`ipo`, `sigmoid_norm`) still divide by the unweighted token count.
`precompute_ref_log_probs=True`: TRL caches unweighted reference sums at init, which would not match weighted policy
sums, so it is refused unless the weighter is `Uniform`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import DPOTrainer
from trl.trainer.utils import FusedCausalLMOutput

from tokrl.model_head import HiddenStateCapture, completion_hidden_states, unwrap_model
from tokrl.trainers import pair_weights as pw
from tokrl.trainers import token_columns as tc
from tokrl.trainers.weight_logging import WeightLogging
from tokrl.trainers.weighted_dpo_config import WeightedDPOConfig
from tokrl.weighting import TokenView, TokenWeighter, Uniform, weight_stats

logger = logging.getLogger(__name__)

# What a DPO weighter can be given: the policy's fused outputs, the states that produced them, and the reference's
# per-token log-probs (TRL runs the reference after the policy sums are taken, so those cost one extra reference
# forward per batch, logged once).
DPO_NEEDS = frozenset({"logps", "entropies", "hidden_states", "ref_logps"})


@dataclass
class DPOTokenParts:
    """Per-token tensors of one DPO batch, `[2B, L-1]` (rows: chosen 0..B-1, then rejected), log-prob aligned.

    `policy_logps` carries grad and is unweighted; `ref_logps` is unweighted (None when TRL read precomputed
    reference sums, then `ref_sums` holds them). `weights` is what multiplied both before TRL summed them.
    """

    policy_logps: torch.Tensor
    ref_logps: torch.Tensor | None
    ref_sums: torch.Tensor | None
    weights: torch.Tensor
    mask: torch.Tensor
    columns: dict[str, torch.Tensor] = field(default_factory=dict)
    completion_ids: torch.Tensor | None = None  # input_ids[:, 1:], the token each log-prob position scores
    pair_weights: torch.Tensor | None = None  # [B], from `pair_weight_column`

    def sides(self) -> tuple[tuple[str, slice], tuple[str, slice]]:
        """("chosen", its rows), ("rejected", its rows)."""
        half = self.policy_logps.shape[0] // 2
        return ("chosen", slice(0, half)), ("rejected", slice(half, None))

    def logratios(self, weighted: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) sequence log-ratios `sum_t w_t (logp - ref)`, `[B]` each, as TRL's DPO loss sees them."""
        w = self.weights if weighted else self.mask
        policy = (self.policy_logps * w).sum(1)
        if self.ref_logps is not None:
            ref = (self.ref_logps * w).sum(1)
        else:
            if weighted is False and not torch.equal(self.weights, self.mask):
                raise ValueError("unweighted log-ratios need per-token reference log-probs (no precompute)")
            ref = self.ref_sums
        return (policy - ref).chunk(2)


@dataclass
class _Pass:
    """State of one compute_loss / compute_ref_log_probs call, filled by the forward hook."""

    inputs: dict
    columns: dict[str, torch.Tensor]  # {name: [2B, L]} token-aligned
    capture_only: bool = False  # our extra reference forward: record log_probs, compute no weights
    weights: torch.Tensor | None = None  # [2B, L-1]
    captured: list[torch.Tensor] = field(default_factory=list)  # unweighted log_probs of each fused forward, in order
    view: TokenView | None = None
    ref_logps: torch.Tensor | None = None  # [2B, L-1] from that forward, when the weighter needs them
    hidden: HiddenStateCapture | None = None


class WeightedDPOTrainer(WeightLogging, DPOTrainer):
    """DPO whose per-token log-ratios are multiplied by `weighter(view)` before TRL sums them.

    Args:
        weighter: a `TokenWeighter` (or a registry spec); defaults to `args.weighting`, then uniform. It may read
            per-token dataset columns (`weighter.columns`: a name `n` means the dataset columns `chosen_n` and
            `rejected_n`, aligned as described in `tokrl.trainers.token_columns`) and the policy's `logps` /
            `entropies`. Its view is `[2B, L-1]`: chosen rows then rejected rows, in TRL's log-prob layout.
        Everything else is passed to `trl.DPOTrainer` unchanged.
    """

    _tag_names = ["trl", "dpo", "tokrl"]
    config_class = WeightedDPOConfig

    def __init__(
        self, model, ref_model=None, args=None, *pargs, weighter: TokenWeighter | dict | str | None = None, **kwargs
    ):
        self.use_weighter(weighter, args, DPO_NEEDS)
        self.uniform = type(self.weighter) is Uniform
        self.column_names = tuple(dict.fromkeys((*self.weighter.all_columns(), *self.extra_column_names(args))))
        if args is not None:
            self.check_args(args)
        self._pass: _Pass | None = None
        super().__init__(model, ref_model, args, *pargs, **kwargs)
        if self.column_names:
            if self._is_vision_dataset:
                raise ValueError("per-token columns are not supported for vision datasets")
            for name, dataset in self._datasets():
                tc.check_columns(dataset, self.column_names, self.args.max_length, self.args.truncation_mode, name)
                tc.check_metadata(dataset, self._tokenizer, self.expected_metadata())
            self.data_collator = tc.PairColumnCollator(
                self.data_collator, self.column_names, self.args.max_length, self.args.truncation_mode
            )
        self.pair_weight_column = getattr(self.args, "pair_weight_column", None)
        if self.pair_weight_column:
            for name, dataset in self._datasets():
                pw.check_dataset(dataset, self.pair_weight_column, name)
            self.data_collator = pw.PairWeightCollator(self.data_collator, self.pair_weight_column)
        self._hooks = [module.register_forward_hook(self._on_fused_output) for module in self._fused_modules()]
        self.setup_weight_logging()

    # ---- configuration checks ---------------------------------------------------------------------------------

    def extra_column_names(self, args) -> tuple[str, ...]:
        """Per-token columns a subclass reads besides the weighter's (T-REG's token rewards)."""
        return ()

    def expected_metadata(self) -> dict:
        """Values the dataset's `token_columns_meta` must carry, besides the tokenizer fingerprint."""
        return {}

    def check_args(self, args) -> None:
        """Refuse TRL options whose meaning weighted log-ratios would silently change."""
        if self.uniform:
            return
        if args.precompute_ref_log_probs:
            raise ValueError(
                "precompute_ref_log_probs=True caches unweighted reference log-prob sums at init, which do not match "
                "the weighted policy sums; set precompute_ref_log_probs=False (or use uniform weighting)"
            )
        if getattr(args, "use_weighting", False):
            raise ValueError("use_weighting=True (WPO) would reweight already token-weighted log-probs; set it False")
        if getattr(args, "ld_alpha", None) is not None:
            raise ValueError("ld_alpha (LD-DPO) splits token-weighted sums by position; unset ld_alpha")

    def _datasets(self):
        """(name, dataset) of the train and eval `Dataset`s, checked up front (an IterableDataset is checked row by
        row in the collator)."""
        evals = self.eval_dataset.items() if isinstance(self.eval_dataset, dict) else [("eval", self.eval_dataset)]
        for name, dataset in [("train", self.train_dataset), *evals]:
            if isinstance(dataset, Dataset):
                yield name, dataset

    def _set_signature_columns_if_needed(self):
        # Keep the per-token columns through `remove_unused_columns` (TRL 1.16 keeps only prompt/chosen/rejected
        # ids and the ref log-probs; pinned by a test).
        super()._set_signature_columns_if_needed()
        pair_column = getattr(self.args, "pair_weight_column", None)
        token_columns = [tc.side_column(side, name) for name in self.column_names for side in tc.SIDES]
        for column in [c for c in (pair_column, *token_columns) if c]:
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    # ---- the forward hook -------------------------------------------------------------------------------------

    def _fused_modules(self):
        """The modules `add_fused_lm_head` patched: the policy's (PEFT: its base model) and a separate reference."""
        policy = unwrap_model(self.model)
        ref = unwrap_model(self.ref_model) if self.ref_model is not None else policy
        return [policy] if ref is policy else [policy, ref]

    def _on_fused_output(self, module, args, output):
        state = self._pass
        if state is None or not isinstance(output, FusedCausalLMOutput) or output.log_probs is None:
            return None
        log_probs = output.log_probs
        state.captured.append(log_probs)
        if state.capture_only:
            return None
        if state.weights is None:
            state.weights = self.token_weights(state, output)
        if self.uniform:
            return None
        w = state.weights.to(log_probs.dtype)
        if log_probs.shape[1] > w.shape[1]:  # prompt-learning PEFT prepends virtual positions
            w = F.pad(w, (log_probs.shape[1] - w.shape[1], 0))
        output.log_probs = log_probs * w
        return output

    # ---- weights ----------------------------------------------------------------------------------------------

    def build_view(self, state: _Pass, output: FusedCausalLMOutput | None) -> TokenView:
        inputs = state.inputs
        seq_len = inputs["completion_mask"].shape[1] - 1
        view = TokenView(
            completion_ids=inputs["input_ids"][:, 1:],
            completion_mask=inputs["completion_mask"][:, 1:],
            gather=self.gather_flat,
        )
        needs = self.weighter.all_needs()
        if output is not None and "logps" in needs:
            view.logps = output.log_probs[:, -seq_len:].detach()
        if output is not None and "entropies" in needs:
            view.entropies = output.entropy[:, -seq_len:].detach() if output.entropy is not None else None
        if "ref_logps" in needs:
            view.ref_logps = state.ref_logps
        if "hidden_states" in needs:
            if state.hidden is None or not state.hidden.states:
                raise RuntimeError("hidden states were requested but the policy forward did not run the backbone")
            view.hidden_states = completion_hidden_states(state.hidden.states[0], seq_len).detach()
        for name, column in state.columns.items():
            view.columns[name] = tc.shift_to_logps(column)
        return view

    def token_weights(self, state: _Pass, output: FusedCausalLMOutput | None) -> torch.Tensor:
        view = self.build_view(state, output)
        state.view = view
        return self.weighter(view)

    def reference_logps(self, inputs) -> torch.Tensor:
        """Per-token reference log-probs `[2B, L-1]` from one extra no-grad reference forward (TRL's own one runs
        only after the policy's weighted sums are taken)."""
        if not getattr(self, "_logged_ref_pass", False):
            self._logged_ref_pass = True
            logger.info("the weighter needs ref_logps: one extra reference forward per batch")
        state = self._pass = _Pass(inputs, {}, capture_only=True)
        try:
            DPOTrainer.compute_ref_log_probs(self, self.ref_model if self.ref_model is not None else self.model,
                                             dict(inputs))
        finally:
            self._pass = None
        return state.captured[0][:, -(inputs["completion_mask"].shape[1] - 1) :]

    # ---- loss -------------------------------------------------------------------------------------------------

    def compute_ref_log_probs(self, model, inputs):
        inputs.pop(pw.BATCH_KEY, None)
        columns = tc.pop_columns(inputs)
        self._pass = _Pass(inputs, columns)
        try:
            return super().compute_ref_log_probs(model, inputs)
        finally:
            self._pass = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pair_weights = inputs.pop(pw.BATCH_KEY, None)
        columns = tc.pop_columns(inputs)
        missing = [n for n in self.column_names if n not in columns]
        if missing:
            raise KeyError(f"the batch has no per-token column(s) {missing}: the data collator must add them")
        state = _Pass(inputs, columns)
        needs = self.weighter.all_needs()
        if "ref_logps" in needs:
            state.ref_logps = self.reference_logps(inputs)
        if "hidden_states" in needs:  # the policy's forward is the first one that runs the backbone from here
            state.hidden = HiddenStateCapture(model, only_grad=False)
        self._pass = state
        try:
            with state.hidden if state.hidden is not None else contextlib.nullcontext():
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self._pass = None
        loss, outputs = result if return_outputs else (result, None)
        parts = self.token_parts(state, inputs)
        parts.pair_weights = pair_weights
        loss = self.dpo_loss(loss, parts)
        extra = self.extra_token_loss(parts)
        if extra is not None:
            loss = loss + extra
        self.log_weights(parts, state, inputs)
        return (loss, outputs) if return_outputs else loss

    def token_parts(self, state: _Pass, inputs) -> DPOTokenParts:
        mask = inputs["completion_mask"][:, 1:].to(state.captured[0].dtype)
        seq_len = mask.shape[1]
        if len(state.captured) not in (1, 2):
            raise RuntimeError(
                f"expected the policy and at most one reference fused forward per batch, saw {len(state.captured)}; "
                "TRL's DPOTrainer call order changed"
            )
        policy = state.captured[0][:, -seq_len:]
        ref = state.captured[1][:, -seq_len:] if len(state.captured) == 2 else None
        ref_sums = None
        if ref is None:
            ref_sums = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]]).to(policy.dtype)
        columns = {name: tc.shift_to_logps(col).to(policy.dtype) for name, col in state.columns.items()}
        ids = inputs["input_ids"][:, 1:]
        return DPOTokenParts(policy, ref, ref_sums, state.weights.to(policy.dtype), mask, columns, ids)

    def dpo_loss(self, trl_loss: torch.Tensor, parts: DPOTokenParts) -> torch.Tensor:
        """The DPO part of the loss: TRL's (from the weighted log-ratios), or its per-pair weighted mean."""
        if parts.pair_weights is None:
            return trl_loss
        self.log_metric("pair_weights/mean", self.accelerator.gather(parts.pair_weights).mean().item())
        return pw.weighted_sigmoid_loss(*parts.logratios(), self.beta, parts.pair_weights)

    def extra_token_loss(self, parts: DPOTokenParts) -> torch.Tensor | None:
        """A per-token term added to the loss (a per-micro-batch mean, like TRL's); None = nothing."""
        return None

    # ---- logging ----------------------------------------------------------------------------------------------

    def log_weights(self, parts: DPOTokenParts, state: _Pass, inputs) -> None:
        """The shared weight statistics, token dump and histograms (`WeightLogging`), plus per-side statistics."""
        if state.view is not None:
            self.record_weights(state.view, parts.weights, parts.mask)
            completion_mask = inputs["completion_mask"]
            prompt_mask = inputs.get("attention_mask", torch.ones_like(completion_mask)) * (1 - completion_mask)
            self.last_prompt = (inputs["input_ids"], prompt_mask)
        if self.uniform:
            return
        for side, rows in parts.sides():
            valid = parts.mask[rows].bool()
            values = self.gather_flat(parts.weights[rows][valid].detach().float())
            for key, value in weight_stats(values, torch.ones_like(values)).items():
                self.log_metric(f"weights/{side}_{key}", value)
            if values.numel():
                self.log_metric(f"weights/{side}_frac_above_0.5", (values > 0.5).float().mean().item())
        if parts.ref_logps is not None:
            chosen, rejected = parts.logratios(weighted=False)
            margins = self.accelerator.gather(self.beta * (chosen - rejected).detach())
            self.log_metric("unweighted_rewards/margins", margins.mean().item())
            self.log_metric("unweighted_rewards/accuracies", (margins > 0).float().mean().item())
