"""CDPOTrainer and TREGTrainer under a 2-process CPU DeepSpeed ZeRO-3 launch (one launch, ~35 s)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.distributed
def test_cdpo_and_treg_train_under_zero3(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--num_processes", "2",
        "--config_file", str(ROOT / "configs" / "zero3.yaml"),
        str(ROOT / "tests" / "dpo_distributed_run.py"), str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["num_processes"] == 2 and result["distributed_type"] == "DistributedType.DEEPSPEED"
    for name in ("cdpo", "treg"):
        logs = result[name]
        assert [h["step"] for h in logs] == [1, 2]
        assert all(math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"]) for h in logs)
    cdpo, treg = result["cdpo"], result["treg"]
    # step 1: policy == reference, so every DPO margin is 0: cDPO gives log 2 and T-REG log 2 + alpha * w * mean
    # (L_REG_w + L_REG_l) with w = sigmoid(0) = 1/2, alpha = 0.25 (the logged regulariser means are global).
    assert cdpo[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert treg[0]["treg/seq_weight_mean"] == pytest.approx(0.5, abs=1e-7)
    expected = math.log(2) + 0.25 * 0.5 * (treg[0]["treg/reg_chosen"] + treg[0]["treg/reg_rejected"])
    assert treg[0]["loss"] == pytest.approx(expected, abs=1e-6)
    # the rejected weights made by the script (0.1, 0.9, 0.5 cycling) are what the trainer saw, on both ranks
    assert cdpo[0]["weights/rejected_mean"] == pytest.approx(0.5, abs=1e-6)
    assert cdpo[0]["weights/chosen_mean"] == 1.0
    # training moved the policy: step 2 separates chosen from rejected
    assert cdpo[1]["rewards/margins"] > 0 and treg[1]["rewards/margins"] > 0
