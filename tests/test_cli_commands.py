"""Every ``sentient`` command exists however the CLI is entered, and the CLI modules form no cycle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMMANDS = {"audit", "chat", "dev", "init", "status", "validate"}


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'operator'}{os.pathsep}{REPO}")
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _listed(help_text: str) -> set[str]:
    lines = help_text.split("Commands:", 1)[1].splitlines()
    return {line.split()[0] for line in lines if line.startswith("  ") and line.split()}


@pytest.mark.parametrize(
    "entry", [["-m", "sentient_operator.cli.main"], ["-m", "sentient_operator.cli"]], ids=["main", "package"]
)
def test_help_lists_every_command(entry: list[str]) -> None:
    result = _python(*entry, "--help")
    assert result.returncode == 0, result.stderr
    assert _listed(result.stdout) == COMMANDS


def test_group_has_every_command_on_import() -> None:
    from sentient_operator.cli.main import cli

    assert set(cli.commands) == COMMANDS


def test_commands_module_does_not_import_the_group() -> None:
    # cli.main imports cli.commands to attach them; the reverse arrow would be a cycle.
    result = _python(
        "-c",
        "import sys, sentient_operator.cli.commands; print('sentient_operator.cli.main' in sys.modules)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
