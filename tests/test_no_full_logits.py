"""No tokrl GRPO trainer (and not the scorer) materialises `[B, T, V]` logits; one backbone forward per step.

How the spy works. TRL's fused head never calls the `lm_head` module: it reads `lm_head.weight` and projects
hidden states tile by tile (`trl.kernels.ChunkedLogProbFunction`, tiles of `TOKEN_CHUNK_SIZE` positions x
`_CHUNKED_LOGPROB_CHUNK_SIZE` vocabulary columns). With the tiny model's ~100-token vocabulary one default tile
would span the whole vocabulary, so the tests shrink the tiles (4 positions x 16 columns). Then any tensor whose
last dimension is the vocabulary size, produced by any aten op on the training path (forward and backward), is a
full-vocabulary logits tensor, and a dispatch-mode spy records it. A forward hook on `lm_head` records module
calls, and one on the backbone counts forwards (with or without grad).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import trl.kernels.chunked_logprob as trl_kernel
import trl.trainer.utils as trl_utils
from datasets import Dataset
from torch.utils._python_dispatch import TorchDispatchMode

import tokrl.scoring.head as scoring_head
from tokrl.models import tiny_model
from tokrl.scoring import contrastive_token_logprobs, score_tokens
from tokrl.trainers import ForkingGRPOConfig, ForkingGRPOTrainer, WeightedGRPOConfig, WeightedGRPOTrainer
from tokrl.weighting import TokenWeighter


class Spy(TorchDispatchMode):
    """Records aten ops whose output has the vocabulary as last dimension, while `watching`."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.stack = [False]
        self.full_vocab: list[tuple[str, tuple[int, ...]]] = []

    @property
    def active(self) -> bool:
        return self.stack[-1]

    @contextlib.contextmanager
    def watching(self, on: bool = True):
        self.stack.append(on)
        try:
            yield
        finally:
            self.stack.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.active:
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[-1] == self.vocab:
                    self.full_vocab.append((str(func), tuple(t.shape)))
        return out


def wrap(obj, name, spy, on):
    original = getattr(obj, name)

    def wrapped(*args, **kwargs):
        with spy.watching(on):
            return original(*args, **kwargs)

    setattr(obj, name, wrapped)


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", 16)
    monkeypatch.setattr(trl_kernel, "TOKEN_CHUNK_SIZE", 4)
    monkeypatch.setattr(scoring_head, "VOCAB_CHUNK", 16)
    monkeypatch.setattr(scoring_head, "TOKEN_CHUNK", 4)


class HiddenNorm(TokenWeighter):
    """A weighter that reads last-layer hidden states (as THR does) and remembers the view it got."""

    needs = frozenset({"hidden_states"})

    def weigh(self, view):
        self.seen = view.hidden_states
        return view.hidden_states.norm(dim=-1) * view.mask


def make_trainer(kind, tmp_path):
    model, tok = tiny_model(seed=0)
    common = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-3,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    data = Dataset.from_dict({"prompt": ["1+1=", "2+3=", "4+4=", "9-2="]})

    def reward(completions, **kwargs):
        return [float(c.count("1")) - 0.1 * len(c) for c in completions]

    if kind == "forking":
        args = ForkingGRPOConfig(**common, weighting={"name": "entropy_quantile", "rho": 0.5})
        return ForkingGRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tok)
    weighter = HiddenNorm() if kind == "hidden" else None
    args = WeightedGRPOConfig(**common)
    return WeightedGRPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tok, weighter=weighter
    )


@pytest.mark.parametrize("kind", ["uniform", "forking", "hidden"])
def test_grpo_training_path_has_no_full_logits_and_one_forward(kind, tmp_path, small_tiles):
    trainer = make_trainer(kind, tmp_path)
    model = trainer.model
    vocab = model.config.vocab_size
    assert vocab > 64 and model.config.hidden_size != vocab
    spy = Spy(vocab)
    head_calls, backbone_calls = [], []
    model.lm_head.register_forward_hook(lambda m, a, o: head_calls.append((spy.active, tuple(a[0].shape))))

    def on_backbone(module, args, output):
        backbone_calls.append((spy.active, torch.is_grad_enabled(), output.last_hidden_state))

    model.model.register_forward_hook(on_backbone)
    # watched: the whole training step (scoring, loss, backward) except generation, which legitimately computes
    # next-token logits; the old/ref scoring that TRL runs inside the generation step is watched again.
    wrap(trainer, "training_step", spy, True)
    wrap(trainer, "_generate_and_score_completions", spy, False)
    wrap(trainer, "_get_per_token_logps_and_entropies", spy, True)
    with spy:
        trainer.train()

    assert spy.full_vocab == [], f"full-vocabulary tensors on the training path: {spy.full_vocab[:5]}"
    assert [c for c in head_calls if c[0]] == []  # lm_head is never called as a module in training
    assert any(not active for active, _ in head_calls)  # ...while generation does call it (the hook works)
    watched = [(grad, h) for active, grad, h in backbone_calls if active]
    # one backbone forward per micro-batch (2 steps x 1 micro-batch), with grad; no extra no-grad pass
    assert [grad for grad, _ in watched] == [True, True]
    if kind == "hidden":
        # the weighter's hidden states are a view of that very forward's output (same storage), not a new pass
        seen = trainer.weighter.seen
        last = watched[-1][1]
        assert seen.shape == (4, trainer.last_view.completion_ids.shape[1], model.config.hidden_size)
        assert seen.untyped_storage().data_ptr() == last.untyped_storage().data_ptr()


def test_spy_catches_a_plain_full_logits_scorer():
    model, tok = tiny_model(seed=0)
    spy = Spy(model.config.vocab_size)
    with spy, spy.watching():
        logits = model(input_ids=torch.randint(3, len(tok), (2, 6))).logits
        torch.log_softmax(logits, -1)
    assert (2, 6, model.config.vocab_size) in [shape for _, shape in spy.full_vocab]


def test_scorer_never_produces_full_vocab_tensors(small_tiles):
    model, tok = tiny_model(seed=0)
    other, _ = tiny_model(seed=1)
    examples = [
        {"prompt_ids": [5, 6, 7], "completion_ids": [8, 9, 10, 11, 12, 13]},
        {"prompt_ids": [4], "completion_ids": [9] * 9},
    ]
    spy = Spy(model.config.vocab_size)
    calls = []
    for m in (model, other):
        m.lm_head.register_forward_hook(lambda *a: calls.append(1))
    with spy, spy.watching():
        out = score_tokens(model, examples, batch_size=2, compute_entropy=True)
        ce_shared = contrastive_token_logprobs(model, model, examples, beta=1.0, chunk_size=4)
        ce_two = contrastive_token_logprobs(model, other, examples, beta=1.0, chunk_size=4)
    assert spy.full_vocab == [] and calls == []
    assert [len(o["logps"]) for o in out] == [6, 9]
    assert [len(v) for v in ce_shared] == [len(v) for v in ce_two] == [6, 9]
    # same model twice: p_CE = softmax(2z - z) = the model's own distribution
    for o, c in zip(out, ce_shared):
        torch.testing.assert_close(torch.tensor(c), torch.tensor(o["logps"]), atol=1e-5, rtol=1e-5)
