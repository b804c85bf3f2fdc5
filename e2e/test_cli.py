"""The ``sentient`` CLI against a real apiserver: init output accepted, status of agents in several
states, chat by NAMESPACE/NAME failing cleanly when the port-forward cannot reach a pod.

Agent and provider states are written directly through the status subresource
(as the operator would), so every state is shown without running the operator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from e2e.cluster import Cluster
from e2e.resources import dry_run
from sentient_operator.cli.main import cli

pytestmark = pytest.mark.usefixtures("crds")
REPO = Path(__file__).resolve().parents[1]

COMBINATIONS = [
    (provider, source)
    for provider in ("openai", "anthropic", "openai-compatible")
    for source in ("secret", "vault", "aws", "azure", "none")
    if source != "none" or provider == "openai-compatible"
]


def sentient(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line with the cluster's kubeconfig (and its kubectl first on PATH)."""
    env = {**os.environ, **cluster.env, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}
    return subprocess.run(
        [sys.executable, "-m", "sentient_operator.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_init_output_is_accepted_by_the_apiserver(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    stream: list[str] = []
    for provider, source in COMBINATIONS:
        out = tmp_path / f"{provider}-{source}"
        name = f"a-{provider}-{source}"
        result = CliRunner().invoke(
            cli, ["init", name, "--provider", provider, "--source", source, "-o", str(out)]
        )
        assert result.exit_code == 0, result.output
        stream.append((out / "agent.yaml").read_text())
    custom = tmp_path / "custom"
    result = CliRunner().invoke(cli, ["init", "my-bot", "--custom", "-o", str(custom)])
    assert result.exit_code == 0, result.output
    stream.append((custom / "agent.yaml").read_text())
    text = "\n---\n".join(stream)
    # One strict server-side dry run for everything: unknown fields are errors, CEL rules apply.
    proc = dry_run(cluster, namespace, text)
    assert proc.returncode == 0, proc.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(text) if d]
    assert proc.stdout.count("serverside-applied (server dry run)") == len(kinds)
    assert kinds.count("SentientAgent") == len(COMBINATIONS) + 1


def _ts(ago: timedelta) -> str:
    return (datetime.now(UTC) - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message or reason,
        "lastTransitionTime": _ts(timedelta(0)),
    }


def _apply(cluster: Cluster, namespace: str, doc: dict[str, Any], status: dict[str, Any] | None) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    if status is not None:
        cluster.kubectl(
            "patch",
            doc["kind"].lower(),
            doc["metadata"]["name"],
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )


def _provider(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "sentient.dev/v1alpha1",
        "kind": "LLMProvider",
        "metadata": {"name": name},
        "spec": {
            "type": "openai",
            "endpoint": "http://vllm.models.svc:8000/v1",
            "defaultModel": "m",
            "credentials": {"secretRef": {"name": f"{name}-key", "key": "apiKey"}},
        },
    }


def _agent(name: str, *providers: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "sentient.dev/v1alpha1",
        "kind": "SentientAgent",
        "metadata": {"name": name},
        "spec": {
            "systemPrompt": "Be brief.",
            "llm": {"chain": [{"providerRef": {"name": p}} for p in providers]},
            "auth": {"anonymous": True},
            "replicas": replicas,
        },
    }


def test_status_shows_agents_in_several_states(cluster: Cluster, namespace: str) -> None:
    _apply(
        cluster,
        namespace,
        _provider("primary"),
        {"conditions": [_condition("True", "Synced")], "lastSyncTime": _ts(timedelta(minutes=3))},
    )
    _apply(
        cluster,
        namespace,
        _provider("backup"),
        {"conditions": [_condition("False", "SecretNotFound")], "lastSyncTime": _ts(timedelta(hours=5))},
    )
    endpoint = f"http://ready-bot.{namespace}.svc:8080"
    _apply(
        cluster,
        namespace,
        _agent("ready-bot", "primary", "backup", replicas=2),
        {
            "conditions": [_condition("True", "Ready")],
            "replicas": 2,
            "readyReplicas": 2,
            "endpoint": endpoint,
        },
    )
    _apply(
        cluster,
        namespace,
        _agent("rolling-bot", "primary"),
        {"conditions": [_condition("False", "RolloutInProgress")], "replicas": 1, "readyReplicas": 0},
    )
    _apply(
        cluster,
        namespace,
        _agent("orphan-bot", "missing"),
        {"conditions": [_condition("False", "ProviderNotFound")]},
    )
    _apply(cluster, namespace, _agent("new-bot", "primary"), None)  # no operator has seen it yet

    done = sentient(cluster, "status", "-n", namespace)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[1]: line for line in done.stdout.splitlines()[1:]}
    assert done.stdout.splitlines()[0].split() == [
        "NAMESPACE",
        "NAME",
        "READY",
        "REPLICAS",
        "CHAIN",
        "ENDPOINT",
    ]
    assert set(lines) == {"ready-bot", "rolling-bot", "orphan-bot", "new-bot"}
    ready = lines["ready-bot"]
    assert " True " in ready and " 2/2 " in ready and ready.rstrip().endswith(endpoint)
    assert "primary(Ready, synced 3m ago) -> backup(SecretNotFound, synced 5h ago)" in ready
    assert "False (RolloutInProgress)" in lines["rolling-bot"] and " 0/1 " in lines["rolling-bot"]
    assert "missing(NotFound)" in lines["orphan-bot"] and "False (ProviderNotFound)" in lines["orphan-bot"]
    assert " Unknown " in lines["new-bot"]

    as_json = sentient(cluster, "status", "-n", namespace, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    rows = {r["name"]: r for r in json.loads(as_json.stdout)}
    assert rows["ready-bot"]["chain"][1] == {
        "provider": "backup",
        "model": None,
        "state": "SecretNotFound",
        "synced_age": "5h",
    }
    everywhere = sentient(cluster, "status", "-A", "-o", "yaml")
    assert everywhere.returncode == 0
    assert {r["name"] for r in yaml.safe_load(everywhere.stdout) if r["namespace"] == namespace} == set(rows)


def test_status_without_a_cluster_is_one_line(cluster: Cluster, tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    env = {**os.environ, "KUBECONFIG": str(broken), "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}
    done = subprocess.run(
        [sys.executable, "-m", "sentient_operator.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot list agents from the cluster")
    assert "Traceback" not in done.stderr


def test_chat_by_name_reports_a_port_forward_that_cannot_start(cluster: Cluster, namespace: str) -> None:
    # A Service without pods: the local control plane has no kubelet to forward to.
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "lonely-bot"},
        "spec": {
            "selector": {"app": "nothing"},
            "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(service))
    done = sentient(cluster, "chat", f"{namespace}/lonely-bot", "-p", "hi", "--forward-timeout", "5")
    assert done.returncode == 1
    assert "port-forwarding to svc/lonely-bot" in done.stderr
    # kubectl gives up waiting for a running pod; its reason is the one line shown.
    assert "error: port-forward to svc/lonely-bot failed: " in done.stderr
    assert "Traceback" not in done.stderr
    missing = sentient(cluster, "chat", f"{namespace}/no-such-bot", "-p", "hi")
    assert missing.returncode == 1
    assert f"error: no agent {namespace}/no-such-bot (`sentient status -n {namespace}`" in missing.stderr
    # No kubectl port-forward is left behind.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False)
    assert not [line for line in ps.stdout.splitlines() if "port-forward" in line and "lonely-bot" in line]
