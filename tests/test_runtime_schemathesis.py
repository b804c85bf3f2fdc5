"""Schemathesis against a live runtime (a real process on 127.0.0.1, a fake upstream behind it).

Every operation of the shipped OpenAPI document (equal to the served one, see
``test_runtime_openapi``) is called with generated data, valid and invalid; every response must
conform to the document. Bounded: a few dozen examples per operation, well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from agent_runtime.testing import FakeUpstream, run_fake
from tests.support.runtime import (
    RuntimeFiles,
    RuntimeProcess,
    chain_entry,
    default_credentials,
    free_ports,
    make_config,
)

schemathesis = pytest.importorskip("schemathesis")

SHIPPED = Path(__file__).resolve().parents[1] / "schemas" / "runtime-openapi.json"
KEY = "alice-secret-key"
schema = schemathesis.openapi.from_path(str(SHIPPED))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with run_fake("openai", tokens=3) as fake:
        yield fake


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[RuntimeProcess]:
    root = tmp_path_factory.mktemp("schemathesis")
    (port,) = free_ports(1)
    config = make_config(chain=[chain_entry(upstream)], port=port, metrics_port=0)
    with RuntimeProcess(RuntimeFiles(root, config, default_credentials()), root / "runtime.log") as process:
        yield process


@schema.auth()
class APIKeyAuth:
    """The caller's API key, sent the way the document's ``apiKey`` scheme says (so that
    schemathesis can also try each operation without it)."""

    def get(self, case: object, context: object) -> str:
        return KEY

    def set(self, case: object, data: str, context: object) -> None:
        case.headers = {**(case.headers or {}), "X-API-Key": data}  # type: ignore[attr-defined]


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_conforms(case: object, live: RuntimeProcess) -> None:
    case.call_and_validate(base_url=live.url, timeout=30)  # type: ignore[attr-defined]
