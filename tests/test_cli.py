"""`tokrl train` end to end on the tiny model, and the one-line errors for bad recipes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tokrl.cli import main

TINY_RECIPE = {
    "method": "forking_grpo",
    "model": None,  # filled with a saved tiny model
    "task": {"name": "arithmetic", "num_train": 32, "num_eval": 4},
    "reward": ["accuracy"],
    "trainer": {
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 6,
        "max_steps": 2,
        "logging_steps": 1,
        "save_steps": 2,
        "report_to": "none",
    },
    "weighting": {"name": "entropy_quantile", "rho": 0.5},
    "eval": {"before": True, "after": True, "batch_size": 4},
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tokrl.models import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_recipe_trains_two_steps_in_a_subprocess_and_writes_a_checkpoint(tiny_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", {**TINY_RECIPE, "model": tiny_dir, "output_dir": str(tmp_path / "run")})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tokrl", "train", str(recipe), "trainer.seed=3"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "checkpoint-2" / "model.safetensors").is_file()
    assert (run / "final" / "config.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["eval_before"]["accuracy"] <= 1.0 and "eval_after" in summary
    per_prompt = summary["eval_after"]["per_prompt"]["accuracy"]  # for paired comparisons (tokrl compare)
    assert len(per_prompt) == 4 and sum(per_prompt) / 4 == summary["eval_after"]["accuracy"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_logs = [line for line in lines if "loss" in line]
    assert [line["step"] for line in train_logs] == [1, 2]
    assert all(line["weights/kept_frac"] < 1.0 for line in train_logs)  # the forking mask was applied
    resolved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert resolved["trainer"]["seed"] == 3  # overrides are recorded


BAD_RECIPES = [
    # (change to the recipe, expected fragment of the one-line error)
    ({"methd": "grpo"}, "unknown key 'methd' (did you mean 'method'?)"),
    ({"method": "forking_gpro"}, "unknown method 'forking_gpro' (did you mean 'forking_grpo'?)"),
    ({"trainer": {"learning_rat": 1e-5}}, "unknown key 'trainer.learning_rat' (did you mean 'learning_rate'?)"),
    ({"trainer": {"learning_rate": "fast"}}, "'trainer.learning_rate' must be float, got str"),
    ({"trainer": {"max_steps": 2.5}}, "'trainer.max_steps' must be int"),
    ({"weighting": {"name": "entropy_quantile", "rho": 1.5}}, "rho must be in [0, 1]"),
    ({"trainer": {"forking_rho": 0.5}}, "trainer.forking_rho moved to weighting.rho"),
    ({"method": "thr_grpo", "trainer": {"p": 0.2}}, "trainer.p moved to weighting.p"),
    ({"task": {"name": "arithmetc"}}, "unknown task 'arithmetc' (did you mean 'arithmetic'?)"),
    ({"task": {"name": "arithmetic", "max_valu": 3}}, "unknown key 'task.max_valu' (did you mean 'max_value'?)"),
    ({"reward": ["acuracy"]}, "unknown reward 'acuracy' (did you mean 'accuracy'?)"),
    ({"method": "grpo", "weighting": {"name": "entropy_quantil"}}, "did you mean 'entropy_quantile'"),
    ({"method": "grpo", "weighting": {"name": "entropy_quantile", "rho": -1}}, "rho must be in [0, 1]"),
    ({"eval": {"befor": True}}, "unknown key 'eval.befor' (did you mean 'before'?)"),
    ({"method": "cdpo"}, "unknown key 'weighting'"),  # now checked by the cDPO pipeline's rules
    ({"trainer": {"num_generations": 3}}, "invalid 'trainer' settings"),
]


@pytest.mark.parametrize("change,fragment", BAD_RECIPES, ids=[str(i) for i in range(len(BAD_RECIPES))])
def test_bad_recipes_give_one_line_errors_naming_key_and_file(tiny_dir, tmp_path, capsys, change, fragment):
    recipe = {**TINY_RECIPE, "model": tiny_dir, **change}
    if "methd" in change:
        del recipe["method"]
    path = write_recipe(tmp_path / "bad.yaml", recipe)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert fragment in err
    assert "Traceback" not in err
    if "did you mean" in fragment or "unknown key" in fragment or "must be" in fragment:
        assert str(path) in err


def test_missing_recipe_file_and_bad_override(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: recipe file not found" in capsys.readouterr().err
    path = write_recipe(tmp_path / "r.yaml", {**TINY_RECIPE, "model": "x"})
    assert main(["train", str(path), "trainer.max_steps"]) == 2
    assert "must look like key=value" in capsys.readouterr().err


def test_overrides_may_follow_the_flags(capsys):
    """`tokrl validate R.yaml --verbose k=v` reads k=v as an override, like `tokrl validate R.yaml k=v --verbose`."""
    recipe = "recipes/grpo_arithmetic.yaml"
    for argv in (["validate", recipe, "--verbose", "trainer.learning_rate=-1"],
                 ["validate", recipe, "trainer.learning_rate=-1", "--verbose"]):
        assert main(argv) == 2
        assert "learning_rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["validate", recipe, "--verbose", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_a_weighting_without_a_name_changes_the_presets_default(tmp_path, capsys):
    """`method: forking_grpo` + `weighting: {rho: 0.3}` is the preset's entropy_quantile with rho 0.3; plain `grpo`
    has no default weighter to change, so there the name is still required."""
    from tokrl.runs import prepare_run

    path = write_recipe(tmp_path / "f.yaml", {"method": "forking_grpo", "model": "smollm2-135m-instruct",
                                              "weighting": {"rho": 0.3}})
    weighting = prepare_run(path)["config"].weighting
    assert weighting["name"] == "entropy_quantile" and weighting["rho"] == 0.3 and weighting["select"] == "topk"
    path = write_recipe(tmp_path / "g.yaml", {"method": "grpo", "model": "smollm2-135m-instruct",
                                              "weighting": {"rho": 0.3}})
    assert main(["validate", str(path)]) == 2
    assert "mapping with a 'name' key" in capsys.readouterr().err


def test_invalid_yaml_names_the_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("method: grpo\ntrainer: {max_steps: 2\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml" in err and "invalid YAML" in err


def test_debug_flag_shows_the_traceback(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", {**TINY_RECIPE, "model": "x", "methd": 1})
    with pytest.raises(ValueError, match="unknown key 'methd'"):
        main(["train", str(path), "--debug"])


def test_train_runs_every_method_and_the_pipeline_aliases_take_the_same_arguments(tmp_path, monkeypatch, capsys):
    """`tokrl train` hands an offline recipe to its pipeline with the overrides and the stage options; the
    aliases `tokrl cdpo|treg` call the same pipeline the same way; GRPO-family runs refuse the stage options."""
    import tokrl.runs

    calls = []

    def fake(method):
        def run(path, overrides, **options):
            calls.append((method, str(path), list(overrides), options))
            return {"method": method}
        return run

    for method in tokrl.runs.PIPELINES:
        monkeypatch.setitem(tokrl.runs.PIPELINES, method, fake(method))
    for method in ("cdpo", "treg", "token_cleaning"):
        path = write_recipe(tmp_path / f"{method}.yaml", {"method": method, "model": "x"})
        assert main(["train", str(path), "sample.num_prompts=2", "--overwrite", "--stage", "score"]) == 0
        assert calls[-1] == (method, str(path), ["sample.num_prompts=2"], {"overwrite": True, "stage": "score"})
    for alias, method in (("cdpo", "cdpo"), ("treg", "treg")):
        path = tmp_path / f"{method}.yaml"
        assert main([alias, str(path), "sample.num_prompts=2", "--overwrite", "--stage", "score"]) == 0
        assert calls[-1] == (method, str(path), ["sample.num_prompts=2"], {"overwrite": True, "stage": "score"})
    capsys.readouterr()
    grpo = write_recipe(tmp_path / "grpo.yaml", {**TINY_RECIPE, "model": "x"})
    assert main(["train", str(grpo), "--stage", "score"]) == 2
    assert "--stage is for the offline pipelines" in capsys.readouterr().err
    unknown = write_recipe(tmp_path / "typo.yaml", {"method": "tregg", "model": "x"})
    assert main(["train", str(unknown)]) == 2
    assert "unknown method 'tregg' (did you mean 'treg'?)" in capsys.readouterr().err


# Recipes whose data the user supplies (their headers say how): validate names the missing path. The GPU recipes
# name hub datasets (fetched only by a run) and are checked with bf16 off where no GPU is.
USER_DATA = {"treg_ultrafeedback.yaml": "data/llama3-ultrafeedback-armorm: no such file or directory"}


def test_listing_the_commands_imports_none_of_them():
    """`tokrl --help` reads each command's HELP from its source; only the command being run is imported."""
    import importlib

    from tokrl.cli import COMMANDS, _help

    code = ("import sys; from tokrl.cli import build_parser; build_parser('validate'); "
            "print(sorted(m for m in sys.modules if m.startswith('tokrl.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=300)
    assert out.stdout.strip() == "['tokrl.commands.validate']", out.stderr[-2000:]
    for path in COMMANDS.values():
        assert _help(path) == importlib.import_module(path).HELP != ""


def test_every_shipped_recipe_validates(capsys):
    """Each YAML in recipes/, recipes/gpu/ and examples/ parses and names only known keys (via `tokrl validate`)."""
    root = Path(__file__).resolve().parents[1]
    recipes = sorted(root.joinpath("recipes").glob("*.yaml"))
    gpu = sorted(root.joinpath("recipes", "gpu").glob("*.yaml"))
    assert recipes and len(gpu) >= 4 and set(USER_DATA) <= {r.name for r in recipes}
    recipes += sorted(root.joinpath("examples").glob("*/recipe.yaml"))
    for recipe in recipes:
        if recipe.name in USER_DATA:
            assert main(["validate", str(recipe)]) == 2, recipe
            assert USER_DATA[recipe.name] in capsys.readouterr().err
        else:
            assert main(["validate", str(recipe)]) == 0, recipe
    import torch

    no_gpu = [] if torch.cuda.is_available() else ["trainer.bf16=false"]  # TRL refuses bf16 without a GPU
    for recipe in gpu:
        assert "bf16: true" in recipe.read_text() and "use_vllm: true" in recipe.read_text()
        assert main(["validate", str(recipe), *no_gpu]) == 0, recipe


def test_demo_compares_recipes_and_writes_plots_and_heatmap(tiny_dir, tmp_path, capsys):
    """The `make demo` code path, on the tiny model: both runs, the comparison plot, the kept-token report."""
    uniform = write_recipe(tmp_path / "uniform.yaml", {**TINY_RECIPE, "model": tiny_dir, "method": "grpo",
                                                       "weighting": None})
    forking = write_recipe(tmp_path / "forking.yaml", {**TINY_RECIPE, "model": tiny_dir})
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--recipes", str(uniform), str(forking), "--steps", "5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    runs = summary["runs"]
    assert list(runs) == ["uniform", "forking"]
    assert runs["uniform"]["eval_before"] == runs["forking"]["eval_before"]  # evaluated once, shared
    assert runs["uniform"]["kept_by_token_kind"]["other"]["kept_frac"] == 1.0
    kept = runs["forking"]["kept_by_token_kind"]
    total = sum(k["tokens"] for k in kept.values())
    frac = sum(k["kept_frac"] * k["tokens"] for k in kept.values()) / total
    assert 0.4 <= frac <= 0.75  # rho = 0.5 of the dumped tokens (ties and per-micro-batch rounding aside)
    assert (out / "comparison.png").stat().st_size > 10_000
    assert Path(summary["heatmap"]).read_text().count("<html") == 1
    assert "accuracy" in capsys.readouterr().out
