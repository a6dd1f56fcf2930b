"""Evaluation under ZeRO-3: the shipped THR recipe's eval settings (before and after training, greedy and pass@k)
on the tiny model in a 2-process CPU job, and generation on partitioned weights equal to one process's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.distributed
def test_two_process_zero3_run_evaluates_before_and_after_and_speaks_once(tmp_path):
    from tokrl.runs import prepare_run
    from tokrl.evaluation import evaluate, generate
    from tokrl.models import load_model, save_tiny_model

    tiny = save_tiny_model(tmp_path / "tiny")
    recipe = yaml.safe_load((ROOT / "recipes" / "thr_grpo_arithmetic.yaml").read_text())
    shipped_eval = dict(recipe["eval"])
    recipe["model"] = str(tiny)
    recipe["output_dir"] = str(tmp_path / "run")
    recipe["task"].update(num_train=16, num_eval=6)
    recipe["trainer"].update(max_steps=1, per_device_train_batch_size=4, num_generations=4,
                             max_completion_length=6, save_steps=1)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = tmp_path / "result.json"

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(29500 + (os.getpid() + 7) % 1000), "--config_file",
           str(ROOT / "configs" / "zero3.yaml"), str(Path(__file__).parent / "zero3_eval_run.py"),
           str(path), str(tiny), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT)])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["code"] == 0 and result["world_size"] == 2 and result["partitioned"]

    # Greedy generation on gathered ZeRO-3 weights is what one process generates from the whole model.
    model, tokenizer = load_model(str(tiny))
    expected = generate(model, tokenizer, ["3 + 4 =", "12 + 9 ="], max_new_tokens=6, batch_size=1, progress=False)
    assert result["texts"] == expected

    # Eval before and after ran with the shipped settings, and the main process alone printed them.
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    run = prepare_run(path)
    one = evaluate(model, tokenizer, run["data"]["eval"], max_new_tokens=6, batch_size=shipped_eval["batch_size"],
                   k=shipped_eval["pass_k"], num_samples=shipped_eval["num_samples"], per_prompt=True,
                   reward=run["rewards"])
    assert {f"pass@{k}" for k in shipped_eval["pass_k"]} <= set(one) and one["num_prompts"] == 6.0
    assert summary["eval_before"] == one
    assert set(summary["eval_after"]) == set(one)
    assert proc.stdout.count("[tokrl] eval before training") == 1
    assert proc.stdout.count("[tokrl] eval after training") == 1
    assert proc.stdout.count('"eval_after"') == 1  # the summary
    assert "Setting accelerator to CPU" not in proc.stdout.split("[tokrl]", 1)[1]  # after the launcher's own line

