"""The response cache in the API and the CLI: ``sentient init --cache``, ``sentient validate``
(the fields, the rules, the warning for a memory cache split over processes)."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from agent_runtime.config import parse_config
from sentient_operator.build import render_config
from sentient_operator.cli import scaffold
from sentient_operator.cli.main import cli
from sentient_operator.cli.validate import validate_text
from tests.test_build_children import make_inputs


def test_init_with_cache_passes_validate_and_renders(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["init", "cached", "--cache", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    checked = runner.invoke(cli, ["validate", str(tmp_path / "agent.yaml")])
    assert checked.exit_code == 0, checked.output
    assert "warning" not in checked.output
    agent = list(yaml.safe_load_all((tmp_path / "agent.yaml").read_text()))[-1]
    assert agent["spec"]["cache"] == scaffold.starter_cache()
    cache = parse_config(render_config(make_inputs(cache=agent["spec"]["cache"]))[0]).cache
    assert cache is not None and cache.ttl == "10m" and cache.backend == "memory"


def test_init_without_cache_has_none() -> None:
    assert "cache" not in scaffold.agent_manifests("plain")[-1]["spec"]


AGENT = """\
apiVersion: sentient.dev/v1alpha1
kind: SentientAgent
metadata: {name: cached}
spec:
  systemPrompt: hi
  llm:
    chain: [{providerRef: {name: p}, model: m}]
  auth: {anonymous: true}
  replicas: 3
  cache:
    enabled: true
    ttl: 2m
"""


def test_validate_file_warning(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(AGENT)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if ": warning: " in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{path}:11: spec.cache.backend: warning: ")
    assert "each of the 3 processes" in warnings[0]
    shared = AGENT.replace(
        "    ttl: 2m\n",
        "    ttl: 2m\n    backend: redis\n    redis:\n      addressSecretRef: {name: r, key: url}\n",
    )
    path.write_text(shared)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    path.write_text(AGENT.replace("  replicas: 3\n", ""))
    assert "warning" not in CliRunner().invoke(cli, ["validate", str(path)]).output


def test_validate_points_at_a_cache_rule() -> None:
    bad = AGENT.replace("    ttl: 2m\n", "    backend: redis\n")
    _, problems = validate_text(bad, "agent.yaml")
    assert [p.path for p in problems] == ["spec.cache.redis"]
    assert problems[0].message == "required when spec.cache.backend is redis"
