"""The app's use of the limiter: admission before the upstream, 429 shapes, settle with real usage.

And sessions shared by two runtimes through a real Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_runtime import protocol
from agent_runtime.client import SyncSentientClient, parse_stream
from agent_runtime.metrics import REGISTRY
from agent_runtime.protocol import DoneEvent, ErrorEvent
from agent_runtime.testing import FakeUpstream
from tests.support.runtime import (
    InProcessRuntime,
    RuntimeFiles,
    chain_entry,
    default_credentials,
    make_config,
)

KEY = "alice-secret-key"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai") as upstream:
        yield upstream


def assist(url: str, prompt: str = "hi", key: str = KEY) -> httpx.Response:
    body = {"query": {"id": protocol.new_ulid(), "prompt": prompt}}
    return httpx.post(f"{url}/assist", json=body, headers={"x-api-key": key}, timeout=20)


def test_request_budget_refuses_before_the_upstream(fake: FakeUpstream, tmp_path: Path) -> None:
    policy = {"policy": "default/p", "limits": {"requestsPerMinute": 2}, "countBy": "apiKey"}
    config = make_config(chain=[chain_entry(fake)], rate_limit=policy)
    fake.state.reset()
    # The registry is process-wide and other tests refuse requests too: count this test's delta.
    labels = {"limit": "requests", "scope": "apiKey"}
    before = REGISTRY.get_sample_value("sentient_rate_limit_rejections_total", labels) or 0.0
    with InProcessRuntime(
        RuntimeFiles(tmp_path, config, default_credentials()), audit_path=tmp_path / "a.log"
    ) as rt:
        first = assist(rt.url)
        assert first.status_code == 200
        assert first.headers["ratelimit-limit"] == "2"
        assert first.headers["ratelimit-remaining"] == "1"
        assert assist(rt.url).status_code == 200
        refused = assist(rt.url)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        events = list(parse_stream(refused.text.split("\n")))
        assert [type(e) for e in events] == [ErrorEvent, DoneEvent]
        assert isinstance(events[0], ErrorEvent) and events[0].error_code == 429
        assert events[0].details is not None and events[0].details["limit"] == "requests"
        # Another key has its own budget.
        assert assist(rt.url, key="bob-secret-key").status_code == 200
        openai_refused = httpx.post(
            f"{rt.url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert openai_refused.status_code == 429
        assert openai_refused.json()["error"]["type"] == "rate_limit_exceeded"
        metrics = httpx.get(f"{rt.url}/metrics").text
        expected = f'sentient_rate_limit_rejections_total{{limit="requests",scope="apiKey"}} {before + 2.0}'
        assert expected in metrics
    # Refused requests never reached the upstream.
    assert fake.state.requests == 3
    audit = (tmp_path / "a.log").read_text()
    assert audit.count('"event":"ratelimit.reject"') == 2
    assert KEY not in audit


def test_concurrency_slot_is_released_and_tokens_settled(fake: FakeUpstream, tmp_path: Path) -> None:
    policy = {
        "policy": "default/p",
        "limits": {"concurrency": 1, "tokensPerMinute": 10_000},
        "countBy": "apiKey",
    }
    config = make_config(chain=[chain_entry(fake)], rate_limit=policy)
    with InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials())) as rt:
        with SyncSentientClient(rt.url, api_key=KEY) as client:
            # Sequential requests with a concurrency of one: each settle frees the slot.
            for _ in range(3):
                assert client.ask("short prompt").error is None
        response = assist(rt.url, "short prompt")
        assert response.status_code == 200
        remaining = int(response.headers["x-ratelimit-remaining-tokens"])
        # Four reservations of ~1,000 tokens (maxTokens 1024) were made, but the three
        # settled requests gave back all but their real usage (a few tokens each).
        assert remaining > 10_000 - 1_200 - 3 * 100


def test_callers_naming_the_same_session_are_counted_apart(fake: FakeUpstream, tmp_path: Path) -> None:
    # countBy session counts per conversation: the OpenAI ``user`` here. Two callers (two
    # tenants, or one caller and someone who guessed the other's end-user id) naming the same
    # one must not spend each other's budget, just as they never read each other's sessions.
    policy = {"policy": "default/p", "limits": {"requestsPerMinute": 2}, "countBy": "session"}
    config = make_config(chain=[chain_entry(fake)], rate_limit=policy)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "user": "end-user-1"}

    def chat(rt: InProcessRuntime, key: str) -> int:
        url = f"{rt.url}/v1/chat/completions"
        return httpx.post(url, json=body, headers={"x-api-key": key}, timeout=20).status_code

    with InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials())) as rt:
        assert [chat(rt, "bob-secret-key") for _ in range(3)] == [200, 200, 429]
        assert [chat(rt, KEY) for _ in range(3)] == [200, 200, 429]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    from tests.support.redis_server import redis_or_skip

    with redis_or_skip() as server:
        yield server.url


def test_redis_sessions_are_shared_by_replicas(fake: FakeUpstream, tmp_path: Path, redis_url: str) -> None:
    sessions = {"store": "redis", "redisUrlFile": "sessions-redis-url", "maxTurns": 10}
    config = make_config(chain=[chain_entry(fake)], sessions=sessions, system_prompt="")
    creds = default_credentials({"sessions-redis-url": redis_url})
    session = {"processor_id": "p", "activity_id": protocol.new_ulid(), "request_id": protocol.new_ulid()}
    fake.state.reset()
    with (
        InProcessRuntime(RuntimeFiles(tmp_path / "a", config, creds)) as replica_a,
        InProcessRuntime(RuntimeFiles(tmp_path / "b", config, creds)) as replica_b,
    ):
        with SyncSentientClient(replica_a.url, api_key=KEY) as client:
            assert client.ask("first question", session=session).error is None
        with SyncSentientClient(replica_b.url, api_key=KEY) as client:
            assert client.ask("second question", session=session).error is None
    messages = [m["content"] for m in fake.state.bodies[-1]["messages"]]
    assert messages == ["first question", "Echo: first question", "second question"]
