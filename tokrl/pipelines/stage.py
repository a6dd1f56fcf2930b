"""Crash-safe pipeline stages: datasets written in shards, each shard atomically, with a manifest.

A stage turns an input `datasets.Dataset` into an output dataset, one contiguous shard of input rows at a time.
Layout of a stage directory:

    manifest.json      {"stage", "config_hash", "input_fingerprint", "num_shards", "shards": [...], "done"}
    shard-00000/       a `Dataset.save_to_disk` directory, present only once complete
    shard-00001/ ...

Why it is safe to kill (even with SIGKILL) at any moment:
- a shard is written into a `.tmp-*` directory next to it and renamed into place (rename is atomic on one
  file system); the manifest is rewritten through a temp file + `os.replace` after each shard;
- the manifest is the only source of truth: a shard directory not listed in it is treated as garbage and
  redone, so a crash between the rename and the manifest update costs one shard, nothing more;
- `done: true` is written last, and `load_stage` refuses a stage that is not done.
Restarting recomputes only the missing shards. If the shard function is deterministic for a given shard
(seed it with the shard index: `shard_seed`), the output is identical to an uninterrupted run.

A finished stage is a no-op on rerun; a changed config or input is an error unless `overwrite=True`, which
removes only the files a stage writes (never anything else in the directory).

Shared stages: with `TOKRL_STAGE_CACHE=DIR` set, every finished stage is also copied to `DIR/<stage>-<config
hash>-<input fingerprint>`, and a stage about to run that finds its entry there is copied from it instead. Runs
that share a prefix of stages (the arms and seeds of a `tokrl compare`, which sets the variable) compute it once.
The key holds everything the stage contract says determines the output, so a restored stage equals a rerun.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets, load_from_disk

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ARTIFACT = "artifact"
CACHE_ENV = "TOKRL_STAGE_CACHE"
_FORMAT_VERSION = 1


class StageError(RuntimeError):
    """A stage cannot run or be read as asked (changed config, incomplete output, ...): one readable line."""


def config_hash(config: Any) -> str:
    """Stable hash of a JSON-able config (keys sorted; non-JSON values by their `str`)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_fingerprint(dataset: Dataset, batch_size: int = 1000) -> str:
    """Hash of a dataset's column names and row contents (independent of how Arrow chunks or caches it)."""
    hasher = hashlib.sha256(json.dumps(sorted(dataset.column_names)).encode())
    for batch in dataset.iter(batch_size=batch_size):
        hasher.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return hasher.hexdigest()[:16]


def stage_fingerprint(stage_dir: str | Path) -> str:
    """Fingerprint of a finished stage's output, for chaining into the next stage (config + input + shards)."""
    manifest = read_manifest(stage_dir)
    if not manifest or not manifest.get("done"):
        raise StageError(f"{stage_dir}: stage output is missing or incomplete (no finished {MANIFEST})")
    return config_hash([manifest["stage"], manifest["config_hash"], manifest["input_fingerprint"], manifest["shards"]])


def shard_seed(seed: int, shard_index: int) -> int:
    """The seed a shard function should use so a resumed shard reproduces the uninterrupted one."""
    return (int(seed) * 1_000_003 + int(shard_index)) % (2**31 - 1)


def read_manifest(stage_dir: str | Path) -> dict | None:
    path = Path(stage_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:  # cannot happen with os.replace, but never trust a file blindly
        raise StageError(f"{path}: unreadable manifest ({exc}); rerun with overwrite") from None


def _write_manifest(stage_dir: Path, manifest: dict) -> None:
    tmp = stage_dir / f".tmp-{MANIFEST}-{uuid.uuid4().hex}"
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, stage_dir / MANIFEST)


def is_complete(stage_dir: str | Path) -> bool:
    manifest = read_manifest(stage_dir)
    return bool(manifest and manifest.get("done"))


def _owned(path: Path) -> bool:
    """Entries a stage writes (and so may delete): the manifest, shards, the artifact and temp files."""
    name = path.name
    return name in (MANIFEST, ARTIFACT) or name.startswith("shard-") or name.startswith(".tmp-")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clear_stage(stage_dir: str | Path) -> None:
    """Delete what a stage wrote in `stage_dir` (and nothing else)."""
    stage_dir = Path(stage_dir)
    if stage_dir.is_dir():
        for entry in stage_dir.iterdir():
            if _owned(entry):
                _remove(entry)


