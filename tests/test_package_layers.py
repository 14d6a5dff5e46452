"""The packages of ``services/`` stay in layers (docs/architecture.md): each imports only packages below
it, so none imports one that imports it back. Every import counts, a function's or a type checker's too."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SERVICES = Path(__file__).resolve().parent.parent / "services"

# Lower numbers sit below higher ones; a package imports only packages of a lower rank.
RANKS = {
    "contract": 0,
    "shared": 1,
    "publisher": 2, "router": 2, "delivery": 2, "devtools": 2,
    "replay": 3,  # recover re-routes events with router/core
    "ops": 4,
    "console": 5,
    "admin": 6,
    "demo": 7,
}
ROOT = "services"  # services/cli.py and services/run.py: the composition root, above every package


def _package_of(path: Path) -> str:
    parts = path.relative_to(SERVICES).parts
    return parts[0] if len(parts) > 1 else ROOT


def _imported(tree: ast.AST) -> set[str]:
    """The packages of ``services`` that a module's import statements name."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "services" and len(parts) > 1 and (SERVICES / parts[1]).is_dir():
                found.add(parts[1])
    return found


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) package pairs, each with the modules that make it."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SERVICES.rglob("*.py")):
        source = _package_of(path)
        for target in _imported(ast.parse(path.read_text(), str(path))) - {source}:
            edges[(source, target)].append(str(path.relative_to(SERVICES.parent)))
    return edges


def test_every_package_has_a_place_in_the_layers() -> None:
    packages = {p.name for p in SERVICES.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(RANKS), "add the new package to RANKS (and to docs/architecture.md)"


def test_each_package_imports_only_packages_below_it() -> None:
    upward = [f"{a} -> {b} ({', '.join(files)})" for (a, b), files in _edges().items()
              if a != ROOT and RANKS[b] >= RANKS[a]]
    assert upward == []


def test_no_package_imports_one_that_imports_it_back() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in _edges():
        graph[a].add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph[start])

    cycles = sorted(f"{a} -> {b} -> ... -> {a}" for a in list(graph) for b in graph[a] if reaches(b, a, {b}))
    assert cycles == []
