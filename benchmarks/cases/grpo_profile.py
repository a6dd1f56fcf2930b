"""Where a SmolLM2 GRPO step's time goes, on the recipe's step, at each CPU precision setting.

The step of `recipes/grpo_arithmetic.yaml`: 16 completions (2 prompts x 8) of 24 tokens (`min_new_tokens` makes
every contender generate the recipe's maximum, so all do the same work), `WeightedGRPOTrainer` with uniform
weights, beta 0. One warm-up step, then the median of the timed steps, per phase (`benchmarks.phases`). Before the
model is loaded the worker measures this process's matmul GFLOP/s and copy bandwidth (`benchmarks.roofline`), and
the details table sets generation's tokens/s against the decode roofline they imply.

Contenders: `fp32` (tokrl's CPU default before this case chose), `bf16` (CPU bf16 autocast through accelerate,
fp32 master weights; generation runs under it too, accelerate wraps the model's forward), `bf16-checkpointing`
(TRL's own defaults: bf16 autocast and gradient checkpointing).
"""

from __future__ import annotations

import statistics

from benchmarks import roofline
from benchmarks.cases.grpo import MODEL, StepTimer, build_trainer, grpo_config, recipe_settings, step_result
from benchmarks.phases import ORDER, PhaseTimer
from benchmarks.registry import Case, Result, Target, register

SMOLLM2_PARAMS = 134_515_008  # every weight is read once per decoding step (tied embeddings counted once)
# Under CPU autocast the fp32 master weights are cast to bf16 on every forward (autocast's cast cache lives for one
# autocast region, which accelerate opens per forward): 4 bytes read + 2 written + 2 read by the matmul per weight.
AUTOCAST_BYTES = 8
PROMPT_POSITIONS = 16 * 47  # the recipe's prefill (16 rows x ~47 prompt tokens), for runs that did not record it
PRECISIONS = {
    "fp32": dict(bf16=False, gradient_checkpointing=False),
    "bf16": dict(bf16=True, use_cpu=True, gradient_checkpointing=False),
    "bf16-checkpointing": dict(bf16=True, use_cpu=True, gradient_checkpointing=True),
}


def load(contender: str, quick: bool):
    from tokrl.trainers import WeightedGRPOConfig, WeightedGRPOTrainer

    s = recipe_settings(quick)
    batch = s["group"] * s["prompts"]
    ceilings = roofline.measure(batch=batch, hidden=576, intermediate=1536)
    args = WeightedGRPOConfig(**grpo_config(s, learning_rate=1e-5, temperature=1.0, beta=0.0), **PRECISIONS[contender])
    timer = StepTimer()
    trainer = build_trainer(WeightedGRPOTrainer, args, callbacks=[timer])
    phases = PhaseTimer(trainer)

    def run() -> Result:
        trainer.train()
        result = step_result(timer, args)
        timed = phases.steps[1:]
        result.extra["phases_cpu"] = {k: statistics.median(p.get(k, (0, 0))[1] for p in timed) for k in ORDER}
        result.extra["phases_wall"] = {k: statistics.median(p.get(k, (0, 0))[0] for p in timed) for k in ORDER}
        result.extra["generated_tokens"] = phases.generated[1:]
        result.extra["decode_steps"] = phases.decode_steps[1:]
        result.extra["prefill"] = phases.prefill[1:]
        result.extra["batch"] = batch
        result.extra["ceilings"] = ceilings
        return result

    return run


def details(runs: dict[str, list[dict]]) -> str:
    """Per-phase medians (CPU s) of every contender, and generation against the decode roofline."""
    ok = {name: [r for r in rs if "error" not in r] for name, rs in runs.items()}
    ok = {name: rs for name, rs in ok.items() if rs}
    if not ok:
        return ""
    names = list(ok)
    med = {n: {k: statistics.median(r["extra"]["phases_cpu"][k] for r in ok[n]) for k in ORDER} for n in names}
    lines = ["Per phase, CPU s per step (median over repeats of each run's median over its timed steps):", "",
             "| phase | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for k in ORDER:
        lines.append(f"| {k} | " + " | ".join(f"{med[n][k]:.3f}" for n in names) + " |")
    steps = [f"{statistics.median(r['cpu'] for r in ok[n]):.3f}" for n in names]
    lines.append("| **step** | " + " | ".join(steps) + " |")
    ceil = ok[names[0]][0]["extra"]["ceilings"]
    all_ceilings = [r["extra"]["ceilings"] for n in names for r in ok[n]]
    best = {k: max(c[k] for c in all_ceilings) for k in ceil if k != "threads"}
    lines += ["", f"Ceilings of one worker process ({ceil['threads']} thread(s); best over every worker of this run): "
              + ", ".join(f"{k} {v:.1f}" for k, v in best.items()), ""]
    lines += ["| contender | tokens/step (prefill positions) | generation CPU s | tokens/s (CPU) | roofline s (prefill "
              "+ decode steps, bound) | roofline tokens/s | fraction of roofline |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for n in names:
        extra = ok[n][0]["extra"]
        tokens = statistics.median(t for r in ok[n] for t in r["extra"]["generated_tokens"])
        steps = statistics.median(t for r in ok[n] for t in r["extra"]["decode_steps"])
        prefill = statistics.median(t for r in ok[n] for t in r["extra"].get("prefill", [PROMPT_POSITIONS]))
        gen_s = med[n]["generation"]
        bf16 = n.startswith("bf16")
        roof = roofline.generation_roofline(
            SMOLLM2_PARAMS, extra["batch"], int(steps), int(prefill), AUTOCAST_BYTES if bf16 else 4,
            best["matmul_bf16_1024_GFLOPs" if bf16 else "matmul_fp32_1024_GFLOPs"], best["copy_GBps"],
        )
        lines.append(
            f"| {n} | {tokens:.0f} ({prefill:.0f}) | {gen_s:.3f} | {tokens / gen_s:.0f} | {roof['seconds']:.2f} "
            f"({roof['prefill_s']:.2f} + {steps:.0f} x {roof['decode_step_s'] * 1e3:.0f} ms, {roof['decode_bound']}) | "
            f"{roof['tokens_per_s']:.0f} | {roof['seconds'] / gen_s:.2f} |"
        )
    return "\n".join(lines)


register(
    Case(
        name="grpo-profile",
        description=f"{MODEL} GRPO step of the recipe (16 completions x 24 tokens): time per phase, per CPU precision",
        contenders=list(PRECISIONS),
        load=load,
        targets=[
            Target("bf16 time / fp32 (lower is faster)", "time", "bf16", "fp32", 1.0),
            Target("bf16+checkpointing time / fp32", "time", "bf16-checkpointing", "fp32", 1.0),
            Target("bf16 memory / fp32", "memory", "bf16", "fp32", 1.10),
        ],
        notes=__doc__,
        details=details,
        default=False,
    )
)
