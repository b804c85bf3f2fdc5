"""What a hostile caller tries against the runtime: crafted tokens, credential smuggling, other callers' sessions.

Every refusal must be a 4xx with a stable reason, an audit record and a metrics count, on every route
that authenticates; no caller may read a conversation another caller started.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agent_runtime import protocol
from agent_runtime.audit import verify_file
from agent_runtime.client import parse_stream
from agent_runtime.protocol import DocumentEvent
from agent_runtime.testing import wait_until
from tests.support.jwks import JWKSServer
from tests.support.runtime import (
    AUDIT_KEY,
    InProcessRuntime,
    RuntimeFiles,
    RuntimeProcess,
    default_credentials,
    free_ports,
    make_config,
)

ISSUER = "https://issuer.test"
AUDIENCE = "sentient-agent"
ROUTES = ("/assist", "/v1/chat/completions", "/v1/models")


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks(rsa_key: Any) -> Iterator[JWKSServer]:
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    public_jwk.update({"kid": "rsa-1", "use": "sig"})
    with JWKSServer({"keys": [public_jwk]}) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jwks: JWKSServer) -> Iterator[InProcessRuntime]:
    root = tmp_path_factory.mktemp("security")
    config = make_config(
        agent_class="tests.support.runtime_agents:ScriptedAgent",
        jwt={"issuer": ISSUER, "audiences": [AUDIENCE], "jwksURL": jwks.url},
        sessions={"store": "memory"},
    )
    files = RuntimeFiles(root, config, default_credentials())
    with InProcessRuntime(files, audit_path=root / "audit.log") as runtime:
        yield runtime


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "iat": now, "exp": now + 300, **extra}


def _send(server: InProcessRuntime, route: str, headers: Any) -> httpx.Response:
    if route == "/v1/models":
        return httpx.get(f"{server.url}{route}", headers=headers, timeout=10)
    if route == "/assist":
        body: dict[str, Any] = {"query": {"id": protocol.new_ulid(), "prompt": "echo:hi"}}
    else:
        body = {"model": "test-agent", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{server.url}{route}", json=body, headers=headers, timeout=10)


def _audit_records(server: InProcessRuntime) -> list[dict[str, Any]]:
    audit = server.runtime.audit
    assert audit is not None and audit.path is not None
    path = Path(audit.path)
    assert verify_file(path, AUDIT_KEY.encode()).ok
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _auth_failures(server: InProcessRuntime, request_id: str) -> list[dict[str, Any]]:
    return [
        r
        for r in _audit_records(server)
        if r["event"] == "auth.failure" and r.get("request_id") == request_id
    ]


def _metric(server: InProcessRuntime, prefix: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _forge(header: dict[str, Any]) -> str:
    """A token with any header at all (PyJWT refuses to encode odd ones), unsigned."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(_claims())}.c2lnbmF0dXJl"


