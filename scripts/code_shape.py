"""Modules and functions over the project's size limits (``python scripts/code_shape.py``).

A module holds one concept (at most 300 lines); a function does one thing (at most 50 lines,
decorators and docstring included). Exit status 1 lists the offenders.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("worker", "tasks")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 50


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def offenders(root: Path = ROOT) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text()
            name = path.relative_to(root)
            lines = len(text.splitlines())
            if lines > MAX_MODULE_LINES:
                found.append(f"{name}: {lines} lines (limit {MAX_MODULE_LINES})")
            for func in _functions(ast.parse(text)):
                first = min([func.lineno, *(d.lineno for d in func.decorator_list)])
                length = (func.end_lineno or func.lineno) - first + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(
                        f"{name}:{func.lineno} {func.name}: {length} lines "
                        f"(limit {MAX_FUNCTION_LINES})"
                    )
    return found


def main() -> int:
    found = offenders()
    print("\n".join(found) or "every module and function is within its limit")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
