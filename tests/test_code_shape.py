"""Issue 18's shape rules that ruff and mypy don't check: no function in oklog/
over 60 lines (ruff caps complexity at 12, mypy runs --strict from pyproject)."""

import ast
from pathlib import Path

OKLOG = Path(__file__).resolve().parent.parent / "oklog"
MAX_LINES = 60


def test_no_function_over_sixty_lines():
    long = []
    for path in sorted(OKLOG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{path.relative_to(OKLOG.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)
