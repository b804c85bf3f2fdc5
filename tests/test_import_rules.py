"""Import rules of the product code: the agent runtime never imports the operator (it ships without
it), and no module of the runtime imports itself back through others (no import cycles)."""

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


def _module_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (at any place in its code)."""
    modules: dict[str, Path] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        targets = [module for _, module in _imported_modules(tree)]
        # ``from package import module`` imports that module too.
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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


def test_agent_runtime_has_no_import_cycles() -> None:
    assert _cycles(_module_graph(RUNTIME)) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_rule_sees_an_import(tmp_path: Path) -> None:
    tree = ast.parse(
        "from sentient_operator.api import v1alpha1\nimport importlib\nimportlib.import_module('x')"
    )
    assert [m for _, m in _imported_modules(tree)] == ["sentient_operator.api", "importlib", "x"]


OPERATOR = Path(__file__).resolve().parents[1] / "operator" / "sentient_operator"

# The layers of docs/dev/architecture.md: a module may import its own layer and the layers it
# stands on, never one above it. Each rule: (modules it applies to, prefixes they must not import).
LAYER_RULES: list[tuple[str, tuple[str, ...]]] = [
    # operator: API types -> builders -> reconcilers -> handlers (and main wires them up)
    (
        "sentient_operator.api",
        (
            "sentient_operator.build",
            "sentient_operator.reconcile",
            "sentient_operator.handlers",
            "sentient_operator.credentials",
            "sentient_operator.kube",
            "sentient_operator.cli",
            "sentient_operator.main",
        ),
    ),
    (
        "sentient_operator.build",
        (
            "sentient_operator.reconcile",
            "sentient_operator.handlers",
            "sentient_operator.kube",
            "sentient_operator.cli",
            "sentient_operator.main",
        ),
    ),
    (
        "sentient_operator.credentials",
        (
            "sentient_operator.reconcile",
            "sentient_operator.handlers",
            "sentient_operator.cli",
            "sentient_operator.main",
        ),
    ),
    (
        "sentient_operator.reconcile",
        ("sentient_operator.handlers", "sentient_operator.cli", "sentient_operator.main"),
    ),
    ("sentient_operator.handlers", ("sentient_operator.cli", "sentient_operator.main")),
    # runtime: adapters (mount the app in web frameworks) -> app -> ...; nothing imports adapters
    *[
        (layer, ("agent_runtime.adapters",))
        for layer in (
            "agent_runtime.app",
            "agent_runtime.lifecycle",
            "agent_runtime.__main__",
            "agent_runtime.sdk",
        )
    ],
    # runtime: HTTP -> pipeline -> agents -> LLM manager -> providers / pool
    (
        "agent_runtime.http",
        (
            "agent_runtime.adapters",
            "agent_runtime.pipeline",
            "agent_runtime.routes",
            "agent_runtime.app",
            "agent_runtime.lifecycle",
            "agent_runtime.agents",
            "agent_runtime.llm",
        ),
    ),
    ("agent_runtime.pipeline", ("agent_runtime.routes", "agent_runtime.app", "agent_runtime.adapters")),
    ("agent_runtime.routes", ("agent_runtime.app", "agent_runtime.adapters")),
    (
        "agent_runtime.agents",
        (
            "agent_runtime.adapters",
            "agent_runtime.pipeline",
            "agent_runtime.routes",
            "agent_runtime.app",
            "agent_runtime.http",
            "agent_runtime.lifecycle",
        ),
    ),
    (
        "agent_runtime.llm",
        (
            "agent_runtime.adapters",
            "agent_runtime.pipeline",
            "agent_runtime.routes",
            "agent_runtime.app",
            "agent_runtime.http",
            "agent_runtime.lifecycle",
            "agent_runtime.agents",
            "agent_runtime.limits.policy",
            "agent_runtime.sessions",
            "agent_runtime.auth",
        ),
    ),
    ("agent_runtime.llm.providers", ("agent_runtime.llm.manager", "agent_runtime.llm.entries")),
    (
        "agent_runtime.limits",
        (
            "agent_runtime.adapters",
            "agent_runtime.pipeline",
            "agent_runtime.routes",
            "agent_runtime.app",
            "agent_runtime.http",
            "agent_runtime.agents",
            "agent_runtime.llm",
        ),
    ),
]


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_layers_import_only_downwards() -> None:
    graph = {**_module_graph(RUNTIME), **_module_graph(OPERATOR)}
    offenders = [
        f"{module} imports {target} (a layer above it)"
        for module, targets in sorted(graph.items())
        for scope, forbidden in LAYER_RULES
        if _within(module, scope)
        for target in sorted(targets)
        if any(_within(target, f) for f in forbidden)
    ]
    assert offenders == []


def test_the_operator_has_no_import_cycles() -> None:
    assert _cycles(_module_graph(OPERATOR)) == []
