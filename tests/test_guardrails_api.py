"""Guardrails in the API and the CLI: pattern cost bounds checked offline (models, ``sentient validate``),
``sentient init --guardrails``, and the spec rendered into the runtime config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from agent_runtime.config import parse_config, provider_credential_file
from sentient_operator.api.v1alpha1 import LLMProviderSpec, SentientAgentSpec
from sentient_operator.build import render_config
from sentient_operator.cli import scaffold
from sentient_operator.cli.main import cli
from sentient_operator.cli.validate import validate_text
from tests.test_build_children import make_inputs

GUARDRAILS: dict[str, Any] = {
    "input": [
        {"size": {"maxChars": 20000, "maxMessages": 50}},
        {"name": "deny", "patterns": {"deny": [r"(?i)\brm\s+-rf\b"], "allow": [r"^#"]}},
        {"injection": {"threshold": 0.6}},
        {"name": "mod", "moderation": {"categories": ["violence"]}, "action": "flag"},
    ],
    "output": [{"pii": {"entities": ["email", "iban"]}, "action": "redact"}],
    "moderation": {
        "providerRef": {"name": "openai"},
        "model": "omni-moderation-latest",
        "onError": "failClosed",
    },
    "redact": {"audit": True},
    "streamWindow": 256,
}


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(a+)+$", "repeat"),
        (r"(\w+\s?)*x", "repeat"),
        (r"(\d)\1", "back-references"),
        ("([a-z]", "does not compile"),
        ("a" * 600, "at most 512"),
    ],
)
def test_patterns_that_do_not_compile_or_can_backtrack_without_end_are_refused(
    pattern: str, problem: str
) -> None:
    spec = {**make_inputs().spec.to_wire(), "guardrails": {"input": [{"patterns": {"deny": [pattern]}}]}}
    with pytest.raises(ValidationError) as info:
        SentientAgentSpec.model_validate(spec)
    assert problem in str(info.value)
    assert "guardrails.input.0.patterns" in str(info.value)


def test_guardrails_are_rendered_into_the_runtime_config() -> None:
    inputs = make_inputs(guardrails=GUARDRAILS)
    text, _ = render_config(inputs)
    config = parse_config(text)
    guardrails = config.guardrails
    assert guardrails is not None
    assert [c.label for c in guardrails.input] == ["size", "deny", "injection", "mod"]
    assert guardrails.input[1].patterns is not None and guardrails.input[1].patterns.allow == [r"^#"]
    assert guardrails.input[3].action == "flag"
    assert guardrails.output[0].pii is not None and guardrails.output[0].pii.entities == ["email", "iban"]
    assert guardrails.stream_window == 256 and guardrails.redact.audit and not guardrails.redact.logs
    moderation = guardrails.moderation
    assert moderation is not None
    # The chain provider's endpoint and key file: no new secret, nothing secret in the config.
    assert moderation.endpoint == "https://api.openai.com/v1"
    assert moderation.credential_file == provider_credential_file("team", "openai")
    assert moderation.model == "omni-moderation-latest" and moderation.on_error == "failClosed"
    assert "sk-provider-secret" not in text


def test_no_guardrails_renders_none() -> None:
    assert parse_config(render_config(make_inputs())[0]).guardrails is None


def test_moderation_on_an_anthropic_provider_is_refused_at_render() -> None:
    inputs = make_inputs(guardrails=GUARDRAILS)
    anthropic = LLMProviderSpec.model_validate(
        {"type": "anthropic", "credentials": {"secretRef": {"name": "k", "key": "apiKey"}}}
    )
    inputs = replace(inputs, providers=[replace(inputs.providers[0], spec=anthropic)])
    with pytest.raises(ValueError, match="no /moderations endpoint"):
        render_config(inputs)


BAD_PATTERN_AGENT = """\
apiVersion: sentient.dev/v1alpha1
kind: SentientAgent
metadata:
  name: guarded
spec:
  systemPrompt: You help.
  llm:
    chain:
      - providerRef: {name: p}
  auth: {anonymous: true}
  guardrails:
    input:
      - name: deny
        patterns:
          deny: ["(a+)+$"]
"""


def test_validate_compiles_the_patterns_and_points_at_the_check() -> None:
    _, problems = validate_text(BAD_PATTERN_AGENT, "agent.yaml")
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert problem.path == "spec.guardrails.input[0].patterns"
    assert "deny[0]" in problem.message and "repeat" in problem.message
    assert problem.line == 14  # the patterns block of the check


def test_init_with_guardrails_passes_validate_and_renders(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["init", "guarded", "--guardrails", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    checked = runner.invoke(cli, ["validate", str(tmp_path / "agent.yaml")])
    assert checked.exit_code == 0, checked.output
    agent = list(yaml.safe_load_all((tmp_path / "agent.yaml").read_text()))[-1]
    assert agent["spec"]["guardrails"] == scaffold.starter_guardrails()
    inputs = make_inputs(guardrails=agent["spec"]["guardrails"])
    guardrails = parse_config(render_config(inputs)[0]).guardrails
    assert guardrails is not None and [c.label for c in guardrails.input] == ["size", "injection", "secrets"]


def test_init_without_guardrails_has_none(tmp_path: Path) -> None:
    assert "guardrails" not in scaffold.agent_manifests("plain")[-1]["spec"]
