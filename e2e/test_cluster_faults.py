"""The local control plane can lose one component and get it back, for fault tests.

``LocalCluster.stop_component`` / ``start_component`` stop and restart one process with the same
ports and data (the others keep running); ``freeze_component`` / ``thaw_component`` SIGSTOP and
SIGCONT it, which is what an API server that stops answering looks like to its clients. A cluster
of its own: the session's cluster is shared with other tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from e2e.cluster import Cluster, LocalCluster


@pytest.fixture
def own_cluster(cluster: Cluster) -> Iterator[Cluster]:
    if cluster.local is None:
        pytest.skip("fault injection needs the local control plane")
    with LocalCluster.create(nodes=1) as local:
        yield Cluster.from_kubeconfig(str(local.kubeconfig), local=local)


def _get(cluster: Cluster, *args: str) -> int:
    return int(cluster.kubectl("get", *args, "--request-timeout=3s", check=False, timeout=20).returncode)


def _until_ok(cluster: Cluster, *args: str, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while _get(cluster, *args) != 0:
        assert time.monotonic() - started < timeout, f"kubectl get {' '.join(args)} still failing"
        time.sleep(0.5)
    return time.monotonic() - started


def test_one_component_stops_starts_and_freezes_alone(own_cluster: Cluster) -> None:
    local = own_cluster.local
    assert local is not None
    own_cluster.kubectl("create", "configmap", "survivor", "--from-literal=k=v")
    others = [c for name, c in local.components.items() if name != "kube-apiserver"]

    local.stop_component("kube-apiserver")
    assert _get(own_cluster, "configmap", "survivor") != 0
    assert all(c.proc is not None and c.proc.poll() is None for c in others)
    local.start_component("kube-apiserver")
    assert _get(own_cluster, "configmap", "survivor") == 0  # same etcd data, same port

    local.stop_component("etcd", kill=True)
    assert _get(own_cluster, "configmap", "survivor") != 0
    local.start_component("etcd")
    _until_ok(own_cluster, "configmap", "survivor")

    local.freeze_component("kube-apiserver")
    started = time.monotonic()
    assert _get(own_cluster, "configmap", "survivor") != 0  # hangs until the client's timeout
    assert time.monotonic() - started >= 2.5
    local.thaw_component("kube-apiserver")
    _until_ok(own_cluster, "configmap", "survivor")
    assert not local.held
