"""Design rules kept as tests, read from the source (imports inside functions included, and the
modules a subprocess is started with: `[python, "-m", "stackbench.trainer", ...]`):

- the rooms depend one way: recipes -> tasks -> the command line (stackbench/cli) -> {imagebuild,
  envcheck, bench, report} -> trainer -> core; inside bench, the sweeps -> planning -> launchers.
  What two rooms share lives a layer down. One sideways dependency is named: envcheck --nodes runs
  its checks on every node through bench's launcher factory (bench.launchers.make), and nothing
  else of bench;
- nothing imports a room by its bare name (`trainer`, `core`): always `stackbench.<room>`, so a
  user's own `trainer/` on sys.path never shadows ours and no class is loaded twice;
- no module of ours is part of an import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

ROOMS = ("bench", "core", "envcheck", "imagebuild", "report", "trainer")
# who may depend on whom (a room's sub-room is named by its dotted path); anything else is upward or sideways
ALLOWED = {
    "stackbench": {"cli"},  # python -m stackbench
    "tasks": {"cli"},
    "cli": {"imagebuild", "envcheck", "bench", "bench.planning", "bench.launchers", "report", "trainer", "core"},
    "recipes": {"tasks", "envcheck"},
    "imagebuild": {"core"},
    "envcheck": {"core", "bench.launchers"},  # the one sideways dependency: --nodes through the launcher factory
    "report": {"core"},
    "bench": {"bench.planning", "bench.launchers", "trainer", "core"},
    "bench.planning": {"bench.launchers", "trainer", "core"},
    "bench.launchers": {"trainer", "core"},
    "trainer": {"core"},
    "core": set(),
}
SIDEWAYS = {("envcheck", "bench.launchers")}
LAYER = {"recipes": 5, "tasks": 4, "stackbench": 4, "cli": 3, "imagebuild": 2, "envcheck": 2, "bench": 2, "report": 2,
         "trainer": 1, "core": 0}  # by top-level room


def room(module: str) -> str:
    """The room a module lives in: its longest prefix that ALLOWED names."""
    parts = module.split(".")
    return next(".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in ALLOWED)


def modules() -> dict[str, Path]:
    """Our modules by their name under stackbench (bench.main, trainer.run, cli.user), plus tasks and recipes."""
    out = {"tasks": ROOT / "tasks.py", "stackbench": ROOT / "stackbench" / "__init__.py",
           "stackbench.__main__": ROOT / "stackbench" / "__main__.py"}
    out |= {f"cli.{p.stem}".removesuffix(".__init__"): p for p in (ROOT / "stackbench" / "cli").glob("*.py")}
    out |= {f"recipes.{p.stem}": p for p in (ROOT / "recipes").glob("*.py")}
    for pkg in ROOMS:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _ours(name: str) -> str:
    return name.removeprefix("stackbench.") if name.startswith("stackbench.") else name


def subprocess_targets(tree: ast.AST) -> set[str]:
    """The modules a list literal starts with `-m`: [sys.executable, "-m", "stackbench.trainer", ...]."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)):
            items = node.elts
            for a, b in zip(items, items[1:]):
                if isinstance(a, ast.Constant) and a.value == "-m" and isinstance(b, ast.Constant) \
                        and isinstance(b.value, str):
                    found.add(b.value)
    return found


def imports_of(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Our modules that `name` imports anywhere in its source (from x import y: x.y when that is a
    module), and those it starts as a subprocess with -m."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [_ours(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _ours(node.module or "")
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= set(targets)
    found |= {_ours(t) for t in subprocess_targets(tree)}
    out = set()
    for target in found:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, name, known) for name, path in known.items()}


def test_rooms_depend_one_way():
    bad = sorted(f"{mod} uses {dep}" for mod, deps in graph().items() for dep in deps
                 if room(dep) != room(mod) and room(dep) not in ALLOWED[room(mod)])
    assert not bad, "dependencies against the layers:\n  " + "\n  ".join(bad)


def test_the_one_sideways_dependency_goes_through_the_launcher_factory():
    """envcheck uses bench.launchers' package (its make() and LaunchOptions) and nothing deeper."""
    used = {dep for mod, deps in graph().items() if room(mod) == "envcheck" for dep in deps if room(dep) != "envcheck"}
    assert {d for d in used if d.startswith("bench")} == {"bench.launchers"}
    top = {r: r.split(".")[0] for r in ALLOWED}
    sideways = {(a, b) for a, deps in ALLOWED.items() for b in deps
                if top[a] != top[b] and LAYER[top[b]] >= LAYER[top[a]]}
    assert sideways == SIDEWAYS


def test_the_allowed_room_dependencies_form_no_circle():
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


def test_nothing_imports_a_room_by_its_bare_name():
    """`from trainer import x` would load a second copy of our classes beside stackbench.trainer's,
    or a user's own trainer/ package: every import says stackbench.<room> (tests' included)."""
    files = [*modules().values(), *(ROOT / "tests").rglob("*.py")]
    bad = []
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in [tree, *ast.walk(tree)]:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else \
                sorted(subprocess_targets(tree)) if node is tree else []
            bad += [f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}: {n}" for n in names
                    if n.split(".")[0] in ROOMS]
    assert not bad, "bare room imports:\n  " + "\n  ".join(bad)


def test_the_walk_sees_imports_inside_functions_and_subprocess_targets():
    """The rules would be empty if function-level imports or -m targets were missed."""
    g = graph()
    assert "trainer.models" in g["bench.planning.fit"]  # imported inside a method
    assert "trainer" in g["bench.launchers.contract"]  # [python, "-m", "stackbench.trainer", ...]
    assert "tasks" in g["recipes.gpu_reference"]  # the recipe drives the public command line
