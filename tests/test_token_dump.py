"""Token dumps and the metrics log: exact records from a hand-made TokenView, append safety, a real tiny run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from conftest import make_grpo_trainer
from tokrl.diagnostics import (
    MetricsLogCallback,
    TokenDumpCallback,
    decode_pieces,
    dump_tokens,
    read_metrics,
    read_token_values,
)
from tokrl.diagnostics.token_dump import append_jsonl
from tokrl.models import tiny_tokenizer
from tokrl.weighting import TokenView


def _view(tok):
    """Two completions of the tiny char tokenizer, the second padded; a weight, an entropy and [B] advantages."""
    a = tok("42 ok", add_special_tokens=False)["input_ids"]
    b = tok("7", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([a, b + [tok.pad_token_id] * (len(a) - len(b))])
    mask = torch.tensor([[1] * len(a), [1] * len(b) + [0] * (len(a) - len(b))])
    view = TokenView(completion_ids=ids, completion_mask=mask, entropies=torch.tensor([[0.5, 1.5, 2.5, 0.25, 3.0],
                                                                                      [4.0, 9.0, 9.0, 9.0, 9.0]]))
    view.advantages = torch.tensor([0.75, -1.25])
    view.values["weight"] = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    view.values["thr"] = torch.tensor([[0.1, -0.2, 0.3, -0.4, 0.5], [2.0, 0.0, 0.0, 0.0, 0.0]])
    view.columns["tokrl_token_reward"] = torch.tensor([[0.0, 0.0, 0.0, 0.0, -1.0], [0.5, 0.0, 0.0, 0.0, 0.0]])
    view.values["per_state"] = torch.zeros(2, 5, 3)  # not per-token: never dumped
    view.stats["entropy_threshold"] = torch.tensor(1.5)
    return view


def test_dump_writes_masked_tokens_with_their_values(tmp_path):
    tok = tiny_tokenizer()
    assert dump_tokens(_view(tok), tok, tmp_path, step=7, max_samples=5) == 2  # bounded by the batch
    lines = (tmp_path / "token_values.jsonl").read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["step"] == 7 and first["sample"] == 0
    assert first["pieces"] == ["4", "2", " ", "o", "k"]
    assert first["values"]["weight"] == [0.0, 1.0, 1.0, 0.0, 1.0]
    assert first["values"]["entropy"] == [0.5, 1.5, 2.5, 0.25, 3.0]
    assert first["values"]["thr"] == [0.1, -0.2, 0.3, -0.4, 0.5]
    assert first["values"]["token_reward"] == [0.0, 0.0, 0.0, 0.0, -1.0]  # a trainer's "tokrl_" column
    assert first["values"]["advantage"] == [0.75] * 5  # a [B] advantage is shown on every token
    assert first["advantage"] == 0.75 and first["stats"] == {"entropy_threshold": 1.5}
    # padding is dropped: the second completion is one token long
    assert second["pieces"] == ["7"] and second["ids"] == tok("7", add_special_tokens=False)["input_ids"]
    assert second["values"] == {"entropy": [4.0], "token_reward": [0.5], "advantage": [-1.25], "weight": [1.0],
                                "thr": [2.0]}
    view = _view(tok)
    view.advantages = None
    view.values["advantage"] = torch.tensor([[0.5] * 5, [2.0] * 5])  # how the trainer hands it over
    assert dump_tokens(view, tok, tmp_path, step=8, max_samples=1) == 1  # appends, bounded by max_samples
    last = read_token_values(tmp_path / "token_values.jsonl")[-1]
    assert last["advantage"] == 0.5 and last["values"]["advantage"] == [0.5] * 5
    del view.values["advantage"]  # and without any advantage there is none in the record
    dump_tokens(view, tok, tmp_path, step=9, max_samples=1)
    last = read_token_values(tmp_path / "token_values.jsonl")[-1]
    assert "advantage" not in last and "advantage" not in last["values"]
    assert [r["step"] for r in read_token_values(tmp_path / "token_values.jsonl")] == [7, 7, 8, 9]


def test_torn_last_line_is_dropped_and_a_bad_middle_line_named(tmp_path):
    path = tmp_path / "token_values.jsonl"
    records = [{"step": s, "pieces": ["a"], "values": {"weight": [1.0]}} for s in (1, 2)]
    append_jsonl(path, records)
    with open(path, "a") as f:
        f.write('{"step": 3, "pieces": ["a"], "val')  # a crash in the middle of a write
    assert [r["step"] for r in read_token_values(path)] == [1, 2]
    path.write_text('{"step": 1, "pieces": [], "values": {}}\n{oops\n{"step": 2, "pieces": [], "values": {}}\n')
    with pytest.raises(ValueError, match=r"token_values.jsonl:2: not a JSON line"):
        read_token_values(path)


def test_decode_pieces_puts_split_utf8_on_the_completing_token():
    """A byte-level BPE with no merges splits 'é' into two byte tokens: the first shows '', the second 'é'."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    text = "né x"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = decode_pieces(tok, ids)
    assert len(ids) == 5  # n, two bytes of é, space, x
    assert pieces == ["n", "", "é", " ", "x"]
    assert "".join(pieces) == text
    assert decode_pieces(None, [3, 9]) == ["<3>", "<9>"]


