"""`THRGRPOConfig`: `WeightedGRPOConfig` plus the Token Hidden Reward settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig
from tokrl.weighting.thr import TAU_ON, THRWeighter

THR_FIELDS = ("p", "tau_beta", "tau_on", "mask_nondominant", "restrict_vocab", "include_self")
HIDDEN_SOURCES = ("auto", "forward")


@dataclass
class THRGRPOConfig(WeightedGRPOConfig):
    r"""
    Configuration for [`THRGRPOTrainer`]: `WeightedGRPOConfig` plus THR reweighting (Deng et al., "Token Hidden
    Reward", arXiv 2510.03669). Weights are 1 + p * sign(THR) on dominant tokens and 1 elsewhere; p = 0 is GRPO.
    Points the paper's text did not settle are marked (UNCERTAIN) with the default chosen; see
    `tokrl/weighting/thr.py`.

    > Parameters that control token weighting

    p (`float`, *optional*, defaults to `0.0`):
        Signed steering scalar in (-1, 1). p > 0 (exploitation) amplifies tokens with positive THR by 1 + p and damps
        negative ones by 1 - p (better greedy / Pass@1); p < 0 (exploration) does the reverse (better Pass@K). 0 is
        plain GRPO. The paper's values were not retrieved (UNCERTAIN); try |p| in {0.1, 0.2, 0.5}.
    tau_beta (`float`, *optional*, defaults to `1.0`):
        Dominant-token threshold tau = tau_beta * min over correct responses of their mean influence s+ (NTHR paper
        heuristic, beta = 1; its ablation used {0, 0.1, 1}).
    tau_on (`str`, *optional*, defaults to `"s"`):
        `"s"`: a token is dominant if |s| > tau (advantage excluded, scale-consistent with tau; default).
        `"thr"`: |THR| > tau_beta * min mean THR+ (advantage included). Which one the paper uses is UNCERTAIN.
    mask_nondominant (`bool`, *optional*, defaults to `False`):
        Give non-dominant tokens of mixed groups weight 0 ("THR-only" training) instead of 1 (UNCERTAIN: default 1).
    restrict_vocab (`bool`, *optional*, defaults to `True`):
        Restrict the prediction-error vectors to V*, the token ids in the group's completions (NTHR paper). False
        uses the whole vocabulary (exact, slow; under ZeRO-3 it gathers the whole unembedding matrix).
    include_self (`bool`, *optional*, defaults to `True`):
        Keep a token's own term in its influence score, as the first-order expansion does (UNCERTAIN); False drops it.
    thr_hidden_source (`str`, *optional*, defaults to `"auto"`):
        Where the old policy's hidden states come from. `"auto"`: TRL's old-log-prob pass when it runs, else the
        generation itself (plain `transformers` generation), else one extra no-grad forward. `"forward"`: never
        capture during generation (TRL's pass or the extra forward).

    A `weighting` spec may replace these fields, e.g. `{name: product, weighters: [{name: entropy_quantile},
    {name: thr, p: 0.2}]}` (forking x THR) or `{name: nthr}` (the NTHR preset); it must contain exactly one `thr` or
    `nthr` weighter, and the fields above must then stay at their defaults.
    THR needs whole prompt groups on each process: per_device_train_batch_size * steps_per_generation must be a
    multiple of num_generations.
    """

    p: float = field(
        default=0.0,
        metadata={"help": "THR steering scalar in (-1, 1): >0 exploitation, <0 exploration, 0 = GRPO."},
    )
    tau_beta: float = field(
        default=1.0, metadata={"help": "tau = tau_beta * min mean influence of correct responses (NTHR paper: 1)."}
    )
    tau_on: str = field(
        default="s", metadata={"help": "Dominance test: 's' (|s| > tau, default) or 'thr' (|THR| > tau on THR)."}
    )
    mask_nondominant: bool = field(
        default=False, metadata={"help": "Non-dominant tokens of mixed groups get weight 0 instead of 1."}
    )
    restrict_vocab: bool = field(
        default=True, metadata={"help": "Restrict g to V*, the group's token ids (NTHR paper); False = full vocab."}
    )
    include_self: bool = field(
        default=True, metadata={"help": "Keep a token's own term in its influence score (first-order expansion)."}
    )

    thr_hidden_source: str = field(
        default="auto",
        metadata={"help": "'auto' (TRL's old-logprob pass, else generation, else an extra forward) or 'forward'."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.thr_hidden_source not in HIDDEN_SOURCES:
            raise ValueError(f"thr_hidden_source must be one of {HIDDEN_SOURCES}, got {self.thr_hidden_source!r}")
        if self.tau_on not in TAU_ON:
            raise ValueError(f"tau_on must be one of {TAU_ON}, got {self.tau_on!r}")
        if self.weighting is not None:
            changed = [name for name in THR_FIELDS if getattr(self, name) != self.__dataclass_fields__[name].default]
            if changed:
                raise ValueError(
                    f"set either 'weighting' or the THR fields, not both: {', '.join(changed)} would be ignored; "
                    "put them in the 'thr' entry of the weighting spec"
                )
        else:
            self.thr_weighter()  # validate now, naming the fields
        local_batch = self.per_device_train_batch_size * self.steps_per_generation
        if local_batch % self.num_generations != 0:
            raise ValueError(
                f"THR needs whole prompt groups on each process: per_device_train_batch_size * steps_per_generation "
                f"({self.per_device_train_batch_size} * {self.steps_per_generation} = {local_batch}) must be a multiple "
                f"of num_generations ({self.num_generations}); change one of these three settings"
            )

    def thr_weighter(self) -> THRWeighter:
        """The THR weighter these fields describe."""
        try:
            return THRWeighter(**{name: getattr(self, name) for name in THR_FIELDS})
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("thr: ")) from None
