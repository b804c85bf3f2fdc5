"""The runtime as a strict HTTP server: HTTP/1.0 clients, Host, content types, typed bodies, and
errors that give callers a stable code and a request id but nothing of the inside (providers,
models, exception classes, upstream URLs)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime import protocol
from agent_runtime.client import parse_stream
from agent_runtime.protocol import ErrorEvent
from agent_runtime.testing import FakeUpstream, Fault
from tests.support.runtime import (
    InProcessRuntime,
    single_provider_runtime,
)

KEY = "alice-secret-key"
UPSTREAM_KEY = "sk-upstream-strict"
# What a caller must never read in an error: the chain's ids, models, classes and addresses.
INSIDE = ("default/fake", "fake-model", "RemoteProtocolError", "ReadError", "httpx", "127.0.0.1")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai", api_key=UPSTREAM_KEY) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessRuntime]:
    root = tmp_path_factory.mktemp("strict")
    with single_provider_runtime(root, fake, UPSTREAM_KEY) as runtime:
        yield runtime


@pytest.fixture(autouse=True)
def _reset(fake: FakeUpstream) -> None:
    fake.state.reset()
    fake.state.configure({"latency": 0.0, "tokens": None})


def raw_request(server: InProcessRuntime, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send bytes as they are; read until the server closes. Returns status line, headers, body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


def _post(path: str, body: dict[str, Any], version: str = "1.1", host: bool = True) -> bytes:
    data = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/{version}"]
    if host:
        lines.append("Host: 127.0.0.1")
    lines += [
        f"X-API-Key: {KEY}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


ASSIST_BODY = {"query": {"id": "01J0000000000000000000000A", "prompt": "hello old client"}}
CHAT_BODY = {"model": "test-agent", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("path", "body"),
    [("/assist", ASSIST_BODY), ("/v1/chat/completions", {**CHAT_BODY, "stream": True})],
)
def test_http10_clients_get_a_whole_response_with_its_length(
    server: InProcessRuntime, path: str, body: dict[str, Any]
) -> None:
    status, headers, data = raw_request(server, _post(path, body, version="1.0"))
    assert status.split()[1] == "200"
    assert "transfer-encoding" not in headers
    assert int(headers["content-length"]) == len(data)
    assert b"Echo: hello old client" in data or b"Echo" in data


def test_http10_probe_has_a_length(server: InProcessRuntime) -> None:
    status, headers, data = raw_request(server, b"GET /live HTTP/1.0\r\n\r\n")
    assert status.split()[1] == "200"
    assert "transfer-encoding" not in headers
    assert int(headers["content-length"]) == len(data) and json.loads(data) == {"status": "alive"}


def test_http11_without_host_is_refused(server: InProcessRuntime) -> None:
    status, _, data = raw_request(server, _post("/v1/chat/completions", CHAT_BODY, host=False))
    assert status.split()[1] == "400"
    assert json.loads(data)["error"]["code"] == "missing_host"


@pytest.mark.parametrize("hosts", [["127.0.0.1", "evil.example"], ["127.0.0.1", "127.0.0.1"]])
def test_more_than_one_host_is_refused(server: InProcessRuntime, hosts: list[str]) -> None:
    # RFC 9112, 3.2: a proxy in front may have routed on one Host and the runtime read the other.
    request = _post("/v1/chat/completions", CHAT_BODY).replace(
        b"Host: 127.0.0.1\r\n", b"".join(f"Host: {h}\r\n".encode() for h in hosts)
    )
    status, _, data = raw_request(server, request)
    assert status.split()[1] == "400"
    assert json.loads(data)["error"]["code"] == "duplicate_host"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/models", "GET, HEAD"),
        ("TRACE", "/health", "GET, HEAD"),
        ("OPTIONS", "/openapi.json", "GET, HEAD"),
        ("PUT", "/assist", "POST"),
    ],
)
def test_a_405_names_every_allowed_method(
    server: InProcessRuntime, method: str, path: str, allowed: str
) -> None:
    # RFC 9110, 15.5.6: the Allow field of a 405 lists the methods the resource supports.
    request = f"{method} {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n"
    status, headers, data = raw_request(server, request.encode())
    assert status.split()[1] == "405"
    assert headers["allow"] == allowed
    assert b"X-API-Key" not in data and KEY.encode() not in data


@pytest.mark.parametrize("path", ["/assist", "/v1/chat/completions"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_bodies_must_be_declared_json(server: InProcessRuntime, path: str, content_type: str | None) -> None:
    body = json.dumps(ASSIST_BODY if path == "/assist" else CHAT_BODY)
    headers = {"x-api-key": KEY}
    if content_type:
        headers["content-type"] = content_type
    response = httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=10)
    assert response.status_code == 415


@pytest.mark.parametrize(
    "change",
    [
        {"stream": "yes"},
        {"stream": 1},
        {"max_tokens": 10**12},
        {"max_completion_tokens": 10**12},
        {"max_tokens": "16"},
        {"max_tokens": 16.5},
        {"temperature": "0.5"},
        {"messages": [{"role": "user", "content": 42}]},
    ],
)
def test_chat_bodies_are_strict(server: InProcessRuntime, change: dict[str, Any]) -> None:
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={**CHAT_BODY, **change},
        headers={"x-api-key": KEY},
        timeout=10,
    )
    assert response.status_code == 422, response.text


def test_a_whole_number_written_with_a_fraction_is_an_integer(server: InProcessRuntime) -> None:
    # JSON has one number type and JSON Schema calls 16.0 an integer; so does the OpenAPI document.
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={**CHAT_BODY, "max_tokens": 16.0, "n": 1.0},
        headers={"x-api-key": KEY},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_assist_bodies_are_strict(server: InProcessRuntime) -> None:
    body = {"query": {"id": 12345, "prompt": "x"}}
    response = httpx.post(f"{server.url}/assist", json=body, headers={"x-api-key": KEY}, timeout=10)
    assert response.status_code == 422


def _assert_nothing_inside(text: str) -> None:
    for secret in INSIDE:
        assert secret not in text, f"{secret!r} leaked to the caller: {text}"


@pytest.mark.parametrize("retry_after", [float("inf"), float("nan"), 1e20])
def test_an_odd_retry_after_of_the_provider_gives_a_429_with_a_sane_one(
    fake: FakeUpstream, tmp_path: Path, retry_after: float
) -> None:
    # The provider's Retry-After ("inf", "nan", 1e20 seconds) is not the caller's problem: it
    # must neither crash the answer (a 500) nor reach the caller as an absurd wait. (A runtime
    # of its own: the 429s count against its provider's breaker.)
    fake.inject(Fault(kind="status", status=429, retry_after=retry_after, count=5))
    with single_provider_runtime(tmp_path, fake, UPSTREAM_KEY) as server:
        response = httpx.post(
            f"{server.url}/v1/chat/completions", json=CHAT_BODY, headers={"x-api-key": KEY}, timeout=20
        )
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "upstream_rate_limited"
        assert 1 <= int(response.headers["retry-after"]) <= 86_400


@pytest.mark.parametrize("fault", [Fault(kind="reset", count=5), Fault(kind="status", status=500, count=5)])
def test_upstream_failures_give_a_code_and_a_request_id_only(
    server: InProcessRuntime, fake: FakeUpstream, fault: Fault
) -> None:
    fake.inject(fault)
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json=CHAT_BODY,
        headers={"x-api-key": KEY, "x-request-id": "req-whole-1"},
        timeout=20,
    )
    assert response.status_code == 502
    error = response.json()["error"]
    assert (error["code"], error["request_id"]) == ("upstream_failed", "req-whole-1")
    _assert_nothing_inside(response.text)


def test_streamed_upstream_failures_give_a_code_and_a_request_id_only(
    server: InProcessRuntime, fake: FakeUpstream
) -> None:
    fake.inject(Fault(kind="reset", after_chunks=1, count=5))
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={**CHAT_BODY, "messages": [{"role": "user", "content": "a b c d"}], "stream": True},
        headers={"x-api-key": KEY, "x-request-id": "req-stream-1"},
        timeout=20,
    )
    records = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    errors = [r["error"] for r in records if "error" in r]
    assert errors and errors[0]["request_id"] == "req-stream-1" and errors[0]["code"].startswith("upstream_")
    _assert_nothing_inside(json.dumps(errors))


def test_assist_upstream_failures_give_a_code_and_a_request_id_only(
    server: InProcessRuntime, fake: FakeUpstream
) -> None:
    fake.inject(Fault(kind="reset", count=5))
    body = {"query": {"id": protocol.new_ulid(), "prompt": "hello"}}
    response = httpx.post(
        f"{server.url}/assist",
        json=body,
        headers={"x-api-key": KEY, "x-request-id": "req-assist-1"},
        timeout=20,
    )
    errors = [e for e in parse_stream(response.text.split("\n")) if isinstance(e, ErrorEvent)]
    assert len(errors) == 1
    assert errors[0].details is not None
    assert errors[0].details["request_id"] == "req-assist-1"
    assert errors[0].details["code"] == "upstream_failed"
    _assert_nothing_inside(errors[0].error_message + json.dumps(errors[0].details))


def test_health_without_auth_names_no_upstream_address(server: InProcessRuntime, fake: FakeUpstream) -> None:
    response = httpx.get(f"{server.url}/health")
    assert response.status_code == 200
    assert response.json()["providers"]
    assert fake.endpoint not in response.text
    assert all("endpoint" not in provider for provider in response.json()["providers"])