def _crafted_tokens() -> dict[str, str]:
    es = ec.generate_private_key(ec.SECP256R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    return {
        # Signed with another key type but naming the RSA key of the JWKS.
        "es256-with-rsa-kid": jwt.encode(_claims(), es, algorithm="ES256", headers={"kid": "rsa-1"}),
        "eddsa-with-rsa-kid": jwt.encode(_claims(), ed, algorithm="EdDSA", headers={"kid": "rsa-1"}),
        # A kid that is not a string (unhashable): must not reach a dict lookup.
        "list-kid": _forge({"alg": "RS256", "kid": ["rsa-1"]}),
        "object-kid": _forge({"alg": "RS256", "kid": {"k": 1}}),
        "no-alg": _forge({"kid": "rsa-1"}),
        "garbage": "eyJhbGciOiJSUzI1NiJ9.%%%.&&&",
    }


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", sorted(_crafted_tokens()))
def test_crafted_tokens_are_401_audited_and_counted(server: InProcessRuntime, route: str, name: str) -> None:
    token = _crafted_tokens()[name]
    request_id = protocol.new_ulid()
    counted = f'sentient_requests_total{{route="{route}",status="401"}}'
    before = _metric(server, counted)
    response = _send(server, route, {"authorization": f"Bearer {token}", "x-request-id": request_id})
    assert response.status_code == 401, response.text
    records = _auth_failures(server, request_id)
    assert len(records) == 1
    assert records[0]["reason"] == "invalid_token"
    assert records[0]["route"] == route
    assert _metric(server, counted) == before + 1
    assert token not in json.dumps(records)


@pytest.mark.parametrize("route", ROUTES)
def test_every_refusal_is_audited_on_every_route(server: InProcessRuntime, route: str) -> None:
    for headers, status, reason in (
        ({}, 401, "missing_credentials"),
        ({"x-api-key": "a-guessed-key"}, 401, "invalid_api_key"),
        ({"authorization": "Basic YTpi"}, 401, "bad_scheme"),
    ):
        request_id = protocol.new_ulid()
        response = _send(server, route, {**headers, "x-request-id": request_id})
        assert response.status_code == status
        records = _auth_failures(server, request_id)
        assert [(r["reason"], r["status"], r["route"]) for r in records] == [(reason, status, route)]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_repeated_credential_headers_are_refused(server: InProcessRuntime, route: str, header: str) -> None:
    value = "Bearer alice-secret-key" if header == "authorization" else "alice-secret-key"
    request_id = protocol.new_ulid()
    # Both copies valid on their own: the request is refused for being ambiguous, not for a bad key.
    headers = [(header, value), (header, value), ("x-request-id", request_id)]
    response = _send(server, route, headers)
    assert response.status_code == 401
    records = _auth_failures(server, request_id)
    assert [r["reason"] for r in records] == ["duplicate_credentials"]


def _history(server: InProcessRuntime, key: str, activity_id: str) -> list[list[str]]:
    body = {
        "query": {"id": protocol.new_ulid(), "prompt": "history"},
        "session": {"processor_id": "p", "activity_id": activity_id, "request_id": protocol.new_ulid()},
    }
    response = httpx.post(f"{server.url}/assist", json=body, headers={"x-api-key": key}, timeout=10)
    assert response.status_code == 200
    events = [e for e in parse_stream(response.text.split("\n")) if isinstance(e, DocumentEvent)]
    return list(events[0].content["turns"])


def test_a_session_belongs_to_the_principal_that_created_it(server: InProcessRuntime) -> None:
    activity_id = protocol.new_ulid()
    body = {
        "query": {"id": protocol.new_ulid(), "prompt": "echo:alice private words"},
        "session": {"processor_id": "p", "activity_id": activity_id, "request_id": protocol.new_ulid()},
    }
    response = httpx.post(
        f"{server.url}/assist", json=body, headers={"x-api-key": "alice-secret-key"}, timeout=10
    )
    assert response.status_code == 200
    assert _history(server, "alice-secret-key", activity_id) != []
    # Bob names Alice's activity: he gets a session of his own, empty, never her turns.
    assert _history(server, "bob-secret-key", activity_id) == []
    # And what Bob does under that id does not leak into Alice's conversation either.
    assert all("alice" in t[1] for t in _history(server, "alice-secret-key", activity_id))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    """The runtime as a pod serves it: ``python -m agent_runtime``, with its own server settings."""
    root = tmp_path_factory.mktemp("served")
    (port,) = free_ports(1)
    files = RuntimeFiles(root, make_config(port=port), default_credentials())
    env = {"SENTIENT_AUDIT_LOG": str(root / "audit.log")}
    with RuntimeProcess(files, root / "runtime.log", env=env) as process:
        yield process


def test_forwarding_headers_do_not_forge_the_audited_client_address(served: RuntimeProcess) -> None:
    # The test connects from 127.0.0.1, the very peer (a port-forward, a sidecar) whose
    # X-Forwarded-For uvicorn trusts by default.
    request_id = protocol.new_ulid()
    headers = {
        "x-api-key": "a-guessed-key",
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-proto": "https",
        "forwarded": "for=203.0.113.8",
        "x-real-ip": "203.0.113.9",
        "x-request-id": request_id,
    }
    response = httpx.get(f"{served.url}/v1/models", headers=headers, timeout=10)
    assert response.status_code == 401
    audit = Path(served.env["SENTIENT_AUDIT_LOG"])

    def record() -> dict[str, Any] | None:
        lines = audit.read_text().splitlines() if audit.exists() else []
        found = [json.loads(line) for line in lines if request_id in line]
        return found[0] if found else None

    assert wait_until(lambda: record() is not None, timeout=5)
    refused = record()
    assert refused is not None and refused["event"] == "auth.failure"
    assert refused["client"] == "127.0.0.1"


def test_a_client_sending_garbage_in_a_loop_writes_one_log_line_not_one_per_request(
    served: RuntimeProcess,
) -> None:
    # uvicorn warns once per malformed request; a caller looping garbage must not be able to
    # fill the pod's log (and the cluster's log pipeline) with it.
    host, port = served.url.removeprefix("http://").split(":")
    for _ in range(50):
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(b"GARBAGE / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(1024).startswith(b"HTTP/1.1 400")
    assert httpx.get(f"{served.url}/live", timeout=5).status_code == 200
    warnings = [line for line in served.log_path.read_text().splitlines() if "Invalid HTTP request" in line]
    assert 1 <= len(warnings) <= 2, warnings
