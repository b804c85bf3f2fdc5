"""``sentient init --custom --framework ... --sdk ...``: every template generates a project whose own
tests pass in the project's own environment (its requirements.txt, in a separate venv of the
cache; the project's code from the checkout), whose files lint, and whose agent.yaml validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sentient_operator.cli import scaffold, templates
from sentient_operator.cli.main import cli
from sentient_operator.cli.validate import validate_files
from tests.support.venvs import REPO, extra_requirements, lint_project, project_env, run_project_tests, venv

TEMPLATES = [(framework, "sentient") for framework in templates.FRAMEWORKS] + [
    ("none", "sentient-agent-framework"),
    ("fastapi", "sentient-agent-framework"),
]
_SELF = re.compile(r"^sentient-operator\[([a-z,]+)\]$")


def generate(tmp_path: Path, framework: str, sdk: str) -> Path:
    out = tmp_path / "my-bot"
    result = CliRunner().invoke(
        cli, ["init", "my-bot", "--custom", "--framework", framework, "--sdk", sdk, "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def project_python(project: Path) -> Path:
    """A venv with what the project's requirements.txt installs (the project's own code excepted:
    sentient-operator is not on the index here, so its extras' requirements stand in for it)."""
    requirements: list[str] = []
    for line in (project / "requirements.txt").read_text().splitlines():
        found = _SELF.match(line.strip())
        requirements += extra_requirements(*found.group(1).split(",")) if found else [line.strip()]
    # The framework's pins (uvicorn, fastapi, python-ulid) win over the lock's: no constraints then.
    constrained = not any(r.startswith("sentient-agent-framework") for r in requirements)
    name = (
        "project-"
        + "-".join(sorted({r.split("[")[0].split(">")[0].split("=")[0] for r in requirements}))[:40]
    )
    return venv(
        name, requirements, constraints=REPO / "requirements" / "constraints.txt" if constrained else None
    )


@pytest.mark.slow
@pytest.mark.parametrize(("framework", "sdk"), TEMPLATES)
def test_generated_project_tests_pass_in_its_own_venv(tmp_path: Path, framework: str, sdk: str) -> None:
    project = generate(tmp_path, framework, sdk)
    python = project_python(project)
    done = run_project_tests(project, python, project_env(python, project))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


@pytest.mark.parametrize(("framework", "sdk"), TEMPLATES)
def test_generated_files_lint_and_validate(tmp_path: Path, framework: str, sdk: str) -> None:
    project = generate(tmp_path, framework, sdk)
    expected = {
        "Dockerfile",
        "README.md",
        "agent.yaml",
        "runtime.yaml",
        "requirements.txt",
        "my_bot_agent.py",
        "test_my_bot_agent.py",
        *{
            "none": [],
            "fastapi": ["app.py"],
            "flask": ["app.py"],
            "django": ["settings.py", "urls.py", "asgi.py"],
        }[framework],
    }
    assert {p.name for p in project.iterdir()} == expected
    count, problems = validate_files([str(project / "agent.yaml")])
    assert not problems and count >= 4
    agent_yaml = (project / "agent.yaml").read_text()
    assert agent_yaml.startswith(scaffold.SCHEMA_LINE)
    assert "agentClass: my_bot_agent:MyBotAgent" in agent_yaml
    requirements = (project / "requirements.txt").read_text()
    assert ("sentient-agent-framework==0.3.0" in requirements) == (sdk == "sentient-agent-framework")
    dockerfile = (project / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and f"FROM {scaffold.RUNTIME_IMAGE}" in dockerfile
    assert "COPY --chown=65532:65532 my_bot_agent.py" in dockerfile
    if framework != "none":
        # The operator probes /live and /ready on 8080: the host app must serve there.
        assert "8080" in dockerfile and "ENTRYPOINT" in dockerfile
    done = lint_project(project)
    assert done.returncode == 0, done.stdout + done.stderr


def test_framework_and_sdk_need_custom() -> None:
    result = CliRunner().invoke(cli, ["init", "my-bot", "--framework", "flask"])
    assert result.exit_code == 2
    assert "--custom" in result.output


def test_release_matches_the_package_version() -> None:
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version == scaffold.RELEASE
    # The schema URL names the release's tag, and the file it names is shipped in the repository.
    assert f"/v{version}/schemas/sentient.json" in scaffold.SCHEMA_URL
    assert (REPO / "schemas" / "sentient.json").is_file()
