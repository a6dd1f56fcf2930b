"""What tokrl prints: one copy per job (the main process speaks), and no third-party noise unless `--verbose`."""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Warnings that every run prints and that say nothing a tokrl user can act on: (category, start of message).
IRRELEVANT_WARNINGS = (
    (FutureWarning, r"`gradient_checkpointing` is deprecated"),  # transformers renaming TRL's config field
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    (UserWarning, r"'pin_memory' argument is set as true but no accelerator is found"),  # CPU runs
    (FutureWarning, r"`torch.distributed.\w+` is deprecated"),  # DeepSpeed's collectives on a newer torch
)
# Log records of the same kind, by logger name and start of message.
IRRELEVANT_LOGS = {"DeepSpeed": ("Setting accelerator to CPU",)}


def is_main_process() -> bool:
    """True on the process that should speak: global rank 0 under torchrun / accelerate launch, or a lone process.
    Read from the environment so that it holds before (and without) torch.distributed being initialised."""
    return os.environ.get("RANK", "0") == "0"


def say(message: str) -> None:
    """One `[tokrl] ...` line on stdout, from the main process only."""
    if is_main_process():
        print(f"[tokrl] {message}", flush=True)


def error(message: str) -> None:
    """One `tokrl: error: ...` line on stderr, from the main process only (every rank hits the same error)."""
    if is_main_process():
        print(f"tokrl: error: {message}", file=sys.stderr, flush=True)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes):
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def quiet_third_party() -> None:
    """Silence IRRELEVANT_WARNINGS and IRRELEVANT_LOGS for this process (the CLI calls it unless --verbose).

    A filter on a named logger survives the library creating that logger later (logging.getLogger returns the
    same object), so this works before DeepSpeed is imported."""
    for category, message in IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefixes in IRRELEVANT_LOGS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))
