"""The package reads top to bottom: module-level imports form no cycle and only point down the layers.

Built from the source (AST), so a cycle hidden inside a function body counts too: a function-level import is
allowed only where it defers a heavy optional dependency and says so in a `# deferred:` comment.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tokrl"

# Bottom to top; a module may import its own layer or a lower one. Longest prefix wins.
LAYERS = [
    ("base", ["tokrl.utils", "tokrl.console", "tokrl.config_ranges", "tokrl.model_head", "tokrl.recipe", "tokrl.models",
              "tokrl.data", "tokrl.rewards", "tokrl.evaluation"]),
    ("weighting", ["tokrl.weighting", "tokrl"]),
    ("scoring", ["tokrl.scoring"]),
    ("diagnostics", ["tokrl.diagnostics", "tokrl.run_dir"]),
    ("trainers", ["tokrl.trainers"]),
    ("pipelines", ["tokrl.pipelines", "tokrl.runs", "tokrl.reports", "tokrl.compare"]),
    ("commands", ["tokrl.commands", "tokrl.cli", "tokrl.__main__"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    return rank


def imported(module: str, node) -> list[str]:
    """The tokrl modules an import statement loads (a `from pkg import sub` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "tokrl"]
    base = node.module or ""
    if node.level:
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != "tokrl":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def import_nodes(tree):
    """(node, at module level) for every import statement; `if TYPE_CHECKING:` blocks are skipped."""
    def walk(node, top):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, top
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, False)
            else:
                yield from walk(child, top)

    yield from walk(tree, True)


def graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module-level import graph over tokrl, and the function-level imports that lack a `# deferred:` note."""
    edges, undeclared = {}, []
    for module, path in MODULES.items():
        source = path.read_text()
        lines = source.splitlines()
        edges[module] = set()
        for node, top in import_nodes(ast.parse(source)):
            if top:
                edges[module].update(t for t in imported(module, node) if t != module)
            elif "# deferred:" not in lines[node.lineno - 1]:
                undeclared.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    return edges, undeclared


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_module_level_imports_form_no_cycle():
    edges, _ = graph()
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_imports_point_down_the_layers_and_nothing_below_commands_imports_commands():
    edges, _ = graph()
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
              for m, targets in edges.items() for t in sorted(targets) if layer_of(t) > layer_of(m)]
    assert upward == []
    assert not [m for m, targets in edges.items() if not m.startswith(("tokrl.commands", "tokrl.cli"))
                and any(t.startswith("tokrl.commands") for t in targets)]


def test_function_level_imports_only_defer_heavy_optional_dependencies():
    _, undeclared = graph()
    assert undeclared == []


def test_the_checks_catch_what_they_are_for():
    """The cycle finder and the layer map on a made-up graph: a cycle is found, an upward import is named."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert layer_of("tokrl.trainers.weighted_grpo") > layer_of("tokrl.scoring.head") > layer_of("tokrl.weighting.base")
    assert layer_of("tokrl.commands.train") == len(LAYERS) - 1
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("elsewhere.module")
