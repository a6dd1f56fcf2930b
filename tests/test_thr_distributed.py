"""THRGRPOTrainer under 2-process DeepSpeed ZeRO-3 on CPU: finite loss, and the THR columns each rank computed
(unembedding rows gathered from the ZeRO-3 partitions) equal those one process computes on the same completions.

The file is also the launched script: `accelerate launch --num_processes 2 --config_file configs/zero3.yaml
tests/test_thr_distributed.py OUT_DIR` (OUT_DIR holds the saved tiny model in `tiny/`).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages", "tokrl_thr", "tokrl_thr_weight")


def parity_reward(completions, **kwargs):
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(len(t) % 2) for t in texts]


def thr_args(out_dir, **kw):
    from tokrl.trainers.thr_grpo import THRGRPOConfig

    base = dict(output_dir=str(out_dir / "run"), per_device_train_batch_size=4, num_generations=4,
                max_completion_length=10, max_steps=2, learning_rate=1e-2, logging_steps=1, report_to="none",
                seed=0, beta=0.0, save_strategy="no", weighting={"name": "thr", "p": 0.3, "tau_beta": 0.5},
                # accelerate 1.15 leaves a CPU DeepSpeed launch without a process-group backend (one process counted
                # while DeepSpeed counts two); gloo makes both see the real world size
                ddp_backend="gloo")
    base.update(kw)
    return THRGRPOConfig(**base)


def dataset():
    from tokrl.data.arithmetic import ArithmeticTask

    return ArithmeticTask(num_train=16, num_eval=4, max_value=9).build()["train"]


def main(out_dir: Path) -> None:
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from tokrl.models import prepare_tokenizer
    from tokrl.trainers.thr_grpo import THRGRPOTrainer

    PartialState(backend="gloo")

    class Recording(THRGRPOTrainer):
        recorded = False

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            if not self.recorded:  # the first generation batch, scored with the initial weights
                self.recorded = True
                rank = self.accelerator.process_index
                weight = self.accelerator.unwrap_model(self.model).get_output_embeddings().weight
                record = {k: output[k].detach().cpu() for k in KEYS}
                record["zero3"] = hasattr(weight, "ds_id")
                torch.save(record, out_dir / f"rank{rank}.pt")
            return output

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(out_dir / "tiny"))
    trainer = Recording(model=str(out_dir / "tiny"), reward_funcs=[parity_reward], args=thr_args(out_dir),
                        train_dataset=dataset(), processing_class=tokenizer)
    trainer.train()
    if trainer.accelerator.is_main_process:
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        mixed = [h.get("thr/mixed_groups") for h in trainer.state.log_history if "thr/mixed_groups" in h]
        (out_dir / "result.json").write_text(json.dumps({"losses": losses, "mixed_groups": mixed,
                                                         "passes": trainer.thr_passes}))


@pytest.mark.distributed
def test_two_process_zero3_matches_one_process(tmp_path):
    from transformers import AutoTokenizer

    from tokrl.models import prepare_tokenizer, save_tiny_model
    from tokrl.trainers.thr_grpo import THRGRPOTrainer

    save_tiny_model(tmp_path / "tiny")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--config_file",
           str(ROOT / "configs" / "zero3.yaml"), __file__, str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["losses"]) == 2 and all(abs(x) < float("inf") for x in result["losses"])
    assert result["passes"] == {"reused": 0, "generation": 2, "extra": 0}  # states captured during generation

    # One process, same initial weights, same completions: the same THR values and weights, rank by rank.
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tmp_path / "tiny"))
    single = THRGRPOTrainer(model=str(tmp_path / "tiny"), reward_funcs=[parity_reward],
                            args=thr_args(tmp_path, use_cpu=True, ddp_backend=None), train_dataset=dataset(), processing_class=tokenizer)
    single.model.train()
    scored_groups = 0
    for rank in range(2):
        record = torch.load(tmp_path / f"rank{rank}.pt")
        assert record["zero3"], "the launched run did not partition the LM head with ZeRO-3"
        batch = {k: record[k] for k in KEYS[:5]}
        single.add_thr_columns(batch)  # a full no-grad forward on one process
        torch.testing.assert_close(batch["tokrl_thr"], record["tokrl_thr"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(batch["tokrl_thr_weight"], record["tokrl_thr_weight"])
        scored_groups += len(single.last_thr.taus)
    assert scored_groups >= 1, "no mixed group in the recorded batches: the comparison would be vacuous"


if __name__ == "__main__":
    from distributed_exit import shut_down

    main(Path(sys.argv[1]))
    shut_down()
