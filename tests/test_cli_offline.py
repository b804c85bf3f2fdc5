"""The offline commands of ``sentient``: init, validate, and the status table rendering."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from agent_runtime.placeholders import is_placeholder
from sentient_operator.cli import scaffold
from sentient_operator.cli.main import cli
from sentient_operator.cli.status import build_rows, render
from sentient_operator.cli.validate import validate_text

BAD_AGENT = """\
apiVersion: sentient.dev/v1alpha1
kind: SentientAgent
metadata:
  name: bad
spec:
  llm:
    chain: []
    parameters:
      temperature: 3
  replicas: -1
  bogus: 1
"""


# Keyless sources only make sense for self-hosted servers (hosted APIs are refused below).
INIT_COMBINATIONS = [
    (provider, source)
    for provider in ("openai", "anthropic", "openai-compatible")
    for source in ("secret", "vault", "aws", "azure", "none")
    if source != "none" or provider == "openai-compatible"
]


@pytest.mark.parametrize(("provider", "source"), INIT_COMBINATIONS)
def test_init_output_passes_validate(tmp_path: Path, provider: str, source: str) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["init", "my-agent", "--provider", provider, "--source", source, "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    checked = runner.invoke(cli, ["validate", str(tmp_path / "agent.yaml")])
    assert checked.exit_code == 0, checked.output
    kinds = [d["kind"] for d in yaml.safe_load_all((tmp_path / "agent.yaml").read_text())]
    assert kinds[-1] == "SentientAgent" and "LLMProvider" in kinds


def test_init_custom_project_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["init", "doc-bot", "--custom", "--image", "r.example/doc:1", "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "Dockerfile",
        "README.md",
        "agent.yaml",
        "doc_bot_agent.py",
        "requirements.txt",
        "runtime.yaml",
        "test_doc_bot_agent.py",
    ]
    readme = (tmp_path / "README.md").read_text()
    # The generated test needs pytest and httpx: requirements.txt names the `test` extra, the README installs it.
    assert (tmp_path / "requirements.txt").read_text().splitlines() == ["sentient-operator[test]"]
    assert "pip install -r requirements.txt" in readme and "docker build -t r.example/doc:1" in readme
    # The next steps are for this project (its module, its image), not for the manifest flow.
    assert "pytest test_doc_bot_agent.py" in result.output
    assert "docker build -t r.example/doc:1 ." in result.output
    compile((tmp_path / "doc_bot_agent.py").read_text(), "doc_bot_agent.py", "exec")
    assert "FROM " in (tmp_path / "Dockerfile").read_text()
    _, problems = validate_text((tmp_path / "agent.yaml").read_text(), "agent.yaml")
    assert problems == []


def test_init_writes_no_placeholder_and_a_random_caller_key(tmp_path: Path) -> None:
    keys = []
    for run in range(2):
        out = tmp_path / str(run)
        result = CliRunner().invoke(cli, ["init", "my-agent", "-o", str(out)])
        assert result.exit_code == 0, result.output
        docs = list(yaml.safe_load_all((out / "agent.yaml").read_text()))
        secrets = [d for d in docs if d["kind"] == "Secret"]
        # Only the callers' Secret: the provider key is created with kubectl, never kept in the file.
        assert [s["metadata"]["name"] for s in secrets] == ["my-agent-callers"]
        key = secrets[0]["stringData"]["team-a"]
        assert len(key) >= 32 and not is_placeholder(key)
        keys.append(key)
        assert "kubectl create secret generic my-agent-openai-api-key" in result.output
        assert "kubectl create secret generic my-agent-openai-api-key" in (out / "agent.yaml").read_text()
    assert keys[0] != keys[1]


def test_validate_refuses_placeholder_secret_values() -> None:
    text = (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: callers}\nstringData:\n"
        "  team-a: REPLACE-WITH-A-LONG-RANDOM-KEY\n  ok: sk-agent-4f9a8b7c6d5e\n"
        "data:\n  other: " + base64.b64encode(b"<your-key>").decode() + "\n"
    )
    _, problems = validate_text(text, "a.yaml")
    assert [(p.line, p.path) for p in problems] == [(5, "stringData.team-a"), (8, "data.other")]
    assert all("placeholder" in p.message for p in problems)


def test_init_refuses_keyless_hosted_provider(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["init", "x", "--provider", "openai", "--source", "none", "-o", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--source none needs --provider openai-compatible" in result.output
    assert not (tmp_path / "agent.yaml").exists()


def test_validate_names_agent_rules(tmp_path: Path) -> None:
    text = scaffold.dump_documents(scaffold.agent_manifests("x")).replace("name: x\n", "name: X_bad\n")
    _, problems = validate_text(text, "a.yaml")
    assert any("metadata.name" in str(p) for p in problems), [str(p) for p in problems]


def test_validate_reports_the_agent_name_rule_beside_other_problems() -> None:
    # `1agent` is a DNS subdomain but not a DNS-1035 label: the API server refuses it (it names the
    # Service) even when the spec has other problems, and so must `validate`, exactly once.
    text = (
        "apiVersion: sentient.dev/v1alpha1\nkind: SentientAgent\nmetadata:\n  name: 1agent\n"
        "spec:\n  systemPrompt: hi\n  llm:\n    chain:\n      - providerRef: {name: p}\n"
    )
    _, problems = validate_text(text, "a.yaml")
    named = [p for p in problems if p.path == "metadata.name"]
    assert len(named) == 1 and named[0].line == 4 and "DNS-1035" in named[0].message
    assert any(p.path == "spec.auth" for p in problems)
    _, problems = validate_text(
        text.replace("systemPrompt: hi\n", "systemPrompt: hi\n  auth: {anonymous: true}\n"), "a"
    )
    assert [p.path for p in problems] == ["metadata.name"]


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("keep me")
    result = CliRunner().invoke(cli, ["init", "x", "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert "use --force" in result.output
    assert (tmp_path / "agent.yaml").read_text() == "keep me"


def test_validate_reports_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_AGENT)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert f"{path}:7: spec.llm.chain: " in lines[0]
    assert any(line.startswith(f"{path}:9: spec.llm.parameters.temperature:") for line in lines)
    assert any(line.startswith(f"{path}:10: spec.replicas:") for line in lines)
    assert any(line.startswith(f"{path}:11: spec.bogus:") for line in lines)


WORKERS_AGENT = """\
apiVersion: sentient.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: limits}
spec:
  limits: {requestsPerMinute: 60}
