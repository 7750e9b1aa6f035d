"""The package is a stack that only looks down, and its import graph has no cycle.

Every ``import`` of lrn/ is read from the source (function-level imports included), so an
upper layer imported lazily from a lower one fails here too."""

from __future__ import annotations

import ast
from pathlib import Path

import lrn

PACKAGE = Path(lrn.__file__).parent
#: the layers, bottom up; a module may import its own layer or any below it
LAYERS = [
    {"lrn.allocator", "lrn.paths", "lrn.ops"},
    {"lrn.functional"},
    {"lrn.modules", "lrn"},  # the top-level facade re-exports the modules
    {"lrn.tasks"},
    {"lrn.train"},
    {"lrn.predict"},
    {"lrn.analysis", "lrn.bench", "lrn.compare", "lrn.demo"},
    {"lrn.cli", "lrn.__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, name: str, is_package: bool = False) -> set[str]:
    """Every lrn module or name that the source of module ``name`` imports, anywhere in it."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "lrn" or m.startswith("lrn.")}


def layer_of(module: str) -> int:
    for level, members in enumerate(LAYERS):
        if any(module == m or (m != "lrn" and module.startswith(m + ".")) for m in members):
            return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py"):
            while imported not in modules and "." in imported:  # `from pkg import name` names a symbol
                imported = imported.rpartition(".")[0]
            if imported in modules and imported != name:
                targets.add(imported)
        edges[name] = targets
    return edges


def test_every_import_looks_down_the_stack():
    upward = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
              for a, targets in graph().items() for b in targets if layer_of(b) > layer_of(a)]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target] if target in path else path + [node, target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start, [start])
            assert cycle is None, " -> ".join(cycle)


def test_the_checks_see_a_lazy_relative_upward_import():
    source = "def f():\n    from lrn.train import train\n    from ..predict import load_run\n"
    found = imports_of(source, "lrn.tasks.base")
    assert {"lrn.train", "lrn.predict"} <= found
    assert all(layer_of(m) > layer_of("lrn.tasks.base") for m in ("lrn.train", "lrn.predict"))
