"""Shared test helpers: tiny models, a fixed GRPO batch, and trainer builders. Nothing is downloaded."""

from __future__ import annotations

import copy
import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Tests pin fp32 on every CPU (the default is bf16 autocast where the CPU has native bf16): exact comparisons with
# TRL and hand computations must not depend on the machine. tests/test_device_defaults.py tests the detection.
os.environ.setdefault("TOKRL_CPU_BF16", "0")


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of a random 2-layer Llama with a local character tokenizer."""
    from tokrl.models import tiny_model

    return tiny_model(seed=0)


def grpo_args(config_cls, tmp_path, **overrides):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        report_to="none",
        use_cpu=True,
        max_steps=1,
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    base.update(overrides)
    return config_cls(**base)


def make_grpo_trainer(trainer_cls, config_cls, tiny, tmp_path, weighter=None, model=None, reward_funcs=None,
                      dataset_fn=None, **overrides):
    """A GRPO-family trainer on a copy of the tiny model (or `model`, e.g. a saved path), ready for
    `_compute_loss` on a fixed batch. `dataset_fn` may rewrite the arithmetic train split."""
    from tokrl.data import make_arithmetic_dataset
    from tokrl.rewards import accuracy_reward

    model_arg = model
    model, tokenizer = tiny
    data = make_arithmetic_dataset(num_train=8, num_eval=2)
    kwargs = {} if weighter is None else {"weighter": weighter}
    trainer = trainer_cls(
        model=copy.deepcopy(model) if model_arg is None else model_arg,
        reward_funcs=reward_funcs or [accuracy_reward],
        args=grpo_args(config_cls, tmp_path, **overrides),
        train_dataset=dataset_fn(data["train"]) if dataset_fn else data["train"],
        processing_class=tokenizer,
        **kwargs,
    )
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train; _compute_loss reads it
    trainer.model.train()
    return trainer


def fixed_grpo_batch(seed: int = 0, batch: int = 4, prompt_len: int = 6, completion_len: int = 7, vocab: int = 90):
    """A generation-batch slice as TRL's `_generate_and_score_completions` returns it, with ragged completions."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([completion_len, 3, 1, completion_len - 2])[:batch]
    completion_mask = (torch.arange(completion_len)[None, :] < lengths[:, None]).long()
    prompt_mask = torch.ones(batch, prompt_len, dtype=torch.long)
    prompt_mask[1, :2] = 0  # left padding in one prompt
    return {
        "prompt_ids": torch.randint(3, vocab, (batch, prompt_len), generator=g),
        "prompt_mask": prompt_mask,
        "completion_ids": torch.randint(3, vocab, (batch, completion_len), generator=g),
        "completion_mask": completion_mask,
        "advantages": torch.tensor([1.2, -0.7, 0.4, -0.9])[:batch],
        "num_items_in_batch": completion_mask.sum().float(),
    }


def loss_and_grads(trainer, inputs):
    """Loss of one `_compute_loss` call and the flat gradient it produces."""
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(trainer.model, {k: v.clone() for k, v in inputs.items()})
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    return loss.detach(), grads
