"""The response cache through the real runtime: real HTTP, the fake upstream counting its calls.

Memory backend here (and a few units of the pieces); Redis standalone and Redis Cluster in
``test_runtime_cache_redis.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime.cache.entry import Entry, EntryError
from agent_runtime.cache.keys import config_fingerprint, request_digest
from agent_runtime.cache.memory import MemoryBackend
from agent_runtime.cache.request import Directives
from agent_runtime.client import parse_stream
from agent_runtime.config import CacheRuntimeConfig, GuardrailsConfig, RuntimeConfig
from agent_runtime.llm import ChatMessage, ChatRequest
from agent_runtime.metrics import REGISTRY
from agent_runtime.protocol import DoneEvent, TextChunkEvent
from agent_runtime.testing.control import FakeUpstream, Fault, run_fake
from tests.support.runtime import InProcessRuntime, RuntimeFiles, default_credentials, make_config

ALICE = {"authorization": "Bearer alice-secret-key"}
BOB = {"authorization": "Bearer bob-secret-key"}
HEADER = "x-sentient-cache"


def cached_config(fake: FakeUpstream, cache: dict[str, Any], **fields: Any) -> RuntimeConfig:
    """A test config with the response cache ``cache`` (wire form)."""
    config = make_config(endpoint=fake.endpoint, **fields)
    return config.model_copy(update={"cache": CacheRuntimeConfig.model_validate(cache)})


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with run_fake("openai") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[InProcessRuntime]:
    root = tmp_path_factory.mktemp("cache")
    config = cached_config(fake, {"ttl": "10m"})
    with InProcessRuntime(RuntimeFiles(root, config, default_credentials())) as runtime:
        yield runtime


def unique(text: str = "what is a cache") -> str:
    """A prompt no other test asked (entries outlive a test in the module's runtime)."""
    return f"{text} {uuid.uuid4().hex[:8]}"


def chat(
    server: InProcessRuntime,
    prompt: str,
    *,
    stream: bool = False,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": stream, **fields}
    return httpx.post(
        f"{server.url}/v1/chat/completions", json=body, headers={**ALICE, **(headers or {})}, timeout=10
    )


def chunks(response: httpx.Response) -> list[Any]:
    """The stream's records without what every response gets afresh (id, created)."""
    records: list[Any] = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            if data == "[DONE]":
                records.append(data)
                continue
            record = json.loads(data)
            record.pop("id", None)
            record.pop("created", None)
            records.append(record)
    return records


def assist(
    server: InProcessRuntime, prompt: str, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, list[Any]]:
    body = {"query": {"id": "q1", "prompt": prompt}}
    with httpx.stream(
        "POST", f"{server.url}/assist", json=body, headers={**ALICE, **(headers or {})}, timeout=10
    ) as response:
        events = list(parse_stream(response.iter_lines()))
    return response, events


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_whole_answer_miss_then_hit_without_upstream_call(
    server: InProcessRuntime, fake: FakeUpstream
) -> None:
    prompt = unique()
    hits = sample("sentient_cache_lookups_total", {"result": "hit"})
    saved = sample("sentient_cache_saved_tokens_total")
    before = fake.state.requests
    first = chat(server, prompt)
    assert first.status_code == 200 and first.headers[HEADER] == "miss"
    assert fake.state.requests == before + 1
    second = chat(server, prompt)
    assert second.status_code == 200 and second.headers[HEADER] == "hit"
    assert fake.state.requests == before + 1
    a, b = first.json(), second.json()
    assert a["choices"] == b["choices"] and a["usage"] == b["usage"]
    assert a["id"] != b["id"]
    assert sample("sentient_cache_lookups_total", {"result": "hit"}) == hits + 1
    assert sample("sentient_cache_saved_tokens_total") == saved + a["usage"]["total_tokens"]


def test_stream_is_replayed_as_the_same_chunks(server: InProcessRuntime, fake: FakeUpstream) -> None:
    prompt = unique("tell me about streams and their many chunks")
    options: dict[str, Any] = {"stream_options": {"include_usage": True}}
    before = fake.state.requests
    # Paced, so that the pieces arrive apart (pieces that arrive in one read are merged).
    fake.state.configure({"latency": 0.01})
    try:
        first = chat(server, prompt, stream=True, **options)
    finally:
        fake.state.configure({"latency": 0.0})
    second = chat(server, prompt, stream=True, **options)
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit")
    assert second.headers["content-type"].startswith("text/event-stream")
    assert fake.state.requests == before + 1
    recorded, replayed = chunks(first), chunks(second)
    # One chunk per upstream piece, the role chunk, the finish chunk, usage, [DONE].
    assert len(recorded) > 5
    assert replayed == recorded


def test_assist_is_replayed_as_the_same_events(server: InProcessRuntime, fake: FakeUpstream) -> None:
    prompt = unique("explain the sentient protocol")
    before = fake.state.requests
    first, recorded = assist(server, prompt)
    second, replayed = assist(server, prompt)
    assert (first.headers[HEADER], second.headers[HEADER]) == ("miss", "hit")
    assert fake.state.requests == before + 1

    def shape(events: list[Any]) -> list[tuple[str, str, bool]]:
        return [
            (
                type(e).__name__,
                e.content if isinstance(e, TextChunkEvent) else "",
                getattr(e, "is_complete", False),
            )
            for e in events
        ]

    assert shape(replayed) == shape(recorded)
    assert isinstance(replayed[-1], DoneEvent)
    assert "".join(e.content for e in replayed if isinstance(e, TextChunkEvent)).startswith("Echo: explain")


def test_whole_and_streamed_answers_are_kept_apart(server: InProcessRuntime) -> None:
    prompt = unique()
    assert chat(server, prompt).headers[HEADER] == "miss"
    assert chat(server, prompt, stream=True).headers[HEADER] == "miss"
    assert chat(server, prompt, stream=True).headers[HEADER] == "hit"


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"top_p": 0.5},
        {"max_tokens": 7},
        {"stop": ["x"]},
    ],
)
def test_different_parameters_miss(
    server: InProcessRuntime, fake: FakeUpstream, change: dict[str, Any]
) -> None:
    prompt = unique()
    assert chat(server, prompt).headers[HEADER] == "miss"
    before = fake.state.requests
    assert chat(server, prompt, **change).headers[HEADER] == "miss"
    assert chat(server, prompt + "!").headers[HEADER] == "miss"
    assert fake.state.requests == before + 2
    assert chat(server, prompt, **change).headers[HEADER] == "hit"


