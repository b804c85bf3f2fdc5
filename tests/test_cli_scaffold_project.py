"""``sentient init --custom``: the generated project validates, lints, and its own test passes under pytest."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from click.testing import CliRunner

from sentient_operator.cli.dev import find_agent_class
from sentient_operator.cli.main import cli
from sentient_operator.cli.validate import validate_files
from tests.support import locks
from tests.support.venvs import lint_project, run_project_tests

REPO = Path(__file__).resolve().parents[1]


def _generate(tmp_path: Path) -> Path:
    out = tmp_path / "my-bot"
    result = CliRunner().invoke(
        cli, ["init", "my-bot", "--custom", "--image", "ghcr.io/acme/my-bot:1.0", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def test_generated_project_test_passes(tmp_path: Path) -> None:
    project = _generate(tmp_path)
    assert sorted(p.name for p in project.iterdir()) == [
        "Dockerfile",
        "README.md",
        "agent.yaml",
        "my_bot_agent.py",
        "requirements.txt",
        "runtime.yaml",
        "test_my_bot_agent.py",
    ]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}
    # The project's own directory is the rootdir: the repository's pytest settings do not apply.
    done = run_project_tests(project, Path(sys.executable), env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_generated_files_are_consistent(tmp_path: Path) -> None:
    project = _generate(tmp_path)
    count, problems = validate_files([str(project / "agent.yaml")])
    assert not problems and count >= 4
    assert "agentClass: my_bot_agent:MyBotAgent" in (project / "agent.yaml").read_text()
    assert find_agent_class(project / "my_bot_agent.py") == "MyBotAgent"
    dockerfile = (project / "Dockerfile").read_text()
    # The runtime image runs as 65532 with /app on PYTHONPATH.
    assert "COPY --chown=65532:65532 my_bot_agent.py /app/my_bot_agent.py" in dockerfile
    done = lint_project(project)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_test_extra_installs_what_the_generated_test_imports(tmp_path: Path) -> None:
    # Everything `pip install "sentient-operator[test]"` brings (requirements/test.txt, from uv.lock).
    names = locks.pinned_names("test")
    # pytest and httpx for the test itself; the runtime (uvicorn, starlette) for its fake upstream.
    assert {"pytest", "httpx", "uvicorn", "starlette", "click"} <= names, names
    assert not {"kopf", "boto3", "hvac"} & names
    project = _generate(tmp_path)
    assert (project / "requirements.txt").read_text() == "sentient-operator[test]\n"
    assert "pip install -r requirements.txt" in (project / "README.md").read_text()
