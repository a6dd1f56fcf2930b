"""`tokrl` command line: one subcommand per module in `tokrl.commands`, errors as one readable line."""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path

from tokrl.console import error, quiet_third_party

# name -> module; each module has HELP, add_arguments(parser) and run(args) -> int. Only the command being run is
# imported (the others' HELP is read from their source), so `tokrl --help` stays fast and a missing optional extra
# breaks only its own command.
COMMANDS = {
    "train": "tokrl.commands.train",
    "eval": "tokrl.commands.eval",
    "demo": "tokrl.commands.demo",
    "validate": "tokrl.commands.validate",
    "plot": "tokrl.commands.plot",
    "inspect": "tokrl.commands.inspect",
    "cdpo": "tokrl.commands.cdpo",
    "dpo": "tokrl.commands.dpo",
    "treg": "tokrl.commands.treg",
    "clean": "tokrl.commands.clean",
    "score": "tokrl.commands.score",
    "compare": "tokrl.commands.compare",
}


def _available() -> dict:
    return {name: path for name, path in COMMANDS.items() if importlib.util.find_spec(path) is not None}


def _help(path: str) -> str:
    """A command module's HELP string, read from its source without importing the module."""
    for node in ast.parse(Path(importlib.util.find_spec(path).origin).read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "HELP" for t in node.targets):
            return ast.literal_eval(node.value)
    return ""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported and given its arguments (None: every command's)."""
    parser = argparse.ArgumentParser(prog="tokrl", description="Token-level credit assignment for RL fine-tuning.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--verbose", action="store_true", help="keep third-party warnings tokrl hides by default")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, path in _available().items():
        if command is not None and name != command:
            sub.add_parser(name, help=_help(path))
            continue
        module = importlib.import_module(path)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="keep third-party warnings tokrl hides by default")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--verbose" not in argv:  # before the command modules import anything that warns
        quiet_third_party()
    parser = build_parser(next((a for a in argv if not a.startswith("-")), ""))
    args, extra = parser.parse_known_args(argv)
    # `tokrl train R.yaml --resume k=v`: overrides may come after the flags, as they may before them
    trailing = next((name for name in ("overrides", "recipes") if hasattr(args, name)), None)
    if extra and trailing and all("=" in e and not e.startswith("-") for e in extra):
        setattr(args, trailing, list(getattr(args, trailing)) + extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except Exception as exc:  # one readable line; --debug shows the traceback
        if getattr(args, "debug", False):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        kind = "" if type(exc).__name__ in ("RecipeError",) else f"{type(exc).__name__}: "
        error(f"{kind}{message} (run with --debug for the traceback)")
        return 2


if __name__ == "__main__":
    sys.exit(main())
