"""Name -> class, so recipes can say `weighting: {name: entropy_quantile, rho: 0.2}` (weighters) or
`advantage_shaping: {name: entropy_bonus, alpha: 0.4}` (advantage shapers)."""

from __future__ import annotations

import inspect
from typing import Any

from tokrl.utils import did_you_mean, load_object
from tokrl.weighting.base import TokenWeighter
from tokrl.weighting.shaping import AdvantageShaper

WEIGHTERS: dict[str, type[TokenWeighter]] = {}
SHAPERS: dict[str, type[AdvantageShaper]] = {}


def _register(table: dict, name: str, kind: str):
    def wrap(cls):
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} name '{name}' is already registered to {table[name].__name__}")
        table[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def register_weighter(name: str):
    """Class decorator: make a `TokenWeighter` subclass buildable from YAML under `name`."""
    return _register(WEIGHTERS, name, "weighter")


def register_shaper(name: str):
    """Class decorator: make an `AdvantageShaper` subclass buildable from YAML under `name`."""
    return _register(SHAPERS, name, "shaper")


def _resolve(name: str, table: dict, base: type, kind: str) -> type:
    if name in table:
        return table[name]
    if ":" in name or "." in name:  # a dotted path to the user's own class: "mypkg.weights:MyWeighter"
        cls = load_object(name, kind)
        if not (inspect.isclass(cls) and issubclass(cls, base)):
            raise ValueError(f"{kind} '{name}' is not a {base.__name__} subclass")
        return cls
    raise ValueError(f"unknown {kind} '{name}'{did_you_mean(name, table)}; known: {', '.join(sorted(table))}")


def _build(spec: Any, table: dict, base: type, kind: str):
    """`name` or `{name: ..., **kwargs}` -> an instance of the class registered under `name` in `table`."""
    if isinstance(spec, base):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a {kind} spec must be a name or a mapping with a 'name' key, got {spec!r}")
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    cls = _resolve(spec["name"], table, base, kind)
    if "weighter" in kwargs:
        kwargs["weighter"] = build_weighter(kwargs["weighter"])
    if "weighters" in kwargs:
        kwargs["weighters"] = [build_weighter(s) for s in kwargs["weighters"]]
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        allowed = [p for p in params if p != "self"]
        for key in kwargs:
            if key not in allowed:
                raise ValueError(
                    f"{kind} '{spec['name']}' has no option '{key}'{did_you_mean(key, allowed)}; "
                    f"options: {', '.join(allowed) or 'none'}"
                )
    return cls(**kwargs)


def build_weighter(spec: Any) -> TokenWeighter:
    """Build a weighter from a recipe value.

    `None` -> `Uniform`; a string -> that weighter with defaults; a dict -> `name` plus keyword arguments. Nested
    specs are built recursively for the composition weighters (`weighter:` / `weighters:` keys). An instance is
    returned as is.
    """
    return _build("uniform" if spec is None else spec, WEIGHTERS, TokenWeighter, "weighter")


def build_shaper(spec: Any) -> AdvantageShaper | None:
    """Build an advantage shaper from a recipe value (`{name: entropy_bonus, alpha: 0.4}`); `None` -> None."""
    return None if spec is None else _build(spec, SHAPERS, AdvantageShaper, "advantage shaper")
