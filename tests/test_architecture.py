"""The layering rules: recsys_core never imports prefect; tasks are thin; flows are wiring."""

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
