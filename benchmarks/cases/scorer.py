"""Offline scorer: `tokrl.scoring.score_tokens` vs a plain `model(...).logits` + `log_softmax` + gather scorer.

Model: a random `LlamaForCausalLM` with SmolLM2-135M's config (30 layers, hidden 576, tied embeddings; nothing is
downloaded), at its vocabulary of 49,152 and at a synthetic Qwen-sized vocabulary of 151,936. Data: 8 sequences of
512 tokens, each a 128-token prompt and a 384-token completion; the completion tokens are scored. Both contenders
score the 8 sequences in one batch, under `torch.no_grad()`, in fp32 (bf16 on a GPU).
"""

from __future__ import annotations

import torch

from benchmarks import clock
from benchmarks.registry import Case, Result, Target, register

SMOLLM2 = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    tie_word_embeddings=True,
)


def shape(quick: bool) -> dict:
    if quick:
        return {"sequences": 8, "prompt": 32, "completion": 96, "layers": 4}
    return {"sequences": 8, "prompt": 128, "completion": 384, "layers": SMOLLM2["num_hidden_layers"]}


def random_model(vocab: int, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**SMOLLM2, "num_hidden_layers": layers}, vocab_size=vocab)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    if torch.cuda.is_available():
        model = model.to("cuda", torch.bfloat16)
    return model


def plain_scorer(model, input_ids: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """The baseline: full logits, full log-softmax, gather the targets, keep the completion positions."""
    logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)[:, prompt_length - 1 :]


def make_load(vocab: int):
    def load(contender: str, quick: bool):
        from tokrl.scoring import score_tokens

        s = shape(quick)
        model = random_model(vocab, s["layers"])
        device = next(model.parameters()).device
        g = torch.Generator().manual_seed(1)
        input_ids = torch.randint(0, vocab, (s["sequences"], s["prompt"] + s["completion"]), generator=g)
        p = s["prompt"]
        examples = [{"prompt_ids": r[:p].tolist(), "completion_ids": r[p:].tolist()} for r in input_ids]
        tokens = s["sequences"] * s["completion"]

        def run() -> Result:
            start = clock.now()
            with torch.no_grad():
                if contender == "plain":
                    out = plain_scorer(model, input_ids.to(device), s["prompt"])
                    scored = out.numel()
                else:
                    out = score_tokens(model, examples, batch_size=s["sequences"])
                    scored = sum(len(o["logps"]) for o in out)
            wall, cpu = clock.since(start)
            assert scored == tokens, (scored, tokens)
            return Result(wall=wall, cpu=cpu, tokens=tokens)

        return run

    return load


for _vocab in (49152, 151936):
    register(
        Case(
            name=f"scorer-{_vocab}",
            description=f"score 8 x 512 tokens (384 scored), SmolLM2-shaped random model, vocab {_vocab:,}",
            contenders=["chunked", "plain"],
            load=make_load(_vocab),
            targets=(
                [
                    Target("scorer tokens/s vs plain", "throughput", "chunked", "plain", 1.2, at_least=True),
                    Target("scorer peak memory vs plain", "memory", "chunked", "plain", 0.05),
                ]
                if _vocab == 151936
                else [Target("scorer tokens/s vs plain (never slower)", "throughput", "chunked", "plain", 1.0,
                             at_least=True)]
            ),
            notes=__doc__,
        )
    )
