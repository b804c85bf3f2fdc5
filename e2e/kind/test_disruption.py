"""Deleting an agent pod mid-stream: the stream ends (completes, or ``error`` then ``done``) within
the termination grace period; nothing hangs."""

from __future__ import annotations

import threading
import time

import httpx

from e2e.cluster import Cluster
from e2e.kind.cluster import KindImages
from e2e.kind.workloads import (
    StreamResult,
    agent_pods,
    agent_url,
    deploy_example,
    fake_upstream_admin,
    ready,
    stream_assist,
)
from sentient_operator.build.children import TERMINATION_GRACE_SECONDS
from tests.support.waiting import wait_for

# terminationGracePeriodSeconds of agent pods: the preStop sleep + the runtime's drain + a margin.
GRACE_SECONDS = TERMINATION_GRACE_SECONDS


def test_pod_deleted_mid_stream_ends_the_stream_cleanly(
    cluster: Cluster, operator_release: KindImages, crds: list[str], restricted_ns: str
) -> None:
    ns = restricted_ns
    deploy_example(cluster, ns, operator_release.runtime)
    pod = next(p for p in agent_pods(cluster, ns) if ready(p))
    name = pod["metadata"]["name"]
    assert pod["spec"]["terminationGracePeriodSeconds"] == GRACE_SECONDS

    with fake_upstream_admin(cluster, ns) as admin:
        # A 20 s answer: 200 tokens, 0.1 s apart.
        httpx.post(
            f"{admin}/_admin/config", json={"latency": 0.1, "tokens": 200}, timeout=10
        ).raise_for_status()
        with agent_url(cluster, ns, f"pod/{name}", 8080) as url:
            results: list[StreamResult] = []
            reader = threading.Thread(
                target=lambda: results.append(stream_assist(url, "a long story", timeout=120))
            )
            reader.start()
            wait_for(
                lambda: httpx.get(f"{admin}/_admin/state", timeout=10).json()["streams_started"] >= 1,
                timeout=30,
                what="the stream to reach the upstream",
            )
            time.sleep(1.0)
            deleted = time.monotonic()
            cluster.kubectl("delete", "pod", "-n", ns, name, "--wait=false")
            reader.join(GRACE_SECONDS + 15)
            ended_after = time.monotonic() - deleted
    assert not reader.is_alive(), f"the stream still runs {ended_after:.0f} s after the pod was deleted"
    result = results[0]
    names = [event for event, _ in result.events]
    print(
        f"\nstream after pod deletion: ended {ended_after:.1f} s later; events: {names[-3:]}; error={result.error!r}"
    )
    assert ended_after <= GRACE_SECONDS + 5
    assert names and names[-1] == "done", (names[-5:], result.error)
    if "error" in names:
        assert names.index("error") < len(names) - 1
