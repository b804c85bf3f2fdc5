"""``/ws`` on a real runtime process over real WebSocket connections (the ``websockets`` client)."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from agent_runtime import protocol
from agent_runtime.audit import verify_file
from agent_runtime.http.exchange import MAX_BODY_BYTES
from agent_runtime.testing import FakeUpstream, wait_until
from tests.support.runtime import (
    AUDIT_KEY,
    RuntimeFiles,
    RuntimeProcess,
    api_keys_json,
    chain_entry,
    default_credentials,
    free_ports,
    make_config,
)

pytestmark = pytest.mark.slow

KEYS = {
    "alice": ("alice-secret-key", "gold"),
    "bob": ("bob-secret-key", None),
    "carol": ("carol-secret-key", None),
}
# Every key's budget: carol spends it on /ws and is refused the next time.
PER_MINUTE = 3


def start(tmp_path: Path, fake: FakeUpstream, **server: Any) -> RuntimeProcess:
    (port,) = free_ports(1)
    config = make_config(
        chain=[chain_entry(fake, timeouts={"idle": "30s", "total": "60s"})],
        port=port,
        server=server or None,
        rate_limit={"policy": "default/p", "limits": {"requestsPerMinute": PER_MINUTE}, "countBy": "apiKey"},
    )
    credentials = default_credentials({"apikeys.json": api_keys_json(KEYS)})
    files = RuntimeFiles(tmp_path, config, credentials)
    env = {"SENTIENT_AUDIT_LOG": str(tmp_path / "audit.log")}
    return RuntimeProcess(files, tmp_path / "runtime.log", env=env)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    with FakeUpstream("openai") as fake, start(tmp_path_factory.mktemp("ws"), fake) as process:
        yield process


def ws_url(runtime: RuntimeProcess) -> str:
    return f"ws://127.0.0.1:{runtime.port}/ws"


def assist_body(prompt: str) -> dict[str, Any]:
    return {"query": {"id": "q1", "prompt": prompt}}


def exchange(
    runtime: RuntimeProcess, first: str, key: str = "alice-secret-key", subprotocol: str | None = None
) -> tuple[list[str], int | None]:
    """Send the first message; every frame until the server closes, and the close code."""
    frames: list[str] = []
    with connect(
        ws_url(runtime),
        additional_headers={"x-api-key": key},
        subprotocols=[subprotocol] if subprotocol else None,  # type: ignore[list-item]
        open_timeout=10,
        close_timeout=5,
    ) as ws:
        ws.send(first)
        frames, code = drain(ws)
    return frames, code


def drain(ws: ClientConnection) -> tuple[list[str], int | None]:
    frames: list[str] = []
    try:
        while True:
            frame = ws.recv(timeout=30)
            assert isinstance(frame, str)
            frames.append(frame)
    except ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None


# Fields that differ between two answers to the same prompt (fresh ids).
_VOLATILE = {"id", "stream_id"}


def comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events without their fresh ids, each text stream's chunks joined (their split is timing)."""
    merged: list[dict[str, Any]] = []
    for event in events:
        event = {k: v for k, v in event.items() if k not in _VOLATILE}
        last = merged[-1] if merged else None
        if (
            last is not None
            and event["content_type"] == last["content_type"] == "chunked.text"
            and event["event_name"] == last["event_name"]
        ):
            last["content"] += event["content"]
            last["is_complete"] = event["is_complete"]
        else:
            merged.append(event)
    return merged


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: ") :]) for line in text.split("\n") if line.startswith("data: ")]


def test_ws_streams_the_same_events_as_assist(runtime: RuntimeProcess) -> None:
    body = assist_body("tell me about sockets")
    http = httpx.post(
        f"{runtime.url}/assist", json=body, headers={"x-api-key": "alice-secret-key"}, timeout=30
    )
    assert http.status_code == 200
    frames, code = exchange(runtime, json.dumps(body), subprotocol="sentient.v1")
    assert code == 1000
    events = [json.loads(f) for f in frames]
    assert events[-1]["event_name"] == protocol.DONE_EVENT_NAME
    assert comparable(events) == comparable(sse_events(http.text))


def test_ws_openai_subprotocol_streams_chunks(runtime: RuntimeProcess) -> None:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello there"}]}
    frames, code = exchange(runtime, json.dumps(body), key="bob-secret-key", subprotocol="openai.v1")
    assert code == 1000
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_ws_without_credentials_is_refused_at_the_handshake(runtime: RuntimeProcess) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(runtime), open_timeout=10)
    assert refused.value.response.status_code == 401
    audit = Path(runtime.env["SENTIENT_AUDIT_LOG"]).read_text()
    assert '"event":"auth.failure"' in audit and '"route":"/ws"' in audit


def test_ws_invalid_body_is_an_error_frame_and_a_policy_close(runtime: RuntimeProcess) -> None:
    for first in ('{"query": {"id": 5}}', "not json"):
        frames, code = exchange(runtime, first, key="bob-secret-key")
        events = [json.loads(f) for f in frames]
        assert [e["event_name"] for e in events] == [protocol.ERROR_EVENT_NAME, protocol.DONE_EVENT_NAME]
        assert events[0]["content"]["error_code"] == 422
        assert code == 1008


def test_ws_first_message_over_the_body_limit_is_closed_1009(runtime: RuntimeProcess) -> None:
    # Refused as the frame arrives (the server's message bound is the body limit), never buffered
    # whole up to the WebSocket library's own 16 MiB default.
    _, code = exchange(runtime, "x" * (MAX_BODY_BYTES + 1), key="bob-secret-key")
    assert code == 1009