---
apiVersion: sentient.dev/v1alpha1
kind: SentientAgent
metadata: {name: busy}
spec:
  systemPrompt: hi
  llm:
    chain: [{providerRef: {name: p}, model: m}]
  auth: {anonymous: true}
  rateLimitPolicyRef: {name: limits}
  server:
    workers: 4
"""


def test_validate_warns_of_memory_limits_and_sessions_with_workers(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(WORKERS_AGENT)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    # Valid: warnings do not fail.
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if ": warning: " in line]
    assert len(warnings) == 2
    assert all(line.startswith(f"{path}:17: spec.server.workers: warning: ") for line in warnings)
    assert "RateLimitPolicy limits keeps its counters in memory" in warnings[0]
    assert "sessions are kept in memory" in warnings[1]
    # Redis for both: nothing to say; one worker: nothing to say.
    redis = WORKERS_AGENT.replace(
        "  limits: {requestsPerMinute: 60}\n",
        "  limits: {requestsPerMinute: 60}\n  backend: {type: redis, redis: {addressSecretRef: {name: r, key: url}}}\n",
    ).replace("  server:\n", "  sessions: {store: redis, redisSecretRef: {name: r, key: url}}\n  server:\n")
    path.write_text(redis)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0 and ": warning: " not in result.output, result.output
    path.write_text(WORKERS_AGENT.replace("workers: 4", "workers: 1"))
    assert ": warning: " not in CliRunner().invoke(cli, ["validate", str(path)]).output


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: [1, 2\n", "(yaml)"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n", "metadata.name"),
        (
            "apiVersion: sentient.dev/v9\nkind: LLMProvider\nmetadata: {name: p}\nspec: {type: openai}\n",
            "apiVersion",
        ),
        ("apiVersion: sentient.dev/v1alpha1\nkind: LLMProvider\nmetadata: {name: p}\n", "spec: required"),
        (
            "apiVersion: sentient.dev/v1alpha1\nkind: LLMProvider\nmetadata: {name: p}\nspec: {type: gemini}\n",
            "spec.type",
        ),
    ],
)
def test_validate_problem_kinds(text: str, fragment: str) -> None:
    _, problems = validate_text(text, "f.yaml")
    assert problems, text
    assert any(fragment in str(p) for p in problems), [str(p) for p in problems]


def test_validate_missing_file_is_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output


def _agent(name: str, ready: str, reason: str, chain: list[str]) -> dict[str, object]:
    return {
        "metadata": {"namespace": "team", "name": name},
        "spec": {"replicas": 2, "llm": {"chain": [{"providerRef": {"name": p}} for p in chain]}},
        "status": {
            "replicas": 2,
            "readyReplicas": 1,
            "endpoint": f"http://{name}.team.svc:80",
            "conditions": [{"type": "Ready", "status": ready, "reason": reason}],
        },
    }


def test_status_rows_join_chain_states() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    providers = [
        {
            "metadata": {"namespace": "team", "name": "openai"},
            "status": {
                "lastSyncTime": "2026-01-01T11:57:00Z",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Synced"}],
            },
        },
        {
            "metadata": {"namespace": "team", "name": "claude"},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "StoreUnreachable"}]},
        },
    ]
    agents = [
        _agent("a", "True", "Ready", ["openai", "claude"]),
        _agent("b", "False", "ProviderNotFound", ["missing"]),
    ]
    rows = build_rows(agents, providers, now=now)
    table = render(rows, "table")
    assert "openai(Ready, synced 3m ago) -> claude(StoreUnreachable)" in table
    assert "False (ProviderNotFound)" in table and "missing(NotFound)" in table
    assert "1/2" in table
    data = json.loads(render(rows, "json"))
    assert data[1]["chain"][0]["state"] == "NotFound"
    assert yaml.safe_load(render(rows, "yaml"))[0]["name"] == "a"
    assert render([], "table") == "No agents found."


def test_scaffold_documents_are_stable() -> None:
    # Stable for the same inputs (the caller key is random unless given).
    first = scaffold.dump_documents(scaffold.agent_manifests("x", caller_key="k" * 32))
    assert first == scaffold.dump_documents(scaffold.agent_manifests("x", caller_key="k" * 32))


def test_version_comes_from_the_package() -> None:
    import tomllib

    expected = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"sentient {expected['project']['version']}"


REDIS_POLICY = """apiVersion: sentient.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: ha}
spec:
  limits: {requestsPerMinute: 60}
  backend:
    type: redis
    redis:
      mode: sentinel
      cluster:
        nodes: ["redis-0:6379"]