def test_cache_control_no_cache_reads_fresh_and_stores_it(
    server: InProcessRuntime, fake: FakeUpstream
) -> None:
    prompt = unique()
    chat(server, prompt)
    before = fake.state.requests
    bypassed = chat(server, prompt, headers={"cache-control": "no-cache"})
    assert bypassed.headers[HEADER] == "bypass"
    assert fake.state.requests == before + 1
    assert chat(server, prompt).headers[HEADER] == "hit"


def test_no_store_keeps_nothing(server: InProcessRuntime, fake: FakeUpstream) -> None:
    prompt = unique()
    assert chat(server, prompt, headers={"cache-control": "no-store"}).headers[HEADER] == "miss"
    assert chat(server, prompt, cache={"no-store": True}).headers[HEADER] == "miss"
    assert chat(server, prompt).headers[HEADER] == "miss"
    assert chat(server, prompt).headers[HEADER] == "hit"


def test_body_extension_bypasses_the_cache(server: InProcessRuntime, fake: FakeUpstream) -> None:
    prompt = unique()
    chat(server, prompt)
    before = fake.state.requests
    response = chat(server, prompt, cache={"no-cache": True, "no-store": True})
    assert response.headers[HEADER] == "bypass"
    assert fake.state.requests == before + 1
    assert chat(server, prompt, cache={"no-cache": "yes"}).status_code == 422


def test_assist_honours_cache_control(server: InProcessRuntime, fake: FakeUpstream) -> None:
    prompt = unique()
    assist(server, prompt)
    before = fake.state.requests
    response, _ = assist(server, prompt, {"cache-control": "no-cache, no-store"})
    assert response.headers[HEADER] == "bypass"
    assert fake.state.requests == before + 1


def test_upstream_errors_are_not_stored(server: InProcessRuntime, fake: FakeUpstream) -> None:
    prompt = unique()
    fake.inject(Fault("status", status=400))
    assert chat(server, prompt).status_code == 400
    before = fake.state.requests
    response = chat(server, prompt)
    assert response.status_code == 200 and response.headers[HEADER] == "miss"
    assert fake.state.requests == before + 1


def test_a_cut_off_stream_is_not_stored(server: InProcessRuntime, fake: FakeUpstream) -> None:
    prompt = unique("a long answer that is cut off half way through")
    # Every attempt (and retry) is cut after two chunks: the stream ends with an error record.
    fake.inject(Fault("reset", after_chunks=2, count=-1))
    try:
        cut = chat(server, prompt, stream=True)
    finally:
        fake.state.clear_faults()
    assert '"error"' in cut.text
    response = chat(server, prompt, stream=True)
    assert response.headers[HEADER] == "miss"
    assert '"error"' not in response.text


