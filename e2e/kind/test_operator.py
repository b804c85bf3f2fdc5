"""The operator in-cluster: from its image, with the chart's ServiceAccount, two replicas and one
leader; killing the leader pod hands the Lease over to the other replica."""

from __future__ import annotations

import time
from typing import Any

from e2e.cluster import Cluster
from e2e.kind.cluster import OPERATOR_NAMESPACE, RELEASE, KindImages
from e2e.kind.workloads import get, pods, ready
from tests.support.waiting import wait_for

SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"


def _holder(cluster: Cluster) -> str:
    lease: dict[str, Any] = get(cluster, "lease", "sentient-operator", OPERATOR_NAMESPACE)
    return str(lease["spec"].get("holderIdentity") or "")


def test_operator_runs_in_cluster_from_its_image(cluster: Cluster, operator_release: KindImages) -> None:
    deployment = get(cluster, "deployment", RELEASE, OPERATOR_NAMESPACE)
    assert deployment["status"].get("availableReplicas") == 2
    service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert get(cluster, "serviceaccount", service_account, OPERATOR_NAMESPACE)
    running = [p for p in pods(cluster, OPERATOR_NAMESPACE, SELECTOR) if ready(p)]
    assert len(running) == 2
    for pod in running:
        assert pod["spec"]["serviceAccountName"] == service_account
        assert pod["spec"]["containers"][0]["image"] == operator_release.operator
        # Ready through the chart's probes against the operator's own health endpoints.
        assert pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    names = {p["metadata"]["name"] for p in running}
    holder = wait_for(lambda: _holder(cluster) in names and _holder(cluster), timeout=60, what="a leader")
    assert holder in names


def test_killing_the_leader_pod_hands_over(cluster: Cluster, operator_release: KindImages) -> None:
    running = wait_for(
        lambda: (
            [p["metadata"]["name"] for p in pods(cluster, OPERATOR_NAMESPACE, SELECTOR) if ready(p)]
            if len([p for p in pods(cluster, OPERATOR_NAMESPACE, SELECTOR) if ready(p)]) == 2
            else None
        ),
        timeout=120,
        what="two Ready operator pods",
    )
    leader = wait_for(lambda: _holder(cluster) in running and _holder(cluster), timeout=60, what="a leader")
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "-n", OPERATOR_NAMESPACE, leader, "--wait=false")
    new = wait_for(
        lambda: _holder(cluster) not in ("", leader) and _holder(cluster),
        timeout=90,
        interval=0.5,
        what=f"the Lease to leave {leader}",
    )
    print(f"\nleader hand-over {leader} -> {new}: {time.monotonic() - started:.1f} s")
    # The standby or the replacement pod (the leader releases the Lease on SIGTERM; whichever
    # asks first wins): a live operator pod either way.
    live = [
        p["metadata"]["name"]
        for p in pods(cluster, OPERATOR_NAMESPACE, SELECTOR)
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert new in live
