"""What `tokrl inspect` can read, turned into heatmap samples.

A *sample* is `{"label", "pieces", "ids", "values": {name: [per-token numbers]}, "info": {scalars}, "prompt",
"group"}`. Sources:

- a run dir holding `token_values.jsonl` (written by `TokenDumpCallback`; `run_info.json` and `metrics.jsonl`
  beside it fill the header), or that `.jsonl` file itself;
- a scored dataset: a `datasets.save_to_disk` dir, a tokrl pipeline stage dir, a `.parquet` file or a
  `.jsonl`/`.json` file. Per-token columns are the list-of-number columns whose lengths match an ids column (a
  column named `*ids`) on every row; a value column is paired with the ids column that shares its prefix
  (`rejected_token_weights` with `rejected_input_ids`), else with a generic one (`input_ids`, `completion_ids`,
  `ids`). Each (row, ids column) is one sample, and the shared prefix is dropped from value names so chosen and
  rejected share a scale. DPO rows with `chosen_*`/`rejected_*` columns but no ids get TRL's completion ids from
  the tokenizer, as the cDPO and T-REG pipelines do.

The tokenizer that decodes dataset ids is `--tokenizer` (a path, hub id, embedded name, or `tiny`), else the
`tokenizer` (or `model`) key of JSON metadata (a stage's manifest `metadata`/`config`, the dataset's
`info.description`, or `tokrl_meta.json` in or beside the source), else tokenizer files saved in the dataset
dir; without one, tokens show as `<id>`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
from transformers import AutoTokenizer

from tokrl.diagnostics.metrics_log import METRICS, read_metrics
from tokrl.diagnostics.token_dump import RUN_INFO, TOKEN_VALUES, decode_pieces, json_number, read_token_values
from tokrl.models import resolve_model_path, tiny_tokenizer
from tokrl.pipelines.stage import MANIFEST as STAGE_MANIFEST
from tokrl.pipelines.stage import load_stage
from tokrl.trainers.token_columns import completion_token_ids

GENERIC_IDS = ("input_ids", "completion_ids", "ids", "token_ids")
META_FILE = "tokrl_meta.json"


# ---- run dirs ---------------------------------------------------------------------------------------------


def load_run(path: Path, max_samples: int) -> tuple[list[dict], dict]:
    """Samples and header from a run dir (or its token_values.jsonl)."""
    run_dir = path if path.is_dir() else path.parent
    dump = path / TOKEN_VALUES if path.is_dir() else path
    if not dump.is_file():
        raise FileNotFoundError(
            f"{run_dir}: no {TOKEN_VALUES} (set token_dump_steps > 0 in the run's config to write token dumps)"
        )
    records = read_token_values(dump)
    if not records:
        raise ValueError(f"{dump}: no token records")
    total = len(records)
    records = spread_over_steps(records, max_samples)
    samples = []
    for r in records:
        info = {}
        for key in ("advantage", "reward"):
            if r.get(key) is not None:
                info[key] = r[key]
            elif len(set(r["values"].get(key, []))) == 1:  # constant over the sequence: say it once
                info[key] = r["values"][key][0]
        info.update({k: v for k, v in (r.get("stats") or {}).items() if v is not None})
        samples.append({
            "label": f"step {r.get('step')} \u00b7 completion {r.get('sample')}",
            "pieces": r["pieces"],
            "ids": r.get("ids"),
            "values": r["values"],
            "info": info,
            "prompt": r.get("prompt"),
            "group": f"step {r.get('step')}",
        })
    info_path = run_dir / RUN_INFO
    run_info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    steps = sorted({r.get("step") for r in records if r.get("step") is not None})
    summary = {
        "source": str(path),
        **{key: run_info.get(key) for key in ("method", "weighter", "model", "tokenizer", "created")},
        "samples": f"{len(records)} of {total}" if total > len(records) else str(total),
        "steps": f"{steps[0]} to {steps[-1]} ({len(steps)} dumps)" if steps else None,
    }
    if (run_dir / "recipe.yaml").is_file():
        summary["recipe"] = str(run_dir / "recipe.yaml")
    metrics_path = run_dir / METRICS
    if metrics_path.is_file():
        last = {}
        for rec in read_metrics(metrics_path):
            last.update({k: v for k, v in rec.items() if isinstance(v, (int, float))})
        for key in ("step", "reward", "loss", "weights/kept_frac", "entropy"):
            if key in last:
                summary[f"last {key}"] = f"{last[key]:.4g}" if isinstance(last[key], float) else str(last[key])
    title = f"tokrl token heatmap: {run_info.get('method') or 'run'} \u00b7 {run_dir.name}"
    return samples, {"title": title, "summary": summary, "config": run_info.get("config") or {}}


def spread_over_steps(records: list[dict], max_samples: int) -> list[dict]:
    """At most `max_samples` records: whole dumps at evenly spaced steps (first and last included), so a long run
    shows how the weights moved rather than only its beginning; if not even two dumps fit, the latest records."""
    if len(records) <= max_samples:
        return records
    by_step: dict = {}
    for r in records:
        by_step.setdefault(r.get("step"), []).append(r)
    steps = list(by_step)
    for keep in range(len(steps), 1, -1):
        chosen = list(dict.fromkeys(steps[round(i * (len(steps) - 1) / (keep - 1))] for i in range(keep)))
        if sum(len(by_step[s]) for s in chosen) <= max_samples:
            return [r for s in chosen for r in by_step[s]]
    return records[-max_samples:]


def is_token_dump(path: Path) -> bool:
    if path.is_dir():
        return (path / TOKEN_VALUES).is_file() or (path / RUN_INFO).is_file() or (path / METRICS).is_file()
    if path.suffix == ".jsonl" and path.is_file():
        with path.open(encoding="utf-8") as f:
            first = f.readline()
        try:
            row = json.loads(first)
        except json.JSONDecodeError:
            return False
        return isinstance(row, dict) and "pieces" in row and "values" in row
    return False


# ---- datasets ---------------------------------------------------------------------------------------------


def _is_number(x) -> bool:
    return isinstance(x, (int, float, bool)) and not isinstance(x, str)


def _list_kind(values: list) -> str | None:
    """'ints', 'numbers' or None for a column of per-row lists (None entries skipped)."""
    if not all(row is None or isinstance(row, list) for row in values):
        return None
    items = [x for row in values if row is not None for x in row if x is not None]
    if not all(_is_number(x) for x in items):
        return None
    return "numbers" if any(isinstance(x, (float, bool)) for x in items) else "ints"


def _prefix(name: str) -> str:
    return name.split("_", 1)[0] if "_" in name else ""


def pair_columns(columns: dict[str, list]) -> tuple[dict[str, list[str]], list[str]]:
    """{ids column: [value columns aligned with it]} and the list-of-number columns aligned with none."""
    ids_cols, value_cols = [], []
    for name, values in columns.items():
        kind = _list_kind(values)
        if kind is None:
            continue
        if name.endswith("ids") and kind == "ints":
            ids_cols.append(name)
        else:
            value_cols.append(name)
    pairs: dict[str, list[str]] = {c: [] for c in ids_cols}
    unpaired = []
    for v in value_cols:
        aligned = []
        for c in ids_cols:
            rows = [(a, b) for a, b in zip(columns[v], columns[c]) if a is not None and b is not None]
            if rows and all(len(a) == len(b) for a, b in rows):
                aligned.append(c)
        same_prefix = [c for c in aligned if _prefix(v) and c.startswith(_prefix(v) + "_")]
        generic = [c for c in aligned if c in GENERIC_IDS]
        choice = (same_prefix or generic or aligned or [None])[0]
        if choice is None:
            unpaired.append(v)
        else:
            pairs[choice].append(v)
    return {c: vs for c, vs in pairs.items() if vs}, unpaired


def _value_name(column: str, ids_column: str) -> str:
    p = _prefix(ids_column)
    if ids_column not in GENERIC_IDS and p and column.startswith(p + "_"):
        return column[len(p) + 1 :]
    return column


def _prompt_text(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return "\n".join(f"[{m.get('role', '')}] {m.get('content', '')}" for m in value)
    return None


def preference_ids(columns: dict[str, list], tokenizer) -> dict[str, list]:
    """`chosen_ids`/`rejected_ids` for DPO rows that carry per-token columns but no ids column.

    The ids are TRL's completion ids (`tokrl.trainers.token_columns.completion_token_ids`), which is what the
    cDPO and T-REG pipelines align their columns with (full length; a column scored on truncated ids stays
    unpaired and is listed as such).
    """
    sides = ("chosen", "rejected")
    if tokenizer is None or not all(s in columns for s in sides):
        return {}
    if any(f"{s}_token_ids" in columns or f"{s}_ids" in columns or f"{s}_input_ids" in columns for s in sides):
        return {}
    if not any(c.startswith(sides) and _list_kind(v) == "numbers" for c, v in columns.items()):
        return {}
    keys = [k for k in ("prompt", "chosen", "rejected", "tools", "chat_template_kwargs") if k in columns]
    out = {"chosen_ids": [], "rejected_ids": []}
    for r in range(len(columns["chosen"])):
        ids = completion_token_ids(tokenizer, {k: columns[k][r] for k in keys})
        out["chosen_ids"].append(ids["chosen"])
        out["rejected_ids"].append(ids["rejected"])
    return out


def _open_dataset(path: Path, split: str | None):
    if path.is_dir() and (path / STAGE_MANIFEST).is_file():  # a tokrl pipeline stage (shards + manifest)
        ds = load_stage(path)
    elif path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise ValueError(
                f"{path}: neither a run dir ({TOKEN_VALUES}) nor a dataset saved with save_to_disk ({exc})"
            ) from None
    elif path.suffix == ".parquet":
        ds = datasets.Dataset.from_parquet(str(path))
    elif path.suffix in (".jsonl", ".json"):
        ds = datasets.Dataset.from_json(str(path))
    else:
        raise ValueError(f"{path}: unsupported source (a run dir, a save_to_disk dir, .parquet, .jsonl or .json)")
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds.keys())
        if split is None:
            split = "train" if "train" in ds else names[0]
        if split not in ds:
            raise ValueError(f"{path}: no split {split!r}; available: {', '.join(names)}")
        ds = ds[split]
    elif split is not None:
        raise ValueError(f"{path}: --split given but the dataset has no splits")
    return ds, split


def _metadata(path: Path, ds) -> dict:
    meta = {}
    if path.is_dir() and (path / STAGE_MANIFEST).is_file():
        m = json.loads((path / STAGE_MANIFEST).read_text())
        config = m.get("config") if isinstance(m.get("config"), dict) else {}
        meta.update({k: v for k, v in config.items() if not isinstance(v, (dict, list))})
        meta.update(m.get("metadata") or {})
        meta["stage"] = m.get("stage")
    meta_file = path / META_FILE if path.is_dir() else path.with_name(META_FILE)
    if meta_file.is_file():
        meta.update(json.loads(meta_file.read_text()))
    description = getattr(getattr(ds, "info", None), "description", None)
    if description:
        try:
            parsed = json.loads(description)
            if isinstance(parsed, dict):
                meta = {**parsed, **meta}
        except json.JSONDecodeError:
            meta.setdefault("description", description)
    return meta


def load_tokenizer(spec: str):
    """`tiny` -> tokrl's tiny tokenizer; an embedded model name, a local dir or a hub id -> AutoTokenizer."""
    if spec == "tiny":
        return tiny_tokenizer()
    return AutoTokenizer.from_pretrained(resolve_model_path(spec))


