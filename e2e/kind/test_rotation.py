"""Credential rotation through the real kubelet: three edits of the credential's source while a
client streams through the agent's Service without retrying anything. The source is a Kubernetes
Secret (watched) or an OpenBao KV v2 secret in the cluster (read every ``refreshInterval``, 2 s here,
with token auth), so the Vault latency adds up to one refresh interval.

- ``HotReload``: the kubelet refreshes the Secret volume, the runtime re-reads the file; no pod
  restarts. The edit-to-use latency is printed: it is dominated by the kubelet's Secret volume
  sync (``syncFrequency``, 10 s on the kind cluster of `make e2e-kind`, 1 min by default).
- ``RollingRestart``: the Deployment rolls (maxUnavailable 0) with zero failed requests.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from e2e.cluster import Cluster
from e2e.kind.cluster import KindImages
from e2e.kind.workloads import (
    EXAMPLE_PROVIDER_KEY,
    LOAD_LIMITS,
    agent_pods,
    client_summary,
    deploy_example,
    deploy_openbao,
    fake_upstream_admin,
    openbao_api,
    ready,
    start_in_cluster_client,
)
from tests.support.waiting import wait_for

EDITS = 3
VAULT_PATH = "llm/demo"
VAULT_REFRESH = "2s"

# Writes a new key into the credential's source.
Editor = Callable[[str], None]


def _secret_editor(cluster: Cluster, namespace: str) -> Editor:
    def edit(key: str) -> None:
        value = base64.b64encode(key.encode()).decode()
        cluster.kubectl(
            "patch",
            "secret",
            "demo-llm-key",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            f'{{"data":{{"apiKey":"{value}"}}}}',
        )

    return edit


def _vault_write(api: str, token: str, key: str) -> None:
    httpx.post(
        f"{api}/v1/secret/data/{VAULT_PATH}",
        headers={"X-Vault-Token": token},
        json={"data": {"apiKey": key}},
        timeout=10,
    ).raise_for_status()


def _vault_provider(cluster: Cluster, namespace: str, address: str, token: str) -> dict[str, Any]:
    """The LLMProvider's credentials read from the in-cluster OpenBao with token auth."""
    cluster.kubectl(
        "create", "secret", "generic", "openbao-token", "-n", namespace, f"--from-literal=token={token}"
    )
    return {
        "credentials": {
            "vault": {
                "server": address,
                "path": VAULT_PATH,
                "auth": {"token": {"secretRef": {"name": "openbao-token", "key": "token"}}},
            },
            "refreshInterval": VAULT_REFRESH,
        }
    }


def _rotate(ns: str, admin: str, edit: Editor, round_: int) -> float:
    """Write a new key into the source once; seconds until the upstream sees it."""
    new_key = f"sk-rotated-{round_}-{int(time.time())}"
    started = time.monotonic()
    edit(new_key)

    def seen() -> bool:
        state: dict[str, Any] = httpx.get(f"{admin}/_admin/state", timeout=10).json()
        return new_key in state["keys_seen"]

    wait_for(seen, timeout=180, interval=0.25, what=f"the upstream to receive rotated key #{round_}")
    return time.monotonic() - started


def _rotation_run(
    cluster: Cluster, ns: str, images: KindImages, strategy: str, source: str, before: list[dict[str, Any]]
) -> tuple[list[float], dict[str, Any]]:
    """Agent with ``strategy`` and its key in ``source``, a streaming client through its Service,
    three edits.

    Returns the edit-to-use latencies and the client's summary; ``before`` receives the Ready
    agent pods as they were before the first edit.
    """
    if source == "vault":
        if not images.openbao:
            pytest.fail("E2E_OPENBAO_IMAGE not set: run through `make e2e-kind`", pytrace=False)
        token = secrets.token_hex(16)
        address = deploy_openbao(cluster, ns, images.openbao, token)
        with openbao_api(cluster, ns) as api:
            _vault_write(api, token, EXAMPLE_PROVIDER_KEY)  # the key the fake accepts at first
        provider = _vault_provider(cluster, ns, address, token)
    else:
        provider = None
    deploy_example(
        cluster,
        ns,
        images.runtime,
        limits=LOAD_LIMITS,
        latency=0.02,
        tokens=20,
        provider=provider,
        rotation={"strategy": strategy},
    )
    before.extend(p for p in agent_pods(cluster, ns) if ready(p))
    latencies: list[float] = []
    with fake_upstream_admin(cluster, ns) as admin:
        # Any key from now on: a failed request can only come from the rotation itself.
        httpx.post(f"{admin}/_admin/config", json={"api_key": None}, timeout=10).raise_for_status()
        client = start_in_cluster_client(cluster, ns, images.runtime, seconds=600)
        time.sleep(3)
        for round_ in range(1, EDITS + 1):
            if source == "vault":
                with openbao_api(cluster, ns) as api:
                    latencies.append(_rotate(ns, admin, lambda key: _vault_write(api, token, key), round_))
            else:
                latencies.append(_rotate(ns, admin, _secret_editor(cluster, ns), round_))
            if strategy == "RollingRestart":
                cluster.kubectl(
                    "rollout", "status", "-n", ns, "deployment/assistant", "--timeout=180s", timeout=200
                )
        time.sleep(2)  # the last rotated key in use for a moment, under load
        summary = client_summary(cluster, ns, client, timeout=60)
    return latencies, summary


def _figures(strategy: str, source: str, latencies: list[float], summary: dict[str, Any]) -> str:
    how = "kubelet syncFrequency 10 s" if strategy == "HotReload" else "new pods read the new Secret"
    if source == "vault":
        how += f", refreshInterval {VAULT_REFRESH}"
    return (
        f"\nrotation {source} {strategy} edit-to-use latency ({how}): "
        + ", ".join(f"{s:.1f} s" for s in latencies)
        + f"; client through the Service: {summary['ok']} streams ok, {summary['failures']} failed"
    )


SOURCES = pytest.mark.parametrize("source", ["secret", "vault"])


@SOURCES
def test_hot_reload_rotation_through_the_kubelet(
    cluster: Cluster, operator_release: KindImages, crds: list[str], restricted_ns: str, source: str
) -> None:
    before: list[dict[str, Any]] = []
    latencies, summary = _rotation_run(cluster, restricted_ns, operator_release, "HotReload", source, before)
    print(_figures("HotReload", source, latencies, summary))
    assert summary["failures"] == 0, summary
    assert summary["ok"] > 0
    after = [p for p in agent_pods(cluster, restricted_ns) if ready(p)]
    # The same pods, never restarted: the key changed under them.
    assert {p["metadata"]["uid"] for p in after} == {p["metadata"]["uid"] for p in before}
    assert all(s["restartCount"] == 0 for p in after for s in p["status"]["containerStatuses"])


@SOURCES
def test_rolling_restart_rotation_drops_nothing(
    cluster: Cluster, operator_release: KindImages, crds: list[str], restricted_ns: str, source: str
) -> None:
    before: list[dict[str, Any]] = []
    latencies, summary = _rotation_run(
        cluster, restricted_ns, operator_release, "RollingRestart", source, before
    )
    print(_figures("RollingRestart", source, latencies, summary))
    assert summary["failures"] == 0, summary
    assert summary["ok"] > 0
    after = [p for p in agent_pods(cluster, restricted_ns) if ready(p)]
    # The Deployment rolled: none of the pods from before the edits serves any more.
    assert not {p["metadata"]["uid"] for p in after} & {p["metadata"]["uid"] for p in before}
