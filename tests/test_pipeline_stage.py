"""Crash-safe stages: atomic shards, resume after SIGKILL, no-op rerun, overwrite, config/input checks."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from datasets import Dataset

from tokrl.pipelines.stage import (
    StageError,
    config_hash,
    dataset_fingerprint,
    is_complete,
    load_stage,
    read_manifest,
    run_artifact_stage,
    run_stage,
    shard_seed,
    stage_fingerprint,
)


def _inputs(n=10):
    return Dataset.from_dict({"x": list(range(n))})


def _square(shard, index):
    import random

    rng = random.Random(shard_seed(7, index))
    return [{"x": x, "y": x * x, "noise": rng.random(), "shard": index} for x in shard["x"]]


def test_run_and_load_concatenates_shards_in_order(tmp_path):
    out = run_stage("sq", tmp_path / "s", _square, _inputs(10), {"p": 1}, shard_size=3)
    assert out["x"] == list(range(10))
    assert out["y"] == [x * x for x in range(10)]
    assert out["shard"] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    manifest = read_manifest(tmp_path / "s")
    assert manifest["done"] is True and manifest["num_shards"] == 4
    assert [s["rows"] for s in manifest["shards"]] == [3, 3, 3, 1]
    assert manifest["config_hash"] == config_hash({"p": 1})
    assert manifest["input_fingerprint"] == dataset_fingerprint(_inputs(10))
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".tmp-")]


def test_finished_stage_is_a_noop_and_overwrite_redoes_it(tmp_path):
    calls = []

    def fn(shard, index):
        calls.append(index)
        return {"x": shard["x"]}

    run_stage("a", tmp_path, fn, _inputs(4), {"k": 1}, shard_size=2)
    assert calls == [0, 1]
    again = run_stage("a", tmp_path, fn, _inputs(4), {"k": 1}, shard_size=2)
    assert calls == [0, 1] and again["x"] == [0, 1, 2, 3]
    run_stage("a", tmp_path, fn, _inputs(4), {"k": 1}, shard_size=2, overwrite=True)
    assert calls == [0, 1, 0, 1]


def test_changed_config_or_input_is_an_error_unless_overwrite(tmp_path):
    run_stage("a", tmp_path, _square, _inputs(4), {"k": 1}, shard_size=2)
    with pytest.raises(StageError, match="different config.*overwrite"):
        run_stage("a", tmp_path, _square, _inputs(4), {"k": 2}, shard_size=2)
    with pytest.raises(StageError, match="different input data"):
        run_stage("a", tmp_path, _square, _inputs(5), {"k": 1}, shard_size=2)
    out = run_stage("a", tmp_path, _square, _inputs(5), {"k": 2}, shard_size=2, overwrite=True)
    assert out["x"] == list(range(5))
    assert read_manifest(tmp_path)["config_hash"] == config_hash({"k": 2})


def test_overwrite_keeps_files_the_stage_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    run_stage("a", tmp_path, _square, _inputs(3), {}, shard_size=2)
    run_stage("a", tmp_path, _square, _inputs(3), {}, shard_size=2, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_fingerprint_depends_on_content_not_on_storage(tmp_path):
    ds = Dataset.from_dict({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    ds.save_to_disk(str(tmp_path / "d"))
    from datasets import load_from_disk

    assert dataset_fingerprint(load_from_disk(str(tmp_path / "d"))) == dataset_fingerprint(ds)
    assert dataset_fingerprint(ds.select([0, 1, 2])) == dataset_fingerprint(ds)
    assert dataset_fingerprint(ds.select([0, 2, 1])) != dataset_fingerprint(ds)


def test_incomplete_stage_cannot_be_loaded(tmp_path):
    def boom(shard, index):
        if index == 1:
            raise RuntimeError("boom")
        return {"x": shard["x"]}

    with pytest.raises(RuntimeError, match="boom"):
        run_stage("a", tmp_path, boom, _inputs(4), {}, shard_size=2)
    assert not is_complete(tmp_path)
    with pytest.raises(StageError, match="incomplete.*1/2 shards"):
        load_stage(tmp_path)
    with pytest.raises(StageError, match="incomplete"):
        stage_fingerprint(tmp_path)
    out = run_stage("a", tmp_path, lambda s, i: {"x": s["x"]}, _inputs(4), {}, shard_size=2)
    assert out["x"] == [0, 1, 2, 3]


def test_empty_shards_and_empty_output(tmp_path):
    out = run_stage("a", tmp_path / "a", lambda s, i: [r for r in s if r["x"] >= 2], _inputs(4), {}, shard_size=2)
    assert out["x"] == [2, 3]
    none = run_stage("b", tmp_path / "b", lambda s, i: [], _inputs(4), {}, shard_size=2)
    assert len(none) == 0


def test_artifact_stage_is_atomic_and_skips_when_done(tmp_path):
    calls = []

    def build(tmp):
        calls.append(tmp)
        (tmp / "weights.txt").write_text("w")
        return {"note": 1}

    path = run_artifact_stage("train", tmp_path, build, {"lr": 1})
    assert (path / "weights.txt").read_text() == "w" and path.name == "artifact"
    assert read_manifest(tmp_path)["metadata"] == {"note": 1}
    run_artifact_stage("train", tmp_path, build, {"lr": 1})
    assert len(calls) == 1
    with pytest.raises(StageError, match="different config"):
        run_artifact_stage("train", tmp_path, build, {"lr": 2})
    with pytest.raises(StageError, match="artifact, not a dataset"):
        load_stage(tmp_path)


def test_shared_stage_cache_computes_a_stage_once_across_run_dirs(tmp_path, monkeypatch):
    """Two run dirs with the same stage (name, config, input) compute it once; anything else differs."""
    monkeypatch.setenv("TOKRL_STAGE_CACHE", str(tmp_path / "cache"))
    calls, builds = [], []

    def fn(shard, index):
        calls.append(index)
        return {"x": shard["x"], "y": [x + 1 for x in shard["x"]]}

    def build(tmp):
        builds.append(1)
        (tmp / "weights.txt").write_text("w")
        return {"seconds": 3.0}

    first = run_stage("a", tmp_path / "run1" / "a", fn, _inputs(5), {"k": 1}, shard_size=2)
    assert calls == [0, 1, 2]
    second = run_stage("a", tmp_path / "run2" / "a", fn, _inputs(5), {"k": 1}, shard_size=2)
    assert calls == [0, 1, 2]  # restored, not recomputed
    assert second["y"] == first["y"] == [1, 2, 3, 4, 5]
    assert stage_fingerprint(tmp_path / "run2" / "a") == stage_fingerprint(tmp_path / "run1" / "a")
    run_stage("a", tmp_path / "run3" / "a", fn, _inputs(5), {"k": 2}, shard_size=2)  # another config
    run_stage("a", tmp_path / "run4" / "a", fn, _inputs(6), {"k": 1}, shard_size=2)  # another input
    assert calls == [0, 1, 2] * 3
    run_stage("a", tmp_path / "run5" / "a", fn, _inputs(5), {"k": 1}, shard_size=2, overwrite=True)
    assert len(calls) == 12  # --overwrite means: compute it again

    path = run_artifact_stage("train", tmp_path / "run1" / "train", build, {"lr": 1}, input_fingerprint="f")
    again = run_artifact_stage("train", tmp_path / "run2" / "train", build, {"lr": 1}, input_fingerprint="f")
    assert builds == [1] and (again / "weights.txt").read_text() == "w" and again != path
    assert read_manifest(tmp_path / "run2" / "train")["metadata"] == {"seconds": 3.0}
    run_artifact_stage("train", tmp_path / "run3" / "train", build, {"lr": 1}, input_fingerprint="g")
    assert builds == [1, 1]
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()) == ["a"] * 3 + ["train"] * 2


def test_stage_cache_never_overrides_a_stage_with_another_config(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKRL_STAGE_CACHE", str(tmp_path / "cache"))
    run_stage("a", tmp_path / "run1", lambda s, i: {"x": s["x"]}, _inputs(3), {"k": 1})
    run_stage("a", tmp_path / "run2", lambda s, i: {"x": s["x"]}, _inputs(3), {"k": 2})
    with pytest.raises(StageError, match="different config"):
        run_stage("a", tmp_path / "run2", lambda s, i: {"x": s["x"]}, _inputs(3), {"k": 1})


CHILD = textwrap.dedent(
    """
    import json, os, random, signal, sys
    from datasets import Dataset
    import tokrl.pipelines.stage as stage

    out_dir, kill_point, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def fn(shard, index):
        if kill_point == "compute" and index == kill_at:
            die()
        rng = random.Random(stage.shard_seed(3, index))
        return [{"x": x, "r": rng.random(), "words": ["a"] * (x % 3)} for x in shard["x"]]

    if kill_point == "save":  # die with a half-written shard in its temp directory
        original = Dataset.save_to_disk
        def save(self, path, **kw):
            original(self, path, **kw)
            if f"shard-{kill_at:05d}" in str(path):
                die()
        Dataset.save_to_disk = save
    if kill_point == "manifest":  # die after the shard's rename, before the manifest lists it
        original_write = stage._write_manifest
        def write(stage_dir, manifest):
            if any(s["index"] == kill_at for s in manifest["shards"]):
                die()
            original_write(stage_dir, manifest)
        stage._write_manifest = write

    ds = stage.run_stage("child", out_dir, fn, Dataset.from_dict({"x": list(range(11))}), {"seed": 3}, shard_size=2)
    print(json.dumps(ds.to_dict()))
    """
)


def _child(script, out, point, at):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), str(out), point, str(at)], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted child run, the reference every killed-and-resumed run must reproduce."""
    root = tmp_path_factory.mktemp("stage_ref")
    script = root / "child.py"
    script.write_text(CHILD)
    reference = _child(script, root / "ref", "none", -1)
    assert reference.returncode == 0, reference.stderr
    return script, root / "ref", reference


