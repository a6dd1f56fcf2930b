"""Strict YAML recipes: safe loading, `key=value` overrides, and errors that name the key and the file.

A recipe is one YAML mapping. Each command reads its own sections, checks them with `check_keys`, and builds
TRL configs with `build_config`, which accepts a TRL config's fields verbatim (TrlParser-style) and nothing else.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A problem with a recipe or its inputs; the CLI prints it as one line."""


def did_you_mean(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with `yaml.safe_load` (no Python object tags)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return data


def apply_overrides(recipe: dict, overrides: list[str], file: str | Path = "<command line>") -> dict:
    """Apply `a.b.c=value` overrides in place; values are parsed as YAML scalars (`lr=1e-5`, `flag=true`)."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override '{item}' must look like key=value (e.g. trainer.learning_rate=1e-5)")
        key, _, raw = item.partition("=")
        value = yaml.safe_load(raw) if raw.strip() else None
        node = recipe
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"{file}: override '{key}': '{part}' is not a mapping")
            node = child
        node[parts[-1]] = value
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> dict:
    recipe = load_yaml(path)
    apply_overrides(recipe, overrides or [], path)
    return recipe


def check_keys(mapping: Any, allowed, where: str, file: str | Path, required=()) -> dict:
    """Unknown keys (with a suggestion) and missing required keys are errors naming `where` and `file`."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise RecipeError(f"{file}: '{where}' must be a mapping, got {type(mapping).__name__}")
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            label = f"{where}.{key}" if where else key
            raise RecipeError(f"{file}: unknown key '{label}'{did_you_mean(key, allowed)}")
    for key in required:
        if key not in mapping:
            label = f"{where}.{key}" if where else key
            raise RecipeError(f"{file}: missing required key '{label}'")
    return mapping


def _type_ok(value: Any, annotation: Any) -> bool:
    """Loose type check of a YAML value against a dataclass annotation (ints are accepted for floats)."""
    if annotation is Any or value is None:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type):
        if dataclasses.is_dataclass(annotation) or annotation.__module__ != "builtins":
            return True  # enums, nested configs: let the config's own __post_init__ judge
        return isinstance(value, annotation)
    return True


def build_config(config_cls: type, mapping: dict | None, file: str | Path, where: str = "trainer", **defaults):
    """Instantiate a TRL config dataclass from a recipe section, checking names and types first.

    `defaults` are used for fields the recipe does not set. Errors from the config's own `__post_init__` are
    re-raised as one line naming the file.
    """
    mapping = dict(mapping or {})
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    check_keys(mapping, fields, where, file)
    hints = typing.get_type_hints(config_cls)
    for key, value in mapping.items():
        if not _type_ok(value, hints.get(key, Any)):
            raise RecipeError(
                f"{file}: '{where}.{key}' must be {getattr(hints.get(key), '__name__', hints.get(key))}, "
                f"got {type(value).__name__} {value!r}"
            )
    kwargs = {**defaults, **mapping}
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"{file}: invalid '{where}' settings: {first}") from None
