"""Imports run one way: the agent runtime never imports the operator (it ships without it)."""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[1] / "agent_runtime"
FORBIDDEN = "sentient_operator"


def _is_dynamic_import(node: ast.Call) -> bool:
    name = getattr(node.func, "attr", getattr(node.func, "id", ""))
    first = node.args[0] if node.args else None
    return (
        name in ("import_module", "__import__")
        and isinstance(first, ast.Constant)
        and isinstance(first.value, str)
    )


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            # importlib.import_module("sentient_operator...") is an import too.
            found.append((node.lineno, str(node.args[0].value)))  # type: ignore[attr-defined]
    return found


def test_agent_runtime_never_imports_sentient_operator() -> None:
    offenders = []
    for path in sorted(RUNTIME.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, module in _imported_modules(tree):
            if module == FORBIDDEN or module.startswith(FORBIDDEN + "."):
                offenders.append(f"{path.relative_to(RUNTIME.parent)}:{line} imports {module}")
    assert offenders == []


def test_the_rule_sees_an_import(tmp_path: Path) -> None:
    tree = ast.parse(
        "from sentient_operator.api import v1alpha1\nimport importlib\nimportlib.import_module('x')"
    )
    assert [m for _, m in _imported_modules(tree)] == ["sentient_operator.api", "importlib", "x"]
