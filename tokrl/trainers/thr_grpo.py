"""THR-GRPO: GRPO whose per-token policy loss is reweighted by the sign of the Token Hidden Reward.

Deng et al., "Token Hidden Reward" (arXiv 2510.03669). A preset: THR is a rollout weighter (`tokrl/weighting/thr.py`
has the formula and its provenance; `WeightedGRPOTrainer` computes it once per generation batch, groups intact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokrl.trainers.weighted_grpo import WeightedGRPOTrainer
from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig
from tokrl.weighting.thr import find_thr_weighter


@dataclass
class THRGRPOConfig(WeightedGRPOConfig):
    r"""
    Configuration for [`THRGRPOTrainer`]: `WeightedGRPOConfig` with a THR weighting by default.

    weighting (`dict`, *optional*, defaults to `{"name": "thr"}`):
        Must contain one `thr` or `nthr` weighter, e.g. `{"name": "thr", "p": 0.2, "tau_beta": 1.0}` (p > 0
        exploitation, p < 0 exploration, p = 0 plain GRPO) or a product with `entropy_quantile` (forking x THR).
        Its arguments are documented in `THRWeighter`. Whole prompt groups per process are required.
    """

    weighting: Any = field(default_factory=lambda: {"name": "thr"},
                           metadata={"help": "Weighter spec holding one 'thr' or 'nthr' weighter (default: thr, p=0)."})


class THRGRPOTrainer(WeightedGRPOTrainer):
    """GRPO with THR reweighting; see `THRGRPOConfig`."""

    _tag_names = ["trl", "grpo", "tokrl", "thr"]
    _name = "THR-GRPO"
    config_class = THRGRPOConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.thr_weighter = find_thr_weighter(self.weighter)
        if self.thr_weighter is None:
            raise ValueError("THRGRPOTrainer needs a 'thr' or 'nthr' weighter in its weighting spec; for other "
                             "weighters use WeightedGRPOTrainer")

    thr_passes = property(lambda self: self.rollout_passes)
    last_thr = property(lambda self: self.thr_weighter.last_result)
    add_thr_columns = WeightedGRPOTrainer.add_rollout_weights