def _check_or_start(name, stage_dir: Path, chash, fingerprint, config, num_shards, overwrite) -> dict:
    """Return the manifest to continue from (fresh, or the existing one if it matches)."""
    manifest = read_manifest(stage_dir)
    if manifest is not None and overwrite:
        clear_stage(stage_dir)
        manifest = None
    if manifest is not None:
        for key, new in (("stage", name), ("config_hash", chash), ("input_fingerprint", fingerprint)):
            if manifest.get(key) != new:
                what = {"stage": "stage name", "config_hash": "config", "input_fingerprint": "input data"}[key]
                raise StageError(
                    f"{stage_dir}: existing output was made with a different {what} "
                    f"({manifest.get(key)} != {new}); pass overwrite=True (--overwrite) to redo stage '{name}'"
                )
        if num_shards is not None and manifest.get("num_shards") != num_shards:
            raise StageError(f"{stage_dir}: existing output has {manifest.get('num_shards')} shards, expected "
                             f"{num_shards}; pass overwrite=True (--overwrite) to redo stage '{name}'")
        # anything the manifest does not list is debris of a killed run
        listed = {s["name"] for s in manifest.get("shards", [])}
        for entry in stage_dir.iterdir():
            if _owned(entry) and entry.name != MANIFEST and entry.name not in listed:
                _remove(entry)
        return manifest
    stage_dir.mkdir(parents=True, exist_ok=True)
    for entry in stage_dir.iterdir():  # debris of a run killed before its first manifest
        if _owned(entry):
            _remove(entry)
    manifest = {
        "format": _FORMAT_VERSION,
        "stage": name,
        "config_hash": chash,
        "config": json.loads(json.dumps(config, default=str)),
        "input_fingerprint": fingerprint,
        "num_shards": num_shards,
        "shards": [],
        "metadata": {},
        "done": False,
    }
    _write_manifest(stage_dir, manifest)
    return manifest


def _cache_entry(name: str, chash: str, fingerprint: str) -> Path | None:
    root = os.environ.get(CACHE_ENV)
    return Path(root) / f"{name}-{chash}-{fingerprint or 'none'}" if root else None


def _copy_owned(src: Path, dst: Path) -> None:
    """Copy what a finished stage wrote (shards, artifact), the manifest last, so a copy cut short looks unfinished."""
    for entry in src.iterdir():
        if _owned(entry) and entry.name != MANIFEST and not entry.name.startswith(".tmp-"):
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, dst / entry.name)
    tmp = dst / f".tmp-{MANIFEST}-{uuid.uuid4().hex}"
    shutil.copy2(src / MANIFEST, tmp)
    os.replace(tmp, dst / MANIFEST)


def _restore_from_cache(name: str, stage_dir: Path, chash: str, fingerprint: str, overwrite: bool) -> bool:
    """Fill an unstarted (or unfinished, same-config) stage from the shared cache; True if it did."""
    entry = _cache_entry(name, chash, fingerprint)
    if entry is None or overwrite or not is_complete(entry):
        return False
    manifest = read_manifest(stage_dir)
    if manifest is not None and (manifest.get("done") or [manifest.get(k) for k in ("stage", "config_hash",
                                 "input_fingerprint")] != [name, chash, fingerprint]):
        return False  # finished, or made with another config: the usual checks decide
    stage_dir.mkdir(parents=True, exist_ok=True)
    clear_stage(stage_dir)
    _copy_owned(entry, stage_dir)
    print(f"[tokrl] stage {name}: restored from the shared stage cache ({entry})", flush=True)
    return True


def _publish_to_cache(name: str, stage_dir: Path, chash: str, fingerprint: str) -> None:
    entry = _cache_entry(name, chash, fingerprint)
    if entry is None or entry.exists():
        return
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".tmp-{entry.name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    _copy_owned(stage_dir, tmp)
    try:
        os.replace(tmp, entry)
    except OSError:  # another run published the same stage first
        shutil.rmtree(tmp, ignore_errors=True)


def _as_dataset(result, features=None) -> Dataset:
    if isinstance(result, Dataset):
        return result
    if isinstance(result, dict):
        return Dataset.from_dict(result, features=features)
    return Dataset.from_list(list(result), features=features)


