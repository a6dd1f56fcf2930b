"""2-process CPU runs under accelerate + DeepSpeed (ZeRO-2 and ZeRO-3) of the forking trainer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_distributed_run import fixed_global_entropies
from tokrl.weighting import EntropyQuantile, TokenView

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tokrl.models import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def launch(config: str, script: str, *args, timeout=900):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(29500 + os.getpid() % 1000), "--config_file", str(ROOT / "configs" / config),
           str(Path(__file__).parent / script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.mark.distributed
@pytest.mark.parametrize("config,select,stage", [("zero2.yaml", "topk", 2), ("zero3.yaml", "quantile", 3)])
def test_two_process_forking_run_agrees_with_one_process(tiny_dir, tmp_path, config, select, stage):
    out = tmp_path / "result.json"
    launch(config, "grpo_distributed_run.py", tiny_dir, str(out), select)
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["deepspeed"] and result["zero_stage"] == stage
    assert len(result["losses"]) == 2 and result["finite"]
    assert len(result["train_thresholds"]) == 2

    # The same global batch on one process: same threshold, same weights.
    entropies, mask = fixed_global_entropies()
    view = TokenView(completion_ids=mask, completion_mask=mask, entropies=entropies)
    weights = EntropyQuantile(rho=0.3, scope="global", select=select)(view)
    assert result["threshold"] == pytest.approx(view.stats["entropy_threshold"], abs=1e-6)
    assert result["weights"] == weights.tolist()


@pytest.mark.distributed
@pytest.mark.parametrize("config", ["zero2.yaml", "zero3.yaml"])
def test_two_process_resume_matches_the_uninterrupted_run(tiny_dir, tmp_path, config):
    results = {}
    for mode, run in (("full", "full"), ("cut", "cut"), ("resume", "cut")):
        out = tmp_path / f"{mode}.json"
        launch(config, "grpo_resume_run.py", tiny_dir, str(tmp_path / run), mode, str(out))
        results[mode] = json.loads(out.read_text())
    full, resumed = results["full"], results["resume"]
    assert sorted(results["cut"]["logs"]) == ["1", "2"]
    assert sorted(resumed["logs"]) == ["1", "2", "3", "4"]
    for step in ("3", "4"):
        assert resumed["logs"][step] == pytest.approx(full["logs"][step], abs=1e-6)
    assert any(abs(v[0]) > 0 for v in full["logs"].values())
    assert resumed["digest"].keys() == full["digest"].keys()
    for name, value in full["digest"].items():
        assert resumed["digest"][name] == pytest.approx(value, rel=1e-6), name