def test_metrics_log_writes_only_on_the_main_process(tmp_path):
    callback = MetricsLogCallback()
    args = SimpleNamespace(output_dir=str(tmp_path))
    callback.on_log(args, SimpleNamespace(is_world_process_zero=False, global_step=1), None, logs={"loss": 1.0})
    assert not (tmp_path / "metrics.jsonl").exists()
    main = SimpleNamespace(is_world_process_zero=True, global_step=3)
    callback.on_log(args, main, None, logs={"loss": torch.tensor(0.5), "reward": float("nan"), "note": "x"})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 3, "loss": 0.5, "reward": None, "note": "x"}]


def test_callbacks_on_a_tiny_weighted_grpo_run(tiny, tmp_path):
    from tokrl.trainers import WeightedGRPOConfig, WeightedGRPOTrainer

    trainer = make_grpo_trainer(
        WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path,
        weighting={"name": "entropy_quantile", "rho": 0.5, "scope": "batch"},
        max_steps=4, token_dump_steps=2, token_dump_samples=3,
    )
    dump = TokenDumpCallback.attach(trainer)
    log = MetricsLogCallback.attach(trainer)
    # attaching again (the CLI and the trainer may both do it) must not write every line twice
    assert TokenDumpCallback.attach(trainer) is dump
    assert MetricsLogCallback.attach(trainer, tmp_path / "metrics.jsonl") is log
    trainer.train()

    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["method"] == "WeightedGRPOTrainer"
    assert info["config"]["weighting"]["rho"] == 0.5 and info["config"]["token_dump_steps"] == 2
    assert "EntropyQuantile" in info["weighter"]
    assert info["config"]["max_steps"] == 4 and info["config"]["use_cpu"] is True  # a field changed from default
    assert "push_to_hub" not in info["config"] and "output_dir" not in info["config"]

    records = read_token_values(tmp_path / "token_values.jsonl")
    assert [(r["step"], r["sample"]) for r in records] == [(s, i) for s in (1, 2, 4) for i in range(3)]
    tok = tiny[1]
    for r in records:
        assert "".join(r["pieces"]) == tok.decode(r["ids"])
        assert set(r["values"]) >= {"weight", "entropy"}
        assert all(len(v) == len(r["ids"]) for v in r["values"].values())
        thr = r["stats"]["entropy_threshold"]
        for w, h in zip(r["values"]["weight"], r["values"]["entropy"]):
            # the weighter's rule, checked on what was dumped: keep exactly the tokens at or above the threshold
            assert w == (1.0 if h >= thr - 1e-6 else 0.0) or abs(h - thr) < 1e-6

    metrics = read_metrics(tmp_path / "metrics.jsonl")
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == [1, 2, 3, 4]
    assert all(0.0 < m["weights/kept_frac"] <= 1.0 for m in metrics if "loss" in m)
    assert metrics[-1]["step"] == 4 and "train_runtime" in metrics[-1]
