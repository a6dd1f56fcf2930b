"""Reward names in a recipe -> reward functions in TRL's signature, checked against the dataset's columns.

    reward: [math]                                       # a built-in: accuracy, math, format
    reward: [my_rewards:score]                           # a function in my_rewards.py beside the recipe
    reward: [{name: my_rewards:score, kwargs: {scale: 2}}, format]

TRL calls a reward as `f(prompts=..., completions=..., completion_ids=..., trainer_state=..., log_extra=...,
log_metric=..., **columns)`, so a reward takes `**kwargs`, and every other argument it requires must be a dataset
column: both are checked when the recipe is validated, before a model is loaded.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

from tokrl.rewards.arithmetic import accuracy_reward, answer_spans_reward, format_reward
from tokrl.rewards.math import math_reward
from tokrl.rewards.token_rewards import sequence_summary
from tokrl.utils import did_you_mean, load_object

REWARDS: dict[str, Callable] = {"accuracy": accuracy_reward, "math": math_reward, "format": format_reward,
                                "answer_spans": answer_spans_reward}
TRL_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric",
                 "environments")


def reward_name(spec) -> str:
    return spec if isinstance(spec, str) else str((spec or {}).get("name"))


def _lookup(name: str) -> Callable:
    if name in REWARDS:
        return REWARDS[name]
    if ":" in name or "." in name:
        fn = load_object(name, "reward")
        if not callable(fn):
            raise ValueError(f"reward '{name}' is not a function")
        return fn
    raise ValueError(f"unknown reward '{name}'{did_you_mean(name, REWARDS)}; known: {', '.join(REWARDS)} "
                     "(or module:function)")


def check_reward(fn: Callable, name: str, bound=(), columns=None) -> None:
    """A reward must take `completions` and `**kwargs`; its other required arguments must be dataset columns."""
    params = inspect.signature(fn).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"reward '{name}' must accept **kwargs: TRL also passes {', '.join(TRL_ARGUMENTS[2:])} "
                         "and every dataset column")
    for pname, p in params.items():
        if p.kind == p.VAR_POSITIONAL:
            continue
        if p.kind == p.POSITIONAL_ONLY:
            raise ValueError(f"reward '{name}': argument '{pname}' is positional-only; TRL passes keywords")
        required = p.default is p.empty and p.kind != p.VAR_KEYWORD
        if required and pname not in TRL_ARGUMENTS and pname not in bound and columns is not None \
                and pname not in columns:
            raise ValueError(f"reward '{name}' needs column '{pname}', which the dataset lacks (columns: "
                             f"{sorted(columns)})")


def resolve_rewards(specs, columns=None) -> list[Callable]:
    """Reward specs (a name, 'module:function', or {name, kwargs}) -> functions, checked against `columns`."""
    out = []
    for spec in [specs] if isinstance(specs, (str, dict)) else list(specs):
        if isinstance(spec, dict):
            unknown = [k for k in spec if k not in ("name", "kwargs")]
            if "name" not in spec or unknown:
                raise ValueError(f"a reward given as a mapping has keys name and kwargs, got {sorted(spec)}")
        elif not isinstance(spec, str):
            raise ValueError(f"a reward is a name, 'module:function' or {{name, kwargs}}, got {spec!r}")
        name = reward_name(spec)
        fn = _lookup(name)
        kwargs = dict(spec.get("kwargs") or {}) if isinstance(spec, dict) else {}
        if kwargs:
            params = inspect.signature(fn).parameters
            named = [p for p in params if p not in TRL_ARGUMENTS and params[p].kind != params[p].VAR_KEYWORD]
            for key in kwargs:
                if key not in params:
                    raise ValueError(f"reward '{name}' has no argument '{key}'{did_you_mean(key, named)}; "
                                     f"arguments: {', '.join(named) or 'none'}")
        check_reward(fn, name, kwargs, columns)
        out.append(with_kwargs(fn, name, kwargs) if kwargs else fn)
    return out


def with_kwargs(fn: Callable, name: str, kwargs: dict) -> Callable:
    """`fn` with fixed keyword arguments, named for TRL's logs (`rewards/<name>/mean`)."""

    @functools.wraps(fn)
    def bound(*args, **kw):
        return fn(*args, **{**kwargs, **kw})

    bound.__name__ = getattr(fn, "__name__", name.replace(":", "."))
    return bound


def score_completions(reward_fns, rows: dict[str, list], completions: list) -> list[list[float]]:
    """Each reward on `completions` (one per row), called as TRL calls it: per-reward lists (None -> nan).

    A reward that scores tokens or spans counts as the sum of its rewards, as in the training logs."""
    columns = {k: v for k, v in rows.items() if k != "prompt"}
    out = []
    for fn in reward_fns:
        values = fn(prompts=rows.get("prompt"), completions=completions, completion_ids=None, trainer_state=None,
                    log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None, **columns)
        values = [sequence_summary(v) if isinstance(v, (list, tuple)) else v for v in values]
        out.append([float("nan") if v is None else float(v) for v in values])
    return out
