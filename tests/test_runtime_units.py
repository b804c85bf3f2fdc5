"""Protocol encoding, ULIDs, the SDK's response handler, sessions (memory and real Redis), audit chain."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ulid import ULID

from agent_runtime import protocol
from agent_runtime.audit import AuditLog, verify, verify_file
from agent_runtime.audit import main as audit_main
from agent_runtime.client import parse_stream
from agent_runtime.protocol import DoneEvent, ErrorEvent, TextChunkEvent
from agent_runtime.sdk import Identity, ResponseClosedError, ResponseHandler, StreamClosedError, Turn
from agent_runtime.sessions import MemorySessionStore, RedisSessionStore

# ----------------------------------------------------------------------------- protocol


def test_ulid_text_matches_reference_implementation() -> None:
    for _ in range(200):
        value = protocol.ULIDS.next_int()
        assert protocol.ulid_to_str(value) == str(ULID.from_int(value))
        assert protocol.parse_ulid(protocol.ulid_to_str(value)) == value


def test_ulids_strictly_increase_within_one_millisecond() -> None:
    values = [protocol.ULIDS.next_int() for _ in range(5000)]
    assert all(a < b for a, b in itertools.pairwise(values))
    texts = [protocol.new_ulid() for _ in range(1000)]
    assert texts == sorted(texts) and len(set(texts)) == len(texts)


def test_chunk_encoder_matches_generic_encoding() -> None:
    encoder = protocol.ChunkEncoder("resp\u00e9", "src", "sid")
    fast = encoder.encode("01ARZ3NDEKTSV4RRFFQ69G5FAV", 'quote " and \n newline \u2603', False, {"a": 1})
    lines = fast.decode().split("\n")
    assert lines[0] == "event: resp\u00e9" and lines[2] == "" and lines[3] == ""
    data = json.loads(lines[1].removeprefix("data: "))
    assert data == protocol.event_dict(
        protocol.TEXT_STREAM,
        "resp\u00e9",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "src",
        {"a": 1},
        stream_id="sid",
        is_complete=False,
        content='quote " and \n newline \u2603',
    )


def test_line_splitter_follows_the_sse_spec() -> None:
    from agent_runtime.client import LineSplitter

    splitter = LineSplitter()
    assert splitter.feed("a\u2028b\r") == []
    assert splitter.feed("\nc\rd\n\ne") == ["a\u2028b", "c", "d", ""]
    assert splitter.close() == ["e"]
    encoded = protocol.dumps({"t": "x\u2028y\x85z\u2029"})
    assert len(encoded.splitlines()) == 1
    assert json.loads(encoded) == {"t": "x\u2028y\x85z\u2029"}
    with pytest.raises(ValueError):
        protocol.check_event_name("a\u2028b")


def test_metadata_validation() -> None:
    assert protocol.validate_metadata({"a": 1, "b": [True, "x"]}) == {"a": 1, "b": [True, "x"]}
    with pytest.raises(ValueError, match="at most 16"):
        protocol.validate_metadata({str(i): i for i in range(17)})
    with pytest.raises(ValueError):
        protocol.validate_metadata({"nested": {"no": 1}})
    with pytest.raises(ValueError):
        protocol.check_event_name("two\nlines")


# ----------------------------------------------------------------------------- SDK


class Collector:
    def __init__(self) -> None:
        self.data = b""

    async def __call__(self, record: bytes) -> None:
        self.data += record
        # Yield to the loop so concurrent writers really interleave.
        await asyncio.sleep(0)

    def events(self) -> list[protocol.AnyEvent]:
        return list(parse_stream(self.data.decode().split("\n")))


async def test_interleaved_streams_keep_order_and_ids() -> None:
    sink = Collector()
    handler = ResponseHandler(Identity("proc", "agent"), sink)
    streams = [handler.create_text_stream(f"s{i}") for i in range(3)]

    async def write(index: int) -> None:
        for n in range(20):
            await streams[index].emit_chunk(f"{index}:{n};")
        await streams[index].complete()

    await asyncio.gather(*(write(i) for i in range(3)))
    await handler.complete()
    events = sink.events()
    ids = [protocol.parse_ulid(e.id) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert isinstance(events[-1], DoneEvent)
    names = [e.event_name for e in events if isinstance(e, TextChunkEvent) and not e.is_complete]
    assert names != sorted(names), "streams written concurrently should interleave"
    for index, stream in enumerate(streams):
        text = "".join(
            e.content for e in events if isinstance(e, TextChunkEvent) and e.stream_id == stream.id
        )
        assert text == "".join(f"{index}:{n};" for n in range(20))


async def test_complete_closes_open_streams_and_rejects_more() -> None:
    sink = Collector()
    handler = ResponseHandler(Identity("proc", "agent"), sink)
    stream = handler.create_text_stream("open")
    await stream.emit_chunk("x", metadata={"k": "v"})
    await handler.complete()
    await handler.complete()  # idempotent
    events = sink.events()
    assert [type(e).__name__ for e in events] == ["TextChunkEvent", "TextChunkEvent", "DoneEvent"]
    first, closing = events[0], events[1]
    assert isinstance(first, TextChunkEvent) and first.metadata == {"k": "v"}
    assert isinstance(closing, TextChunkEvent) and closing.is_complete and closing.content == ""
    with pytest.raises(ResponseClosedError):
        await handler.emit_text_block("late", "x")
    with pytest.raises(StreamClosedError):
        await stream.emit_chunk("late")


async def test_emit_error_and_json_validation() -> None:
    sink = Collector()
    handler = ResponseHandler(Identity("proc", "agent"), sink)
    with pytest.raises(Exception, match="JSON"):
        await handler.emit_json("bad", {"x": object()})
    await handler.emit_error("nope", 409, {"why": "conflict"})
    await handler.complete()
    error = sink.events()[0]
    assert isinstance(error, ErrorEvent)
    assert (error.error_message, error.error_code, error.details) == ("nope", 409, {"why": "conflict"})


# ----------------------------------------------------------------------------- sessions


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_memory_sessions_ttl_bound_and_eviction() -> None:
    clock = Clock()
    store = MemorySessionStore(ttl_seconds=10, max_turns=3, max_sessions=2, clock=clock)
    await store.append("a", [Turn("user", "1"), Turn("assistant", "2")])
    await store.append("a", [Turn("user", "3"), Turn("assistant", "4")])
    assert [t.content for t in await store.get("a")] == ["2", "3", "4"]
    clock.now = 11
    assert await store.get("a") == []
    await store.append("b", [Turn("user", "b")])
    await store.append("c", [Turn("user", "c")])
    await store.append("d", [Turn("user", "d")])
    assert len(store) == 2
    assert await store.get("b") == []
    assert await store.get("") == []


async def test_memory_sessions_are_bounded_in_size_too() -> None:
    # A flood of large prompts: the store keeps at most max_chars of turns, least recently used
    # sessions evicted first; a session larger than that alone keeps its newest turns that fit.
    clock = Clock()
    store = MemorySessionStore(ttl_seconds=60, max_turns=50, max_sessions=100, clock=clock, max_chars=1000)
    for i in range(10):
        await store.append(f"s{i}", [Turn("user", "x" * 300)])
    assert store.chars <= 1000 and len(store) == 3
    assert [await store.get(f"s{i}") != [] for i in (6, 7, 8, 9)] == [False, True, True, True]
    await store.append("big", [Turn("user", f"{n}" * 400) for n in range(5)])
    assert [t.content[0] for t in await store.get("big")] == ["3", "4"]
    assert store.chars <= 1000 and len(store) == 1
    clock.now = 61  # expired sessions give their size back
    await store.append("fresh", [Turn("user", "hi")])
    assert store.chars == 2 and len(store) == 1


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    from tests.support.redis_server import redis_or_skip

    with redis_or_skip() as server:
        yield server.url


async def test_redis_sessions(redis_url: str) -> None:
    store = RedisSessionStore.from_url(redis_url, ttl_seconds=60, max_turns=3, prefix="test:session:")
    other = RedisSessionStore.from_url(redis_url, ttl_seconds=60, max_turns=3, prefix="test:session:")
    try:
        await store.append("s1", [Turn("user", "1"), Turn("assistant", "2")])
        await store.append("s1", [Turn("user", "3"), Turn("assistant", "4")])
        # A second replica sees the same history, bounded to max_turns.
        assert [(t.role, t.content) for t in await other.get("s1")] == [
            ("assistant", "2"),
            ("user", "3"),
            ("assistant", "4"),
        ]
        ttl = await store._redis.ttl("test:session:s1")
        assert 0 < ttl <= 60
        assert await store.get("unknown") == []
    finally:
        await store.aclose()
        await other.aclose()


# ----------------------------------------------------------------------------- audit


def test_audit_chain_verifies_and_detects_tampering(tmp_path: Path) -> None:
    key = b"k" * 32
    path = tmp_path / "audit.log"
    log = AuditLog(key, path)
    for i in range(5):
        log.record("auth.failure", reason="invalid_api_key", n=i)
    log.close()
    assert verify_file(path, key).ok
    assert verify_file(path, key).records == 5
    # A process restart appending to the same file continues the chain.
    again = AuditLog(key, path)
    again.record("runtime.start")
    again.close()
    result = verify_file(path, key)
    assert result.ok and result.records == 6

    lines = path.read_text().splitlines()
    modified = json.loads(lines[2])
    modified["reason"] = "ok"
    tampered = [*lines[:2], json.dumps(modified, separators=(",", ":")), *lines[3:]]
    broken = verify(tampered, key)
    assert not broken.ok and broken.line == 3

    removed = verify([*lines[:2], *lines[3:]], key)
    assert not removed.ok and removed.line == 3

    swapped = verify([lines[0], lines[2], lines[1], *lines[3:]], key)
    assert not swapped.ok and swapped.line == 2

    assert not verify(lines, b"another key").ok


def test_audit_on_a_stream_skips_other_log_lines() -> None:
    out = io.StringIO()
    log = AuditLog(b"key", stream=out)
    log.record("config.reload")
    out.write('{"level":"info","msg":"unrelated"}\nplain text\n')
    log.record("credentials.reload", files=["a"])
    assert verify(out.getvalue().splitlines(), b"key").ok


def test_audit_verify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "key").write_text("secret-key\n")
    log = AuditLog(b"secret-key", tmp_path / "audit.log")
    log.record("runtime.start")
    log.close()
    assert audit_main([str(tmp_path / "audit.log"), str(tmp_path / "key")]) == 0
    text = (tmp_path / "audit.log").read_text().replace("runtime.start", "runtime.stop!")
    (tmp_path / "audit.log").write_text(text)
    assert audit_main([str(tmp_path / "audit.log"), str(tmp_path / "key")]) == 1
    assert "broken at line 1" in capsys.readouterr().out


# ----------------------------------------------------------------------------- logging


def test_json_logs_carry_the_request_id() -> None:
    import logging

    from agent_runtime.logging import REQUEST_ID, JSONFormatter, accept_request_id

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("test.runtime.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    token = REQUEST_ID.set("req-1")
    try:
        logger.info("hello %s", "world", extra={"route": "/assist"})
    finally:
        REQUEST_ID.reset(token)
    logger.info("outside")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "hello world" and first["request_id"] == "req-1" and first["route"] == "/assist"
    assert first["level"] == "info" and first["logger"] == "test.runtime.json"
    assert "request_id" not in second
    assert accept_request_id("ok-123") == "ok-123"
    assert accept_request_id("bad\nvalue") is None
    assert accept_request_id("x" * 200) is None


# ----------------------------------------------------------------------------- round trip (property)

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_names = st.text(min_size=1, max_size=20).filter(lambda s: not any(c in s for c in protocol._LINE_END_CHARS))
_metadata = st.none() | st.dictionaries(
    st.text(max_size=8), st.one_of(st.text(max_size=8), st.integers(), st.booleans()), max_size=16
)


@settings(max_examples=150, deadline=None)
@given(
    name=_names,
    source=st.text(max_size=20),
    chunks=st.lists(st.text(max_size=40), max_size=8),
    meta=_metadata,
)
def test_encode_parse_round_trip(name: str, source: str, chunks: list[str], meta: dict | None) -> None:
    async def scenario() -> list[protocol.AnyEvent]:
        sink = Collector()
        handler = ResponseHandler(Identity(source, "agent"), sink)
        stream = handler.create_text_stream(name)
        for chunk in chunks:
            await stream.emit_chunk(chunk, metadata=meta)
        await handler.emit_text_block(name, "".join(chunks), metadata=meta)
        await handler.complete()
        # Split the way the most eager clients do (str.splitlines: also U+2028, NEL, ...):
        # the encoder must leave none of those raw inside a data line.
        return list(parse_stream(sink.data.decode().splitlines()))

    events = asyncio.run(scenario())
    assert isinstance(events[-1], DoneEvent)
    texts = [e for e in events if isinstance(e, TextChunkEvent)]
    assert [e.content for e in texts[:-1]] == chunks
    assert all(e.event_name == name and e.source == source for e in texts)
    assert all(e.metadata == (meta if meta is not None else None) for e in texts[:-1])
    block = events[-2]
    assert block.event_name == name
