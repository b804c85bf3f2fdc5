"""The operator recovers by itself from faults: bounded versions of ``bench/faults.py``.

A control plane of its own (components are stopped): 10 agents, 5 s outages. Each scenario must
converge (every agent Ready, one child of each kind, no orphan) without the operator process
being restarted; figures come from the bench, not from assertions here.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import faults
from e2e.cluster import Cluster

AGENTS = 10
TIMEOUT = 180.0


@pytest.fixture
def lab(cluster: Cluster, tmp_path: Path) -> Iterator[faults.FaultLab]:
    if cluster.local is None:
        pytest.skip("fault injection needs the local control plane")
    with faults.fault_lab(AGENTS, tmp_path) as lab:
        yield lab


def test_operator_recovers_from_each_fault_without_a_restart(lab: faults.FaultLab) -> None:
    killed = faults.kill_during_create(lab, TIMEOUT)
    assert killed.clean, killed
    for component in ("kube-apiserver", "etcd"):
        result = faults.component_down(lab, component, 5.0, TIMEOUT)
        assert result.clean, result
        assert not result.operator_restarted, f"{result}\n{lab.operator.tail(30) if lab.operator else ''}"
    deleted = faults.delete_deployments(lab, 5, TIMEOUT)
    assert deleted.clean and not deleted.operator_restarted, deleted


def test_sigterm_with_the_apiserver_gone_exits_promptly(lab: faults.FaultLab) -> None:
    # A pod being deleted while its apiserver is unreachable: the operator must stop (kopf took the
    # signal while the Lease was being lost, and it campaigned again forever).
    op = lab.start_operator()
    lab.cluster.stop_component("kube-apiserver", kill=True)
    time.sleep(1)
    started = time.monotonic()
    assert op.process is not None
    op.process.send_signal(signal.SIGTERM)
    try:
        op.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the operator ignored SIGTERM for 60 s:\n{op.tail(20)}")
    print(f"exited {op.process.returncode} {time.monotonic() - started:.1f} s after SIGTERM")
    lab.cluster.start_component("kube-apiserver")
