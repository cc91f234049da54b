"""docs/ARCHITECTURE.md is true: its layer table matches the imports, and its rules hold."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "idcscan"
DOC = ROOT / "docs" / "ARCHITECTURE.md"
TORCH = {"torch", "torchvision", "timm", "lightning"}
NO_TORCH = ("server", "cohorts", "maps", "slides", "runtime", "evaluation")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def imports(path: Path) -> set[str]:
    """Every name a file imports, at the top or inside a function, in full (``from a import b``
    gives ``a.b``: a submodule, or a name that ``own`` traces to its module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
IMPORTS = {name: imports(path) for name, path in MODULES.items()}


def own(name: str) -> str | None:
    """The project module an imported name refers to (a module, or a name inside one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or f"idcscan.{parts[1]}" in MODULES and not (
            PACKAGE / parts[1]).is_dir():
        return "core"
    return parts[1]


def documented_layers() -> dict[str, set[str]]:
    rows = re.findall(r"^\| (`\w+/`|core) \|[^|]*\|\s*([^|]*?)\s*\|$", DOC.read_text(), re.M)
    assert rows, "the layer table was not found in docs/ARCHITECTURE.md"
    return {name.strip("`/"): {x.strip() for x in deps.split(",") if x.strip()}
            for name, deps in rows}


def test_the_layer_table_is_the_code() -> None:
    actual: dict[str, set[str]] = defaultdict(set)
    for module, names in IMPORTS.items():
        for name in names:
            target = own(name) if name.startswith("idcscan") else None
            if target and layer(target) != layer(module):
                actual[layer(module)].add(layer(target))
    drawn = documented_layers()
    assert set(drawn) >= set(actual), "a folder is missing from the table"
    for folder, deps in drawn.items():
        assert actual.get(folder, set()) == deps, f"{folder}: the table says {sorted(deps)}, " \
            f"the code imports {sorted(actual.get(folder, set()))}"


def test_no_import_circles() -> None:
    graph = {m: {t for n in names if n.startswith("idcscan") and (t := own(n)) and t != m}
             for m, names in IMPORTS.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                part.append(top)
                if top == node:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == []


@pytest.mark.parametrize("folder", NO_TORCH)
def test_serving_side_never_imports_torch(folder: str) -> None:
    reached = set()
    todo = [m for m in MODULES if layer(m) == folder]
    while todo:  # everything these modules import from the project, transitively
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        todo.extend(t for n in IMPORTS[module] if n.startswith("idcscan") and (t := own(n)))
    offenders = {m for m in reached if {n.split(".")[0] for n in IMPORTS[m]} & TORCH}
    assert offenders == set()


def test_evaluation_never_imports_training() -> None:
    for module, names in IMPORTS.items():
        if layer(module) == "evaluation":
            assert not any(n.startswith("idcscan.training") for n in names), module


def test_only_the_cli_knows_typer_and_only_the_server_fastapi() -> None:
    for module, names in IMPORTS.items():
        tops = {n.split(".")[0] for n in names}
        if layer(module) != "cli":
            assert "typer" not in tops, module
        if layer(module) != "server":
            assert not tops & {"fastapi", "starlette", "uvicorn"}, module


def test_rooms_stay_small() -> None:
    folders: dict[Path, int] = defaultdict(int)
    for path in MODULES.values():
        folders[path.parent] += 1
        assert len(path.read_text().splitlines()) <= 450, path
    assert max(folders.values()) <= 15, {str(k): v for k, v in folders.items() if v > 15}
