"""Token dumps: a bounded sample of completions with the per-token values the weighter used.

At the first and every `token_dump_steps`-th optimizer step, `TokenDumpCallback` appends up to `token_dump_samples`
completions of the trainer's last weighted micro-batch (`trainer.last_view`) to `RUN_DIR/token_values.jsonl`, one
JSON object per completion:

    {"step": 10, "sample": 0, "pieces": ["4", "2"], "ids": [57, 55],
     "values": {"weight": [1.0, 0.0], "entropy": [2.31, 0.12], "advantage": [0.5, 0.5]},
     "stats": {"entropy_threshold": 1.7}, "advantage": 0.5, "prompt": "..."}

`pieces[i]` is the text that token i adds to the decoded completion (prefix decoding, so multi-byte characters
split over several tokens land on the token that completes them). Only completion tokens (mask 1) are written.
Run metadata (trainer, weighter, model, config summary) goes to `RUN_DIR/run_info.json`, written atomically.

Append safety: each dump is one `os.write` on an `O_APPEND` descriptor followed by `fsync`, so a crash can at
worst truncate the last line; readers (`read_token_values`) drop a truncated last line and reject any other
malformed line with its line number.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any

import trl
from transformers import TrainerCallback

from tokrl.models import EMBEDDED, cache_dir
from tokrl.utils import write_json_atomic

TOKEN_VALUES = "token_values.jsonl"
RUN_INFO = "run_info.json"

# TokenView fields dumped under these names when the trainer filled them (a weighter's own `values` win).
_VIEW_FIELDS = {"entropies": "entropy", "logps": "logp", "old_logps": "old_logp", "ref_logps": "ref_logp"}
# Config fields summarised in run_info.json when the trainer's args have them.
_CONFIG_KEYS = (
    "weighting", "weight_normalizer", "loss_type", "learning_rate", "beta", "epsilon", "temperature",
    "num_generations", "max_completion_length", "per_device_train_batch_size", "gradient_accumulation_steps",
    "steps_per_generation", "max_steps", "num_train_epochs", "top_entropy_quantile", "seed", "bf16",
    "token_dump_steps", "token_dump_samples",
)


def json_number(x: float | None) -> float | None:
    """A JSON-safe float with float32 precision; None, NaN and inf become null."""
    x = float(x) if x is not None else math.nan
    return float(f"{x:.7g}") if math.isfinite(x) else None


def decode_pieces(tokenizer, ids: list[int], context: int = 6) -> list[str]:
    """The text each token adds to the decoded sequence.

    Token k's piece is decode(ids[k-context : k+1]) minus decode(ids[k-context : k]): the left context keeps
    leading spaces (SentencePiece) and multi-byte characters split over several byte tokens, which land on the
    token that completes them (earlier ones get ""). Both decodes run batched, so a long sequence costs two
    tokenizer calls. Without a tokenizer the pieces are `<id>`.
    """
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return [f"<{i}>" for i in ids]
    if not ids:
        return []
    kw = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    with_tok = tokenizer.batch_decode([ids[max(0, k - context) : k + 1] for k in range(len(ids))], **kw)
    without = tokenizer.batch_decode([ids[max(0, k - context) : k] for k in range(len(ids))], **kw)
    pieces = []
    for k, (full, prev) in enumerate(zip(with_tok, without)):
        # a trailing U+FFFD is an incomplete UTF-8 sequence, completed (and shown) by a later token
        full, prev = full.rstrip("\ufffd"), prev.rstrip("\ufffd")
        if full.startswith(prev):
            pieces.append(full[len(prev) :])
        else:  # a tokenizer that rewrites earlier text: fall back to the token alone
            pieces.append(tokenizer.decode([ids[k]], **kw))
    return pieces


def _first_rows(x, n: int, width: int | None = None) -> list | None:
    """The first n rows of a [B, T] tensor aligned with the completion ids (`width` = T) or of a [B] tensor
    (`width` None), as lists; None for anything else."""
    if not hasattr(x, "detach") or x.dim() != (1 if width is None else 2) or x.size(0) < n:
        return None
    if width is not None and x.size(1) != width:
        return None
    return x[:n].detach().float().cpu().tolist()


def token_records(view, tokenizer, step: int, max_samples: int, prompt=None) -> list[dict]:
    """Build the dump records for the first `max_samples` completions of a `TokenView`.

    Per-token values, later sources overriding earlier ones under the same name: the view's entropies and
    log-probs, its data columns (trainer-internal `tokrl_x` columns shown as `x`), the weighter's `values`, and
    the advantage (a `[B]` advantage is repeated on every token of its completion). `prompt` is an optional
    `(prompt_ids [B, P], prompt_mask [B, P])` pair; its text is stored per sample.
    """
    ids = view.completion_ids.detach().cpu()
    mask = view.completion_mask.detach().bool().cpu()
    n, width = min(int(max_samples), ids.size(0)), ids.size(1)
    per_token: dict[str, list] = {}
    sources = [(name, getattr(view, attr, None)) for attr, name in _VIEW_FIELDS.items()]
    sources += [(name.removeprefix("tokrl_"), t) for name, t in dict(view.columns).items()]
    sources += list(dict(view.values).items())
    for name, tensor in sources:
        rows = _first_rows(tensor, n, width)
        if rows is not None:
            per_token[name] = rows
    advantages = getattr(view, "advantages", None)
    adv = _first_rows(advantages, n)
    adv_rows = [[a] * width for a in adv] if adv is not None else _first_rows(advantages, n, width)
    if adv_rows is not None:
        per_token.setdefault("advantage", adv_rows)
    rewards = _first_rows(getattr(view, "rewards", None), n)
    stats = {k: json_number(v.item() if hasattr(v, "item") else v) for k, v in dict(view.stats).items()
             if isinstance(v, (int, float)) or getattr(v, "numel", lambda: 0)() == 1}

    records = []
    for b in range(n):
        keep = mask[b].nonzero().flatten().tolist()
        token_ids = [int(ids[b, t]) for t in keep]
        record: dict[str, Any] = {
            "step": int(step),
            "sample": b,
            "pieces": decode_pieces(tokenizer, token_ids),
            "ids": token_ids,
            "values": {name: [json_number(rows[b][t]) for t in keep] for name, rows in per_token.items()},
            "stats": stats,
        }
        if adv is not None:
            record["advantage"] = json_number(adv[b])
        elif len(set(record["values"].get("advantage", []))) == 1:  # a sequence-level advantage
            record["advantage"] = record["values"]["advantage"][0]
        if rewards is not None:
            record["reward"] = json_number(rewards[b])
        if prompt is not None and tokenizer is not None:
            p_ids, p_mask = prompt
            p = [int(i) for i, m in zip(p_ids[b].tolist(), p_mask[b].tolist()) if m]
            record["prompt"] = tokenizer.decode(p, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        records.append(record)
    return records


def append_jsonl(path: str | Path, records: list[dict]) -> None:
    """Append records as JSON lines in one write (O_APPEND) and fsync, so earlier lines are never damaged."""
    if not records:
        return
    data = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records).encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def dump_tokens(view, tokenizer, run_dir: str | Path, step: int, max_samples: int, prompt=None) -> int:
    """Append `max_samples` completions of `view` to `run_dir/token_values.jsonl`; return how many were written."""
    records = token_records(view, tokenizer, step, max_samples, prompt=prompt)
    append_jsonl(Path(run_dir) / TOKEN_VALUES, records)
    return len(records)


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


_NOISE = ("output_dir", "logging_dir", "run_name", "hub_", "push_to_hub", "local_rank", "deepspeed_plugin",
          "accelerator_config", "report_to", "ddp_", "dataloader_", "_n_gpu", "distributed_state")


def config_summary(args) -> dict:
    """The key training fields, plus every other field whose value differs from its declared default."""
    out = {k: _jsonable(getattr(args, k)) for k in _CONFIG_KEYS if hasattr(args, k)}
    if dataclasses.is_dataclass(args):
        for f in dataclasses.fields(args):
            if f.name in out or f.name.startswith(_NOISE) or not hasattr(args, f.name):
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                continue
            value = getattr(args, f.name)
            empty = (None, "", [], {})
            if value != default and not (value in empty and default in empty):
                out[f.name] = _jsonable(value)
    return out


def _model_name(path) -> str | None:
    """An embedded model's converted checkpoint (`~/.cache/tokrl/<name>`) is shown by its name."""
    if not path:
        return None
    p = Path(str(path))
    return p.name if p.name in EMBEDDED and p.parent == cache_dir() else str(path)


