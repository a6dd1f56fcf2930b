"""TokenCleaningSFTTrainer under 2-process DeepSpeed ZeRO-3 on CPU: two steps on a tiny saved model with a
`token_mask` column finish with finite losses, on 2 processes, with the LM head partitioned.

The file is also the launched script: `accelerate launch --num_processes 2 --config_file configs/zero3.yaml
tests/test_token_cleaning_distributed.py OUT_DIR` (OUT_DIR holds the saved tiny model in `tiny/`).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cleaned_dataset(tokenizer):
    from datasets import Dataset

    from tokrl.trainers.token_cleaning_tokens import tokenize_sft_row

    rows = []
    for i in range(16):
        row = tokenize_sft_row({"prompt": [{"role": "user", "content": f"{i} + 1 ="}],
                                "completion": [{"role": "assistant", "content": f"{i + 1} ok"}]}, tokenizer)
        # keep every other response token, so the normaliser counts only part of the response
        row["token_mask"] = [m * ((j + i) % 2) for j, m in enumerate(row["completion_mask"])]
        rows.append(row)
    return Dataset.from_list(rows)


def main(out_dir: Path) -> None:
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from tokrl.trainers.token_cleaning_sft import TokenCleaningSFTTrainer
    from tokrl.trainers.token_cleaning_sft_config import TokenCleaningSFTConfig

    state = PartialState(backend="gloo")
    tokenizer = AutoTokenizer.from_pretrained(out_dir / "tiny")
    args = TokenCleaningSFTConfig(
        output_dir=str(out_dir / "run"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2,
        logging_steps=1, save_strategy="no", report_to="none", seed=0, max_length=64,
        # accelerate leaves a CPU DeepSpeed launch without a process-group backend; gloo makes both see 2 ranks
        ddp_backend="gloo",
    )
    trainer = TokenCleaningSFTTrainer(model=str(out_dir / "tiny"), args=args,
                                      train_dataset=cleaned_dataset(tokenizer), processing_class=tokenizer)
    trainer.train()
    head = trainer.accelerator.unwrap_model(trainer.model).get_output_embeddings().weight
    if state.is_main_process:
        logs = trainer.state.log_history
        (out_dir / "result.json").write_text(json.dumps({
            "losses": [h["loss"] for h in logs if "loss" in h],
            "kept_frac": [h["token_cleaning/kept_frac"] for h in logs if "token_cleaning/kept_frac" in h],
            "num_processes": state.num_processes,
            "zero3": hasattr(head, "ds_id"),
        }))


@pytest.mark.distributed
def test_two_process_zero3_token_cleaning_sft(tmp_path):
    from tokrl.models import save_tiny_model

    save_tiny_model(tmp_path / "tiny")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--config_file",
           str(ROOT / "configs" / "zero3.yaml"), __file__, str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["num_processes"] == 2 and result["zero3"]
    assert len(result["losses"]) == 2 and all(math.isfinite(x) and x > 0 for x in result["losses"])
    assert all(0.3 < k < 0.7 for k in result["kept_frac"])  # about half of the response tokens are selected


if __name__ == "__main__":
    from distributed_exit import shut_down

    main(Path(sys.argv[1]))
    shut_down()
