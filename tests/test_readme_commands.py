"""The README's command block, run in order as written, on the tiny model with tiny settings.

The recipes/ folder is copied into a scratch working directory with every recipe's model set to a saved tiny
model and its sizes shrunk (steps, prompts, samples, eval) where the recipe has those keys; a README override
`trainer.max_steps=N` becomes 1. Each command then runs through `tokrl.cli.main` exactly as the README spells it
(paths such as runs/quick are relative to the scratch directory). The test fails on the first command that fails.
"""

import shlex
from pathlib import Path

import yaml

from tokrl.cli import main

ROOT = Path(__file__).resolve().parents[1]


def even_checksum(completions, **kwargs):
    """A reward the tiny random model earns about half the time, so the pair pipelines find pairs."""
    return [float(sum(map(ord, str(c))) % 2 == 0) for c in completions]


TINY = {  # section -> key -> value, applied only where the recipe already has that key
    "task": {"num_train": 8, "num_eval": 2},
    "trainer": {"max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 6,
                "save_steps": 1, "logging_steps": 1, "max_length": 128, "gradient_accumulation_steps": 1,
                "num_train_epochs": 1},
    "reference_trainer": {"per_device_train_batch_size": 8, "logging_steps": 1},
    "eval": {"num_prompts": 2, "batch_size": 2, "max_new_tokens": 4, "num_samples": 2, "pass_k": [1, 2]},
    "sample": {"num_prompts": 4, "num_samples": 4, "max_new_tokens": 6, "batch_size": 8},
    "score": {"batch_size": 8, "max_context_length": 256},
    "cleaning": {"num_chunks": 2, "score_batch_size": 8},
    "baseline": {"dpo": False},
}
CORRUPTED = {"num_pool": 16, "num_trusted": 8}


def shrink(recipe: dict, model: str) -> dict:
    recipe["model"] = model
    for section, values in TINY.items():
        node = recipe.get(section)
        if isinstance(node, dict):
            node.update({k: v for k, v in values.items() if k in node})
    if isinstance(recipe.get("contrast"), dict) and isinstance(recipe["contrast"].get("trainer"), dict):
        recipe["contrast"]["trainer"].update(max_steps=1, per_device_train_batch_size=4, logging_steps=1)
    if recipe.get("method") in ("cdpo", "treg"):
        recipe["reward"] = "test_readme_commands:even_checksum"
    data = recipe.get("data") or {}
    if isinstance(data.get("corrupted_arithmetic"), dict):
        data["corrupted_arithmetic"].update(CORRUPTED)
        data["corrupted_arithmetic"].setdefault("task", {})["num_eval"] = 2
    return recipe


def readme_commands() -> list[list[str]]:
    """The fenced block of `.venv/bin/tokrl ...` lines under "Launching a recipe", comments dropped."""
    blocks, current = [], None
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            current = [] if current is None else blocks.append(current)
        elif current is not None:
            current.append(line)
    block = next(b for b in blocks if b and b[0].startswith(".venv/bin/tokrl train"))
    commands = []
    for line in block:
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == ".venv/bin/tokrl", line
            commands.append(words[1:])
    return commands


def test_every_readme_command_works_as_written(tmp_path, monkeypatch):
    from tokrl.models import save_tiny_model

    tiny = str(save_tiny_model(tmp_path / "tiny"))
    (tmp_path / "recipes").mkdir()
    for path in (ROOT / "recipes").glob("*.yaml"):
        recipe = yaml.safe_load(path.read_text())
        (tmp_path / "recipes" / path.name).write_text(yaml.safe_dump(shrink(recipe, tiny), sort_keys=False))
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert len(commands) >= 8 and commands[0][0] == "train"
    for words in commands:
        args = []
        for word in words:
            if "*" in word:  # the shell's glob
                args += sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob(word))
            elif word.startswith("trainer.max_steps="):
                args.append("trainer.max_steps=1")
            else:
                args.append(word)
        code = main(args)
        assert code == 0, f"README command failed: tokrl {' '.join(words)}"
    assert (tmp_path / "runs" / "quick" / "final").is_dir() and (tmp_path / "report.html").is_file()
