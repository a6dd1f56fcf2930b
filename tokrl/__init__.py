"""tokrl: token-level credit assignment for RL fine-tuning of language models, built on TRL."""

__version__ = "0.1.0"

from tokrl.weighting import (  # noqa: E402
    Clip,
    EntropyQuantile,
    Normalize,
    Product,
    TokenView,
    TokenWeighter,
    Uniform,
    build_weighter,
    register_weighter,
)

__all__ = ["TokenView", "TokenWeighter", "Uniform", "EntropyQuantile", "Product", "Clip", "Normalize",
           "build_weighter", "register_weighter", "__version__"]
