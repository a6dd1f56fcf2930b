"""The per-token weighting interface shared by every tokrl trainer."""

from tokrl.weighting.base import KNOWN_NEEDS, TokenWeighter, weight_stats
from tokrl.weighting.clip_cov import ClipCov
from tokrl.weighting.column import DatasetColumn
from tokrl.weighting.compose import Clip, Normalize, Product
from tokrl.weighting.entropy import EntropyQuantile
from tokrl.weighting.entropy_bonus import EntropyBonus
from tokrl.weighting.gtpo import GTPOEntropyShare
from tokrl.weighting.random_quantile import RandomQuantile
from tokrl.weighting.registry import (SHAPERS, WEIGHTERS, build_shaper, build_weighter, register_shaper,
                                      register_weighter)
from tokrl.weighting.shaping import AdvantageShaper
from tokrl.weighting.shuffled_column import ShuffledColumn
from tokrl.weighting.thr import NTHRWeighter, THRWeighter
from tokrl.weighting.uniform import Uniform
from tokrl.weighting.view import TokenView

__all__ = ["KNOWN_NEEDS", "TokenView", "TokenWeighter", "weight_stats", "Uniform", "DatasetColumn", "EntropyQuantile",
           "RandomQuantile", "ShuffledColumn", "Product", "Clip", "Normalize", "WEIGHTERS", "build_weighter",
           "register_weighter", "AdvantageShaper", "SHAPERS", "build_shaper", "register_shaper", "THRWeighter",
           "NTHRWeighter", "ClipCov", "GTPOEntropyShare", "EntropyBonus"]
