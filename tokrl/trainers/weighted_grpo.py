"""`WeightedGRPOTrainer`: TRL's GRPOTrainer with a per-token weight on the policy-gradient loss.

Where the weight enters (TRL 1.16 `GRPOTrainer._compute_loss`): TRL multiplies the per-token surrogate by
`get_high_entropy_mask(...)` after clipping and before the KL term and the aggregation, for every `loss_type`.
That public method is our hook: it receives the current policy's entropies from the fused LM head, and we
return the weighter's `[B, T]` weights there (times TRL's own entropy mask if `top_entropy_quantile < 1`).
TRL's control flow, clipping and aggregation are not copied. Consequences, pinned by tests:
- weights scale the clipped surrogate, not the KL term (as TRL's forking mask does);
- an entropy bonus (`entropy_coef`) becomes a weight-weighted mean of entropies.

Rollout weighters (`weighter.rollout = True`: THR, GTPO, any group-level weight) need the whole generation batch,
groups intact. TRL shuffles that batch and cuts it into micro-batches before the loss, so they are computed in an
override of `_generate_and_score_completions` (after `super()`, before TRL's shuffle/split), on every process for
its own rows (whole groups: `per_device_train_batch_size * steps_per_generation` a multiple of `num_generations`),
and their weights travel to the loss as the batch column `weighter.carry_column` (`tokrl_<name>_weight`), which TRL
shuffles and splits with the rest. Their view holds `advantages`, `rewards` (this process's rows of TRL's weighted
reward sum), `group_ids` (unique across processes) and, when asked, the old policy's hidden states, log-probs,
entropies and LM-head rows (`tokrl.trainers.rollout` says where those come from; `rollout/...` metrics count it).
`rewards` and `group_ids` also reach loss-time weighters, as the columns `tokrl_rewards` / `tokrl_group_ids`.

Advantages: a reward function may return per-token rewards; `TokenRewardFunctions` (`token_reward_funcs.py`) turns
them into `[B, T]` advantages after TRL scores the generation batch (and after rollout weighters, which see TRL's
sequence advantages), and TRL's loss uses a 2-D advantage as is. An advantage shaper (`advantage_shaping`)
replaces `inputs["advantages"]` in the entropy-mask hook, which TRL reads right after it.
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from tokrl.model_head import HiddenStateCapture, completion_hidden_states, logit_transform, unwrap_model
from tokrl.trainers.rollout import GenerationCapture, OldPassCapture, unembedding_of
from tokrl.trainers.token_reward_funcs import TokenRewardFunctions
from tokrl.trainers.weight_logging import WeightLogging
from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig
from tokrl.weighting import KNOWN_NEEDS, TokenView, TokenWeighter, build_shaper
from tokrl.weighting.base import rollout_weighters

logger = logging.getLogger(__name__)

_SEQUENCE_LOSSES = ("grpo", "sapo")
_LOCAL_TOKEN_LOSSES = ("bnpo",)


class WeightedGRPOTrainer(WeightLogging, GRPOTrainer):
    """GRPO whose per-token policy loss is multiplied by `weighter(view)` before TRL's aggregation.

    Args:
        weighter: a `TokenWeighter` (or a registry spec); defaults to `args.weighting`, then uniform.
        Everything else is passed to `trl.GRPOTrainer` unchanged.
    """

    _tag_names = ["trl", "grpo", "tokrl"]
    config_class = WeightedGRPOConfig

    def __init__(self, *args, weighter: TokenWeighter | dict | str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.use_weighter(weighter, self.args, KNOWN_NEEDS)
        self.rollout_weighters = rollout_weighters(self.weighter)
        rollout_needs = frozenset().union(*(w.all_needs() for w in self.rollout_weighters))
        loss_needs = self.weighter.all_needs() - rollout_needs
        if "unembedding" in loss_needs:
            raise ValueError(f"{type(self).__name__} gives 'unembedding' only to rollout weighters (rollout = True)")
        self._rollout_needs = rollout_needs
        self._carry_batch_info = bool(self.rollout_weighters) or bool(loss_needs & {"rewards", "group_ids"})
        self.rollout_passes = {"reused": 0, "generation": 0, "extra": 0}
        self._logged_paths: set[str] = set()
        self._old_pass: OldPassCapture | None = None
        self._gen_capture: GenerationCapture | None = None
        self._rewards: torch.Tensor | None = None
        self.shaper = build_shaper(getattr(self.args, "advantage_shaping", None))
        self.token_rewards = TokenRewardFunctions(self, getattr(self.args, "token_advantage", "process"))
        self.weight_normalizer = getattr(self.args, "weight_normalizer", "all")
        # TRL calls our get_high_entropy_mask only when top_entropy_quantile < 1; keep the user's value for
        # composing TRL's own mask, and set the attribute TRL reads so the hook always fires.
        self.trl_top_entropy_quantile = self.top_entropy_quantile
        self.top_entropy_quantile = -1.0
        self._batch, self._logps, self._capture = None, None, None  # the loss being computed: see _compute_loss
        self.setup_weight_logging()

    # ---- hooks into TRL -------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        inputs = dict(inputs)  # the advantage shaper replaces inputs["advantages"]; keep TRL's buffered batch intact
        self._batch, self._logps = inputs, None
        self._capture = HiddenStateCapture(model) if "hidden_states" in self.view_needs() else None
        try:
            with self._capture if self._capture is not None else contextlib.nullcontext():
                return super()._compute_loss(model, inputs)
        finally:
            self._batch, self._logps, self._capture = None, None, None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        capture = self._old_pass
        if capture is not None and capture.armed and not torch.is_grad_enabled() and model is self.model:
            return self._captured_old_pass(capture, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        out = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args,
                                                         **kwargs)
        if self._batch is not None and torch.is_grad_enabled():
            self._logps = out[0]
        return out

    # ---- generation time: rollout weighters over whole groups --------------------------------------------------

    def _needs_states(self) -> bool:
        return bool(self._rollout_needs & {"hidden_states", "old_logps", "logps", "entropies", "unembedding"})

    def _trl_runs_old_pass(self) -> bool:
        """TRL 1.16's condition for its no-grad old-log-prob pass in `_generate_and_score_completions`."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % generate_every != 0 or bool(
            self.use_vllm and self.vllm_importance_sampling_correction
        )

    def _can_capture_generation(self) -> bool:
        """Plain `model.generate` on this model, one call per batch, logits = LM head output (no scale/softcap)."""
        if not self._needs_states() or getattr(self.args, "rollout_state_source", "auto") != "auto":
            return False
        if self._trl_runs_old_pass() or self.use_vllm or getattr(self.args, "use_transformers_continuous_batching",
                                                                 False):
            return False
        if self.tools or self.environment_factories is not None or getattr(self, "rollout_func", None) is not None:
            return False
        return logit_transform(unwrap_model(self.model).config) == (1.0, None)

    def _generate(self, prompts):
        with self._rollout_autocast():
            if self._old_pass is None or not self._can_capture_generation():
                return super()._generate(prompts)
            capture = GenerationCapture(self.model, self.temperature)
            with capture:
                result = super()._generate(prompts)
            self._gen_capture = capture
            return result

    def _rollout_autocast(self):
        """One bf16 autocast region around the whole rollout on a CPU. accelerate opens a region per forward, and
        leaving the outermost region drops autocast's cache of bf16 weight copies, so each decoding step re-cast
        every weight; inside one region a weight is cast once per rollout. Same ops, same dtypes, same tokens."""
        if self.args.bf16 and self.accelerator.device.type == "cpu" and not self.use_vllm:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _calculate_rewards(self, *args, **kwargs):
        rewards_per_func = super()._calculate_rewards(*args, **kwargs)
        if self._old_pass is not None:  # TRL's weighted sum, all processes' rows
            self._rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)[None]).nansum(1)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        if not self._carry_batch_info:
            return self.token_rewards.to_advantages(super()._generate_and_score_completions(inputs))
        self._old_pass = OldPassCapture(armed=self._needs_states() and self._trl_runs_old_pass())
        self._gen_capture, self._rewards = None, None
        try:
            output = super()._generate_and_score_completions(inputs)
            capture, generation, rewards = self._old_pass, self._gen_capture, self._rewards
        finally:
            self._old_pass, self._gen_capture, self._rewards = None, None, None
        self.add_rollout_weights(output, capture, generation, rewards)
        return self.token_rewards.to_advantages(output)

    def _captured_old_pass(self, capture, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        capture.armed = False  # only the first scoring pass (TRL's old-log-prob pass) is captured
        if "entropies" in self._rollout_needs and not args:
            kwargs["compute_entropy"] = True
        with HiddenStateCapture(model, only_grad=False) as hooks:
            out = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args,
                                                             **kwargs)
        capture.hidden = torch.cat([completion_hidden_states(h, logits_to_keep) for h in hooks.states]).detach()
        capture.logps, capture.entropies = out[0], out[1]
        return out

    def old_policy_states(self, output: dict, entropies: bool = False):
        """One no-grad forward of the current (= old) policy: completion hidden states [B, T, d] and log-probs
        (and entropies with `entropies=True`)."""
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        length = output["completion_ids"].size(1)
        args = self.args
        batch_size = args.per_device_train_batch_size if self.model.training else args.per_device_eval_batch_size
        with torch.no_grad(), disable_gradient_checkpointing(self.model, args.gradient_checkpointing_kwargs):
            with HiddenStateCapture(self.model, only_grad=False) as hooks:
                logps, ents, _ = super()._get_per_token_logps_and_entropies(
                    self.model, ids, attention, length, batch_size=batch_size, compute_entropy=entropies
                )
        hidden = torch.cat([completion_hidden_states(h, length) for h in hooks.states]).detach()
        return (hidden, logps, ents) if entropies else (hidden, logps)

    def rollout_view(self, output, mask, capture=None, generation=None) -> tuple[TokenView, str]:
        """The generation batch as rollout weighters see it, and where the old policy's states came from."""
        needs = self._rollout_needs
        view = TokenView(completion_ids=output["completion_ids"], completion_mask=mask, gather=self.gather_flat,
                         advantages=output["advantages"], rewards=output.get("tokrl_rewards"),
                         group_ids=output["tokrl_group_ids"])
        for w in self.rollout_weighters:
            view.columns.update({c: output[c] for c in w.all_columns() if c in output})
        if not self._needs_states():
            return view, "none"
        all_rows = any(getattr(w, "unembedding_rows", "batch") == "all" for w in self.rollout_weighters)
        if "unembedding" in needs or generation is not None:  # collective under ZeRO-3: same on every rank
            view.unembedding = unembedding_of(self.model, self.accelerator, self.temperature,
                                              output["completion_ids"][mask.bool()], all_rows)
        from_generation = generation.aligned(*output["completion_ids"].shape) if generation is not None else None
        old = output.get("old_per_token_logps")
        if capture is not None and old is not None and capture.logps is old:
            hidden, logps, entropies, path = capture.hidden, old, capture.entropies, "reused"
        elif from_generation is not None:
            hidden, lse, entropies = from_generation
            logps = torch.zeros_like(lse)
            valid = mask.bool()
            h, y = hidden[valid].float(), output["completion_ids"][valid]
            z_y = (h * view.unembedding.rows(y).float()).sum(-1)
            if view.unembedding.bias is not None:
                z_y = z_y + view.unembedding.bias(y).float()
            logps[valid] = z_y / view.unembedding.temperature - lse[valid]
            path = "generation"
        else:
            hidden, logps, *rest = self.old_policy_states(output, entropies="entropies" in needs)
            entropies = rest[0] if rest else None
            path = "extra"
        if "entropies" in needs and entropies is None:
            raise RuntimeError("a rollout weighter needs entropies but TRL's old-log-prob pass did not return them")
        view.hidden_states, view.old_logps, view.logps, view.entropies = hidden, logps, logps, entropies
        return view, path

    def add_rollout_weights(self, output: dict, capture=None, generation=None, rewards=None) -> None:
        """Fill `tokrl_rewards`/`tokrl_group_ids` and every rollout weighter's carried column of a generation batch."""
        if any(key in output for key in ("pixel_values", "num_images")) and self.rollout_weighters:
            raise NotImplementedError("rollout weighters support text-only models")
        start = time.perf_counter()
        mode = "train" if self.model.training else "eval"
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        rows = mask.size(0)
        first = self.accelerator.process_index * rows
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        output["tokrl_group_ids"] = (first + torch.arange(rows, device=mask.device)) // group_size
        if rewards is not None:
            output["tokrl_rewards"] = rewards[first : first + rows].to(mask.device)
        if not self.rollout_weighters:
            return
        if rows % group_size != 0:
            if mode == "train":
                raise ValueError(
                    f"rollout weighters need whole prompt groups on each process, got {rows} rows for groups of "
                    f"{group_size}: make per_device_train_batch_size * steps_per_generation a multiple of "
                    "num_generations"
                )
            logger.warning("eval batch of %d rows splits groups of %d; rollout weights are uniform", rows, group_size)
            for w in self.rollout_weighters:
                output[w.carry_column] = mask.float()
            return
        view, path = self.rollout_view(output, mask, capture, generation)
        if path in self.rollout_passes:
            self.rollout_passes[path] += 1
            self._log_path_once(path)
        for w in self.rollout_weighters:
            view.stats = {}
            output[w.carry_column] = w(view)
            name = getattr(w, "registry_name", type(w).__name__.lower())
            for key, value in view.stats.items():
                self.log_metric(f"{name}/{key}", value)
            self.log_metric(f"{name}/extra_pass", path == "extra")
            self.log_metric(f"{name}/from_generation", path == "generation")
            self.log_metric(f"{name}/seconds", time.perf_counter() - start)
        for key, value in view.values.items():
            output[f"tokrl_{key}"] = value

    def _log_path_once(self, path: str) -> None:
        if path not in self._logged_paths:
            self._logged_paths.add(path)
            logger.info("rollout weighters: old-policy states from %s", {
                "reused": "TRL's old-log-prob pass (no extra forward)",
                "generation": "generation itself (no extra forward)",
                "extra": "one extra no-grad forward (no TRL scoring pass or generation capture available)",
            }[path])

    def get_high_entropy_mask(self, entropies, mask, threshold):
        """TRL's entropy-mask hook, returning token weights (see the module docstring)."""
        if self._batch is None:  # called outside _compute_loss (e.g. a user's code): TRL's behaviour
            return super().get_high_entropy_mask(entropies, mask, threshold)
        view = self.build_view(self._batch, entropies, mask)
        if self.shaper is not None:  # TRL reads inputs["advantages"] right after this hook (pinned by a test)
            self._batch["advantages"] = self.shaper(view)
        weights = self.weighter(view)
        if self.trl_top_entropy_quantile < 1.0:
            weights = weights * super().get_high_entropy_mask(entropies, mask, 1 - self.trl_top_entropy_quantile)
        self.record_weights(view, weights, mask)
        self.last_prompt = (self._batch["prompt_ids"], self._batch["prompt_mask"])
        advantages = self._batch["advantages"]
        view.values["advantage"] = advantages[:, None].expand_as(weights) if advantages.dim() == 1 else advantages
        return self.normalize_weights(weights, mask)

    # ---- the token view ---------------------------------------------------------------------------------

    def view_needs(self) -> frozenset[str]:
        """What the weighter and the advantage shaper ask the loss-time view for."""
        return self.weighter.all_needs() | (self.shaper.all_needs() if self.shaper is not None else frozenset())

    def build_view(self, inputs, entropies, mask) -> TokenView:
        """Collect what the weighter (and the advantage shaper) asked for from the batch and the forward TRL just ran."""
        needs = self.view_needs()
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
        for column in (*self.weighter.all_columns(), *(w.carry_column for w in self.rollout_weighters)):
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
