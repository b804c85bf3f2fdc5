"""PostgreSQL sessions end to end: spec.sessions.postgres applied to the apiserver, rendered by the
operator (the DSN from the user's Secret into the bound Secret, never into the ConfigMap), and two
runtime "pods" fed with exactly what the operator wrote continuing one conversation through a real
PostgreSQL started by the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.testing import run_fake
from e2e.agent_pod import AgentPod
from e2e.agents import CALLER_KEY, PROVIDER_KEY, agent, callers, provider, wait_ready
from e2e.operator_proc import running_operator
from e2e.resources import apply, get
from tests.support.postgres_server import PostgresServer, postgres_or_skip
from tests.support.runtime import ask_in_one_session


@pytest.fixture
def fake_upstream() -> Any:
    with run_fake("openai", api_key=PROVIDER_KEY) as fake:
        yield fake


@pytest.fixture
def database() -> Iterator[PostgresServer]:
    with postgres_or_skip() as server:
        yield server


def test_postgres_sessions_rendered_and_shared_by_two_pods(
    cluster: Any,
    crds: list[str],
    k8s: Any,
    namespace: str,
    fake_upstream: Any,
    database: PostgresServer,
    tmp_path: Path,
) -> None:
    dsn_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sessions-db", "namespace": namespace},
        "stringData": {"dsn": database.dsn},
    }
    sessions = {
        "store": "postgres",
        "maxTurns": 10,
        "postgres": {"dsnSecretRef": {"name": "sessions-db", "key": "dsn"}, "tableName": "e2e_sessions"},
    }
    with running_operator(cluster, namespace):
        apply(
            cluster,
            *provider(namespace, fake_upstream.endpoint),
            callers(namespace),
            dsn_secret,
            agent(namespace, sessions=sessions),
        )
        wait_ready(cluster, namespace)
        config_map = get(cluster, "configmap", "helper-config", namespace)
        assert config_map is not None
        assert database.password not in str(config_map) and "sessions-postgres-dsn" in str(config_map)
        status = get(cluster, "sentientagent", "helper", namespace)
        assert status is not None and database.password not in str(status)
        with (
            AgentPod(k8s, namespace, "helper", tmp_path / "pod-a") as first,
            AgentPod(k8s, namespace, "helper", tmp_path / "pod-b") as second,
        ):
            first.wait_ready()
            second.wait_ready()
            ask_in_one_session([first.url, second.url], ["first question", "second question"], CALLER_KEY)
            contents = [m["content"] for m in fake_upstream.state.bodies[-1]["messages"]]
            assert contents[1:] == ["first question", "Echo: first question", "second question"]
            for pod in (first, second):
                assert database.password not in pod.log_path.read_text()
