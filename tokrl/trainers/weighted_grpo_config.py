"""`WeightedGRPOConfig`: TRL's `GRPOConfig` plus the per-token weighting fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from tokrl.trainers.shared_config import SharedConfig
from tokrl.weighting import build_shaper, build_weighter
from tokrl.weighting.base import rollout_weighters

NORMALIZERS = ("all", "selected")
STATE_SOURCES = ("auto", "forward")
TOKEN_ADVANTAGES = ("process", "token")
# Settings that used to be config fields and now live in the weighting spec (or were renamed): old -> new.
MOVED_FIELDS = {
    **{f"forking_{k}": f"weighting.{k}" for k in ("rho", "scope", "select", "invert")},
    **{k: f"weighting.{k}" for k in ("p", "tau_beta", "tau_on", "mask_nondominant", "restrict_vocab", "include_self")},
    "thr_hidden_source": "trainer.rollout_state_source",
}


@dataclass
class WeightedGRPOConfig(SharedConfig, GRPOConfig):
    r"""
    Configuration for [`WeightedGRPOTrainer`]: every field of TRL's `GRPOConfig`, the fields of `SharedConfig`
    (`token_dump_steps`, `token_dump_samples`, device defaults of `bf16` and `gradient_checkpointing`), plus:

    > Parameters that control token weighting

    weighting (`str` or `dict`, *optional*, defaults to `None`):
        Weighter spec, resolved by name through the tokrl registry (e.g. `{"name": "entropy_quantile", "rho": 0.2}`).
        Every weighter argument lives here. `None` means uniform weights, i.e. plain GRPO. A `weighter=` object
        passed to the trainer takes precedence. Presets (`ForkingGRPOConfig`, `THRGRPOConfig`) only change its default.
    weight_normalizer (`str`, *optional*, defaults to `"all"`):
        `"all"`: weighted per-token losses are aggregated with TRL's own denominators (token counts), as in the
        forking paper's equation. `"selected"`: the denominators count weight mass instead of tokens (per sequence
        for `grpo`/`sapo`, per local micro-batch for `bnpo`, per micro-batch across processes for
        `dapo`/`cispo`/`vespo`/`dr_grpo`), as in the forking authors' verl code. Same for uniform weights.
    token_advantage (`str`, *optional*, defaults to `"process"`):
        How per-token rewards (a reward function returning a list per completion: one reward per token, or
        `((char_start, char_end), reward)` spans) become per-token advantages. `"process"`: the sequence reward's
        group advantage plus the reward-to-go of the group-normalised token rewards (DeepSeekMath's process
        supervision; a span's reward sits on its last token). `"token"`: the token rewards alone (a span's reward
        on every token it covers). Without token rewards this field changes nothing.
    advantage_shaping (`str` or `dict`, *optional*, defaults to `None`):
        Advantage-shaper spec, resolved by name through the tokrl registry (e.g. `{"name": "entropy_bonus",
        "alpha": 0.4, "kappa": 2}`): a per-token change of the advantages at loss time. `None`: no shaping.
    rollout_state_source (`str`, *optional*, defaults to `"auto"`):
        Where rollout weighters (THR) get the old policy's hidden states, log-probs and entropies. `"auto"`: TRL's
        old-log-prob pass when it runs, else the generation itself (plain `transformers` generation), else one extra
        no-grad forward. `"forward"`: never capture during generation (TRL's pass or the extra forward).
        Rollout weighters need whole prompt groups on each process: per_device_train_batch_size *
        steps_per_generation must be a multiple of num_generations.
    """

    moved_fields = MOVED_FIELDS  # not a field: old keys a recipe loader names in its error

    weighting: Any = field(
        default=None,
        metadata={"help": "Weighter spec (name or mapping with 'name'); None = uniform, i.e. plain GRPO."},
    )
    weight_normalizer: str = field(
        default="all",
        metadata={"help": "'all' (TRL's token-count denominators) or 'selected' (weight-mass denominators)."},
    )
    token_advantage: str = field(
        default="process",
        metadata={"help": "Per-token rewards -> advantages: 'process' (sequence advantage + normalised reward-to-go) "
                          "or 'token' (the token rewards alone)."},
    )
    advantage_shaping: Any = field(
        default=None,
        metadata={"help": "Advantage-shaper spec (name or mapping with 'name'), e.g. entropy_bonus; None = none."},
    )
    rollout_state_source: str = field(
        default="auto",
        metadata={"help": "'auto' (TRL's old-logprob pass, else generation, else an extra forward) or 'forward'."},
    )

    def __post_init__(self):
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO compares completions within a group), "
                             f"got {self.num_generations}")
        super().__post_init__()
        if self.weight_normalizer not in NORMALIZERS:
            raise ValueError(f"weight_normalizer must be one of {NORMALIZERS}, got {self.weight_normalizer!r}")
        if self.weight_normalizer == "selected" and self.loss_type == "luspo":
            raise ValueError(
                "weight_normalizer='selected' is not defined for loss_type='luspo' (it sums tokens per sequence "
                "without a token-count denominator); use weight_normalizer='all' or another loss_type"
            )
        if self.rollout_state_source not in STATE_SOURCES:
            raise ValueError(f"rollout_state_source must be one of {STATE_SOURCES}, got {self.rollout_state_source!r}")
        if self.token_advantage not in TOKEN_ADVANTAGES:
            raise ValueError(f"token_advantage must be one of {TOKEN_ADVANTAGES}, got {self.token_advantage!r}")
        if isinstance(self.advantage_shaping, (str, dict)):
            build_shaper(self.advantage_shaping)  # a bad spec fails before the model loads
        self.check_weighting()

    def check_weighting(self) -> None:
        """Build the weighting spec now, so a bad argument fails before the model loads; check whole groups."""
        if self.weighting is None or not isinstance(self.weighting, (str, dict)):
            return
        if rollout_weighters(build_weighter(self.weighting)):
            local_batch = self.per_device_train_batch_size * self.steps_per_generation
            if local_batch % self.num_generations != 0:
                raise ValueError(
                    f"rollout weighters need whole prompt groups on each process: per_device_train_batch_size * "
                    f"steps_per_generation ({self.per_device_train_batch_size} * {self.steps_per_generation} = "
                    f"{local_batch}) must be a multiple of num_generations ({self.num_generations}); change one of "
                    "these three settings"
                )
