"""The per-token weighting interface shared by every tokrl trainer."""

from tokrl.weighting.base import KNOWN_NEEDS, TokenWeighter, weight_stats
from tokrl.weighting.column import DatasetColumn
from tokrl.weighting.compose import Clip, Normalize, Product
from tokrl.weighting.entropy import EntropyQuantile
from tokrl.weighting.random_quantile import RandomQuantile
from tokrl.weighting.registry import SHAPERS, WEIGHTERS, build_shaper, build_weighter, register_shaper, register_weighter
from tokrl.weighting.shaping import AdvantageShaper
from tokrl.weighting.shuffled_column import ShuffledColumn
from tokrl.weighting.uniform import Uniform
from tokrl.weighting.view import TokenView

__all__ = [
    "KNOWN_NEEDS",
    "TokenView",
    "TokenWeighter",
    "weight_stats",
    "Uniform",
    "DatasetColumn",
    "EntropyQuantile",
    "RandomQuantile",
    "ShuffledColumn",
    "Product",
    "Clip",
    "Normalize",
    "WEIGHTERS",
    "build_weighter",
    "register_weighter",
    "AdvantageShaper",
    "SHAPERS",
    "build_shaper",
    "register_shaper",
]
from tokrl.weighting.clip_cov import ClipCov  # noqa: E402
from tokrl.weighting.gtpo import GTPOEntropyShare  # noqa: E402
from tokrl.weighting.thr import NTHRWeighter, THRWeighter  # noqa: E402
from tokrl.weighting.entropy_bonus import EntropyBonus  # noqa: E402

__all__ += ["THRWeighter", "NTHRWeighter", "ClipCov", "GTPOEntropyShare", "EntropyBonus"]
