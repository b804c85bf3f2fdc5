"""The agent's ServiceMonitor appears once the prometheus-operator CRD is installed."""

from __future__ import annotations

from pathlib import Path

from e2e.cluster import Cluster
from e2e.kind.cluster import KindImages
from e2e.kind.workloads import AGENT, deploy_example
from tests.support.waiting import wait_for

CRD = Path(__file__).resolve().parent / "testdata" / "servicemonitor-crd.yaml"


def test_service_monitor_exists_once_its_crd_is_installed(
    cluster: Cluster, operator_release: KindImages, crds: list[str], restricted_ns: str
) -> None:
    ns = restricted_ns
    # Opt-in per agent (spec.monitoring.serviceMonitor.enabled).
    deploy_example(cluster, ns, operator_release.runtime, monitoring={"serviceMonitor": {"enabled": True}})
    cluster.kubectl("apply", "-f", str(CRD))
    try:
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
        )
        wait_for(
            lambda: cluster.kubectl("get", "servicemonitor", AGENT, "-n", ns, check=False).returncode == 0,
            timeout=120,
            interval=1.0,
            what=f"servicemonitor/{AGENT} in {ns}",
        )
    finally:
        cluster.kubectl("delete", "-f", str(CRD), "--wait=false", check=False)
