"""Strict YAML recipes: safe loading, `key=value` overrides, and errors that name the key and the file.

A recipe is one YAML mapping. Each command reads its own sections, checks them with `check_keys`, and builds
TRL configs with `build_config`, which accepts a TRL config's fields verbatim (TrlParser-style) and nothing else.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from tokrl.config_ranges import RANGES, missing_resources, out_of_range
from tokrl.utils import did_you_mean


class RecipeError(ValueError):
    """A problem with a recipe or its inputs; the CLI prints it as one line."""


_INT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+)$")
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)


class RecipeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` with YAML 1.2 numbers (`1e-5`, `1e3`, `.5` are floats; `010` is ten, `1:30` a string)
    and duplicate keys as errors. PyYAML otherwise reads YAML 1.1, where `1e-5` is the string '1e-5'."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, typing.Hashable) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (first given on line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node).replace("_", "")
        body = text.lstrip("+-").lower()
        return int(text, 0) if body[:2] in ("0x", "0o", "0b") else int(text, 10)


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT_12, list("-+0123456789"))
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
RecipeLoader.add_constructor("tag:yaml.org,2002:int", RecipeLoader.construct_yaml_int)


def parse_yaml(text: str):
    """Parse YAML text safely with `RecipeLoader` (no Python object tags, YAML 1.2 numbers, no duplicate keys)."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with `RecipeLoader`; errors name the file and the line."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory; give a recipe file (e.g. {path}/*.yaml)")
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = parse_yaml(path.read_text())
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
        try:
            value = parse_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise RecipeError(f"override '{item}': invalid value: {getattr(exc, 'problem', exc)}") from None
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
    """The recipe as a dict, overrides applied; its `imports:` (user modules, e.g. ones that register weighters)
    are imported first, with the recipe's folder and the working directory on the import path."""
    recipe = load_yaml(path)
    apply_overrides(recipe, overrides or [], path)
    add_user_paths(path)
    import_user_modules(recipe.pop("imports", None), path)
    return recipe


def add_user_paths(recipe_path: str | Path | None = None) -> None:
    """Put the working directory and the recipe's folder on `sys.path`, so `reward: [my_rewards:score]` beside the
    recipe imports without setting PYTHONPATH (a console script does not put the working directory there)."""
    for folder in (Path.cwd(), Path(recipe_path).resolve().parent if recipe_path else None):
        if folder is not None and str(folder) not in sys.path:
            sys.path.append(str(folder))


def import_user_modules(names, file) -> None:
    if names is None:
        return
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RecipeError(f"{file}: 'imports' must be a list of module names, got {names!r}")
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise RecipeError(f"{file}: imports: cannot import '{name}': {exc}") from None


def check_keys(mapping: Any, allowed, where: str, file: str | Path, required=(), sections=None) -> dict:
    """Unknown keys (with a suggestion) and missing required keys are errors naming `where` and `file`.

    `sections` maps a sub-section name to the keys it takes, so that a key written one level too high
    (`max_steps:` at the top of a recipe) is pointed to where it belongs (`trainer.max_steps`).
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise RecipeError(f"{file}: '{where}' must be a mapping of settings, got {type(mapping).__name__} "
                          f"{mapping!r}")
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            label = f"{where}.{key}" if where else key
            home = [name for name, keys in (sections or {}).items() if key in keys]
            hint = f" (it belongs under '{home[0]}:', as '{home[0]}.{key}')" if home else did_you_mean(key, allowed)
            raise RecipeError(f"{file}: unknown key '{label}'{hint}")
    for key in required:
        if mapping.get(key) is None:
            label = f"{where}.{key}" if where else key
            raise RecipeError(f"{file}: missing required key '{label}'")
    return mapping


def whole_number(value: Any, annotation: Any) -> Any:
    """`1e3` (a float in YAML 1.2 and Python) where an int is expected becomes 1000; other values are unchanged."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        accepts = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
            else (annotation,)
        if int in accepts and float not in accepts:
            return int(value)
    return value


def section(recipe: dict, key: str, file: str | Path) -> dict:
    """A copy of the sub-mapping `recipe[key]` ({} when absent); anything but a mapping is an error naming it."""
    value = recipe.get(key)
    if value is not None and not isinstance(value, dict):
        raise RecipeError(f"{file}: '{key}' must be a mapping of settings, got {type(value).__name__} {value!r}")
    return dict(value or {})


def type_ok(value: Any, annotation: Any) -> bool:
    """Loose type check of a YAML value against a dataclass annotation (ints are accepted for floats)."""
    if annotation is Any or value is None:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, arg) for arg in typing.get_args(annotation))
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
    for key, new in getattr(config_cls, "moved_fields", {}).items():
        if key in (mapping or {}):
            raise RecipeError(f"{file}: {where}.{key} moved to {new}")
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    mapping = dict(check_keys(mapping, fields, where, file))
    hints = typing.get_type_hints(config_cls)
    for key, value in mapping.items():
        value = mapping[key] = whole_number(value, hints.get(key, Any))
        if not type_ok(value, hints.get(key, Any)):
            raise RecipeError(
                f"{file}: '{where}.{key}' must be {getattr(hints.get(key), '__name__', hints.get(key))}, "
                f"got {type(value).__name__} {value!r}"
            )
    kwargs = {**defaults, **mapping}
    try:
        config = config_cls(**kwargs)
    except (ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"{file}: invalid '{where}' settings: {first}") from None
    problem = out_of_range(config, RANGES, where) or missing_resources(config, where)
    if problem:
        raise RecipeError(f"{file}: {problem}")
    return config
