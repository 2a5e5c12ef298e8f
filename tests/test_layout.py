"""The package's layering, read off the source: the engine, the agents, change detection and
the stores never import pytest (the replay harness and the CLI drive the same code), the
engine imports nothing else of the package, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_qlearn"
PYTEST_FREE = ("engine", "agents", "changes", "store", "replay", "session", "keeping")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Absolute names of what ``path`` imports (``from . import x`` counts as ``pkg.x`` when
    that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if module_path(candidate) is not None:
                    found.add(candidate)
    return found


def module_path(name: str) -> Path | None:
    if not name.startswith("pytest_qlearn"):
        return None
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    rel = Path(*parts)
    for path in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if path.is_file():
            return path
    return None


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if p.relative_to(PACKAGE).parts[0].removesuffix(".py") in PYTEST_FREE],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_the_engine_agents_changes_and_stores_never_import_pytest(path: Path) -> None:
    names = imports(path, top_level_only=False)
    assert not {n for n in names if n.split(".")[0] in ("pytest", "_pytest", "pluggy")}


@pytest.mark.parametrize("path", sorted((PACKAGE / "engine").glob("*.py")), ids=lambda p: p.name)
def test_the_engine_imports_nothing_else_of_the_package(path: Path) -> None:
    inside = {n for n in imports(path, top_level_only=False) if n.startswith("pytest_qlearn")}
    assert all(n.startswith("pytest_qlearn.engine") for n in inside), inside


def test_no_import_cycles_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        targets = set()
        for name in imports(path, top_level_only=True):
            target = module_path(name)
            if target is not None and target != path:
                targets.add(module_name(target))
        graph[module_name(path)] = targets
    # ``from . import x`` names the enclosing package too; only x is the real edge
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*trail, nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if state.get(start) is None and visit(start, [start]):
            break
    assert not cycle, " -> ".join(cycle)


def room(module: str) -> str:
    """The package a module belongs to (top-level modules are rooms of their own)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_rooms_of_the_package_form_layers() -> None:
    """Between packages too, dependencies go one way: the engine at the bottom, change
    detection and the stores on it, the agents on those (no room imports one that imports
    it back)."""
    edges: set[tuple[str, str]] = set()
    for path in MODULES:
        source = room(module_name(path))
        for name in imports(path, top_level_only=False):
            target = module_path(name)
            if target is not None and target != PACKAGE / "__init__.py":
                destination = room(module_name(target))
                if destination != source:
                    edges.add((source, destination))
    rooms = ("engine", "changes", "store", "agents")
    both_ways = sorted((a, b) for a, b in edges if (b, a) in edges and a in rooms and b in rooms)
    assert not both_ways
    assert not {b for a, b in edges if a == "engine"}
