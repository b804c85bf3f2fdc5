"""The operator run without its namespace (Lease, fingerprint key) says so once, then starts
when the namespace appears (issue 15, item 6)."""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

from e2e.operator_proc import OperatorProcess


def test_missing_lease_namespace_is_one_line_then_quiet(
    cluster: Any, crds: list[str], namespace: str
) -> None:
    missing = f"e2e-nolease-{secrets.token_hex(3)}"
    op = OperatorProcess(cluster.kubeconfig, [namespace], lease_namespace=missing, log_format="text")
    try:
        op.start()
        line = op.wait_for_log(f"namespace {missing} does not exist", timeout=60)
        assert f"kubectl create namespace {missing}" in line
        # Retries go on (5, 10, 15 s apart) without a line each.
        time.sleep(16)
        said = [m for m in op.lines if f"namespace {missing}" in m]
        assert len(said) == 1, said
        assert not [m for m in op.lines if "held by ?" in m]
        cluster.kubectl("create", "namespace", missing)
        op.wait_for_log("acquired leadership", timeout=60)
    finally:
        op.terminate()
        with contextlib.suppress(Exception):
            cluster.kubectl("delete", "namespace", missing, "--wait=false", check=False)