"""


def test_validate_knows_the_redis_modes() -> None:
    _, problems = validate_text(REDIS_POLICY, "ha.yaml")
    texts = [str(p) for p in problems]
    # The rule's path points at the line of the redis object.
    assert any(
        t.startswith("ha.yaml:8: spec.backend.redis.sentinel: required when mode is sentinel") for t in texts
    ), texts
    fixed = REDIS_POLICY.replace(
        '      cluster:\n        nodes: ["redis-0:6379"]\n',
        '      sentinel: {addresses: ["s:26379"], masterName: m}\n',
    )
    assert validate_text(fixed, "ha.yaml")[1] == []


@pytest.mark.parametrize("kind", ["syslog", "splunk"])
def test_init_with_an_audit_sink_passes_validate(tmp_path: Path, kind: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["init", "my-agent", "--audit-sink", kind, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "kubectl create secret generic my-agent-siem" in (tmp_path / "agent.yaml").read_text()
    checked = runner.invoke(cli, ["validate", str(tmp_path / "agent.yaml")])
    assert checked.exit_code == 0 and ": warning: " not in checked.output, checked.output
    agent = list(yaml.safe_load_all((tmp_path / "agent.yaml").read_text()))[-1]
    (sink,) = agent["spec"]["audit"]["sinks"]
    assert sink["name"] == kind and (kind in sink or "http" in sink)


def test_validate_warns_of_an_audit_spool_pvc_under_several_replicas(tmp_path: Path) -> None:
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["init", "my-agent", "--audit-sink", "splunk", "-o", str(tmp_path)]).exit_code == 0
    )
    path = tmp_path / "agent.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    docs[-1]["spec"]["audit"]["spool"] = {"persistentVolumeClaim": "my-agent-audit"}
    docs[-1]["spec"]["replicas"] = 3
    path.write_text(yaml.safe_dump_all(docs))
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert (
        "spec.audit.spool.persistentVolumeClaim: warning: every replica mounts PVC my-agent-audit"
        in result.output
    )
    docs[-1]["spec"]["replicas"] = 1
    path.write_text(yaml.safe_dump_all(docs))
    assert ": warning: " not in runner.invoke(cli, ["validate", str(path)]).output
