"""The editor (yaml-language-server with schemas/sentient.json) and ``sentient validate`` agree.

The same files go to both: every invalid resource of the shared table (tests/support/api_cases.py),
the valid ones, the examples and the agent.yaml of every ``sentient init`` template. Each invalid
file is refused by ``sentient validate``; the JSON Schema refuses it too, except for the rules JSON
Schema cannot say (the CRDs hold them as CEL, ``sentient validate`` as model validators): those
are listed below by case, each with the reason, and the test checks the list is exact (a case
listed here that the schema starts refusing must leave the list).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft7Validator

from sentient_operator.cli import templates
from sentient_operator.cli.main import cli
from tests.support.api_cases import EXAMPLES, INVALID, VALID, Invalid
from tests.support.venvs import REPO

SCHEMA = json.loads((REPO / "schemas" / "sentient.json").read_text())
EDITOR = Draft7Validator(SCHEMA)

EXACTLY_ONE = "exactly one of several fields (a rule across sibling fields: CEL)"
DEPENDS = "a field required or forbidden depending on another field's value (CEL)"
COMPARES = "compares two fields or durations (CEL)"
DURATION = "a bound on a duration string's value, not its form (CEL)"
UNIQUE_BY_KEY = "entries unique by a key or key pair, not as whole values (CEL / list-map keys)"
HEADERS = "rules on the keys of a free-form map (CEL)"
AT_LEAST_ONE = "at least one of several optional fields (CEL)"
URL_CREDENTIALS = "a part of a URL that its pattern allows (CEL, for a message that says why)"

# Case id -> why the editor's JSON Schema accepts what `sentient validate` refuses.
SCHEMA_CANNOT_SAY: dict[str, str] = {
    "two-credential-sources": EXACTLY_ONE,
    "no-credential-source": EXACTLY_ONE,
    "four-credential-sources": EXACTLY_ONE,
    "openai-without-credentials": DEPENDS,
    "compatible-without-endpoint": DEPENDS,
    "vault-two-auth-methods": EXACTLY_ONE,
    "vault-no-auth-method": EXACTLY_ONE,
    "azure-no-auth-method": EXACTLY_ONE,
    "azure-two-auth-methods": EXACTLY_ONE,
    "refresh-hot-loop": DURATION,
    "zero-idle-timeout": DURATION,
    "server-busy-poll-too-long": DURATION,
    "retry-backoff-inverted": COMPARES,
    "connect-longer-than-total": COMPARES,
    "default-model-not-served": COMPARES,
    "credential-in-default-headers": HEADERS,
    "crlf-in-default-header-value": HEADERS,
    "space-in-default-header-name": HEADERS,
    "no-limits": AT_LEAST_ONE,
    "pricing-empty": AT_LEAST_ONE,
    "pricing-model-not-served": DEPENDS,
    "duplicate-priced-model": UNIQUE_BY_KEY,
    "budget-without-window": AT_LEAST_ONE,
    "budget-day-above-month": COMPARES,
    "budget-tiers-for-agent": DEPENDS,
    "duplicate-budget-names": UNIQUE_BY_KEY,
    "redis-backend-without-redis": DEPENDS,
    "memory-backend-with-redis": DEPENDS,
    "duplicate-tier-names": UNIQUE_BY_KEY,
    "both-system-prompts": EXACTLY_ONE,
    "no-system-prompt": EXACTLY_ONE,
    "duplicate-chain-entry": UNIQUE_BY_KEY,
    "step-provider-and-members": EXACTLY_ONE,
    "step-neither-provider-nor-members": EXACTLY_ONE,
    "step-duplicate-members": UNIQUE_BY_KEY,
    "step-model-beside-members": DEPENDS,
    "strategy-without-members": DEPENDS,
    "lowest-latency-settings-other-strategy": DEPENDS,
    "lowest-latency-zero-probe": DURATION,
    "server-header-timeout-zero": DURATION,
    "min-replicas-above-max": COMPARES,
    "no-caller-auth": AT_LEAST_ONE,
    "introspection-cache-too-long": DURATION,
    "introspection-negative-cache-longer": COMPARES,
    "role-granted-to-nobody": AT_LEAST_ONE,
    "role-api-keys-without-api-keys": DEPENDS,
    "role-claims-without-tokens": DEPENDS,
    "redis-sessions-without-url": DEPENDS,
    "postgres-sessions-without-database": DEPENDS,
    "postgres-settings-with-memory-store": DEPENDS,
    "tracing-endpoint-with-credentials": URL_CREDENTIALS,
    "tracing-timeout-too-long": DURATION,
    "guardrail-check-two-kinds": EXACTLY_ONE,
    "guardrail-check-no-kind": EXACTLY_ONE,
    "guardrail-redact-injection": DEPENDS,
    "guardrail-duplicate-names": UNIQUE_BY_KEY,
    "guardrail-moderation-without-service": DEPENDS,
    "guardrail-moderation-provider-not-in-chain": COMPARES,
    "audit-sink-two-kinds": EXACTLY_ONE,
    "audit-sink-no-kind": EXACTLY_ONE,
    "audit-http-tls-without-https": DEPENDS,
    "audit-hec-fields-on-json-lines": DEPENDS,
    "audit-duplicate-sink-names": UNIQUE_BY_KEY,
    "redis-standalone-without-url": DEPENDS,
    "redis-cluster-without-nodes": DEPENDS,
    "redis-sentinel-without-sentinel": DEPENDS,
    "redis-cluster-with-url": DEPENDS,
    "redis-standalone-with-password": DEPENDS,
    "redis-sentinel-with-cluster-nodes": DEPENDS,
    "redis-sessions-url-and-connection": EXACTLY_ONE,
    "redis-sessions-cluster-without-nodes": DEPENDS,
    "redis-sessions-standalone-with-tls": DEPENDS,
    "cache-redis-without-redis": DEPENDS,
    "cache-memory-with-redis": DEPENDS,
    "cache-entry-above-bound": COMPARES,
    "cache-redis-cluster-without-nodes": DEPENDS,
    "endpoint-with-credentials": URL_CREDENTIALS,
    "vault-server-with-credentials": URL_CREDENTIALS,
    "aws-endpoint-with-credentials": URL_CREDENTIALS,
    "jwks-url-with-credentials": URL_CREDENTIALS,
    "oidc-issuer-with-credentials": URL_CREDENTIALS,
    "oidc-jwks-url-with-credentials": URL_CREDENTIALS,
    "introspection-endpoint-with-credentials": URL_CREDENTIALS,
    "audit-url-with-credentials": URL_CREDENTIALS,
    "breaker-zero-window": DURATION,
    "session-ttl-zero": DURATION,
    "resources-request-above-limit": COMPARES,
    "env-duplicate-name": UNIQUE_BY_KEY,
    "burst-without-request-rate": DEPENDS,
    "tls-ca-and-skip-verify": DEPENDS,
    "google-api-key-in-default-headers": HEADERS,
    "redis-tls-ca-and-skip-verify": DEPENDS,
    "memory-sessions-with-redis-url": DEPENDS,
    "introspection-timeout-zero": DURATION,
    "moderation-timeout-zero": DURATION,
    "audit-syslog-timeout-zero": DURATION,
    "audit-http-timeout-zero": DURATION,
    "pod-label-key-with-space": HEADERS,
    "pod-annotation-bad-key": HEADERS,
    "node-selector-bad-key": HEADERS,
    "service-monitor-bad-label-key": HEADERS,
    "tier-burst-without-request-rate": DEPENDS,
}


def editor_errors(obj: dict[str, Any]) -> list[str]:
    """What yaml-language-server would underline: the JSON Schema's errors."""
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in EDITOR.iter_errors(obj)]


