"""The runtime's dev-mode capture bus (agent_runtime/devbus.py) and its feed ``GET /_dev/bus``.

A production runtime (``python -m agent_runtime`` without ``SENTIENT_DEV=1``) has neither;
with it, a request's decisions are published under its request id and streamed as SSE.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_runtime import devbus
from agent_runtime.client import LineSplitter, SSEParser
from agent_runtime.config import RuntimeConfig
from agent_runtime.testing import FakeUpstream
from agent_runtime.testing.control import Fault
from tests.support.net import free_port
from tests.support.runtime import (
    RuntimeFiles,
    RuntimeProcess,
    chain_entry,
    default_credentials,
    make_config,
)

KEY = "alice-secret-key"  # one of tests.support.runtime.DEFAULT_KEYS


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai") as upstream:
        yield upstream


def _runtime(
    root: Path, fake: FakeUpstream, env: dict[str, str], config: RuntimeConfig | None = None
) -> RuntimeProcess:
    config = config or make_config(chain=[chain_entry(fake)], port=free_port(), metrics_port=free_port())
    return RuntimeProcess(RuntimeFiles(root, config, default_credentials()), root / "runtime.log", env)


def _ask(url: str, prompt: str, request_id: str) -> httpx.Response:
    return httpx.post(
        f"{url}/assist",
        json={"query": {"id": request_id, "prompt": prompt}},
        headers={"authorization": f"Bearer {KEY}", "x-request-id": request_id},
        timeout=10,
    )


def test_production_runtime_has_no_dev_bus(fake: FakeUpstream, tmp_path: Path) -> None:
    with _runtime(tmp_path, fake, {"SENTIENT_DEV": ""}) as runtime:
        assert _ask(runtime.url, "hello", "prod-1").status_code == 200
        response = httpx.get(f"{runtime.url}/_dev/bus", timeout=5)
        assert response.status_code == 404
        assert httpx.get(f"{runtime.url}/_dev/", timeout=5).status_code == 404


def _read_events(url: str, until_kind: str, request_id: str, after: int = 0) -> list[dict[str, object]]:
    """Events of ``GET /_dev/bus`` until one of ``until_kind`` for ``request_id`` arrived."""
    events: list[dict[str, object]] = []
    parser, splitter = SSEParser(), LineSplitter()
    with httpx.stream("GET", f"{url}/_dev/bus", params={"after": after}, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for text in response.iter_text():
            for line in splitter.feed(text):
                record = parser.feed(line)
                if record is None:
                    continue
                event = json.loads(record[1])
                events.append(event)
                if event["kind"] == until_kind and event["request_id"] == request_id:
                    return events
    raise AssertionError(f"the stream ended before {until_kind}: {events}")


def test_dev_runtime_publishes_each_decision_under_the_request_id(fake: FakeUpstream, tmp_path: Path) -> None:
    with _runtime(tmp_path, fake, {"SENTIENT_DEV": "1"}) as runtime:
        assert _ask(runtime.url, "hello bus", "dev-1").status_code == 200
        events = _read_events(runtime.url, "request.end", "dev-1")
        mine = [e for e in events if e["request_id"] == "dev-1"]
        kinds = [e["kind"] for e in mine]
        assert kinds[0] == "request.start" and kinds[-1] == "request.end", kinds
        attempt = next(e for e in mine if e["kind"] == "attempt")
        assert attempt["provider"] == "default/fake" and attempt["outcome"] == "ok"
        assert int(attempt["output_tokens"]) > 0  # type: ignore[call-overload]
        end = mine[-1]
        assert end["status"] == 200 and end["route"] == "/assist"
        assert end["caller"] == {"id": "alice", "kind": "apiKey", "tier": "gold"}
        # Resuming after the last event seen gives only what came later.
        last = int(events[-1]["seq"])  # type: ignore[call-overload]
        assert _ask(runtime.url, "again", "dev-2").status_code == 200
        later = _read_events(runtime.url, "request.end", "dev-2", after=last)
        assert all(int(e["seq"]) > last for e in later)  # type: ignore[call-overload]
        assert {e["request_id"] for e in later} == {"dev-2"}
        # No credential ever goes on the bus.
        text = json.dumps(events + later)
        assert KEY not in text and "sk-" not in text


def test_retries_failover_breaker_guardrail_and_rate_limit_go_on_the_bus(tmp_path: Path) -> None:
    with FakeUpstream("openai") as fake:
        fake.inject(Fault("status", status=503, model="broken", count=-1))
        config = make_config(
            chain=[
                chain_entry(
                    fake,
                    "default/first",
                    model="broken",
                    retry={"maxAttempts": 2, "initialBackoff": "10ms", "maxBackoff": "10ms"},
                    circuitBreaker={"failureThreshold": 2},
                ),
                chain_entry(fake, "default/second"),
            ],
            port=free_port(),
            metrics_port=free_port(),
            rate_limit={"policy": "default/p", "limits": {"requestsPerMinute": 2}, "countBy": "apiKey"},
        )
        guarded = {**config.model_dump(mode="json", by_alias=True)}
        guarded["guardrails"] = {"input": [{"name": "no-secrets", "patterns": {"deny": ["forbidden"]}}]}
        config = RuntimeConfig.model_validate(guarded)
        with _runtime(tmp_path, fake, {"SENTIENT_DEV": "1"}, config) as runtime:
            assert _ask(runtime.url, "hello", "fo-1").status_code == 200
            assert _ask(runtime.url, "something forbidden", "gr-1").status_code == 400
            assert _ask(runtime.url, "one too many", "rl-1").status_code == 429
            events = _read_events(runtime.url, "request.end", "rl-1")

    def of(request_id: str, kind: str) -> list[dict[str, object]]:
        return [e for e in events if e["request_id"] == request_id and e["kind"] == kind]

    attempts = [(e["provider"], e["outcome"]) for e in of("fo-1", "attempt")]
    assert attempts[:2] == [("default/first", "5xx"), ("default/first", "5xx")]
    assert attempts[-1] == ("default/second", "ok")
    assert [e["reason"] for e in of("fo-1", "retry")] == ["5xx"]
    failover = of("fo-1", "failover")[0]
    assert (failover["source"], failover["target"], failover["phase"]) == (
        "default/first",
        "default/second",
        "before_first_token",
    )
    assert any(
        e["provider"] == "default/first" and e["state"] == "open" for e in events if e["kind"] == "breaker"
    )
    verdict = of("gr-1", "guardrail")[0]
    assert (verdict["check"], verdict["stage"], verdict["action"]) == ("no-secrets", "input", "block")
    assert [e["allowed"] for e in of("fo-1", "ratelimit")] == [True]
    refused = of("rl-1", "ratelimit")[0]
    assert refused["allowed"] is False and refused["status"] == 429 and refused["limit"] == "requests"
    assert of("rl-1", "request.end")[0]["status"] == 429


def test_bus_is_bounded_and_drops_a_reader_that_falls_behind() -> None:
    async def scenario() -> None:
        bus = devbus.DevBus(capacity=5)
        with bus.subscribe(size=3) as queue:
            for n in range(10):
                bus.publish("tick", "r", n=n)
            # Only the newest events stay in the ring.
            assert [e["n"] for e in bus.since(0)] == [5, 6, 7, 8, 9]
            assert [e["n"] for e in bus.since(8)] == [8, 9]
            assert bus.last_seq == 10
            # The slow reader was dropped with a marker (it resumes from the ring with ?after=).
            assert queue.get_nowait() is None
            assert queue.empty()
        with bus.subscribe() as queue:
            bus.publish("tick", "r", n=10)
            event = queue.get_nowait()
            assert event is not None and event["n"] == 10 and event["request_id"] == "r"

    asyncio.run(scenario())


def test_bus_is_off_unless_enabled() -> None:
    assert devbus.BUS is None  # importing the runtime never turns it on
    bus = devbus.enable()
    try:
        assert devbus.enable() is bus
    finally:
        devbus.disable()
    assert devbus.BUS is None
