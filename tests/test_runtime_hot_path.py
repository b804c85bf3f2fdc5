"""The runtime's hot-path shortcuts give exactly what the general path gives.

- CoalescingTransport: the same bytes in the same order, one write per loop step,
  flushed before close, bounded; the last bytes of a response leave when it completes, before
  the rest of the request's step (a real server, the runtime's own protocol);
- wire.request_bytes: the same request line and headers as the httpx.Request path;
- loads_json: the same values and errors as json.loads;
- wire.encode_json and protocol.dumps: the text json.dumps writes (dumps escaping line separators);
- ULIDs: the text of their value, strictly increasing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from agent_runtime import protocol
from agent_runtime.__main__ import uvicorn_config
from agent_runtime.config import LLMRuntimeConfig, ServerLimits
from agent_runtime.http.coalesce import FLUSH_BYTES, CoalescingTransport
from agent_runtime.llm.entries import build_snapshot
from agent_runtime.llm.providers.base import loads_json
from agent_runtime.llm.transport import LeanTransport
from agent_runtime.llm.wire import encode_json, request_bytes, upstream_request


class RecordingTransport:
    """Stands in for the socket transport: records writes and closing."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_writes_of_one_step_leave_together_and_before_close() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")
    transport.write(bytearray(b"body"))
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    # Closing sends what is pending first.
    transport.write(b"last")
    transport.close()
    assert real.writes[-1] == b"last" and real.closed
    # Everything else passes through.
    assert transport.get_extra_info("peername") == "info:peername"


async def test_a_writer_that_never_yields_is_flushed_at_the_bound() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    piece = b"x" * 1024
    for _ in range(FLUSH_BYTES // len(piece) + 1):
        transport.write(piece)
    assert len(real.writes) == 1 and len(real.writes[0]) > FLUSH_BYTES
    await asyncio.sleep(0)
    assert b"".join(real.writes) == piece * (FLUSH_BYTES // len(piece) + 1)


# The app below holds its request's step after the last send until the client has the answer.
HOLD_SECONDS = 5.0


class _HoldingApp:
    """Answers, then blocks the loop (no await) until the client says it has the whole answer."""

    def __init__(self) -> None:
        self.client_has_it = threading.Event()
        self.seen_in_step: list[bool] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        self.seen_in_step.append(self.client_has_it.wait(HOLD_SECONDS))


@pytest.fixture
def holding_server() -> Iterator[tuple[_HoldingApp, int]]:
    app = _HoldingApp()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, ServerLimits()))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield app, port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_end_of_a_response_leaves_before_the_rest_of_its_step(
    holding_server: tuple[_HoldingApp, int],
) -> None:
    # What a request does after its last send (measure, settle, log) must not hold the answer back.
    app, port = holding_server
    with socket.create_connection(("127.0.0.1", port), timeout=HOLD_SECONDS * 2) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"\r\n\r\nok"):
            chunk = client.recv(4096)
            assert chunk, answer
            answer += chunk
        app.client_has_it.set()
    assert answer.startswith(b"HTTP/1.1 200 ")
    deadline = time.monotonic() + 10
    while not app.seen_in_step and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.seen_in_step == [True]


def _entry(**provider: Any) -> Any:
    config = LLMRuntimeConfig.model_validate(
        {
            "chain": [
                {
                    "id": "ns/p",
                    "type": provider.pop("type", "openai"),
                    "endpoint": "http://upstream.example:8000/v1",
                    "model": "m",
                    **provider,
                }
            ]
        }
    )
    return build_snapshot(config, {}, {}, lambda: 0.0).entries[0]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_request_bytes_match_the_httpx_request(kind: str, stream: bool) -> None:
    entry = _entry(type=kind, defaultHeaders={"x-team": "blue"})
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "stream": stream}
    fast = request_bytes(entry, body, "sk-key", stream=stream)
    general = LeanTransport._serialize(*_prepared(upstream_request(entry, body, "sk-key", stream=stream)))
    fast_head, _, fast_body = fast.partition(b"\r\n\r\n")
    general_head, _, general_body = general.partition(b"\r\n\r\n")
    assert fast_body == general_body
    assert _fields(fast_head) == _fields(general_head)
    # The head is built once per (streamed, key).
    assert request_bytes(entry, body, "sk-key", stream=stream) == fast
    assert len(entry.heads) == 1


def _prepared(request: httpx.Request) -> tuple[httpx.Request, bytes]:
    return request, request.read()


def _fields(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    line, *fields = head.split(b"\r\n")
    pairs = sorted((name.lower(), value) for name, _, value in (f.partition(b": ") for f in fields))
    return line, pairs


def test_request_bytes_refuse_a_line_break_in_a_header() -> None:
    entry = _entry()
    with pytest.raises(httpx.LocalProtocolError):
        request_bytes(entry, {}, "sk-key\r\nx-injected: 1", stream=False)
    assert not entry.heads


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":[1,2.5,"\\u00e9",null,true]}',
        b' {"a":1} ',
        b"\xef\xbb\xbf{}",
        '{"a":"é"}'.encode("utf-16"),
        b"[1, 2]",
        b"7",
    ],
)
def test_loads_json_matches_json_loads(data: bytes) -> None:
    assert loads_json(data) == json.loads(data)


@pytest.mark.parametrize("data", [b'{"a":1} x', b'{"a":', b"{\xff}", b"", b"{} {}"])
def test_loads_json_refuses_what_json_loads_refuses(data: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(data)
    with pytest.raises(ValueError):
        loads_json(data)


_BODIES: list[Any] = [
    {"model": "m", "messages": [{"role": "user", "content": 'héllo \u2028 "q" \\ \n'}], "stream": False},
    {"model": "m", "max_tokens": 64, "temperature": 0.7, "top_p": 1.0, "stop": ["\n", "END"], "stream": True},
    {"nested": [[1, 2.5e-08, None, True, False], {"k": {}}], "big": 10**30, "nan": float("nan")},
    [],
    "text",
]


@pytest.mark.parametrize("body", _BODIES)
def test_encode_json_matches_json_dumps(body: Any) -> None:
    assert encode_json(body) == json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def test_encode_json_refuses_what_json_dumps_refuses() -> None:
    with pytest.raises(TypeError):
        json.dumps({"a": object()})
    with pytest.raises(TypeError):
        encode_json({"a": object()})


@pytest.mark.parametrize("value", ["plain", 'é \u2028 \u2029 \x85 \n "', "", {"a": "\u2028"}, [1, None], 2.5])
def test_protocol_dumps_is_compact_json_without_line_separators(value: Any) -> None:
    text = protocol.dumps(value)
    assert json.loads(text) == value
    assert "\u2028" not in text and "\u2029" not in text and "\x85" not in text
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace(
        "\x85", "\\u0085"
    ).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def test_ulids_spell_their_value_and_increase() -> None:
    generator = protocol.UlidGenerator()
    ids = [generator.next() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for text in ids[:50]:
        assert len(text) == 26 and protocol.ulid_to_str(protocol.parse_ulid(text)) == text
    assert abs(protocol.ulid_timestamp_ms(ids[-1]) - time.time() * 1000) < 5_000
    # The last id of a millisecond's random range moves to the next millisecond, still increasing.
    generator._random = (1 << 80) - 1
    ms = generator._ms
    after = generator.next()
    assert after > ids[-1] and protocol.ulid_timestamp_ms(after) >= ms
