"""Spend budgets through one in-process runtime (memory counters): the Sentient protocol's refusal,
settling to the answer's real cost on a streamed /assist, and the usage in /metrics."""

from __future__ import annotations

from pathlib import Path

import httpx

from agent_runtime import protocol
from agent_runtime.client import parse_stream
from agent_runtime.protocol import DoneEvent, ErrorEvent
from agent_runtime.testing import FakeUpstream
from tests.support.runtime import (
    InProcessRuntime,
    RuntimeFiles,
    chain_entry,
    default_credentials,
    make_config,
)

PRICE = {"currency": "USD", "inputPerMillion": "1", "outputPerMillion": "2"}


def assist(url: str, key: str) -> httpx.Response:
    body = {"query": {"id": protocol.new_ulid(), "prompt": "hi"}}
    return httpx.post(f"{url}/assist", json=body, headers={"x-api-key": key}, timeout=20)


def test_assist_settles_to_the_real_cost_and_refuses_with_an_error_event(tmp_path: Path) -> None:
    policy = {
        "policy": "default/spend",
        "limits": {},
        "budgets": [{"name": "keys", "per": "apiKey", "perDay": "0.0003"}],
    }
    with FakeUpstream("openai", tokens=50) as fake:
        config = make_config(
            chain=[chain_entry(fake, price=PRICE)], rate_limit=policy, llm={"parameters": {"maxTokens": 50}}
        )
        with InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials())) as rt:
            # Reserved each time: 17 prompt tokens (estimate) x 1 + 50 x 2 = 117 micro-USD; each
            # answer really costs 6 input words x 1 + 50 x 2 = 106, and settles to that.
            assert assist(rt.url, "alice-secret-key").status_code == 200
            assert assist(rt.url, "alice-secret-key").status_code == 200
            refused = assist(rt.url, "alice-secret-key")
            # Bob's key has a budget of its own.
            assert assist(rt.url, "bob-secret-key").status_code == 200
            metrics = httpx.get(f"{rt.url}/metrics").text
        upstream_requests = fake.state.requests
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    events = list(parse_stream(refused.text.split("\n")))
    assert [type(e) for e in events] == [ErrorEvent, DoneEvent]
    error = events[0]
    assert isinstance(error, ErrorEvent) and error.error_code == 429
    assert "spend budget 'keys' exhausted today" in error.error_message
    assert error.details is not None
    assert error.details["limit"] == "spend_day" and error.details["budget"] == "keys"
    assert (error.details["spent"], error.details["reserve"], error.details["spend_limit"]) == (
        "0.000212",
        "0.000117",
        "0.0003",
    )
    assert upstream_requests == 3
    assert 'sentient_budget_spent{budget="keys",subject="alice",window="day"} 0.000212' in metrics
    assert 'sentient_budget_remaining{budget="keys",subject="bob",window="day"} 0.000194' in metrics
    assert "alice-secret-key" not in metrics
