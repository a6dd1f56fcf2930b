"""Embedded tasks: small, seeded, verifiable problems generated in code (no download)."""

from tokrl.data.arithmetic import ArithmeticTask, make_arithmetic_dataset

TASKS = {"arithmetic": ArithmeticTask}

__all__ = ["ArithmeticTask", "make_arithmetic_dataset", "TASKS"]
from tokrl.data.corrupted_sft import CorruptedArithmeticSFT  # noqa: E402

__all__ += ["CorruptedArithmeticSFT"]