def run_stage(
    name: str,
    stage_dir: str | Path,
    fn: Callable[[Dataset, int], Any],
    inputs: Dataset,
    config: dict,
    *,
    shard_size: int = 256,
    overwrite: bool = False,
    input_fingerprint: str | None = None,
    features=None,
    metadata: dict | None = None,
) -> Dataset:
    """Run `fn(shard, shard_index)` over contiguous shards of `inputs` and return the concatenated output.

    `fn` returns a `Dataset`, a dict of columns or a list of row dicts (possibly empty). `config` is everything
    that determines the output besides the input rows (it is hashed and stored); `input_fingerprint` defaults
    to a content hash of `inputs`. `metadata` is stored in the manifest (read it back with `stage_metadata`).
    """
    stage_dir = Path(stage_dir)
    if shard_size < 1:
        raise StageError(f"stage '{name}': shard_size must be >= 1, got {shard_size}")
    chash = config_hash(config)
    fingerprint = input_fingerprint or dataset_fingerprint(inputs)
    num_shards = max(1, -(-len(inputs) // shard_size))
    _restore_from_cache(name, stage_dir, chash, fingerprint, overwrite)
    manifest = _check_or_start(name, stage_dir, chash, fingerprint, config, num_shards, overwrite)
    if manifest.get("done"):
        logger.info("stage '%s': complete in %s, skipping", name, stage_dir)
        return load_stage(stage_dir)
    done = {s["index"] for s in manifest["shards"]}
    for index in range(num_shards):
        if index in done:
            continue
        shard = inputs.select(range(index * shard_size, min((index + 1) * shard_size, len(inputs))))
        output = _as_dataset(fn(shard, index), features)
        shard_name = f"shard-{index:05d}"
        tmp = stage_dir / f".tmp-{shard_name}-{uuid.uuid4().hex}"
        output.save_to_disk(str(tmp))
        os.replace(tmp, stage_dir / shard_name)
        manifest["shards"].append({"index": index, "name": shard_name, "rows": len(output)})
        manifest["shards"].sort(key=lambda s: s["index"])
        _write_manifest(stage_dir, manifest)
        logger.info("stage '%s': shard %d/%d written (%d rows)", name, index + 1, num_shards, len(output))
    manifest["metadata"] = json.loads(json.dumps(metadata or {}, default=str))
    manifest["done"] = True  # last write: from here on the output may be read
    _write_manifest(stage_dir, manifest)
    _publish_to_cache(name, stage_dir, chash, fingerprint)
    return load_stage(stage_dir)


def load_stage(stage_dir: str | Path) -> Dataset:
    """The output of a finished stage as one dataset (shards in order); an unfinished stage is an error."""
    stage_dir = Path(stage_dir)
    manifest = read_manifest(stage_dir)
    if manifest is None:
        raise StageError(f"{stage_dir}: no {MANIFEST}: this stage has not been run")
    if not manifest.get("done"):
        raise StageError(f"{stage_dir}: stage '{manifest.get('stage')}' is incomplete "
                         f"({len(manifest.get('shards', []))}/{manifest.get('num_shards')} shards); rerun it to finish")
    if manifest.get("num_shards") is None:
        raise StageError(f"{stage_dir}: stage '{manifest.get('stage')}' wrote an artifact, not a dataset")
    parts = [load_from_disk(str(stage_dir / s["name"])) for s in manifest["shards"] if s["rows"] > 0]
    if not parts:
        return Dataset.from_dict({})
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def stage_metadata(stage_dir: str | Path) -> dict:
    manifest = read_manifest(stage_dir)
    if not manifest or not manifest.get("done"):
        raise StageError(f"{stage_dir}: stage output is missing or incomplete")
    return manifest.get("metadata", {})


def run_artifact_stage(
    name: str,
    stage_dir: str | Path,
    build: Callable[[Path], dict | None],
    config: dict,
    *,
    input_fingerprint: str = "",
    overwrite: bool = False,
) -> Path:
    """A stage whose output is a directory (a trained adapter, a report): `build(tmp_dir)` fills a temp dir,
    which is renamed to `stage_dir/artifact` before the manifest is marked done. Returns that path.
    `build` may return a dict stored as the manifest's metadata.
    """
    stage_dir = Path(stage_dir)
    chash = config_hash(config)
    _restore_from_cache(name, stage_dir, chash, input_fingerprint, overwrite)
    manifest = _check_or_start(name, stage_dir, chash, input_fingerprint, config, None, overwrite)
    target = stage_dir / ARTIFACT
    if manifest.get("done"):
        logger.info("stage '%s': complete in %s, skipping", name, stage_dir)
        return target
    tmp = stage_dir / f".tmp-{ARTIFACT}-{uuid.uuid4().hex}"
    tmp.mkdir()
    metadata = build(tmp)
    if target.exists():
        _remove(target)
    os.replace(tmp, target)
    manifest["shards"] = [{"index": 0, "name": ARTIFACT, "rows": 0}]
    manifest["metadata"] = json.loads(json.dumps(metadata or {}, default=str))
    manifest["done"] = True
    _write_manifest(stage_dir, manifest)
    _publish_to_cache(name, stage_dir, chash, input_fingerprint)
    return target