def find_tokenizer(path: Path, meta: dict, given: str | None):
    if given:
        return load_tokenizer(given), given
    for key in ("tokenizer", "model"):
        if meta.get(key):
            return load_tokenizer(str(meta[key])), f"{meta[key]} (from metadata '{key}')"
    if path.is_dir():
        for d in (path, path / "tokenizer"):
            if (d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file():
                return load_tokenizer(str(d)), str(d)
    return None, None


def load_dataset_source(path: Path, max_samples: int, tokenizer: str | None, split: str | None):
    """Samples and header from a scored dataset."""
    ds, split = _open_dataset(path, split)
    n_rows = len(ds)
    rows = ds.select(range(min(n_rows, max_samples)))
    columns = rows.to_dict()
    meta = _metadata(path, ds)
    if isinstance((columns.get("token_columns_meta") or [None])[0], str):  # written by the DPO pipelines
        try:
            row_meta = json.loads(columns["token_columns_meta"][0])
            row_meta["tokenizer_fingerprint"] = row_meta.pop("tokenizer", None)
            meta = {**row_meta, **meta}
        except json.JSONDecodeError:
            pass
    tok, tok_name = find_tokenizer(path, meta, tokenizer)
    columns.update(preference_ids(columns, tok))
    pairs, unpaired = pair_columns(columns)
    if not pairs:
        hint = " (preference data without '*_token_ids' columns needs --tokenizer)" if tok is None and \
            "chosen" in columns else ""
        raise ValueError(
            f"{path}: no per-token columns (lists of numbers aligned with an '*ids' column){hint}; "
            f"columns: {', '.join(ds.column_names)}"
        )
    if tok is None:
        print(f"tokrl inspect: no tokenizer for {path} (give --tokenizer); showing token ids", file=sys.stderr)
    scalars = [c for c, vals in columns.items() if all(v is None or _is_number(v) for v in vals) and
               any(v is not None for v in vals)]
    prompt_col = next((c for c in ("prompt", "question") if c in columns), None)
    found = []  # (row, ids column, values); at most max_samples are decoded
    for r in range(len(rows)):
        for ids_col, value_cols in pairs.items():
            values = {_value_name(v, ids_col): [json_number(x) for x in columns[v][r]]
                      for v in value_cols if columns[v][r] is not None}
            if columns[ids_col][r] is not None and values:
                found.append((r, ids_col, values))
    samples = []
    for r, ids_col, values in found[:max_samples]:
        ids = columns[ids_col][r]
        group = _prefix(ids_col) if ids_col not in GENERIC_IDS else ids_col
        samples.append({
            "label": f"row {r} \u00b7 {group}",
            "pieces": decode_pieces(tok, ids),
            "ids": [int(i) for i in ids],
            "values": values,
            "info": {c: json_number(columns[c][r]) for c in scalars},
            "prompt": _prompt_text(columns[prompt_col][r]) if prompt_col else None,
            "group": group,
        })
    summary = {
        "source": str(path) + (f" [{split}]" if split else ""),
        "rows": f"{len(rows)} of {n_rows}" if n_rows > len(rows) else str(n_rows),
        "samples": str(len(samples)),
        "per-token columns": "; ".join(f"{c}: {', '.join(vs)}" for c, vs in pairs.items()),
        "not aligned with ids": ", ".join(unpaired) or None,
        "tokenizer": tok_name or "none (ids shown)",
        "method": meta.get("method"),
        "model": meta.get("model"),
    }
    config = {k: v for k, v in meta.items() if k not in ("method", "model", "tokenizer")}
    return samples, {"title": f"tokrl token heatmap: {path.name}", "summary": summary, "config": config}


def load_source(source: str | Path, max_samples: int = 1000, tokenizer: str | None = None, split: str | None = None):
    """(samples, header meta) from a run dir, a token dump file or a scored dataset."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if is_token_dump(path):
        return load_run(path, max_samples)
    return load_dataset_source(path, max_samples, tokenizer, split)
