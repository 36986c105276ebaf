"""The apps' imports point one way, and no app's modules import each other in a cycle (DESIGN.md, Layout).

Every module of every app is parsed (``ast``, nothing is imported), and every
import statement counts, those inside functions too:

- **Layers.** ``config`` is below every app; then ``consent`` <- ``experiments``
  <- ``recommender`` <- ``marketplace``: a module may import its own app and
  the apps below it. A lower app reaches a higher one through a registry the
  higher app fills in at start-up (``consent.registry``, ``recommender.datasets``).
- **The stats engine.** ``experiments.stats`` imports nothing from Django (or
  the Django packages) or any app but itself, so it runs in a notebook.
- **No cycles inside an app.** Between the modules of one app, the imports run
  at import time (module level, class bodies; not inside functions, not under
  ``if TYPE_CHECKING:``) form no cycle; nor do they with the imports inside
  functions added (a runtime cycle: a module that queues its app's task by
  name, ``config.task_registry``, instead of importing the tasks module back).

A failure names each offending import as ``path:line``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]
# Lowest first: a module may import its own package and those before it.
LAYERS = ("config", "consent", "experiments", "recommender", "marketplace")
STATS = "experiments.stats"
# Django and the packages built on it: the stats engine imports none of them.
FRAMEWORK_PACKAGES = frozenset({"celery", "kombu", "pgtrigger", "rules", "axes", "csp", "whitenoise"})
FRAMEWORK_PREFIXES = ("django", "rest_framework", "drf_spectacular")


@dataclass(frozen=True)
class Import:
    path: str  # relative to the root
    line: int
    source: str  # the importing module
    target: str  # the module imported (a submodule when ``from package import submodule``)
    at_import_time: bool  # module level or a class body, not inside a function or ``if TYPE_CHECKING:``
    type_checking: bool = False  # under ``if TYPE_CHECKING:``: never run

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(
    node: ast.AST, at_import_time: bool = True, type_checking: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import statement under ``node``: whether it runs when the module is imported, and
    whether it is only for the type checker (under ``if TYPE_CHECKING:``, never run)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, at_import_time, type_checking
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _import_nodes(child, False, type_checking)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                yield from _import_nodes(ast.Module(body=[statement], type_ignores=[]), False, True)
            for statement in child.orelse:
                yield from _import_nodes(ast.Module(body=[statement], type_ignores=[]), at_import_time, type_checking)
        else:
            yield from _import_nodes(child, at_import_time, type_checking)


def imports_of(root: Path, packages: tuple[str, ...]) -> list[Import]:
    """Every import in every module of ``packages`` (folders under ``root``)."""
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            files[path] = _module_name(path, root)
    modules = {name for name, _ in files.values()}
    found = []
    for path, (module, is_package) in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, at_import_time, type_checking in _import_nodes(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    package_parts = module.split(".") if is_package else module.split(".")[:-1]
                    package_parts = package_parts[: len(package_parts) - (node.level - 1)]
                    base = ".".join([*package_parts, *([node.module] if node.module else [])])
                # ``from package import submodule`` imports the submodule; ``from module import name``, the module.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            relative = path.relative_to(root).as_posix()
            for target in dict.fromkeys(targets):
                found.append(Import(relative, node.lineno, module, target, at_import_time, type_checking))
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def back_edges(imports: list[Import], layers: tuple[str, ...] = LAYERS) -> list[Import]:
    """The imports of a higher layer from a lower one."""
    rank = {name: index for index, name in enumerate(layers)}
    return [
        edge for edge in imports
        if _top(edge.target) in rank and rank[_top(edge.target)] > rank[_top(edge.source)]
    ]


def impure_stats_imports(imports: list[Import], layers: tuple[str, ...] = LAYERS) -> list[Import]:
    """The stats engine's imports of Django, a Django package or an app other than the engine itself."""

    def forbidden(target: str) -> bool:
        if target == STATS or target.startswith(STATS + "."):
            return False
        top = _top(target)
        return top in layers or top in FRAMEWORK_PACKAGES or top.startswith(FRAMEWORK_PREFIXES)

    return [
        edge for edge in imports
        if (edge.source == STATS or edge.source.startswith(STATS + ".")) and forbidden(edge.target)
    ]


def cycles(imports: list[Import], *, inside_functions: bool = False) -> list[list[Import]]:
    """Each cycle between the modules of one app, as the imports inside it.

    Import-time imports only, or with ``inside_functions`` those inside functions too
    (``if TYPE_CHECKING:`` imports never count: they do not run).
    """
    graph: dict[str, dict[str, Import]] = {}
    for edge in imports:
        counts = edge.at_import_time or (inside_functions and not edge.type_checking)
        if counts and edge.source != edge.target and _top(edge.source) == _top(edge.target):
            graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    # Tarjan's strongly connected components, iteratively (no recursion limit on a long chain).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, {})))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)
    return [
        sorted((edge for source in component for target, edge in graph.get(source, {}).items() if target in component),
               key=lambda edge: (edge.path, edge.line))
        for component in components
    ]


