"""Fixtures of the end-to-end tests: a real Kubernetes control plane and handles to it.

- ``cluster`` (session): the local control plane from ``e2e.cluster`` (started on first use), or
  the cluster of ``E2E_KUBECONFIG`` when that is set (kind, a real cluster). See ``Cluster``.
- ``k8s`` (session): a ``kubernetes.client.ApiClient`` for the admin user.
- ``namespace`` (function): a fresh, uniquely named namespace, deleted afterwards (not waited for).
- ``crds`` (session): every file in ``crds/`` applied server-side and Established.

Every test under ``e2e/`` is marked ``e2e``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from e2e import tools
from e2e.cluster import Cluster, LocalCluster

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parent
CRDS_DIR = REPO / "crds"


# --------------------------------------------------------------------------------------------
# hooks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under e2e/ with ``e2e``."""
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


_startup: dict[str, Any] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how long the control plane took to start (a figure, not an assertion)."""
    if _startup:
        timings = " ".join(f"{k}={v}s" for k, v in _startup.items())
        terminalreporter.write_line(f"e2e control plane startup: {timings}")


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # pytest tears fixtures down on KeyboardInterrupt; plain SIGTERM would skip that.
    raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The cluster of the e2e tests (local control plane, or ``E2E_KUBECONFIG``)."""
    external = os.environ.get("E2E_KUBECONFIG")
    try:
        tools.ensure(["kubectl-helm"])
    except tools.ToolError as exc:
        pytest.fail(str(exc), pytrace=False)
    if external:
        yield Cluster.from_kubeconfig(external)
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    local = LocalCluster.create()
    started = time.monotonic()
    try:
        local.start()
    except Exception as exc:
        pytest.fail(f"local control plane failed to start: {exc}", pytrace=False)
    _startup["total"] = round(time.monotonic() - started, 2)
    _startup.update(local.timings)
    try:
        yield Cluster.from_kubeconfig(str(local.kubeconfig), local=local)
    finally:
        local.stop()


@pytest.fixture(scope="session")
def k8s(cluster: Cluster) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` for the admin user of ``cluster``."""
    from kubernetes import config as kconfig

    client = kconfig.new_client_from_config(config_file=cluster.kubeconfig)
    try:
        yield client
    finally:
        client.close()


def _dns_label(text: str, limit: int) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label[:limit].rstrip("-") or "t"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, k8s: Any) -> Iterator[str]:
    """A fresh namespace named after the test; deleted afterwards without waiting."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    name = f"e2e-{_dns_label(request.node.name, 45)}-{secrets.token_hex(3)}"
    core = client.CoreV1Api(k8s)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"sentient.dev/e2e": "true"}))
    )
    try:
        yield name
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> list[str]:
    """Apply every CRD in crds/ (server-side) and wait until Established; returns CRD names."""
    files = sorted(p for p in CRDS_DIR.glob("*") if p.suffix in (".yaml", ".yml", ".json"))
    if not files:
        pytest.skip("no CustomResourceDefinitions in crds/ yet")
    names: list[str] = []
    for f in files:
        out = cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=sentient-e2e",
            "-o",
            "name",
            "-f",
            str(f),
        ).stdout
        names += [line.strip() for line in out.splitlines() if line.strip()]
    crd_names = [n for n in names if n.startswith("customresourcedefinition")]
    if crd_names:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *crd_names)
    return [n.split("/", 1)[1] for n in crd_names]
