"""`THRGRPOTrainer`: GRPO whose per-token policy loss is reweighted by the sign of the Token Hidden Reward.

Deng et al., "Token Hidden Reward: Steering Exploration-Exploitation in Group Relative Deep Reinforcement Learning"
(arXiv 2510.03669, ICLR 2026). The formula, its provenance and the choices made where the paper could not be read
are in `tokrl/weighting/thr.py`.

Where THR is computed. THR of a token needs every completion of its prompt group and the old policy's last-layer
hidden states. TRL shuffles the generation batch and cuts it into micro-batches before the loss, which splits groups,
so THR is computed once per generation batch in an override of `_generate_and_score_completions` (after `super()`,
before TRL's shuffle/split), on this process's rows, and stored as two extra `[B, T]` batch keys (`tokrl_thr`,
`tokrl_thr_weight`) that TRL then shuffles and splits with the rest. At loss time the THR weighter only reads them.
The hidden states come from, in this order of preference:
- `reused`: TRL's own no-grad old-log-prob pass, when TRL runs one (num_iterations > 1, generation not aligned with
  optimizer steps, or vLLM importance sampling): a forward hook on the backbone captures the states during that pass;
- `generation` (`thr_hidden_source="auto"`, plain `transformers` generation only): the states that produced each
  sampled token are captured during generation itself (backbone hook, last position of every decoding step), and
  the full-vocabulary normaliser from a hook on the LM head's logits at the same step, so no forward pass is added;
- `extra`: otherwise one extra no-grad forward through TRL's fused LM head (log-probs without [B, T, V] logits).
  With the default num_iterations = 1 the weights at generation time are the old policy, so this pass is exact.
Each generation batch logs `thr/extra_pass` (1 = extra forward, 0 = none added) and `thr/from_generation`;
`thr_passes` counts the three paths.
q[V*] is recomputed from h and the |V*| needed unembedding rows (normaliser from the old log-prob of the sampled
token). Under DeepSpeed ZeRO-3 only those rows are gathered, from each rank's partition of the flattened weight.
Groups split across processes are refused (THRGRPOConfig names the settings to change).
"""

from __future__ import annotations

import logging
import time

import torch
from trl.models.utils import disable_gradient_checkpointing

from tokrl.trainers.hidden_states import HiddenStateCapture, completion_hidden_states
from tokrl.trainers.thr_grpo_config import THRGRPOConfig
from tokrl.trainers.weighted_grpo import WeightedGRPOTrainer
from tokrl.weighting import TokenView
from tokrl.weighting.thr import THRResult, Unembedding, find_thr_weighter

logger = logging.getLogger(__name__)

__all__ = ["THRGRPOConfig", "THRGRPOTrainer", "zero3_rows"]