def test_a_client_that_leaves_mid_stream_stores_nothing(server: InProcessRuntime, fake: FakeUpstream) -> None:
    prompt = unique("a slow answer the client does not wait for")
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": True}
    fake.state.configure({"latency": 0.05})
    try:
        with httpx.stream(
            "POST", f"{server.url}/v1/chat/completions", json=body, headers=ALICE, timeout=10
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    break
    finally:
        fake.state.configure({"latency": 0.0})
    assert chat(server, prompt, stream=True).headers[HEADER] == "miss"


def test_per_principal_scope(tmp_path: Path, fake: FakeUpstream) -> None:
    config = cached_config(fake, {"scope": "principal"})
    with InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials())) as rt:
        prompt = unique()
        assert chat(rt, prompt).headers[HEADER] == "miss"
        assert chat(rt, prompt, headers=BOB).headers[HEADER] == "miss"
        assert chat(rt, prompt, headers=BOB).headers[HEADER] == "hit"
        assert chat(rt, prompt).headers[HEADER] == "hit"


def test_shared_scope_serves_every_caller(server: InProcessRuntime) -> None:
    prompt = unique()
    assert chat(server, prompt).headers[HEADER] == "miss"
    assert chat(server, prompt, headers=BOB).headers[HEADER] == "hit"


def test_guardrail_blocked_answers_are_not_stored(tmp_path: Path, fake: FakeUpstream) -> None:
    config = cached_config(fake, {})
    guardrails = GuardrailsConfig.model_validate(
        {"output": [{"name": "codeword", "patterns": {"deny": ["(?i)launch code"]}}]}
    )
    config = config.model_copy(update={"guardrails": guardrails})
    with InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials())) as rt:
        prompt = "what is the launch code"
        before = fake.state.requests
        assert chat(rt, prompt).status_code == 400
        assert chat(rt, prompt, stream=True).status_code == 400
        _, events = assist(rt, prompt)
        assert any(type(e).__name__ == "ErrorEvent" for e in events)
        assert chat(rt, prompt).status_code == 400
        # Every attempt went upstream: nothing blocked was ever kept.
        assert fake.state.requests == before + 4


def test_ttl_expiry(tmp_path: Path, fake: FakeUpstream) -> None:
    config = cached_config(fake, {"ttl": "300ms"})
    with InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials())) as rt:
        prompt = unique()
        assert chat(rt, prompt).headers[HEADER] == "miss"
        assert chat(rt, prompt).headers[HEADER] == "hit"
        time.sleep(0.4)
        assert chat(rt, prompt).headers[HEADER] == "miss"


def test_entry_bound_evicts_the_least_recently_used(tmp_path: Path, fake: FakeUpstream) -> None:
    config = cached_config(fake, {"maxEntries": 2})
    with InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials())) as rt:
        a, b, c = unique("a"), unique("b"), unique("c")
        chat(rt, a)
        chat(rt, b)
        assert chat(rt, a).headers[HEADER] == "hit"  # a is now the most recent
        chat(rt, c)  # evicts b
        assert chat(rt, a).headers[HEADER] == "hit"
        assert chat(rt, b).headers[HEADER] == "miss"
        metrics = httpx.get(f"{rt.url}/metrics").text
        assert "sentient_cache_entries 2.0" in metrics


def test_a_hit_counts_the_request_but_not_tokens(tmp_path: Path, fake: FakeUpstream) -> None:
    policy = {
        "policy": "default/p",
        "limits": {"requestsPerMinute": 100, "tokensPerMinute": 100_000},
        "countBy": "apiKey",
    }
    config = cached_config(fake, {}, rate_limit=policy)
    with InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials())) as rt:
        prompt = unique()
        responses = [chat(rt, prompt) for _ in range(4)]
    assert [r.headers[HEADER] for r in responses] == ["miss", "hit", "hit", "hit"]
    requests = [int(r.headers["ratelimit-remaining"]) for r in responses]
    assert requests == [99, 98, 97, 96]
    tokens = [int(r.headers["x-ratelimit-remaining-tokens"]) for r in responses]
    # The miss spent its real usage; each hit reserved its estimate and gave all of it back.
    assert tokens[1] < tokens[0] + responses[0].json()["usage"]["total_tokens"] + 1
    assert tokens[1] == tokens[2] == tokens[3]


def test_reload_keeps_entries_but_a_new_agent_config_misses(tmp_path: Path, fake: FakeUpstream) -> None:
    files = RuntimeFiles(tmp_path, cached_config(fake, {}), default_credentials())
    with InProcessRuntime(files) as rt:
        prompt = unique()
        chat(rt, prompt)
        files.update_config(cached_config(fake, {}, system_prompt="You are another agent."))
        for _ in range(100):
            if rt.runtime.config.agent.system_prompt == "You are another agent.":
                break
            time.sleep(0.05)
        assert chat(rt, prompt).headers[HEADER] == "miss"
        assert chat(rt, prompt).headers[HEADER] == "hit"


