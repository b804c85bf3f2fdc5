"""Operator settings from the environment: parsing, fallbacks, errors that name the variable."""

from __future__ import annotations

import pytest

from sentient_operator.settings import DEFAULT_RUNTIME_IMAGE, Settings


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTIENT_WATCH_NAMESPACES", " team-a, team-b ,")
    monkeypatch.setenv("SENTIENT_RUNTIME_IMAGE", "registry.example/runtime:2")
    monkeypatch.setenv("SENTIENT_LEADER_ELECTION", "false")
    monkeypatch.setenv("SENTIENT_WORKERS", "0")
    settings = Settings.from_env()
    assert settings.watch_namespaces == ["team-a", "team-b"]
    assert settings.runtime_image == "registry.example/runtime:2"
    assert settings.leader_election is False
    assert settings.workers == 1
    monkeypatch.setenv("SENTIENT_LEADER_ELECTION", "maybe")
    with pytest.raises(ValueError, match="SENTIENT_LEADER_ELECTION"):
        Settings.from_env()
    monkeypatch.setenv("SENTIENT_LEADER_ELECTION", "true")
    monkeypatch.setenv("SENTIENT_RESYNC_SECONDS", "soon")
    with pytest.raises(ValueError, match="SENTIENT_RESYNC_SECONDS"):
        Settings.from_env()


def test_defaults_and_pod_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SENTIENT_OPERATOR_NAMESPACE", "SENTIENT_IDENTITY", "SENTIENT_RUNTIME_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    monkeypatch.setenv("POD_NAME", "operator-0")
    monkeypatch.setenv("SENTIENT_LOG_LEVEL", "debug")
    settings = Settings.from_env()
    assert (settings.operator_namespace, settings.identity) == ("ops", "operator-0")
    assert settings.runtime_image == DEFAULT_RUNTIME_IMAGE
    assert settings.log_level == "DEBUG"
    # An empty variable means the default, as a blank Helm value does; the own name wins over POD_*.
    monkeypatch.setenv("SENTIENT_RUNTIME_IMAGE", "")
    monkeypatch.setenv("SENTIENT_OPERATOR_NAMESPACE", "sentient")
    settings = Settings.from_env()
    assert settings.runtime_image == DEFAULT_RUNTIME_IMAGE
    assert settings.operator_namespace == "sentient"


def test_azure_authority_is_a_source_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTIENT_AZURE_AUTHORITY_HOST", raising=False)
    assert Settings.from_env().source_options() == {}
    monkeypatch.setenv("SENTIENT_AZURE_AUTHORITY_HOST", "https://login.example")
    assert Settings.from_env().source_options() == {"azure": {"authority_host": "https://login.example"}}


def test_drift_check_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTIENT_DRIFT_CHECK_SECONDS", raising=False)
    assert Settings.from_env().drift_check_seconds == 60.0
    monkeypatch.setenv("SENTIENT_DRIFT_CHECK_SECONDS", "0")
    assert Settings.from_env().drift_check_seconds == 0.0
    # Built in code (tests, tools), fields are named as in Python.
    assert Settings(operator_namespace="ops", drift_check_seconds=5).operator_namespace == "ops"


def test_health_listener_does_not_clash_with_sentient_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_runtime.config import ServerConfig

    for name in ("SENTIENT_METRICS_PORT", "SENTIENT_METRICS_HOST", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    # `sentient dev` serves the runtime on ServerConfig's port; the operator run beside it must not.
    assert settings.metrics_port != ServerConfig().port
    assert settings.metrics_host == "127.0.0.1"  # a laptop: loopback only
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert Settings.from_env().metrics_host == "0.0.0.0"  # a pod: probes and scrapes reach the pod IP
    monkeypatch.setenv("SENTIENT_METRICS_HOST", "127.0.0.2")
    assert Settings.from_env().metrics_host == "127.0.0.2"


def test_help_prints_and_exits_without_starting(tmp_path: object) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": f"{repo / 'operator'}{os.pathsep}{repo}",
        # Were it to start, it would fail on this kubeconfig instead of printing help.
        "KUBECONFIG": str(Path(str(tmp_path)) / "missing"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sentient_operator", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    proc = run("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: sentient-operator")
    assert "SENTIENT_WATCH_NAMESPACES" in proc.stdout and "SENTIENT_METRICS_PORT" in proc.stdout
    bad = run("--nonsense")
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr
