"""The house's layering, checked on the source: imports point down only, and no module-level cycles.

bench -> search -> harness -> kernels -> common; search never reaches harness (the objective in
bench/pipeline joins them). A function may import lazily, but never from a layer above its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "kernels", "harness", "search", "bench")
# What each package may import from the project (lazily or not).
ALLOWED = {
    "common": set(),
    "kernels": {"common"},
    "harness": {"common", "kernels"},
    "search": {"common"},
    "bench": {"common", "kernels", "harness", "search", "bench"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Project modules imported by ``path`` (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "results" not in p.parts)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    layer = path.relative_to(ROOT).parts[0]
    wrong = {m for m in _imports(path, top_level_only=False)
             if m.split(".")[0] != layer and m.split(".")[0] not in ALLOWED[layer]}
    assert not wrong, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(wrong)}"


def test_no_module_level_import_cycles():
    modules = {_module_name(p): p for p in _sources()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, top_level_only=True):
            # "pkg.mod.name" may name a module or an attribute of one: keep the longest module.
            parts = imported.split(".")
            for cut in range(len(parts), 0, -1):
                candidate = ".".join(parts[:cut])
                if candidate in modules and candidate != name:
                    targets.add(candidate)
                    break
        # A package's __init__ importing its own submodules is how packages are built, not a cycle.
        graph[name] = {t for t in targets if not t.startswith(name + ".")}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_bench_files_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / "bench").rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 500}
    assert not big, f"files in bench/ over 500 lines: {big}"