def run_info(trainer) -> dict:
    """Metadata for the heatmap's header: trainer, weighter, model, and a summary of the config."""
    args = trainer.args
    model = getattr(trainer, "model", None)
    config = getattr(model, "config", None)
    tokenizer = getattr(trainer, "processing_class", None)
    return {
        "method": type(trainer).__name__,
        "weighter": repr(getattr(trainer, "weighter", None)) if getattr(trainer, "weighter", None) else None,
        "model": _model_name(getattr(config, "_name_or_path", None)) or getattr(config, "model_type", None),
        "tokenizer": _model_name(getattr(tokenizer, "name_or_path", None)),
        "output_dir": str(args.output_dir),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "trl_version": trl.__version__,
        "config": config_summary(args),
    }


class TokenDumpCallback(TrainerCallback):
    """Writes `trainer.last_view` to `token_values.jsonl` at step 1 and every `args.token_dump_steps` steps
    (main process only).

    Attach with `TokenDumpCallback.attach(trainer)`. The trainer must keep `last_view` (a `TokenView` whose
    `values` hold the per-token tensors its weighter used). Optional: `trainer.last_prompt = (prompt_ids,
    prompt_mask)` adds the prompt text to each record.
    """

    def __init__(self, trainer, every: int | None = None, samples: int | None = None):
        self.trainer = trainer
        self.every = int(every if every is not None else getattr(trainer.args, "token_dump_steps", 0) or 0)
        self.samples = int(samples if samples is not None else getattr(trainer.args, "token_dump_samples", 4))
        self._last_step = None

    @classmethod
    def attach(cls, trainer, **kwargs) -> "TokenDumpCallback":
        """Register a dump callback on `trainer` (once: a second call returns the first callback)."""
        for existing in trainer.callback_handler.callbacks:
            if isinstance(existing, cls) and existing.trainer is trainer:
                return existing
        callback = cls(trainer, **kwargs)
        trainer.add_callback(callback)
        return callback

    def on_train_begin(self, args, state, control, **kwargs):
        if self.every > 0 and state.is_world_process_zero:
            write_json_atomic(Path(args.output_dir) / RUN_INFO, run_info(self.trainer))

    def on_step_end(self, args, state, control, **kwargs):
        due = state.global_step == 1 or state.global_step % max(self.every, 1) == 0  # a short run has one too
        if self.every <= 0 or not state.is_world_process_zero or not due:
            return
        view = getattr(self.trainer, "last_view", None)
        if view is None or state.global_step == self._last_step:
            return
        tokenizer = kwargs.get("processing_class") or getattr(self.trainer, "processing_class", None)
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
        prompt = getattr(self.trainer, "last_prompt", None)
        dump_tokens(view, tokenizer, args.output_dir, state.global_step, self.samples, prompt=prompt)
        self._last_step = state.global_step


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for each line of an append-only JSONL file. A torn last line (a crash mid-write,
    no newline after it) is dropped; any other bad line is an error naming the file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        records.append((number, record))
    return records


def read_token_values(path: str | Path) -> list[dict]:
    """Read `token_values.jsonl` (see `read_jsonl`); every record needs 'pieces' and 'values'."""
    records = []
    for number, record in read_jsonl(path):
        if "pieces" not in record or "values" not in record:
            raise ValueError(f"{Path(path)}:{number}: a token record needs 'pieces' and 'values'")
        records.append(record)
    return records
