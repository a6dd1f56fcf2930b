"""Wall and process-CPU stopwatches (CUDA-synchronised when a GPU is present)."""

from __future__ import annotations

import time

import torch


def now() -> tuple[float, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = now()
    return wall - start[0], cpu - start[1]
