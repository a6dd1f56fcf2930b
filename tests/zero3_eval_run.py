"""Run under `accelerate launch --num_processes 2` with ZeRO-3: `tokrl train` on a recipe (eval before and after),
then tokrl's `generate` on a freshly loaded, ZeRO-3-partitioned tiny model. Rank 0 writes what it saw as JSON
for tests/test_zero3_eval.py."""

import json
import sys

from distributed_exit import shut_down
from tokrl.cli import main as tokrl_main


def main(recipe: str, model_dir: str, out_path: str):
    code = tokrl_main(["train", recipe])

    from tokrl.runs import prepare_run
    from tokrl.evaluation import generate
    from tokrl.models import load_model

    run = prepare_run(recipe)  # its TrainingArguments switch on ZeRO-3 loading (zero.Init) for from_pretrained
    model, tokenizer = load_model(model_dir)
    partitioned = all(p.numel() == 0 for p in model.parameters())  # this rank's slices live in p.ds_tensor
    texts = generate(model, tokenizer, ["3 + 4 =", "12 + 9 ="], max_new_tokens=6, batch_size=1, progress=False)
    rank = run["config"].process_index
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump({"code": code, "partitioned": partitioned, "texts": texts,
                       "world_size": run["config"].world_size}, f)
    shut_down()


if __name__ == "__main__":
    main(*sys.argv[1:4])
