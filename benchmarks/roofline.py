"""This machine's measured ceilings, and the generation roofline of a causal LM.

- Matmul GFLOP/s: the best of 5 timed `a @ b` (after 2 warm-ups) at a large square shape (the compute peak torch
  reaches) and at a decode shape (batch rows x hidden @ hidden x intermediate), in fp32 and bf16.
- Memory bandwidth: the best of 5 `dst.copy_(src)` of a 256 MiB fp32 tensor, counting the bytes read and written.
Both on the threads this process has (`torch.get_num_threads()`), timed on this process's CPU clock (like the
step times they are compared with; on a shared machine the wall clock also counts the time other jobs held the
core, which made wall-clock ceilings 3-4x too low under load 15-20), best run of each.

Generation roofline: the prefill does 2 FLOPs per weight per prompt position (compute-bound); each decoding step
reads every weight once (memory: bytes / bandwidth) and does 2 FLOPs per weight per sequence (compute: flops /
GFLOP/s), and takes at least the larger of the two. KV-cache reads are left out (at <= 100 positions they are < 1%
of the weight bytes of a 135M model).
"""

from __future__ import annotations

import time

import torch


def _best(fn, repeats: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, inner: int = 1) -> float:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(k, n, generator=g).to(dtype)

    def run():
        for _ in range(inner):
            a @ b

    return 2 * m * k * n * inner / _best(run) / 1e9


def copy_gbps(mib: int = 256) -> float:
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best(lambda: dst.copy_(src)) / 1e9


def measure(batch: int, hidden: int, intermediate: int) -> dict:
    """Ceilings of this process: square and decode-shaped matmuls in fp32/bf16, copy bandwidth."""
    out = {"threads": torch.get_num_threads(), "copy_GBps": copy_gbps()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        out[f"matmul_{name}_1024_GFLOPs"] = matmul_gflops(1024, 1024, 1024, dtype)
        out[f"matmul_{name}_decode_GFLOPs"] = matmul_gflops(batch, hidden, intermediate, dtype, inner=20)
    return out


def generation_roofline(params: int, batch: int, steps: int, prefill: int, bytes_per_weight: int, gflops: float,
                        gbps: float) -> dict:
    """Least seconds to generate `steps` tokens for `batch` rows after a prefill of `prefill` prompt positions.

    Prefill: 2 FLOPs per weight per position (compute-bound). Each decoding step: every weight read once (memory)
    and 2 FLOPs per weight per row (compute); the step takes the larger of the two."""
    prefill_s = 2 * params * prefill / (gflops * 1e9)
    memory_s = params * bytes_per_weight / (gbps * 1e9)
    compute_s = 2 * params * batch / (gflops * 1e9)
    seconds = prefill_s + steps * max(memory_s, compute_s)
    return {
        "prefill_s": prefill_s,
        "decode_step_s": max(memory_s, compute_s),
        "decode_bound": "memory" if memory_s >= compute_s else "compute",
        "seconds": seconds,
        "tokens_per_s": batch * steps / seconds,
    }
