"""`tokrl compare` on the tiny model: 2 arms x 2 seeds x 2 steps end to end, SIGKILLed and resumed, the report's
numbers against the runs' own files, the random control's kept fraction; spec errors name the key."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tokrl.cli import main
from tokrl.compare.spec import load_spec
from tokrl.recipe import RecipeError

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {
    "method": "grpo",
    "model": None,
    "task": {"name": "arithmetic", "num_train": 32, "num_eval": 6},
    "reward": ["accuracy"],
    "trainer": {"per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 6, "max_steps": 5,
                "logging_steps": 1, "save_steps": 1, "report_to": "none"},
    "eval": {"before": False, "after": True, "batch_size": 6},
}
SPEC = {
    "name": "tiny",
    "seeds": [0, 1],
    "baseline": "uniform",
    "budget": {"max_steps": 2, "completions_per_step": 8, "save_steps": 1,
               "eval": {"num_prompts": 6, "pass_k": [1, 2], "num_samples": 2}},
    "arms": {
        "uniform": {"recipe": "grpo.yaml"},
        "random50": {"recipe": "grpo.yaml", "overrides": {"weighting": {"name": "random_quantile", "rho": 0.5},
                                                          "trainer.weight_normalizer": "selected"}},
    },
}


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def spec_file(tmp_path, tiny_model_dir):
    write(tmp_path / "grpo.yaml", {**RECIPE, "model": tiny_model_dir})
    return write(tmp_path / "spec.yaml", {**SPEC, "output_dir": str(tmp_path / "out")})


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tokrl.models import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def _ours(marker: str) -> list[int]:
    """Pids of live processes whose command line mentions `marker` (the comparison folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


def test_budget_and_overrides_reach_each_run_in_its_own_recipe_keys(spec_file, tmp_path):
    spec = load_spec(spec_file)
    assert [(r.arm, r.seed) for r in spec.runs] == [("uniform", 0), ("random50", 0), ("uniform", 1), ("random50", 1)]
    run = spec.runs[1]
    assert run.argv[0] == "train" and run.argv[1] == str((tmp_path / "grpo.yaml").resolve())
    assert run.argv[2:] == ["trainer.seed=0", "trainer.max_steps=2", "trainer.per_device_train_batch_size=8",
                            "trainer.save_steps=1", "eval.num_prompts=6", "eval.pass_k=[1, 2]", "eval.num_samples=2",
                            "weighting={name: random_quantile, rho: 0.5}", "trainer.weight_normalizer=selected",
                            f"output_dir={(tmp_path / 'out' / 'runs' / 'random50' / 'seed0').resolve()}"]
    # offline methods: their own command, their own keys (token cleaning: top-level seed, eval.max_examples)
    write(tmp_path / "clean.yaml", {"method": "token_cleaning", "model": "m", "seed": 3, "eval": {}})
    write(tmp_path / "cdpo.yaml", {"method": "cdpo", "model": "m", "trainer": {}, "eval": {}})
    budget = {"max_steps": 3, "eval": {"num_prompts": 5, "pass_k": [2]}}
    offline = write(tmp_path / "off.yaml", {"seeds": [4], "budget": budget,
                                            "arms": {"tc": {"recipe": "clean.yaml"}, "cdpo": {"recipe": "cdpo.yaml"}}})
    tc, cdpo = load_spec(offline).runs
    assert tc.argv[0] == "clean" and tc.argv[2:4] == ["seed=4", "eval.max_examples=5"] and tc.max_steps is None
    assert cdpo.argv[0] == "cdpo" and cdpo.argv[2:5] == ["trainer.seed=4", "trainer.max_steps=3", "eval.num_prompts=5"]


@pytest.mark.parametrize("change,message", [
    ({"seeds": [0, 0]}, "'seeds' must be a list of distinct integers"),
    ({"baseline": "nope"}, "baseline 'nope' is not an arm"),
    ({"budget": {"max_step": 2}}, "unknown key 'budget.max_step' (did you mean 'max_steps'?)"),
    ({"budget": {"eval": {"num_prompt": 2}}}, "unknown key 'budget.eval.num_prompt'"),
    ({"baseline": "a", "arms": {"a": {"recipe": "missing.yaml"}}}, "arms.a.recipe: 'missing.yaml' not found"),
    ({"baseline": "a", "arms": {"a": {"recipe": "grpo.yaml", "overide": {}}}}, "unknown key 'arms.a.overide'"),
    ({"baseline": "a b", "arms": {"a b": {"recipe": "grpo.yaml"}}}, "arm name 'a b'"),
])
def test_spec_errors_name_the_key(spec_file, change, message):
    bad = write(spec_file.with_name("bad.yaml"), {**yaml.safe_load(spec_file.read_text()), **change})
    with pytest.raises(RecipeError) as err:
        load_spec(bad)
    assert message in str(err.value) and "bad.yaml" in str(err.value)


def test_arms_option_names_a_real_arm(spec_file, capsys):
    assert main(["compare", str(spec_file), "--arms", "uniform,randm50", "--no-progress"]) == 2
    assert "'randm50' is not an arm" in capsys.readouterr().err


def test_refuses_a_folder_it_did_not_make(spec_file, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("user data")
    assert main(["compare", str(spec_file), "--report-only"]) == 2
    assert "not a `tokrl compare` folder" in capsys.readouterr().err
    assert (tmp_path / "out" / "mine.txt").read_text() == "user data"


def test_two_arms_two_seeds_killed_and_resumed_end_to_end(spec_file, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tokrl", "compare", str(spec_file), "--threads", "1", "--no-progress"]
    first = subprocess.Popen(cmd + ["--jobs", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    done = out / "runs" / "uniform" / "seed0" / "result.json"
    deadline = time.time() + 600
    while not done.is_file() and first.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert done.is_file(), first.communicate()[0].decode()[-3000:]
    time.sleep(4)  # let the second run start
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(2)
    assert _ours(str(out)) == []  # its child died with it: nothing keeps writing into the run dirs
    kept = done.read_text()
    assert not (out / "runs" / "random50" / "seed1" / "result.json").exists()

    second = subprocess.run(cmd + ["--jobs", "2"], env=env, capture_output=True, text=True,
                            timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "1 already done" in second.stdout and "3 runs finished" in second.stdout
    assert done.read_text() == kept  # the finished run was skipped, not redone

    summary = json.loads((out / "results.json").read_text())
    assert summary["runs"] == {"planned": 4, "finished": 4}
    for arm in ("uniform", "random50"):
        runs = [json.loads((out / "runs" / arm / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
        acc = [r["eval_after"]["accuracy"] for r in runs]
        m = summary["arms"][arm]["metrics"]["accuracy"]
        assert m["values"] == acc and m["mean"] == pytest.approx(sum(acc) / 2)
        if acc[0] != acc[1]:  # t-interval with df 1: mean +- 12.706 * |a - b| / 2
            assert m["hi"] - m["mean"] == pytest.approx(12.7062 * abs(acc[0] - acc[1]) / 2, rel=1e-4)
        assert len(runs[0]["eval_after"]["per_prompt"]["accuracy"]) == 6
        steps = [json.loads(line) for line in (out / "runs" / arm / "seed0" / "metrics.jsonl").read_text().splitlines()]
        assert sorted({r["step"] for r in steps if "loss" in r}) == [1, 2]
    diff = summary["arms"]["random50"]["vs_baseline"]["accuracy"]
    assert diff["num_seeds"] == 2 and diff["num_prompts"] == 6 and diff["lo"] <= diff["diff"] <= diff["hi"]
    assert summary["arms"]["uniform"]["kept_frac"] == 1.0
    # the random control keeps ceil(0.5 n) of a step's n completion tokens: within 1/(2n) of 0.5, n >= 8
    for seed in (0, 1):
        lines = (out / "runs" / "random50" / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()
        fracs = [json.loads(line)["weights/kept_frac"] for line in lines if "weights/kept_frac" in line]
        assert fracs and all(0.5 <= f <= 0.5 + 1 / 16 for f in fracs)
    md = (out / "results.md").read_text()
    assert "| `random50` | grpo | 2 |" in md and "| `uniform` |" in md and "vs baseline" in md
    assert (out / "reward_curves.png").stat().st_size > 0 and (out / "speed.png").stat().st_size > 0

    # a spec whose runs changed is refused for the finished runs, not silently mixed
    changed = write(spec_file.with_name("changed.yaml"), {**yaml.safe_load(spec_file.read_text()),
                                                          "budget": {**SPEC["budget"], "max_steps": 3}})
    assert main(["compare", str(changed), "--no-progress"]) == 2
    assert main(["compare", str(changed), "--report-only"]) == 0  # ... and left out of its report
    assert json.loads((out / "results.json").read_text())["runs"] == {"planned": 4, "finished": 0}


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "compare").glob("*.yaml")))
def test_shipped_specs_validate_every_arm(name, tmp_path):
    import torch

    from tokrl.runs import check_recipe

    spec = load_spec(ROOT / "compare" / name, tmp_path / "out")
    assert len(spec.seeds) >= 3 and len(spec.runs) == len(spec.arms) * len(spec.seeds)
    gpu = name.startswith("gpu") and not torch.cuda.is_available()
    for arm in spec.arms:  # raises with the file and key on any bad arm; TRL refuses bf16 without a GPU
        run = next(r for r in spec.runs if r.arm == arm)
        check_recipe(run.recipe, run.overrides + (["trainer.bf16=false"] if gpu else []))


def test_a_bad_arm_is_refused_before_any_run_starts(spec_file, tmp_path, capsys):
    spec = yaml.safe_load(spec_file.read_text())
    spec["arms"]["random50"]["overrides"]["weighting"] = {"name": "random_quantle"}
    bad = write(tmp_path / "bad.yaml", spec)
    assert main(["compare", str(bad), "--no-progress"]) == 2
    assert "random_quantile" in capsys.readouterr().err  # did you mean
    assert not (tmp_path / "out" / "runs").exists()


def test_a_dpo_pipeline_run_reports_its_weights_and_step_time(tmp_path):
    """Offline preference runs log inside their train stage: the result reads the stage's record instead."""
    from tokrl.compare.results import collect, load_result
    from tokrl.compare.spec import PREFERENCE, Run

    run_dir = tmp_path / "cdpo" / "seed0"
    run_dir.mkdir(parents=True)
    summary = {"eval_after": {"accuracy": 0.44, "num_prompts": 100},
               "train": {"seconds": 24.0, "steps": 8, "train_loss": 0.68,
                         "mean_logged": {"weights/mean": 0.7165, "weights/kept_frac": 1.0, "weights/std": 0.391}}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    run = Run(arm="cdpo", seed=0, method="cdpo", family=PREFERENCE, command="train", recipe=tmp_path / "r.yaml",
              overrides=[], run_dir=run_dir, max_steps=8)
    result = collect(run, 60.04, 1)
    assert result["eval"]["accuracy"] == 0.44 and result["wall_seconds"] == 60.0
    assert (result["weight_mean"], result["kept_frac"], result["weight_std"]) == (0.7165, 1.0, 0.391)
    assert result["step_time"] == 3.0
    (run_dir / "result.json").write_text(json.dumps({"arm": "cdpo", "eval": {"accuracy": 0.44}}))  # an older record
    assert load_result(run)["step_time"] == 3.0 and load_result(run)["weight_mean"] == 0.7165