def test_agent_without_cache_says_nothing(tmp_path: Path, fake: FakeUpstream) -> None:
    config = make_config(endpoint=fake.endpoint)
    with InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials())) as rt:
        prompt = unique()
        before = fake.state.requests
        assert HEADER not in chat(rt, prompt).headers
        assert HEADER not in chat(rt, prompt).headers
        assert fake.state.requests == before + 2


# ---------------------------------------------------------------------- units of the pieces


def test_memory_backend_bounds_bytes_and_expires() -> None:
    now = [0.0]
    backend = MemoryBackend(max_entries=100, max_bytes=300, clock=lambda: now[0])

    async def scenario() -> None:
        await backend.set("a", b"x" * 100, ttl=10)
        await backend.set("b", b"x" * 100, ttl=10)
        await backend.set("c", b"x" * 100, ttl=10)  # 303 bytes with the keys: a goes
        assert await backend.get("a") is None
        assert await backend.get("b") is not None
        assert backend.bytes == 202
        await backend.set("huge", b"x" * 400, ttl=10)  # larger than the whole bound: not kept
        assert await backend.get("huge") is None and len(backend) == 2
        now[0] = 11.0
        assert await backend.get("b") is None
        assert len(backend) == 1

    asyncio.run(scenario())


def test_keys_change_with_everything_that_changes_the_answer() -> None:
    config = make_config()
    base = config_fingerprint(config)
    assert base == config_fingerprint(make_config())
    assert base != config_fingerprint(make_config(system_prompt="other"))
    assert base != config_fingerprint(make_config(llm={"parameters": {"temperature": 0.1}}))
    request = ChatRequest(messages=[ChatMessage("user", "hi")])
    digest = request_digest(base, request, "complete", "")
    assert digest == request_digest(base, ChatRequest(messages=[ChatMessage("user", "hi")]), "complete", "")
    assert digest != request_digest(base, request, "stream", "")
    assert digest != request_digest(base, request, "complete", "apiKey:alice")
    assert digest != request_digest(base, ChatRequest(messages=[ChatMessage("system", "hi")]), "complete", "")


def test_entry_round_trip_and_foreign_bytes() -> None:
    entry = Entry(("a ", "b"), (3, 2), "p", "m", "stop")
    assert Entry.decode(entry.encode()) == entry
    assert Entry.decode(Entry(("x",), None, "p", "m", None).encode()).usage is None
    for junk in (b"", b"{}", b"[2]", b'[1,["a"],[1],"p","m",null]'):
        with pytest.raises(EntryError):
            Entry.decode(junk)


def test_directives_from_headers() -> None:
    assert Directives.from_headers({}) == Directives()
    assert Directives.from_headers({"cache-control": "No-Cache"}) == Directives(no_cache=True)
    assert Directives.from_headers({"cache-control": "max-age=0, no-store"}) == Directives(no_store=True)
    assert Directives.from_headers({"pragma": "no-cache"}) == Directives(no_cache=True)


def _ws_frames(server: InProcessRuntime, body: dict[str, Any], subprotocol: str | None) -> list[Any]:
    from websockets.sync.client import connect

    frames: list[Any] = []
    with connect(
        server.url.replace("http://", "ws://") + "/ws",
        additional_headers=ALICE,
        subprotocols=[subprotocol] if subprotocol else None,  # type: ignore[list-item]
        open_timeout=10,
    ) as ws:
        ws.send(json.dumps(body))
        for frame in ws:
            frames.append(frame if frame == "[DONE]" else json.loads(frame))
    return frames


def _without_fresh_ids(frames: list[Any]) -> list[Any]:
    kept = []
    for frame in frames:
        if isinstance(frame, dict):
            frame = {k: v for k, v in frame.items() if k not in ("id", "created", "stream_id")}
        kept.append(frame)
    return kept


@pytest.mark.parametrize("subprotocol", ["sentient.v1", "openai.v1"])
def test_websocket_replays_the_same_frames(
    server: InProcessRuntime, fake: FakeUpstream, subprotocol: str
) -> None:
    prompt = unique("over a websocket")
    if subprotocol == "openai.v1":
        body: dict[str, Any] = {
            "model": "m",
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
        }
    else:
        body = {"query": {"id": "q1", "prompt": prompt}}
    before = fake.state.requests
    recorded = _ws_frames(server, body, subprotocol)
    replayed = _ws_frames(server, body, subprotocol)
    assert fake.state.requests == before + 1
    # Everything but the ids every response gets afresh (chunk ids, event and stream ids).
    assert _without_fresh_ids(replayed) == _without_fresh_ids(recorded)
    assert len(recorded) >= 3
