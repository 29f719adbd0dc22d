"""The package's structure: one owner per concept (issue 19).

Both checks read the source with :mod:`ast`; nothing is imported or run.

- The run folder's file names (``checkpoint.pt``, ``config.json``, ``history.csv``,
  ``health.csv``) are spelled in :mod:`napari_ssl_radiomics.core.runs` alone: everyone else
  uses its constants or its :class:`~napari_ssl_radiomics.core.runs.RunFolder`.
- The import graph (every ``import``, at module level or inside a function, relative imports
  resolved; not the annotations-only imports under ``if TYPE_CHECKING:``, which never run)
  has no cycle; ``core/`` imports nothing from ``widgets/`` or ``cli/``; and
  ``widgets/`` imports nothing from the pipeline module (``core/pipeline.py``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = "napari_ssl_radiomics"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
RUN_FILES = ("checkpoint.pt", "config.json", "history.csv", "health.csv")
OWNER = f"{PACKAGE}.core.runs"
#: a run file's name as a word of its own (``supervised_history.csv`` is another file)
RUN_FILE = re.compile(r"(?<![\w.])(" + "|".join(re.escape(name) for name in RUN_FILES) + r")\b")


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module and of its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def run_file_literals(modules: dict[str, Path]) -> list[str]:
    """``module:line: text`` of every string in code (not a docstring) naming a run-folder file."""
    hits = []
    for name, path in modules.items():
        if name == OWNER:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if RUN_FILE.search(node.value):
                    hits.append(f"{name}:{node.lineno}: {node.value[:80]!r}")
    return hits


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at run time (anywhere in its source)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        annotations_only = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in annotations_only:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", node)
                for alias in node.names:  # `from . import x` names a module when x is one
                    sub = f"{target}.{alias.name}"
                    targets.add(sub if sub in modules else target)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_run_folder_file_names_are_spelled_in_core_runs_only():
    modules = _modules()
    assert run_file_literals(modules) == []
    assert OWNER in modules


def test_import_graph_has_no_cycle_and_no_upward_arrow():
    modules = _modules()
    graph = import_graph(modules)
    assert graph[f"{PACKAGE}.widgets.features"], "the graph finds the widgets' imports"
    assert cycles(graph) == []
    core, widgets, cli = f"{PACKAGE}.core", f"{PACKAGE}.widgets", f"{PACKAGE}.cli"
    upward = [
        f"{m} -> {t}"
        for m, targets in graph.items()
        if m.startswith(core + ".") or m == core
        for t in targets
        if t.startswith((widgets, cli))
    ]
    assert upward == []
    pipeline = f"{PACKAGE}.core.pipeline"
    from_widgets = [
        f"{m} -> {t}" for m, targets in graph.items() if m.startswith(widgets) for t in targets if t == pipeline
    ]
    assert from_widgets == []
