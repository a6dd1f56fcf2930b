"""Small helpers every layer uses: name suggestions, `module:attr` loading, atomic JSON files."""

from __future__ import annotations

import difflib
import importlib
import json
import os
from pathlib import Path


def did_you_mean(word: str, choices) -> str:
    """` (did you mean 'x'?)` for the closest of `choices`, or "" when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_object(path: str, what: str):
    """`pkg.module:name` (or `pkg.module.name`) -> the object; a ValueError names `what` and the path."""
    module, _, attr = path.replace(":", ".").rpartition(".") if ":" not in path else path.partition(":")
    if not module or not attr:
        raise ValueError(f"{what} '{path}' is not a 'module:name' path")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{what} '{path}' could not be imported: {exc}") from None


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON to a temporary file and rename it over `path`: a reader (or a killed writer) never leaves half a
    file that looks complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str))
    os.replace(tmp, path)
