"""Evaluate a policy on a task's eval split: greedy accuracy and sampled pass@k (unbiased estimator)."""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from tokrl.console import is_main_process
from tokrl.recipe import RecipeError
from tokrl.rewards import accuracy_reward, score_completions


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k < 1 or n < k:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def check_eval_settings(settings: dict, name=lambda key: f"eval.{key}") -> None:
    """Range checks of the eval settings (`tokrl train`'s `eval:` section, `tokrl eval`'s flags), before any model
    is loaded: a RecipeError naming the setting (`name(key)`) for a value that would fail or mislead later."""
    def positive_int(key, value, allow_none=True):
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeError(f"{name(key)} must be a whole number >= 1, got {value!r}")

    for key in ("max_new_tokens", "num_prompts", "num_samples"):
        positive_int(key, settings.get(key))
    positive_int("batch_size", settings.get("batch_size"), allow_none=False)
    ks = settings.get("pass_k") or []
    if not isinstance(ks, (list, tuple)):
        raise RecipeError(f"{name('pass_k')} must be a list of k values (e.g. [1, 8]), got {ks!r}")
    for k in ks:
        positive_int("pass_k", k, allow_none=False)
    n = settings.get("num_samples")
    if ks and n is not None and n < max(ks):
        raise RecipeError(f"{name('num_samples')} ({n}) must be >= the largest pass@k k ({max(ks)})")
    temperature = settings.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise RecipeError(f"{name('temperature')} must be a number > 0 (sampling for pass@k), got {temperature!r}")


@contextlib.contextmanager
def whole_parameters(model):
    """Gather a ZeRO-3 model's partitioned parameters for the duration (a no-op for any other model).

    ZeRO-3 keeps a slice of each weight per rank (a model loaded under `accelerate launch` with ZeRO-3 is
    partitioned from the start), so `generate` on the bare module would see empty weights. Every rank must enter
    together: evaluation runs on all ranks. Parameters already gathered (inside TRL's
    `unwrap_model_for_generation`) are left alone."""
    partitioned = [p for p in model.parameters()
                   if getattr(getattr(p, "ds_status", None), "name", "") == "NOT_AVAILABLE"]
    if not partitioned:
        yield
        return
    import deepspeed  # deferred: deepspeed is heavy and only a ZeRO-3 model needs it

    with deepspeed.zero.GatheredParameters(partitioned):
        yield


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence,
    *,
    max_new_tokens: int = 24,
    batch_size: int = 32,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = False,
    stop: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    desc: str = "generating",
) -> list[list[str]]:
    """Completions for chat (list of messages) or plain-text prompts: `num_samples` strings per prompt.

    `stop` strings end a completion (generation stops after one, which stays in the text). A progress bar (main
    process only) unless `progress=False`."""
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list) else p
        for p in prompts
    ]
    options = {"do_sample": do_sample, "temperature": temperature if do_sample else None,
               "top_p": top_p if do_sample else None, "top_k": 0 if do_sample else None,
               **({"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {})}
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    out: list[list[str]] = []
    starts = tqdm(range(0, len(texts), batch_size), disable=not (progress and is_main_process()), desc=desc,
                  unit="batch")
    try:
        with whole_parameters(model):
            device = next(model.parameters()).device
            for start in starts:
                out.extend(_generate_batch(model, tokenizer, texts[start : start + batch_size], device,
                                           max_new_tokens, num_samples, options))
    finally:
        torch.random.set_rng_state(generator_state)
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def _generate_batch(model, tokenizer, texts, device, max_new_tokens, num_samples, options):
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    ids = model.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=num_samples,
                         pad_token_id=tokenizer.pad_token_id, **options)
    decoded = tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return [decoded[i : i + num_samples] for i in range(0, len(decoded), num_samples)]


def dataset_rows(dataset, repeat: int = 1) -> dict[str, list]:
    """The dataset's columns as lists, each row repeated `repeat` times (one per sampled completion)."""
    return {c: [v for v in dataset[c] for _ in range(repeat)] for c in dataset.column_names}


def as_completions(prompts: list, texts: list[str]) -> list:
    """Completions in TRL's form: assistant messages for conversational prompts, strings for text prompts."""
    return [[{"role": "assistant", "content": t}] if isinstance(p, list) else t for p, t in zip(prompts, texts)]


def evaluate(
    model,
    tokenizer,
    dataset,
    *,
    max_new_tokens: int = 24,
    batch_size: int = 32,
    k: Sequence[int] = (),
    num_samples: int | None = None,
    temperature: float = 1.0,
    reward: Callable | Sequence[Callable] = accuracy_reward,
    seed: int = 0,
    progress: bool = True,
    per_prompt: bool = False,
) -> dict:
    """Greedy accuracy and mean reward, and pass@k for each k from `num_samples` (default max k) samples per prompt.

    `reward` is one reward function or the recipe's list, called as TRL calls them (every dataset column as a
    keyword). `accuracy` is the mean of the first reward (the verifier: exact accuracy for a 0/1 reward) on the
    greedy completions, `mean_reward` the mean of all rewards' sum; a sample counts as correct for pass@k when
    the first reward gives >= 1. `per_prompt=True` adds `per_prompt: {"accuracy": [...], "pass@k": [...]}`, one
    score per eval prompt in dataset order, so two runs on the same prompts can be compared pair by pair.
    """
    rewards = [reward] if callable(reward) else list(reward)
    prompts = list(dataset["prompt"])
    if not prompts:
        raise ValueError("evaluation dataset is empty")
    greedy = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                      progress=progress, desc="eval: greedy")
    per_reward = score_completions(rewards, dataset_rows(dataset), as_completions(prompts, [g[0] for g in greedy]))
    scores = [0.0 if math.isnan(x) else x for x in per_reward[0]]
    totals = [sum(0.0 if math.isnan(v) else v for v in vals) for vals in zip(*per_reward)]
    result = {"accuracy": sum(scores) / len(scores), "mean_reward": sum(totals) / len(totals),
              "num_prompts": float(len(prompts))}
    prompt_scores = {"accuracy": [float(x) for x in scores]}
    if k:
        n = num_samples or max(k)
        samples = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                           batch_size=max(1, batch_size // n), num_samples=n, temperature=temperature,
                           do_sample=True, seed=seed, progress=progress, desc=f"eval: {n} samples a prompt")
        flat_prompts = [p for p in prompts for _ in range(n)]
        first = score_completions(rewards[:1], dataset_rows(dataset, n),
                                  as_completions(flat_prompts, [t for s in samples for t in s]))[0]
        correct = [sum(v >= 1.0 for v in first[i * n:(i + 1) * n]) for i in range(len(prompts))]
        for kk in k:
            prompt_scores[f"pass@{kk}"] = [pass_at_k(n, c, kk) for c in correct]
            result[f"pass@{kk}"] = sum(prompt_scores[f"pass@{kk}"]) / len(correct)
    if per_prompt:
        result["per_prompt"] = prompt_scores
    return result


def headline(result):
    """An eval result without its per-prompt scores: what a log line shows (the scores go to the run's files)."""
    return {k: v for k, v in result.items() if k != "per_prompt"} if isinstance(result, dict) else result