class _GenerationCapture:
    """During `generate`: per decoding step, the backbone's last-position state and logsumexp(logits / T)."""

    def __init__(self, model: torch.nn.Module, temperature: float):
        from tokrl.trainers.hidden_states import backbone_of

        self.backbone = backbone_of(model)
        base = model
        while hasattr(base, "module") and isinstance(base.module, torch.nn.Module):
            base = base.module
        if hasattr(base, "get_base_model"):
            base = base.get_base_model()
        self.head = base.get_output_embeddings()
        self.temperature = temperature
        self.states: list[torch.Tensor] = []
        self.lse: list[torch.Tensor] = []
        self._handles = []

    def _on_backbone(self, module, args, output):
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        self.states.append(hidden[:, -1].detach())

    def _on_head(self, module, args, output):
        self.lse.append(torch.logsumexp(output[:, -1].float() / self.temperature, dim=-1))

    def __enter__(self):
        self._handles = [self.backbone.register_forward_hook(self._on_backbone),
                         self.head.register_forward_hook(self._on_head)]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        return False

    def aligned(self, rows: int, length: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """([rows, length, d] states, [rows, length] lse) aligned with the completion tokens, or None if the capture
        does not match the batch (then the caller falls back to a forward pass)."""
        if not self.states or len(self.states) != len(self.lse) or self.states[0].size(0) != rows:
            return None
        if len(self.states) < length and length - len(self.states) > 0:
            pad = length - len(self.states)  # pad_to_multiple_of: the extra columns are padding (mask 0)
            self.states += [torch.zeros_like(self.states[0])] * pad
            self.lse += [torch.zeros_like(self.lse[0])] * pad
        return torch.stack(self.states[:length], 1), torch.stack(self.lse[:length], 1)


class _OldPassCapture:
    """Hidden states and log-probs of the first no-grad policy scoring pass inside one generation step."""

    def __init__(self, armed: bool):
        self.armed = armed
        self.hidden: torch.Tensor | None = None
        self.logps: torch.Tensor | None = None


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


def _logit_scale(config) -> tuple[float, float | None]:
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


class THRGRPOTrainer(WeightedGRPOTrainer):
    """GRPO with THR reweighting; see the module docstring and `THRGRPOConfig`.

    Args:
        weighter: a weighter (or spec) that contains one `THRWeighter`/`NTHRWeighter`; default: built from the
            config's THR fields, or from `args.weighting` when set (e.g. forking x THR).
        Everything else is passed to `trl.GRPOTrainer`.
    """

    _tag_names = ["trl", "grpo", "tokrl", "thr"]
    _name = "THR-GRPO"
    config_class = THRGRPOConfig

    def __init__(self, *args, weighter=None, **kwargs):
        args_ = kwargs.get("args") if "args" in kwargs else (args[2] if len(args) > 2 else None)
        if weighter is None and isinstance(args_, THRGRPOConfig) and args_.weighting is None:
            weighter = args_.thr_weighter()
        super().__init__(*args, weighter=weighter, **kwargs)
        self.thr_weighter = find_thr_weighter(self.weighter)
        if self.thr_weighter is None:
            raise ValueError(
                "THRGRPOTrainer needs a 'thr' or 'nthr' weighter (THRGRPOConfig fields, or a weighting spec "
                "containing one); for other weighters use WeightedGRPOTrainer"
            )
        self.thr_passes = {"reused": 0, "generation": 0, "extra": 0}
        self.last_thr: THRResult | None = None
        self._thr_capture: _OldPassCapture | None = None
        self._gen_capture: _GenerationCapture | None = None
        self._thr_logged_paths: set[str] = set()

    # ---- generation time: THR over whole groups ----------------------------------------------------------------

    def _trl_runs_old_pass(self) -> bool:
        """TRL 1.16's condition for its no-grad old-log-prob pass in `_generate_and_score_completions`."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % generate_every != 0 or bool(
            self.use_vllm and self.vllm_importance_sampling_correction
        )

    def _can_capture_generation(self) -> bool:
        """Plain `model.generate` on this model, one call per batch, logits = LM head output (no scale/softcap)."""
        if getattr(self.args, "thr_hidden_source", "auto") != "auto" or self._trl_runs_old_pass():
            return False
        if self.use_vllm or getattr(self.args, "use_transformers_continuous_batching", False):
            return False
        if self.tools or self.environment_factories is not None or getattr(self, "rollout_func", None) is not None:
            return False
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        return _logit_scale(model.config) == (1.0, None)

    def _generate(self, prompts):
        if not self._can_capture_generation():
            return super()._generate(prompts)
        capture = _GenerationCapture(self.model, self.temperature)
        with capture:
            result = super()._generate(prompts)
        self._gen_capture = capture
        return result

    def _generate_and_score_completions(self, inputs):
        self._thr_capture = _OldPassCapture(armed=self._trl_runs_old_pass())
        self._gen_capture = None
        try:
            output = super()._generate_and_score_completions(inputs)
            capture, generation = self._thr_capture, self._gen_capture
        finally:
            self._thr_capture, self._gen_capture = None, None
        self.add_thr_columns(output, capture, generation)
        return output

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        capture = self._thr_capture
        if capture is None or not capture.armed or torch.is_grad_enabled() or model is not self.model:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        capture.armed = False  # only the first scoring pass (TRL's old-log-prob pass) is captured
        with HiddenStateCapture(model, only_grad=False) as hooks:
            out = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        capture.hidden = torch.cat([completion_hidden_states(h, logits_to_keep) for h in hooks.states]).detach()
        capture.logps = out[0]
        return out

    def old_policy_states(self, output: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """One no-grad forward of the current (= old) policy: completion hidden states [B, T, d] and log-probs."""
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        length = output["completion_ids"].size(1)
        mode = "train" if self.model.training else "eval"
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            with HiddenStateCapture(self.model, only_grad=False) as hooks:
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, attention, length, batch_size=batch_size
                )
        hidden = torch.cat([completion_hidden_states(h, length) for h in hooks.states]).detach()
        return hidden, logps

    def thr_unembedding(self, needed: torch.Tensor) -> Unembedding:
        """The LM head rows for the token ids THR will ask for (`needed`, this process's ids). Collective."""
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        head = model.get_output_embeddings()
        if hasattr(head, "lora_A"):
            raise NotImplementedError("THR does not support a LoRA adapter on the LM head; drop it from target_modules")
        weight, bias = head.weight, head.bias
        scale, softcap = _logit_scale(model.config)
        common = dict(temperature=self.temperature, logit_scale=scale, softcap=softcap)
        if not hasattr(weight, "ds_id"):  # not ZeRO-3: the full matrix is here
            if hasattr(weight, "full_tensor"):  # FSDP2 DTensor
                weight = weight.full_tensor()
                bias = bias.full_tensor() if bias is not None else None
            w, b = weight.detach(), (bias.detach() if bias is not None else None)
            return Unembedding(rows=lambda ids: w[ids], vocab_size=w.shape[0],
                               bias=(lambda ids: b[ids]) if b is not None else None, **common)
        vocab_size = int(weight.ds_shape[0])
        if self.thr_weighter.restrict_vocab:
            local = torch.unique(needed)
            padded = self.accelerator.pad_across_processes(local, dim=0, pad_index=-1)
            ids = torch.unique(self.accelerator.gather(padded))
            ids = ids[ids >= 0]
        else:
            ids = torch.arange(vocab_size, device=needed.device)
        rows = zero3_rows(weight, ids)
        bias_rows = zero3_rows(bias, ids) if bias is not None else None

        def lookup(table):
            return lambda q: table[torch.searchsorted(ids, q)]

        return Unembedding(rows=lookup(rows), vocab_size=vocab_size,
                           bias=lookup(bias_rows) if bias_rows is not None else None, **common)

    def add_thr_columns(
        self, output: dict, capture: _OldPassCapture | None = None, generation: _GenerationCapture | None = None
    ) -> None:
        """Compute THR for this process's generation batch and add `tokrl_thr`/`tokrl_thr_weight` to `output`."""
        if any(key in output for key in ("pixel_values", "num_images")):
            raise NotImplementedError("THRGRPOTrainer supports text-only models")
        start = time.perf_counter()
        mode = "train" if self.model.training else "eval"
        old = output.get("old_per_token_logps")
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        unembedding = self.thr_unembedding(output["completion_ids"][mask.bool()])
        from_generation = generation.aligned(*output["completion_ids"].shape) if generation is not None else None
        if capture is not None and capture.logps is not None and old is not None and capture.logps is old:
            hidden, logps, path = capture.hidden, old, "reused"
        elif from_generation is not None:
            hidden, lse = from_generation
            logps = torch.zeros_like(lse)
            valid = mask.bool()
            h, y = hidden[valid].float(), output["completion_ids"][valid]
            z_y = (h * unembedding.rows(y).float()).sum(-1)
            if unembedding.bias is not None:
                z_y = z_y + unembedding.bias(y).float()
            logps[valid] = z_y / unembedding.temperature - lse[valid]
            path = "generation"
        else:
            hidden, logps = self.old_policy_states(output)
            path = "extra"
        self.thr_passes[path] += 1
        if path not in self._thr_logged_paths:
            self._thr_logged_paths.add(path)
            logger.info(
                "THR: hidden states from %s",
                {
                    "reused": "TRL's old-log-prob pass (no extra forward)",
                    "generation": "generation itself (no extra forward)",
                    "extra": "one extra no-grad forward (no TRL scoring pass or generation capture available)",
                }[path],
            )
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        rows = mask.size(0)
        if rows % group_size != 0:
            if mode == "train":
                raise ValueError(
                    f"THR needs whole prompt groups on each process, got {rows} rows for groups of {group_size}: make "
                    "per_device_train_batch_size * steps_per_generation a multiple of num_generations"
                )
            logger.warning("THR: eval batch of %d rows splits groups of %d; eval weights are uniform", rows, group_size)
            output["tokrl_thr"] = torch.zeros_like(mask, dtype=torch.float32)
            output["tokrl_thr_weight"] = mask.float()
            return
        view = TokenView(
            completion_ids=output["completion_ids"],
            completion_mask=mask,
            hidden_states=hidden,
            old_logps=logps,
            advantages=output["advantages"],
            group_ids=torch.arange(rows, device=mask.device) // group_size,
        )
        columns, result = self.thr_weighter.score(view, unembedding)
        output.update(columns)
        self.last_thr = result
        self.log_thr(result, mask, path, time.perf_counter() - start)

    def log_thr(self, result: THRResult, mask: torch.Tensor, path: str, seconds: float) -> None:
        """Generation-batch THR statistics, summed over processes before the ratios are taken."""
        mode = "train" if self.model.training else "eval"
        valid = mask.bool()
        dominant = result.dominant & valid
        totals = torch.tensor(
            [
                float(valid.sum()),
                float(dominant.sum()),
                float((result.thr[dominant] > 0).sum()),
                float((result.scored & valid).sum()),
                float(result.thr[valid].abs().sum()),
                float(sum(result.taus)),
                float(len(result.taus)),
                float(sum(result.vstar)),
                float(mask.size(0)),
            ],
            device=mask.device,
        )
        totals = self.accelerator.reduce(totals, reduction="sum")
        n, n_dom, n_pos, n_scored, abs_sum, tau_sum, groups, vstar_sum, rows = totals.tolist()
        metrics = self._metrics[mode]
        metrics["thr/dominant_frac"].append(n_dom / max(n, 1.0))
        metrics["thr/positive_frac"].append(n_pos / n_dom if n_dom else 0.0)
        metrics["thr/scored_frac"].append(n_scored / max(n, 1.0))
        metrics["thr/abs_mean"].append(abs_sum / max(n, 1.0))
        metrics["thr/tau_mean"].append(tau_sum / groups if groups else 0.0)
        metrics["thr/vstar_mean"].append(vstar_sum / groups if groups else 0.0)
        metrics["thr/mixed_groups"].append(groups)
        metrics["thr/extra_pass"].append(1.0 if path == "extra" else 0.0)
        metrics["thr/from_generation"].append(1.0 if path == "generation" else 0.0)
        metrics["thr/seconds"].append(seconds)
