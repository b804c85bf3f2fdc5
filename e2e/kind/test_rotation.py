"""Credential rotation through the real kubelet: three edits of the source Secret while a client
streams through the agent's Service without retrying anything.

- ``HotReload``: the kubelet refreshes the Secret volume, the runtime re-reads the file; no pod
  restarts. The edit-to-use latency is printed: it is dominated by the kubelet's Secret volume
  sync (``syncFrequency``, 10 s on the kind cluster of `make e2e-kind`, 1 min by default).
- ``RollingRestart``: the Deployment rolls (maxUnavailable 0) with zero failed requests.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx

from e2e.cluster import Cluster
from e2e.kind.cluster import KindImages
from e2e.kind.workloads import (
    LOAD_LIMITS,
    agent_pods,
    client_summary,
    deploy_example,
    fake_upstream_admin,
    ready,
    start_in_cluster_client,
)
from tests.support.waiting import wait_for

EDITS = 3


def _edit_source_secret(cluster: Cluster, namespace: str, key: str) -> None:
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


def _rotate(cluster: Cluster, ns: str, admin: str, round_: int) -> float:
    """Edit the source Secret once; seconds until the upstream sees the new key."""
    new_key = f"sk-rotated-{round_}-{int(time.time())}"
    started = time.monotonic()
    _edit_source_secret(cluster, ns, new_key)

    def seen() -> bool:
        state: dict[str, Any] = httpx.get(f"{admin}/_admin/state", timeout=10).json()
        return new_key in state["keys_seen"]

    wait_for(seen, timeout=180, interval=0.25, what=f"the upstream to receive rotated key #{round_}")
    return time.monotonic() - started


def _rotation_run(
    cluster: Cluster, ns: str, images: KindImages, strategy: str, before: list[dict[str, Any]]
) -> tuple[list[float], dict[str, Any]]:
    """Agent with ``strategy``, a streaming client through its Service, three edits.

    Returns the edit-to-use latencies and the client's summary; ``before`` receives the Ready
    agent pods as they were before the first edit.
    """
    deploy_example(
        cluster,
        ns,
        images.runtime,
        limits=LOAD_LIMITS,
        latency=0.02,
        tokens=20,
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
            latencies.append(_rotate(cluster, ns, admin, round_))
            if strategy == "RollingRestart":
                cluster.kubectl(
                    "rollout", "status", "-n", ns, "deployment/assistant", "--timeout=180s", timeout=200
                )
        time.sleep(2)  # the last rotated key in use for a moment, under load
        summary = client_summary(cluster, ns, client, timeout=60)
    return latencies, summary


def _figures(strategy: str, latencies: list[float], summary: dict[str, Any]) -> str:
    how = "kubelet syncFrequency 10 s" if strategy == "HotReload" else "new pods read the new Secret"
    return (
        f"\n{strategy} edit-to-use latency ({how}): "
        + ", ".join(f"{s:.1f} s" for s in latencies)
        + f"; client through the Service: {summary['ok']} streams ok, {summary['failures']} failed"
    )


def test_hot_reload_rotation_through_the_kubelet(
    cluster: Cluster, operator_release: KindImages, crds: list[str], restricted_ns: str
) -> None:
    before: list[dict[str, Any]] = []
    latencies, summary = _rotation_run(cluster, restricted_ns, operator_release, "HotReload", before)
    print(_figures("HotReload", latencies, summary))
    assert summary["failures"] == 0, summary
    assert summary["ok"] > 0
    after = [p for p in agent_pods(cluster, restricted_ns) if ready(p)]
    # The same pods, never restarted: the key changed under them.
    assert {p["metadata"]["uid"] for p in after} == {p["metadata"]["uid"] for p in before}
    assert all(s["restartCount"] == 0 for p in after for s in p["status"]["containerStatuses"])


def test_rolling_restart_rotation_drops_nothing(
    cluster: Cluster, operator_release: KindImages, crds: list[str], restricted_ns: str
) -> None:
    before: list[dict[str, Any]] = []
    latencies, summary = _rotation_run(cluster, restricted_ns, operator_release, "RollingRestart", before)
    print(_figures("RollingRestart", latencies, summary))
    assert summary["failures"] == 0, summary
    assert summary["ok"] > 0
    after = [p for p in agent_pods(cluster, restricted_ns) if ready(p)]
    # The Deployment rolled: none of the pods from before the edits serves any more.
    assert not {p["metadata"]["uid"] for p in after} & {p["metadata"]["uid"] for p in before}