def sentient_validate(path: Path) -> tuple[int, str]:
    """``sentient validate FILE``: exit code and output."""
    result = CliRunner().invoke(cli, ["validate", str(path)])
    return result.exit_code, result.output


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_invalid_files_are_refused_by_both_or_listed(case: Invalid, tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(case.obj(), sort_keys=False))
    code, output = sentient_validate(path)
    assert code != 0, output
    editor = editor_errors(case.obj())
    if case.id in SCHEMA_CANNOT_SAY:
        assert editor == [], f"{case.id} is refused by the schema now: take it off SCHEMA_CANNOT_SAY"
    else:
        assert editor, f"the editor accepts {case.id}, which sentient validate refuses:\n{output}"


def test_every_listed_difference_is_a_case() -> None:
    assert set(SCHEMA_CANNOT_SAY) <= {c.id for c in INVALID}


def _valid_files(tmp_path: Path) -> list[Path]:
    files = []
    # The examples' resources; their Secrets hold placeholders on purpose (see the test below).
    for example in EXAMPLES:
        for n, doc in enumerate(yaml.safe_load_all(example.read_text())):
            if doc and doc.get("kind") != "Secret":
                path = tmp_path / f"{example.stem}-{n}.yaml"
                path.write_text(yaml.safe_dump(doc, sort_keys=False))
                files.append(path)
    for n, obj in enumerate(VALID):
        doc = obj[1] if isinstance(obj, tuple) else obj
        path = tmp_path / f"valid-{n}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(path)
    for framework in templates.FRAMEWORKS:
        out = tmp_path / f"init-{framework}"
        result = CliRunner().invoke(
            cli, ["init", "my-bot", "--custom", "--framework", framework, "-o", str(out)]
        )
        assert result.exit_code == 0, result.output
        files.append(out / "agent.yaml")
    out = tmp_path / "init-plain"
    assert (
        CliRunner()
        .invoke(cli, ["init", "my-bot", "--provider", "anthropic", "--source", "vault", "-o", str(out)])
        .exit_code
        == 0
    )
    files.append(out / "agent.yaml")
    return files


def test_valid_files_pass_both(tmp_path: Path) -> None:
    for path in _valid_files(tmp_path):
        code, output = sentient_validate(path)
        assert code == 0, output
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert editor_errors(doc) == [], path


def test_generated_files_name_the_schema(tmp_path: Path) -> None:
    """The schema line of every generated agent.yaml names schemas/sentient.json of the release."""
    for path in _valid_files(tmp_path):
        if path.parent.name.startswith("init-"):
            first = path.read_text().splitlines()[0]
            assert first.startswith("# yaml-language-server: $schema=https://")
            assert first.endswith("/schemas/sentient.json")


def test_placeholder_secret_values_are_for_sentient_validate_only(tmp_path: Path) -> None:
    """A listed difference: the schema checks sentient.dev documents only, and leaves a Secret
    whose value is a placeholder ("<your-key>", "changeme") alone; ``sentient validate`` refuses
    it, since applied unchanged it would be a credential anyone who read the file knows."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "key"},
        "stringData": {"apiKey": "<your-api-key>"},
    }
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(secret))
    code, output = sentient_validate(path)
    assert code != 0 and "placeholder" in output
    assert editor_errors(secret) == []
