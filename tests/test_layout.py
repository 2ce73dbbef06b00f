"""The layout keeps its promises: sizes within limits, the dev stack and the contracts apart."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_no_module_or_function_is_over_its_size_limit() -> None:
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "scripts/code_shape.py")
    assert spec is not None and spec.loader is not None
    code_shape = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code_shape)
    assert code_shape.offenders(ROOT) == []


@pytest.mark.parametrize("package", ["worker", "tasks"])
def test_production_code_never_imports_the_dev_stack(package: str) -> None:
    # `callpass run` (worker/cli.py) is the one door into it, imported when that command runs.
    allowed = {ROOT / "worker/cli.py", *_sources("worker/dev")}
    importers = [
        str(path.relative_to(ROOT))
        for path in _sources(package)
        if path not in allowed
        and any(m == "worker.dev" or m.startswith("worker.dev.") for m in _imported_modules(path))
    ]
    assert importers == []


def test_the_producer_package_imports_nothing_of_the_worker() -> None:
    # A producing service imports the producer package alone: no settings, Redis or Celery app.
    outside = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in _sources("producer/src/callpass_producer")
        for module in _imported_modules(path)
        if module.split(".")[0] in {"worker", "tasks", "simulator"}
    }
    assert outside == set()
