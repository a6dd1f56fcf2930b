"""Peak memory of one contender in its own process: RSS high-water mark (CPU) or `max_memory_allocated` (GPU)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


class PeakMemory:
    """`start()` after the model is loaded; `peak_mib()` is the high-water mark since then, minus that baseline.

    CPU: writing 5 to /proc/self/clear_refs resets the kernel's RSS high-water mark (VmHWM) to the current RSS,
    so loading spikes are not counted. GPU: `torch.cuda.reset_peak_memory_stats`.
    """

    def __init__(self):
        self.cuda = torch.cuda.is_available()
        self.baseline = 0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
            return
        Path("/proc/self/clear_refs").write_text("5")
        self.baseline = _status_kib("VmRSS") * 1024

    def peak_mib(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.baseline) / 2**20
        return (_status_kib("VmHWM") * 1024 - self.baseline) / 2**20
