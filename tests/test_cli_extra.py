"""The `sentient` command runs with the `cli` extra alone (pyproject.toml): no kopf, no cloud SDK.

A CLI module that reaches the operator's kopf-based API client (``kube.py``) or a secret
store's SDK through an import chain installs fine and then fails at its first command with
``ModuleNotFoundError``; this test imports every CLI module with those packages blocked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The `operator` extra's packages that the `cli` extra does not install.
OPERATOR_ONLY = ("kopf", "aiohttp", "pydantic_settings", "hvac", "boto3", "azure")

PROBE = f"""
import importlib, pkgutil, sys
for name in {OPERATOR_ONLY!r}:
    sys.modules[name] = None  # any import of it raises ImportError
import sentient_operator.cli as cli
failed = []
for info in pkgutil.walk_packages(cli.__path__, "sentient_operator.cli."):
    if info.name.endswith("__main__"):
        continue  # runs the command
    try:
        importlib.import_module(info.name)
    except ImportError as exc:
        failed.append(f"{{info.name}}: {{exc}}")
print("\\n".join(failed))
"""


def test_every_cli_module_imports_without_the_operator_extra() -> None:
    """`pip install '.[cli]'` is enough for every `sentient` command, `sentient dev` included."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.stdout.strip() == "", result.stdout
