"""The runtime's hot-path shortcuts give exactly what the general path gives.

- CoalescingTransport: the same bytes in the same order, one write per loop step,
  flushed before close, bounded;
- wire.request_bytes: the same request line and headers as the httpx.Request path;
- loads_json: the same values and errors as json.loads.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from agent_runtime.config import LLMRuntimeConfig
from agent_runtime.http.coalesce import FLUSH_BYTES, CoalescingTransport
from agent_runtime.llm.entries import build_snapshot
from agent_runtime.llm.providers.base import loads_json
from agent_runtime.llm.transport import LeanTransport
from agent_runtime.llm.wire import request_bytes, upstream_request


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
