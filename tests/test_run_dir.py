"""Run directories are never clobbered: an earlier run is continued (--resume) or replaced (--overwrite) only on
request, a foreign non-empty directory is refused, and the metrics of two runs never mix."""

import json

import pytest
import yaml

from tokrl.cli import main

RECIPE = {
    "method": "grpo",
    "task": {"name": "arithmetic", "num_train": 16, "num_eval": 2},
    "trainer": {"per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 4, "max_steps": 2,
                "logging_steps": 1, "save_steps": 1, "report_to": "none", "seed": 0},
    "eval": {"before": False, "after": False},
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tokrl.models import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def snapshot(root):
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_a_foreign_directory_is_refused_untouched(tiny_dir, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "model": tiny_dir, "output_dir": str(mine)}))
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"output_dir {mine} is not empty and is not a tokrl run directory" in err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"] and (mine / "thesis.tex").read_text() == "precious"


def test_reuse_needs_resume_or_overwrite_and_metrics_never_mix(tiny_dir, tmp_path, capsys):
    run = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "model": tiny_dir, "output_dir": str(run)}))
    assert main(["train", str(recipe)]) == 0
    assert steps(run) == [1, 2] and (run / "checkpoint-1").is_dir()
    (run / "notes.md").write_text("mine")  # a file the user put there
    capsys.readouterr()

    before = snapshot(tmp_path)
    assert main(["train", str(recipe)]) == 2  # no choice made: nothing is touched
    err = capsys.readouterr().err.strip()
    assert "holds an earlier run; continue it with --resume or start it again with --overwrite" in err
    assert snapshot(tmp_path) == before

    # Resume from checkpoint-1 of a run that had logged step 2 after it: step 2 is logged once, then step 3.
    assert main(["train", str(recipe), "trainer.max_steps=3",
                 f"trainer.resume_from_checkpoint={run / 'checkpoint-1'}"]) == 0
    assert steps(run) == [1, 2, 3]

    assert main(["train", str(recipe), "--overwrite"]) == 0  # a clean start: the old curve is gone
    assert steps(run) == [1, 2] and not (run / "checkpoint-3").exists()
    assert (run / "notes.md").read_text() == "mine"  # not tokrl's: kept

    assert main(["train", str(recipe), "trainer.max_steps=3", "--resume"]) == 0  # from the newest checkpoint
    assert steps(run) == [1, 2, 3]


def test_the_last_checkpoint_is_the_newest_complete_one(tmp_path):
    """A save cut short (killed, disk full) leaves `checkpoint-N` without trainer_state.json: resume before it."""
    from tokrl.run_dir import last_checkpoint

    assert last_checkpoint(tmp_path) is None
    for step, complete in ((4, True), (8, True), (12, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "config.json").write_text("{}")
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-final").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-8"