def _report(title: str, edges: list[Import]) -> str:
    return title + "\n" + "\n".join(f"  {edge}" for edge in edges)


# --- the project ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project_imports() -> list[Import]:
    return imports_of(ROOT, LAYERS)


def test_every_app_of_the_project_has_a_layer():
    apps = {_top(app) for app in settings.INSTALLED_APPS if (ROOT / _top(app)).is_dir()}
    assert apps, "no project app found in INSTALLED_APPS"
    assert apps <= set(LAYERS), f"add {sorted(apps - set(LAYERS))} to LAYERS, in its place"
    # The simulated marketplace is installed last: the one app that imports all the others.
    assert settings.INSTALLED_APPS[-1] == LAYERS[-1]


def test_no_app_imports_a_higher_one(project_imports):
    assert len(project_imports) > 100  # the walk found the apps' modules
    edges = back_edges(project_imports)
    assert not edges, _report(f"Back edges (allowed: {' <- '.join(LAYERS)}):", edges)


def test_the_stats_engine_imports_nothing_from_django_or_the_apps(project_imports):
    assert any(edge.source.startswith(STATS + ".") for edge in project_imports)
    edges = impure_stats_imports(project_imports)
    assert not edges, _report(f"{STATS} must stay pure (numpy, scipy, statsmodels, pandas):", edges)


def test_no_app_has_an_import_cycle_between_its_modules(project_imports):
    found = cycles(project_imports)
    assert not found, "\n".join(_report("Import cycle:", edges) for edges in found)


def test_no_app_has_a_runtime_import_cycle_through_imports_inside_functions(project_imports):
    found = cycles(project_imports, inside_functions=True)
    assert not found, "\n".join(_report("Import cycle (counting imports inside functions):", edges) for edges in found)


# --- the checks themselves, on a small made-up tree ------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_back_edge_inside_a_function_is_found_with_its_line(tmp_path):
    root = _tree(tmp_path, {
        "consent/__init__.py": "",
        "consent/services.py": '"""x."""\n\n\ndef f():\n    from experiments.models import Exposure\n    return Exposure\n',
        "experiments/__init__.py": "",
        "experiments/models.py": "from consent import services\n",
    })
    edges = back_edges(imports_of(root, ("consent", "experiments")), layers=("consent", "experiments"))
    assert [str(edge) for edge in edges] == ["consent/services.py:5: consent.services imports experiments.models"]


def test_relative_and_submodule_imports_resolve(tmp_path):
    root = _tree(tmp_path, {
        "experiments/__init__.py": "",
        "experiments/stats/__init__.py": "from . import report\n",
        "experiments/stats/report.py": "from ..models import Metric\nimport numpy\n",
        "experiments/models.py": "from django.db import models\n",
    })
    imports = imports_of(root, ("experiments",))
    assert {(edge.source, edge.target) for edge in imports} == {
        ("experiments.stats", "experiments.stats.report"),
        ("experiments.stats.report", "experiments.models"),
        ("experiments.stats.report", "numpy"),
        ("experiments.models", "django.db"),
    }
    assert [edge.line for edge in impure_stats_imports(imports, layers=("experiments",))] == [1]


def test_a_cycle_is_found_and_one_broken_by_a_function_level_import_is_not(tmp_path):
    root = _tree(tmp_path, {
        "recommender/__init__.py": "",
        "recommender/a.py": "from recommender import b\n",
        "recommender/b.py": "import recommender.c\n",
        "recommender/c.py": "from recommender.a import x\n",
        "recommender/d.py": "from recommender import e\n",
        "recommender/e.py": "def f():\n    from recommender import d\n",
        "recommender/f.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from recommender import g\n",
        "recommender/g.py": "from recommender import f\n",
    })
    found = cycles(imports_of(root, ("recommender",)))
    assert [[str(edge) for edge in edges] for edges in found] == [[
        "recommender/a.py:1: recommender.a imports recommender.b",
        "recommender/b.py:1: recommender.b imports recommender.c",
        "recommender/c.py:1: recommender.c imports recommender.a",
    ]]


def test_counting_imports_inside_functions_finds_the_runtime_cycle_but_not_a_type_checking_one(tmp_path):
    root = _tree(tmp_path, {
        "recommender/__init__.py": "",
        "recommender/d.py": "from recommender import e\n",
        "recommender/e.py": "def f():\n    from recommender import d\n",
        "recommender/f.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from recommender import g\n",
        "recommender/g.py": "from recommender import f\n",
    })
    found = cycles(imports_of(root, ("recommender",)), inside_functions=True)
    assert [[str(edge) for edge in edges] for edges in found] == [[
        "recommender/d.py:1: recommender.d imports recommender.e",
        "recommender/e.py:2: recommender.e imports recommender.d",
    ]]
