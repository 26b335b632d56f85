"""The layering rules: recsys_core never imports prefect; tasks are thin; flows are wiring; packages
import only the layers below them (recsys_core < tasks < flows < deployments, the CLI on top)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_prefect():
    offenders = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "recsys_core").rglob("*.py"))
        if {"prefect", "prefect_dask"} & _imports(p)
    ]
    assert offenders == [], f"recsys_core must not import prefect: {offenders}"


def test_core_modules_exist_and_scan_is_not_vacuous():
    files = list((REPO / "recsys_core").rglob("*.py"))
    assert len(files) > 20
    assert "prefect" in _imports(REPO / "tasks" / "steps.py")


def test_tasks_call_core_and_stay_thin():
    """Every task body is short: the work is in recsys_core."""
    tree = ast.parse((REPO / "tasks" / "steps.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Call) and getattr(d.func, "id", "") == "task"
            for d in node.decorator_list
        ):
            assert node.end_lineno - node.lineno < 20, f"task {node.name} is not thin"


def test_importing_core_does_not_import_prefect():
    import subprocess
    import sys

    code = (
        "import sys, recsys_core.pipeline, recsys_core.models, recsys_core.io;"
        "print('prefect' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "False"


def test_heavy_libraries_load_only_when_used():
    """matplotlib and scikit-optimize cost seconds to import on a loaded machine: the flow, the
    report digests the tasks publish and the tuning package load them only to draw or to search
    (a warm night that reuses its tuning never imports scikit-optimize)."""
    import subprocess
    import sys

    code = (
        "import sys, flows.nightly, recsys_core.reporting, recsys_core.tuning;"
        "print(sorted(m for m in ('matplotlib', 'skopt') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "[]"


#: Packages from the innermost to the outermost; a package may import only those before it.
LAYERS = ("recsys_core", "tasks", "flows", "deployments")


def _all_imports(path: Path) -> set[str]:
    """Top-level packages imported anywhere in ``path`` (module level and inside functions)."""
    return _imports(path)


def test_layers_point_one_way():
    """recsys_core < tasks < flows < deployments (the command line is in deployments, above
    everything it starts): no package imports one above it, not even inside a function."""
    offenders = []
    for rank, package in enumerate(LAYERS):
        above = set(LAYERS[rank + 1 :])
        for path in sorted((REPO / package).rglob("*.py")):
            bad = sorted(_all_imports(path) & above)
            if bad:
                offenders.append(f"{path.relative_to(REPO)} imports {bad}")
    assert offenders == [], "\n".join(offenders)


def _module_graph() -> dict[str, set[str]]:
    """Private modules of recsys_core and the private modules each imports (anywhere in it)."""
    modules = {}
    for path in (REPO / "recsys_core").rglob("*.py"):
        if path.name == "__init__.py":
            continue
        modules[".".join(path.relative_to(REPO).with_suffix("").parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
        graph[name] = targets - {name}
    return graph


def test_core_modules_import_each_other_without_cycles():
    """A cycle between two modules (``ingest/_read.py`` and ``_batch.py`` had one, hidden in a
    function-level import) means neither can be read or tested alone."""
    graph = _module_graph()
    assert len(graph) > 40 and any(graph.values())  # the scan sees the real modules
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == [], f"import cycles between recsys_core modules: {cycles}"
