"""Fixtures of the kind tests: they run only against kind (``E2E_KIND=1``, set by `make e2e-kind`).

Elsewhere (``make e2e`` on the local control plane, ``make test`` without the kind stage) every
test here is skipped with one reason. Under kind:

- ``kind_images`` (session): the image references scripts/e2e-kind.sh built and loaded;
- ``operator_release`` (session): the chart helm-installed into sentient-system with those images
  (two replicas, leader election), waited for;
- ``restricted_ns`` (function): a fresh namespace (the harness's ``namespace``) that enforces
  PodSecurity ``restricted``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.cluster import Cluster
from e2e.kind.cluster import KindImages, install_operator
from e2e.kind.workloads import restricted_namespace

KIND_DIR = Path(__file__).resolve().parent


def on_kind() -> bool:
    """Whether this pytest session runs against kind (scripts/e2e-kind.sh sets ``E2E_KIND=1``)."""
    return os.environ.get("E2E_KIND") == "1" and bool(os.environ.get("E2E_KUBECONFIG"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests here ``kind``; skip them unless the session runs against kind."""
    skip = pytest.mark.skip(reason="kind only: run with `make e2e-kind` (E2E_KIND=1 and E2E_KUBECONFIG)")
    for item in items:
        if KIND_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.kind)
            # Real pods: image loads, rollouts and kubelet sync periods take minutes, not seconds.
            item.add_marker(pytest.mark.timeout(900))
            if not on_kind():
                item.add_marker(skip)


@pytest.fixture(scope="session")
def kind_images() -> KindImages:
    """The images of this run (E2E_OPERATOR_IMAGE, E2E_RUNTIME_IMAGE, E2E_REDIS_IMAGE)."""
    missing = [v for v in ("E2E_OPERATOR_IMAGE", "E2E_RUNTIME_IMAGE") if not os.environ.get(v)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run through `make e2e-kind`", pytrace=False)
    return KindImages(
        operator=os.environ["E2E_OPERATOR_IMAGE"],
        runtime=os.environ["E2E_RUNTIME_IMAGE"],
        redis=os.environ.get("E2E_REDIS_IMAGE", ""),
        openbao=os.environ.get("E2E_OPENBAO_IMAGE", ""),
    )


@pytest.fixture(scope="session")
def operator_release(cluster: Cluster, kind_images: KindImages) -> Iterator[KindImages]:
    """The operator, in-cluster from its image, installed by the chart (left for the next test)."""
    install_operator(cluster, kind_images)
    yield kind_images


@pytest.fixture
def restricted_ns(cluster: Cluster, namespace: str) -> str:
    """The harness's fresh namespace, enforcing PodSecurity ``restricted``."""
    restricted_namespace(cluster, namespace)
    return namespace
