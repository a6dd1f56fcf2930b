"""`tokrl eval`: greedy accuracy and pass@k of a model or checkpoint on a task's eval split."""

from __future__ import annotations

import json

HELP = "evaluate a model/checkpoint on a task's eval split: greedy accuracy and unbiased pass@k"


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="embedded name, HF id or local checkpoint directory")
    parser.add_argument("--recipe", default=None, help="take the task (and its eval split) from this recipe")
    parser.add_argument("--num-prompts", type=int, default=None, help="evaluate on the first N eval prompts")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pass-k", type=int, nargs="*", default=[], help="k values for pass@k, e.g. 1 8")
    parser.add_argument("--num-samples", type=int, default=None, help="samples per prompt for pass@k (default max k)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for pass@k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the result as JSON here")


def run(args) -> int:
    from tokrl.commands.train import build_task
    from tokrl.evaluation import evaluate
    from tokrl.models import load_model
    from tokrl.recipe import load_recipe

    if args.num_samples is not None and args.pass_k and args.num_samples < max(args.pass_k):
        raise ValueError(f"--num-samples ({args.num_samples}) must be >= the largest --pass-k ({max(args.pass_k)})")
    task_spec = load_recipe(args.recipe).get("task") if args.recipe else None
    data = build_task(task_spec, args.recipe or "<default task>").build()["eval"]
    if args.num_prompts:
        data = data.select(range(min(args.num_prompts, len(data))))
    model, tokenizer = load_model(args.model)
    result = evaluate(model, tokenizer, data, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                      k=args.pass_k, num_samples=args.num_samples, temperature=args.temperature, seed=args.seed,
                      progress=True)
    result["model"] = args.model
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0
