"""The package's layers, read from the source with ``ast`` (nothing is imported).

(a) A package imports only packages to its left in ``LAYERS``; (b) no two modules import each other,
directly or through others, counting imports inside functions too (a lazy import hides a cycle, it
does not remove it). The top-level ``clip2depth/__init__.py`` (re-exports) and ``__main__.py`` are exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import clip2depth.errors

SRC = Path(clip2depth.errors.__file__).resolve().parent
ROOT = "clip2depth"
LAYERS = ["errors", "typed", "io", "models", "data", "evaluation", "inference", "training", "reporting",
          "analysis", "app", "cli"]

def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Every ``clip2depth`` module that ``name`` imports anywhere in its file (functions included).

    ``from pkg import x`` counts as importing ``pkg.x`` when that is a module, else ``pkg``.
    """
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m != name}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    exempt = {ROOT, f"{ROOT}.__main__"}
    return {name: imported_modules(name, path, known) - exempt
            for name, path in modules.items() if name not in exempt}


def layer_of(module: str) -> str:
    return module.split(".")[1]


def test_every_package_is_a_known_layer() -> None:
    packages = {layer_of(m) for m in import_graph()}
    assert packages <= set(LAYERS), f"add {packages - set(LAYERS)} to LAYERS here and to README 'Layout'"


def test_no_package_imports_a_higher_layer() -> None:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = sorted(
        (src, dst)
        for src, targets in import_graph().items()
        for dst in targets
        if dst != ROOT and rank[layer_of(dst)] > rank[layer_of(src)]
    )
    assert not upward, "imports of a higher layer:\n" + "\n".join(f"  {s} -> {d}" for s, d in upward)


def test_only_the_command_line_imports_the_top_level_package() -> None:
    """``from clip2depth import create_model`` inside the library hides a models import in any layer."""
    users = sorted(src for src, targets in import_graph().items() if ROOT in targets and layer_of(src) != "cli")
    assert not users, f"import from the defining module instead: {users}"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_find_cycles_sees_direct_and_indirect_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": set(), "f": {"g"}, "g": {"f"}}
    assert find_cycles(graph) == [["a", "b", "c"], ["f", "g"]]


def test_imported_modules_counts_function_local_and_relative_imports(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("from . import sibling\n\ndef f():\n    from clip2depth.io import atomic\n")
    found = imported_modules("clip2depth.models.mod", module, {"clip2depth.models.sibling", "clip2depth.io.atomic"})
    assert found == {"clip2depth.models.sibling", "clip2depth.io.atomic"}


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (function-local imports count):\n" + "\n".join(
        "  " + " <-> ".join(c) for c in cycles)