@pytest.mark.parametrize("kill_point,kill_at", [("compute", 2), ("save", 3), ("manifest", 1), ("compute", 0)])
def test_sigkill_mid_run_then_resume_gives_identical_output(tmp_path, uninterrupted, kill_point, kill_at):
    script, ref_dir, reference = uninterrupted

    def child(out, point, at):
        return _child(script, out, point, at)
    killed = child(tmp_path / "run", kill_point, kill_at)
    assert killed.returncode == -signal.SIGKILL
    # what the killed run left never looks complete
    assert not is_complete(tmp_path / "run")
    with pytest.raises(StageError):
        load_stage(tmp_path / "run")
    manifest = read_manifest(tmp_path / "run")
    if manifest is not None:
        assert len(manifest["shards"]) == kill_at and manifest["done"] is False
    resumed = child(tmp_path / "run", "none", -1)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == json.loads(reference.stdout)
    assert json.loads(reference.stdout)["x"] == list(range(11))
    ref_manifest, run_manifest = read_manifest(ref_dir), read_manifest(tmp_path / "run")
    assert run_manifest["shards"] == ref_manifest["shards"] and run_manifest["done"] is True
    assert stage_fingerprint(tmp_path / "run") == stage_fingerprint(ref_dir)
    leftovers = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert leftovers == sorted(p.name for p in ref_dir.iterdir())
