"""`tokrl train RECIPE.yaml` for method: dpo (alias `tokrl dpo`): (token- and pair-)weighted DPO on the user's own
preference data, no scoring pipeline.

    method: dpo
    model: smollm2-135m-instruct
    data:
      path: pairs.jsonl              # rows: prompt, chosen, rejected (+ weight columns); a file or save_to_disk dir
      eval_path: null                # optional held-out pairs (eval loss each `eval_steps`)
    weighting: {name: column, column: token_weights}   # reads chosen_token_weights / rejected_token_weights
    trainer:
      pair_weight_column: pair_weight                  # one weight >= 0 per pair
      max_steps: 20                                    # ... any field of TRL's DPOConfig / tokrl's WeightedDPOConfig
    peft: {r: 8, lora_alpha: 16, target_modules: all-linear}   # optional LoRA

Per-token columns hold one value per completion token as TRL's DPOTrainer tokenises the pair
(`tokrl.trainers.token_columns.completion_token_ids` gives those ids); the trainer checks their lengths (and the
tokenizer fingerprint in `token_columns_meta`, when present) before training. Every missing column or bad key is one
line naming the recipe and the key, before the model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokrl.data.dataset import read_table
from tokrl.pipelines.runner import lora_config, open_pipeline_recipe
from tokrl.recipe import RecipeError, build_config, check_keys
from tokrl.trainers.weighted_dpo import DPO_NEEDS, WeightedDPOTrainer
from tokrl.trainers.weighted_dpo_config import WeightedDPOConfig
from tokrl.weighting import build_weighter
from tokrl.weighting.base import check_needs

RECIPE_KEYS = ("method", "model", "trust_remote_code", "data", "weighting", "trainer", "peft", "output_dir",
               "description")
DATA_KEYS = ("path", "eval_path", "split")
PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def read_pairs(path: str, split: str, base_dir: str, where: str):
    ds = read_table(path, split=split, base_dir=base_dir, where=where)
    missing = [c for c in PAIR_COLUMNS if c not in ds.column_names]
    if missing:
        raise RecipeError(f"{where}: {path} has no column(s) {missing} (columns: {ds.column_names})")
    return ds


def run_dpo(recipe_path, overrides=(), *, dry_run: bool = False) -> dict:
    p = open_pipeline_recipe(recipe_path, overrides, "dpo", RECIPE_KEYS)
    file, recipe = p.file, p.recipe
    data = check_keys(recipe.get("data"), DATA_KEYS, "data", file, required=("path",))
    try:
        weighter = build_weighter(recipe.get("weighting"))
        check_needs(weighter, DPO_NEEDS, "WeightedDPOTrainer")  # before any model loads, as the trainer will
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"{file}: invalid 'weighting': {exc}") from None
    if recipe.get("weighting") is not None:
        p.trainer["weighting"] = recipe["weighting"]
    config = build_config(WeightedDPOConfig, p.trainer, file, "trainer", output_dir=str(p.output_dir),
                          report_to="none")
    split = data.get("split", "train")
    train = read_pairs(data["path"], split, str(Path(file).parent), f"{file}: data.path")
    evals = read_pairs(data["eval_path"], split, str(Path(file).parent), f"{file}: data.eval_path") \
        if data.get("eval_path") else None
    # the dataset columns the weighting and the pair weights read
    needed = [f"{side}_{name}" for name in weighter.all_columns() for side in ("chosen", "rejected")]
    needed += [config.pair_weight_column] if config.pair_weight_column else []
    for name, ds in (("data.path", train), ("data.eval_path", evals)):
        missing = [c for c in needed if ds is not None and c not in ds.column_names]
        if missing:
            raise RecipeError(f"{file}: {name} has no column(s) {missing} that the weighting / pair_weight_column "
                              f"read (columns: {ds.column_names})")
    peft_config = lora_config(recipe.get("peft") or None, "peft", file)
    if dry_run:
        return {"recipe": file, "ok": True, "rows": len(train)}

    model, tokenizer = p.load_base()
    trainer = WeightedDPOTrainer(model=model, args=config, train_dataset=train, eval_dataset=evals,
                                 processing_class=tokenizer, peft_config=peft_config)
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(str(p.output_dir / "final"))
    summary = {"method": "dpo", "model": p.model_id, "output_dir": str(p.output_dir), "rows": len(train),
               "steps": trainer.state.global_step, "train_loss": result.training_loss}
    if trainer.accelerator.is_main_process:
        (p.output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