def test_ws_rate_limit_refusal_is_audited_and_measured(runtime: RuntimeProcess) -> None:
    body = json.dumps(assist_body("hi"))
    for _ in range(PER_MINUTE):
        assert exchange(runtime, body, key="carol-secret-key")[1] == 1000
    frames, code = exchange(runtime, body, key="carol-secret-key")
    events = [json.loads(f) for f in frames]
    assert [e["event_name"] for e in events] == [protocol.ERROR_EVENT_NAME, protocol.DONE_EVENT_NAME]
    assert events[0]["content"]["error_code"] == 429
    assert code == 1013
    audit = Path(runtime.env["SENTIENT_AUDIT_LOG"])
    rejects = [json.loads(line) for line in audit.read_text().splitlines() if "ratelimit.reject" in line]
    assert any(r.get("route") == "/ws" for r in rejects)
    assert "carol-secret-key" not in audit.read_text()
    metrics = httpx.get(f"{runtime.url}/metrics").text
    assert 'sentient_requests_total{route="/ws",status="429"}' in metrics
    assert 'sentient_requests_total{route="/ws",status="200"}' in metrics


def test_sigterm_mid_stream_ends_with_error_and_going_away(tmp_path: Path) -> None:
    # 400 tokens at 50 ms: far longer than the 1 s grace.
    with (
        FakeUpstream("openai", latency=0.05, tokens=400) as fake,
        start(tmp_path, fake, shutdownGrace="1s") as process,
    ):
        result: dict[str, Any] = {}
        first_frame = threading.Event()

        def read() -> None:
            with connect(ws_url(process), additional_headers={"x-api-key": "alice-secret-key"}) as ws:
                ws.send(json.dumps(assist_body("a long answer")))
                frames = [ws.recv(timeout=30)]
                first_frame.set()
                rest, code = drain(ws)
                result.update(frames=frames + rest, code=code)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert first_frame.wait(30)
        # Another client is connected but has not sent its request yet.
        idle = connect(ws_url(process), additional_headers={"x-api-key": "bob-secret-key"})
        assert process.proc is not None
        process.proc.send_signal(signal.SIGTERM)
        with idle:
            idle_frames, idle_code = drain(idle)
        reader.join(30)
        assert process.proc.wait(30) == 0
    idle_events = [json.loads(f) for f in idle_frames]
    assert [e["event_name"] for e in idle_events] == [protocol.ERROR_EVENT_NAME, protocol.DONE_EVENT_NAME]
    assert idle_events[0]["content"]["error_code"] == 503
    assert idle_code == 1001
    events = [json.loads(f) for f in result["frames"]]
    assert events[-1]["event_name"] == protocol.DONE_EVENT_NAME
    assert events[-2]["event_name"] == protocol.ERROR_EVENT_NAME
    assert events[-2]["content"]["error_code"] == 503
    assert result["code"] == 1001
    assert verify_file(tmp_path / "audit.log", AUDIT_KEY.encode()).ok


def test_ws_without_a_first_message_is_closed_after_the_body_timeout(tmp_path: Path) -> None:
    with FakeUpstream("openai") as fake, start(tmp_path, fake, limits={"bodyTimeout": "1s"}) as process:
        with connect(ws_url(process), additional_headers={"x-api-key": "alice-secret-key"}) as ws:
            frames, code = drain(ws)
        assert (frames, code) == ([], 1008)
        metrics = httpx.get(f"{process.url}/metrics").text
        assert 'sentient_requests_total{route="/ws",status="499"}' in metrics


def test_ws_client_leaving_mid_stream_cancels_the_request(tmp_path: Path) -> None:
    with FakeUpstream("openai", latency=0.05, tokens=200) as fake, start(tmp_path, fake) as process:
        with connect(ws_url(process), additional_headers={"x-api-key": "alice-secret-key"}) as ws:
            ws.send(json.dumps(assist_body("a long answer")))
            ws.recv(timeout=30)
        # The upstream request is cancelled with the work, and counted as a client that left.
        assert wait_until(lambda: fake.state.streams_aborted == 1, timeout=10)
        metrics = httpx.get(f"{process.url}/metrics").text
        assert 'sentient_requests_total{route="/ws",status="499"}' in metrics
    assert "Traceback" not in (tmp_path / "runtime.log").read_text()


def test_an_upgraded_connection_outlives_the_http_deadlines(tmp_path: Path) -> None:
    # The HTTP protocol's header and body deadlines (1 s here) end with the upgrade: a stream of
    # about 3 s on the WebSocket goes to its end, and no refusal is counted.
    limits = {"headerTimeout": "1s", "bodyTimeout": "1s"}
    with (
        FakeUpstream("openai", latency=0.05, tokens=60) as fake,
        start(tmp_path, fake, limits=limits) as process,
    ):
        frames, code = exchange(process, json.dumps(assist_body("a long answer")))
        metrics = httpx.get(f"{process.url}/metrics").text
    events = [json.loads(f) for f in frames]
    assert events[-1]["event_name"] == protocol.DONE_EVENT_NAME
    assert protocol.ERROR_EVENT_NAME not in [e["event_name"] for e in events]
    assert code == 1000
    refused = [
        line
        for line in metrics.splitlines()
        if line.startswith("sentient_http_refusals_total{") and not line.endswith(" 0.0")
    ]
    assert refused == []
