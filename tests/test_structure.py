"""The structure of the code: no import cycle among caltrail's modules (function-level imports
included: a cycle held together by an import inside a function is still a cycle), and no
import of another module's private name."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "caltrail"


def module_files() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (those under `if TYPE_CHECKING:` never do)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skipped
    ]


def import_graph() -> dict[str, set[str]]:
    modules = module_files()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level or not node.module or not node.module.startswith("caltrail"):
                    continue
                for alias in node.names:
                    found = resolve(f"{node.module}.{alias.name}") or resolve(node.module)
                    if found:
                        targets.add(found)
            else:
                targets.update(
                    t for a in node.names if a.name.startswith("caltrail") and (t := resolve(a.name))
                )
        targets.discard(name)
        # a module importing its own package's __init__ (re-exports) is no cycle of interest
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 40
    assert "caltrail.pipeline.materialize" in graph["caltrail.pipeline.session"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_across_modules() -> None:
    """`from caltrail.x import _name` reaches into another module's internals; a name another
    module needs is public (no underscore), which says it is part of that module's contract.
    (A private module such as parsers/trace/_etl_structs.py is imported whole: that is its
    package's own business.)"""
    offenders = []
    for name, path in module_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in runtime_imports(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("caltrail"):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and target not in module_files():
                        offenders.append(f"{name}: from {node.module} import {alias.name}")
    assert offenders == []


def function_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The runtime imports inside a function body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return [node for node in runtime_imports(tree) if id(node) in inside]


def test_every_function_level_import_says_why() -> None:
    """An import inside a function hides a dependency from the reader and from the import
    graph's first glance; outside the CLI modules (where each command imports what it needs,
    so that `caltrail --help` starts fast) it is allowed only with a comment on its line or
    on the line above saying why (a heavy or optional module, a child process that must not
    load it, a test hook)."""
    offenders = []
    for name, path in module_files().items():
        if path.name.startswith("cli"):
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in function_level_imports(ast.parse("\n".join(lines))):
            here, above = lines[node.lineno - 1], node.lineno - 2
            # a group of imports (blank lines between its parts) shares the comment above it
            while above >= 0 and (
                not lines[above].strip() or lines[above].strip().startswith(("from ", "import "))
            ):
                above -= 1
            if "#" not in here and not lines[above].strip().startswith("#"):
                offenders.append(f"{name}:{node.lineno}: {here.strip()}")
    assert offenders == [], "function-level imports without a why-comment:\n" + "\n".join(
        offenders
    )
