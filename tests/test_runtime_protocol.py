"""Sentient protocol conformance of /assist over real HTTP, and the client that parses it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_runtime import protocol
from agent_runtime.client import SentientClient, SSEParser, SyncSentientClient, parse_stream
from agent_runtime.protocol import DocumentEvent, DoneEvent, ErrorEvent, TextBlockEvent, TextChunkEvent
from tests.support.runtime import InProcessRuntime, RuntimeFiles, default_credentials, make_config

AGENT = "tests.support.runtime_agents:ScriptedAgent"
KEY = "alice-secret-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessRuntime]:
    root = tmp_path_factory.mktemp("protocol")
    files = RuntimeFiles(
        root, make_config(agent_class=AGENT, server={"heartbeatInterval": "100ms"}), default_credentials()
    )
    with InProcessRuntime(files) as runtime:
        yield runtime


def raw_events(server: InProcessRuntime, prompt: str, **body: object) -> tuple[httpx.Response, list[dict]]:
    payload = {"query": {"id": protocol.new_ulid(), "prompt": prompt}, **body}
    response = httpx.post(f"{server.url}/assist", json=payload, headers={"x-api-key": KEY}, timeout=30)
    records = []
    parser = SSEParser()
    for line in response.text.split("\n"):
        record = parser.feed(line)
        if record is not None:
            records.append({"event": record[0], "data": json.loads(record[1])})
    return response, records


def check_conformance(records: list[dict], source: str) -> None:
    """Invariants every response must satisfy."""
    assert records, "no events"
    ids = []
    for record in records:
        data = record["data"]
        assert record["event"] == data["event_name"]
        assert data["content_type"] in protocol.CONTENT_TYPES
        assert data["schema_version"] == "1.0"
        assert data["source"] == source
        assert data["metadata"] is None or (
            isinstance(data["metadata"], dict) and len(data["metadata"]) <= 16
        )
        ids.append(protocol.parse_ulid(data["id"]))
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "ids must strictly increase"
    kinds = [r["data"]["content_type"] for r in records]
    assert kinds[-1] == protocol.DONE and kinds.count(protocol.DONE) == 1
    assert records[-1]["event"] == "done"
    # Every stream that was opened is closed exactly once, before done.
    streams: dict[str, int] = {}
    for record in records:
        data = record["data"]
        if data["content_type"] == protocol.TEXT_STREAM:
            assert streams.get(data["stream_id"], 0) == 0, "chunk after the closing chunk"
            if data["is_complete"]:
                streams[data["stream_id"]] = 1
            else:
                streams.setdefault(data["stream_id"], 0)
    assert all(closed == 1 for closed in streams.values())


def test_text_stream_events(server: InProcessRuntime) -> None:
    response, records = raw_events(server, "echo:one two three")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"]
    check_conformance(records, "test-agent")
    chunks = [r["data"] for r in records if r["data"]["content_type"] == protocol.TEXT_STREAM]
    assert "".join(c["content"] for c in chunks) == "one two three "
    assert len({c["stream_id"] for c in chunks}) == 1
    assert chunks[-1]["is_complete"] is True and all(not c["is_complete"] for c in chunks[:-1])


def test_source_is_processor_id(server: InProcessRuntime) -> None:
    session = {
        "processor_id": "proc-7",
        "activity_id": protocol.new_ulid(),
        "request_id": protocol.new_ulid(),
    }
    _, records = raw_events(server, "echo:hi", session=session)
    check_conformance(records, "proc-7")


def test_block_and_json_then_respond(server: InProcessRuntime) -> None:
    _, records = raw_events(server, "block:done it")
    check_conformance(records, "test-agent")
    assert [r["data"]["content_type"] for r in records] == [protocol.TEXTBLOCK, protocol.JSON, protocol.DONE]
    assert records[1]["data"]["content"] == {"text": "done it", "n": 1}
    assert records[1]["event"] == "answer"


def test_interleaved_streams(server: InProcessRuntime) -> None:
    _, records = raw_events(server, "interleave")
    check_conformance(records, "test-agent")
    by_name: dict[str, str] = {}
    order = []
    for record in records:
        data = record["data"]
        if data["content_type"] == protocol.TEXT_STREAM:
            by_name[data["event_name"]] = by_name.get(data["event_name"], "") + data["content"]
            order.append(data["event_name"])
    assert by_name == {"first": "abcde", "second": "vwxyz"}
    # Both tasks wrote concurrently: the streams really interleave on the wire.
    assert order.index("second") < len(order) - order[::-1].index("first") - 1


def test_agent_exception_gives_error_then_done(server: InProcessRuntime) -> None:
    response, records = raw_events(server, "raise")
    assert response.status_code == 200
    check_conformance(records, "test-agent")
    kinds = [r["data"]["content_type"] for r in records]
    assert kinds[-2:] == [protocol.ERROR, protocol.DONE]
    error = records[-2]["data"]
    assert error["event_name"] == "error"
    assert error["content"]["error_code"] == 500
    assert "secret internal detail" not in response.text
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'sentient_agent_errors_total{code="500",route="/assist"}' in metrics


def test_agent_error_code_and_details(server: InProcessRuntime) -> None:
    response, records = raw_events(server, "agent-error")
    # The agent failed before sending anything: the HTTP status carries its code too.
    assert response.status_code == 418
    check_conformance(records, "test-agent")
    assert [r["data"]["content_type"] for r in records] == [protocol.ERROR, protocol.DONE]
    assert records[0]["data"]["content"] == {
        "error_message": "teapot refused",
        "error_code": 418,
        "details": {"hint": "use coffee"},
    }


def test_heartbeat_comments_on_silence(server: InProcessRuntime) -> None:
    response, records = raw_events(server, "silent:1")
    check_conformance(records, "test-agent")
    assert protocol.HEARTBEAT.decode() in response.text
    assert [r["data"]["content_type"] for r in records] == [protocol.TEXTBLOCK, protocol.DONE]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "invalid request body"),
        (b'{"query": {"id": "x"}}', "query.prompt"),
        (b'{"session": {}}', "query"),
        (b'{"query": {"id": "", "prompt": "p"}}', "query.id"),
    ],
)
def test_invalid_body_is_422_with_error_and_done(
    server: InProcessRuntime, body: bytes, fragment: str
) -> None:
    response = httpx.post(
        f"{server.url}/assist",
        content=body,
        headers={"x-api-key": KEY, "content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 422
    events = list(parse_stream(response.text.split("\n")))
    assert isinstance(events[0], ErrorEvent) and isinstance(events[-1], DoneEvent)
    assert fragment in events[0].error_message
    assert events[0].error_code == 422


def test_get_assist_is_405(server: InProcessRuntime) -> None:
    response = httpx.get(f"{server.url}/assist", headers={"x-api-key": KEY})
    assert response.status_code == 405


def test_request_id_is_echoed(server: InProcessRuntime) -> None:
    response = httpx.post(
        f"{server.url}/assist",
        json={"query": {"id": protocol.new_ulid(), "prompt": "echo:x"}},
        headers={"x-api-key": KEY, "x-request-id": "req-abc.123"},
    )
    assert response.headers["x-request-id"] == "req-abc.123"


def test_probes_and_card(server: InProcessRuntime) -> None:
    assert httpx.get(f"{server.url}/live").status_code == 200
    ready = httpx.get(f"{server.url}/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok"
    # The chain's state in chain order; which provider and model only with llm.revealProvider.
    assert health["providers"][0]["index"] == 0 and health["providers"][0]["usable"] is True
    assert "provider" not in health["providers"][0] and "model" not in health["providers"][0]
    card = httpx.get(f"{server.url}/info").json()
    assert card["name"] == "test-agent"
    assert card["capabilities"] == ["chat"]
    assert card["description"] == "an agent for tests"


def test_metrics_on_main_port_when_no_metrics_port(server: InProcessRuntime) -> None:
    text = httpx.get(f"{server.url}/metrics").text
    assert 'sentient_requests_total{route="/assist"' in text


async def test_async_client_typed_events(server: InProcessRuntime) -> None:
    async with SentientClient(server.url, api_key=KEY) as client:
        events = [e async for e in client.assist("echo:typed events")]
        assert isinstance(events[-1], DoneEvent)
        chunks = [e for e in events if isinstance(e, TextChunkEvent)]
        assert "".join(c.content for c in chunks) == "typed events "
        result = await client.ask("block:x")
        assert isinstance(result.events[0], TextBlockEvent)
        assert isinstance(result.events[1], DocumentEvent) and result.events[1].content["text"] == "x"
        assert result.done and result.error is None and result.status == 200
        failed = await client.ask("raise")
        assert failed.error is not None and failed.done and failed.status == 200


def test_sync_client(server: InProcessRuntime) -> None:
    with SyncSentientClient(server.url, api_key=KEY) as client:
        result = client.ask("echo:sync works")
        assert result.text == "sync works "
        assert result.done


def test_client_retries_connect_then_fails(tmp_path: Path) -> None:
    from tests.support.net import free_port

    with (
        SyncSentientClient(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.ask("echo:x")


def test_client_parser_edge_cases() -> None:
    text = (
        ": comment\n"
        "event: response\n"
        'data: {"content_type":"atomic.textblock","event_name":"response","schema_version":"1.0",\n'
        'data: "id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","source":"s","metadata":null,"content":"a"}\n'
        "\n"
        "event: done\r\n"
    )
    lines = [line.rstrip("\r") for line in text.split("\n")]
    events = list(
        parse_stream(
            [
                *lines,
                'data: {"content_type":"atomic.done","event_name":"done",'
                '"id":"01ARZ3NDEKTSV4RRFFQ69G5FAW","source":"s"}',
                "",
            ]
        )
    )
    assert isinstance(events[0], TextBlockEvent) and events[0].content == "a"
    assert isinstance(events[1], DoneEvent)
