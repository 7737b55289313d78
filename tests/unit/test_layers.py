"""Design rules kept as tests, read from the source (imports inside functions included):
the top-level folders import one way (tasks -> {imagebuild, envcheck, bench, report} -> trainer
-> core), and no module of ours is part of an import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# who may import whom; anything not listed is an upward or sideways import. envcheck may use
# bench's launchers (envcheck --nodes runs its checks on every node through them); bench must
# not import envcheck back.
ALLOWED = {
    "tasks": {"imagebuild", "envcheck", "bench", "report", "trainer", "core"},
    "imagebuild": {"envcheck", "core"},
    "envcheck": {"bench", "core"},
    "report": {"core"},
    "bench": {"trainer", "core"},
    "trainer": {"core"},
    "core": set(),
}
PACKAGES = [p for p in ALLOWED if p != "tasks"]


def modules() -> dict[str, Path]:
    out = {"tasks": ROOT / "tasks.py"}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Our modules that `name` imports anywhere in its source (from x import y: x.y when that is a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name.removeprefix("stackbench.") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (node.module or "").removeprefix("stackbench.")
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, name, known) for name, path in known.items()}


def test_folders_import_one_way():
    bad = sorted(f"{mod} imports {dep}" for mod, deps in graph().items() for dep in deps
                 if dep.split(".")[0] != mod.split(".")[0] and dep.split(".")[0] not in ALLOWED[mod.split(".")[0]])
    assert not bad, "imports against the layers:\n  " + "\n  ".join(bad)


def test_the_allowed_folder_imports_form_no_circle():
    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"circle: {' -> '.join(path + (node,))}"
        for dep in ALLOWED[node]:
            visit(dep, path + (node,))

    for folder in ALLOWED:
        visit(folder, ())


def test_no_module_is_in_an_import_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_the_walk_sees_imports_inside_functions():
    """The rule would be empty if function-level imports were missed: bench/fit.py imports trainer.models
    inside a method."""
    assert "trainer.models" in graph()["bench.fit"]
