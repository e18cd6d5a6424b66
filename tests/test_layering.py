"""The package layering of llmc: every import (module level or inside a function) points down or
sideways in :data:`LAYERS`, and no two packages import each other, directly or in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import llmc

ROOT = Path(llmc.__file__).parent

# Lowest first. A unit may import units of its own layer or below; "llmc" is the package's __init__.
LAYERS: list[set[str]] = [
    {"llmc.errors", "llmc.version", "llmc.safe_text", "llmc.templating", "llmc.manifest", "llmc.folders", "llmc.sizes"},
    {"llmc.ir"},
    {"llmc.generate", "llmc.io", "llmc.data", "llmc.report"},
    {"llmc.compiler", "llmc.model"},
    {"llmc.backends"},
    {"llmc.sim"},
    {"llmc.deploy", "llmc.sweep"},
    {"llmc.cli", "llmc"},
]
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str, depth: int = 2) -> str:
    """The package (``llmc.ir``) or top-level module (``llmc.model``) a module belongs to."""
    return ".".join(module.split(".")[:depth])


def llmc_imports() -> dict[str, set[str]]:
    """Module -> the llmc modules it imports, anywhere in its text."""
    imports: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        found = imports.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "llmc"}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] == "llmc":
                    found.add(node.module)
    return imports


def unit_graph(depth: int) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in llmc_imports().items():
        edges = graph.setdefault(unit_of(module, depth), set())
        edges |= {unit_of(t, depth) for t in targets} - {unit_of(module, depth)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m in llmc_imports()}
    assert units - set(LAYER_OF) == set(), "add the new package or module to LAYERS"


def test_imports_point_down():
    upward = [f"{module} imports {target}"
              for module, targets in llmc_imports().items() for target in sorted(targets)
              if LAYER_OF[unit_of(target)] > LAYER_OF[unit_of(module)]]
    assert upward == []


def test_no_import_cycles_between_packages():
    assert cycles(unit_graph(2)) == []
    assert cycles(unit_graph(3)) == []  # nor between subpackages (compiler.frontend, backends.fpga, ...)


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
