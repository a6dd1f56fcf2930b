"""Name -> weighter class, so recipes can say `weighting: {name: entropy_quantile, rho: 0.2}`."""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from tokrl.weighting.base import TokenWeighter

WEIGHTERS: dict[str, type[TokenWeighter]] = {}


def register_weighter(name: str):
    """Class decorator: make a `TokenWeighter` subclass buildable from YAML under `name`."""

    def wrap(cls: type[TokenWeighter]) -> type[TokenWeighter]:
        if name in WEIGHTERS and WEIGHTERS[name] is not cls:
            raise ValueError(f"weighter name '{name}' is already registered to {WEIGHTERS[name].__name__}")
        WEIGHTERS[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _resolve(name: str) -> type[TokenWeighter]:
    if name in WEIGHTERS:
        return WEIGHTERS[name]
    if ":" in name or "." in name:  # a dotted path to the user's own class: "mypkg.weights:MyWeighter"
        module_name, _, attr = name.replace(":", ".").rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"weighter '{name}' could not be imported: {exc}") from None
        if not (inspect.isclass(cls) and issubclass(cls, TokenWeighter)):
            raise ValueError(f"weighter '{name}' is not a TokenWeighter subclass")
        return cls
    raise ValueError(f"unknown weighter '{name}'{did_you_mean(name, WEIGHTERS)}; known: {', '.join(sorted(WEIGHTERS))}")


def build_weighter(spec: Any) -> TokenWeighter:
    """Build a weighter from a recipe value.

    `None` -> `Uniform`; a string -> that weighter with defaults; a dict -> `name` plus keyword arguments. Nested
    specs are built recursively for the composition weighters (`weighter:` / `weighters:` keys). An instance is
    returned as is.
    """
    if spec is None:
        spec = "uniform"
    if isinstance(spec, TokenWeighter):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a weighting spec must be a name or a mapping with a 'name' key, got {spec!r}")
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    cls = _resolve(spec["name"])
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
                    f"weighter '{spec['name']}' has no option '{key}'{did_you_mean(key, allowed)}; "
                    f"options: {', '.join(allowed) or 'none'}"
                )
    return cls(**kwargs)
