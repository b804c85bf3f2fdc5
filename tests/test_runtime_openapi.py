"""The runtime's OpenAPI document: served at /openapi.json, shipped under schemas/, valid, complete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from agent_runtime.routes import spec
from tests.support.runtime import InProcessRuntime, RuntimeFiles, default_credentials, make_config

SHIPPED = Path(__file__).resolve().parents[1] / "schemas" / "runtime-openapi.json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessRuntime]:
    root = tmp_path_factory.mktemp("openapi")
    files = RuntimeFiles(root, make_config(), default_credentials())
    with InProcessRuntime(files) as runtime:
        yield runtime


def test_served_and_shipped_documents_agree(server: InProcessRuntime) -> None:
    response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == spec.document()
    assert SHIPPED.read_text() == spec.render(), (
        "schemas/runtime-openapi.json is stale: python -m agent_runtime.routes.spec > schemas/runtime-openapi.json"
    )


def test_document_is_valid_openapi() -> None:
    validate(json.loads(SHIPPED.read_text()))


def test_every_served_route_is_documented(server: InProcessRuntime) -> None:
    served = set(server.runtime._routes) | {"/metrics"}  # /metrics: here or on the metrics port
    documented = spec.document()["paths"]
    assert served == set(documented)
    for path, route in ((r.path, r) for r in spec.ROUTES):
        assert {m.lower() for m in route.methods} == set(documented[path])
        operation = documented[path][route.methods[0].lower()]
        assert ("security" in operation) == route.authenticate
        assert ("requestBody" in operation) == (route.body is not None)
