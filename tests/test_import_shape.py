"""Import shape (issue 14, item 7): every module imports, no import cycle, core/ sits below the rest,
no back-import hidden inside a function of core/ or kernels/, and no module over 500 lines.

The graph is read from the source with ``ast``: an edge ``a -> b`` for every ``import`` of a
``torch_prune_ext`` module ``b`` in ``a``, plus ``a -> p`` for every package ``p`` above ``b`` (Python
runs a package's ``__init__`` before its submodule), except the packages above ``a`` itself.
Imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
import importlib
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torch_prune_ext"

#: The longest a module may be (the project's style guide).
MAX_LINES = 500

#: Modules not imported by test_every_module_imports, and why.
NOT_IMPORTED = {
    "torch_prune_ext.__main__": "runs the command line when imported",
    "torch_prune_ext.kernels._triton_src": "imports triton, which reads TRITON_INTERPRET once, at its import",
    "torch_prune_ext.kernels._triton_conv_src": "imports triton, which reads TRITON_INTERPRET once, at its import",
}

#: Function-level imports of the package allowed in core/ and kernels/, and why.
LAZY_ALLOWED = {
    "torch_prune_ext.kernels._triton_src": "imports triton: loaded on the first kernel launch",
    "torch_prune_ext.kernels._triton_conv_src": "imports triton: loaded on the first kernel launch",
}

#: The packages core/ may import: it is the base the methods, kernels and harness build on.
CORE_MAY_IMPORT = ("torch_prune_ext.core", "torch_prune_ext.errors")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, (ast.Name, ast.Attribute)) and ast.unparse(test).endswith("TYPE_CHECKING")


def imported_modules(importer: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The package's modules that ``node`` in module ``importer`` runs, with the packages above them."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        is_package = MODULES[importer].name == "__init__.py"
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        if node.level:
            base = base[: len(base) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]
    found = set()
    for target in (t for t in targets if t in MODULES):
        parts = target.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in found if not (importer == m or importer.startswith(m + "."))}


def _top_level(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With)) and not _is_type_checking(node):
            for block in ("body", "orelse", "finalbody"):
                found += _top_level(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                found += _top_level(handler.body)
    return found


def _in_functions(tree: ast.Module) -> list[tuple[str, ast.Import | ast.ImportFrom]]:
    found = []
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [(func.name, node) for node in ast.walk(func) if isinstance(node, (ast.Import, ast.ImportFrom))]
    return found


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(encoding="utf-8"))


@cache
def import_graph(with_function_level: bool) -> dict[str, frozenset[str]]:
    graph = {}
    for module in MODULES:
        nodes = _top_level(_tree(module).body)
        if with_function_level:
            nodes += [node for _, node in _in_functions(_tree(module))]
        graph[module] = frozenset(set().union(*(imported_modules(module, n) for n in nodes)))
    return graph


def cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and MODULES[module].name == "__init__.py") else "<top>"


SUBPACKAGES = sorted({_subpackage(m) for m in MODULES})


# --------------------------------------------------------------------------- the checker itself


def test_the_cycle_finder_finds_cycles_and_only_them():
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"}),
             "e": frozenset({"e"})}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_the_graph_sees_relative_imports_parent_packages_and_function_level_imports():
    top = import_graph(False)
    assert "torch_prune_ext.kernels.dispatch" in top["torch_prune_ext.kernels.conv"]  # from .dispatch import ...
    # from ..core.report import ...: the module and the package whose __init__ runs first
    assert {"torch_prune_ext.core", "torch_prune_ext.core.report"} <= top["torch_prune_ext.kernels.accelerate"]
    assert "torch_prune_ext.kernels" not in top["torch_prune_ext.kernels.conv"]  # its own package is no edge
    summary = "torch_prune_ext.evaluation.summary"
    assert "from .compare import" in MODULES[summary].read_text(encoding="utf-8")
    assert "torch_prune_ext.evaluation.compare" not in top[summary]  # only under TYPE_CHECKING
    lazy_only = import_graph(True)["torch_prune_ext.kernels.triton_kernels"] - top["torch_prune_ext.kernels.triton_kernels"]
    assert lazy_only == {"torch_prune_ext.kernels._triton_src"}


# --------------------------------------------------------------------------- the package


@pytest.mark.parametrize("module", [m for m in MODULES if m not in NOT_IMPORTED])
def test_every_module_imports(module):
    assert importlib.import_module(module).__name__ == module


def test_module_level_imports_have_no_cycle():
    assert cycles(import_graph(False)) == []


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_no_cycle_even_through_function_level_imports(subpackage):
    touching = [c for c in cycles(import_graph(True)) if any(_subpackage(m) == subpackage for m in c)]
    assert touching == []


@pytest.mark.parametrize("subpackage", ["core", "kernels"])
def test_no_function_level_back_import(subpackage):
    lazy = [f"{module}.{func}: imports {', '.join(sorted(targets))}"
            for module in MODULES if _subpackage(module) == subpackage
            for func, node in _in_functions(_tree(module))
            if (targets := imported_modules(module, node) - set(LAZY_ALLOWED))]
    assert lazy == []


def test_core_imports_only_core_and_errors():
    above = {f"{m} -> {t}" for m in MODULES if _subpackage(m) == "core"
             for t in import_graph(True)[m] if t != "torch_prune_ext" and not t.startswith(CORE_MAY_IMPORT)}
    assert above == set()


@pytest.mark.parametrize("path", [
    p for p in sorted(str(path.relative_to(PACKAGE)) for path in MODULES.values())
])
def test_module_is_at_most_500_lines(path):
    lines = len((PACKAGE / path).read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path} has {lines} lines; split it by job"
