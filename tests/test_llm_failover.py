"""Failover matrix against real fake upstreams: 500, hang, 429, 401, 400, connect error,
reset mid-stream (continued on the next provider), everything down."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agent_runtime.llm import (
    ChatMessage,
    ChatRequest,
    Completed,
    LLMError,
    LLMEvent,
    LLMManager,
    ProviderSwitch,
    TextDelta,
)
from agent_runtime.llm.types import CONTINUATION_PROMPT
from agent_runtime.metrics import REGISTRY
from agent_runtime.testing import FakeUpstream, Fault, run_fake, wait_until
from agent_runtime.testing.chain import chain_config, fake_provider
from tests.support.net import free_port

KEYS = {"a.key": "sk-primary-SECRET-1", "b.key": "sk-secondary-SECRET-2"}
FAST_RETRY = {"maxAttempts": 3, "initialBackoff": "5ms", "maxBackoff": "50ms"}
SHORT_TIMEOUTS = {"connect": "1s", "firstToken": "300ms", "idle": "300ms", "total": "20s"}


@pytest.fixture(scope="module")
def primary() -> Iterator[FakeUpstream]:
    with run_fake("openai", api_key=KEYS["a.key"]) as fake:
        yield fake


@pytest.fixture(scope="module")
def secondary() -> Iterator[FakeUpstream]:
    with run_fake("anthropic", api_key=KEYS["b.key"]) as fake:
        yield fake


@pytest.fixture
async def manager(primary: FakeUpstream, secondary: FakeUpstream) -> AsyncIterator[LLMManager]:
    for fake in (primary, secondary):
        fake.state.reset()
    manager = LLMManager(_chain(primary, secondary), KEYS.get)
    yield manager
    await manager.aclose()
    for fake in (primary, secondary):
        fake.state.clear_faults()


def _chain(primary: FakeUpstream, secondary: FakeUpstream, **primary_overrides: Any) -> Any:
    a = fake_provider(
        primary,
        "ns/a",
        model="model-a",
        credential_file="a.key",
        **{"retry": FAST_RETRY, "timeouts": SHORT_TIMEOUTS, **primary_overrides},
    )
    b = fake_provider(
        secondary, "ns/b", model="model-b", credential_file="b.key", retry=FAST_RETRY, timeouts=SHORT_TIMEOUTS
    )
    return chain_config(a, b)


def _request(text: str = "one two three four five six") -> ChatRequest:
    return ChatRequest([ChatMessage("user", text)])


async def _collect(manager: LLMManager) -> list[LLMEvent]:
    return [event async for event in manager.stream(_request())]


def _text(events: list[LLMEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def _switches(events: list[LLMEvent]) -> list[ProviderSwitch]:
    return [e for e in events if isinstance(e, ProviderSwitch)]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("streaming", [True, False])
async def test_primary_500_fails_over_after_its_retries(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream, streaming: bool
) -> None:
    primary.inject(Fault("status", status=500, count=-1))
    retries = _metric("sentient_retries_total", provider="ns/a", model="model-a")
    if streaming:
        events = await _collect(manager)
        assert _text(events) == "Echo: one two three four five six"
        assert _switches(events) == [ProviderSwitch("ns/a", "ns/b", "before_first_token", "5xx")]
        assert isinstance(events[-1], Completed) and events[-1].provider == "ns/b"
    else:
        completion = await manager.complete(_request())
        assert completion.provider == "ns/b" and completion.text == "Echo: one two three four five six"
        assert completion.switches == [ProviderSwitch("ns/a", "ns/b", "before_first_token", "5xx")]
    assert primary.state.statuses[500] == 3
    assert _metric("sentient_retries_total", provider="ns/a", model="model-a") - retries == 2


async def test_transient_500_is_retried_on_the_same_provider(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    primary.inject(Fault("status", status=500, count=2))
    events = await _collect(manager)
    assert _switches(events) == []
    assert isinstance(events[-1], Completed) and events[-1].provider == "ns/a"
    assert primary.state.requests == 3 and secondary.state.requests == 0


@pytest.mark.parametrize("streaming", [True, False])
async def test_hanging_primary_times_out_and_fails_over(
    primary: FakeUpstream, secondary: FakeUpstream, streaming: bool
) -> None:
    primary.state.reset()
    secondary.state.reset()
    primary.inject(Fault("hang", count=-1))
    manager = LLMManager(_chain(primary, secondary, retry={"maxAttempts": 1}), KEYS.get)
    try:
        if streaming:
            events = await _collect(manager)
            assert _switches(events) == [ProviderSwitch("ns/a", "ns/b", "before_first_token", "timeout")]
            assert _text(events) == "Echo: one two three four five six"
        else:
            completion = await manager.complete(_request())
            assert completion.provider == "ns/b"
            assert completion.switches[0].reason == "timeout"
    finally:
        await manager.aclose()
        primary.state.clear_faults()


async def test_429_with_short_retry_after_is_retried(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    primary.inject(Fault("status", status=429, retry_after=0.02))
    completion = await manager.complete(_request())
    assert completion.provider == "ns/a" and completion.switches == []
    assert primary.state.statuses[429] == 1 and secondary.state.requests == 0


async def test_429_with_long_retry_after_fails_over_at_once(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    primary.inject(Fault("status", status=429, retry_after=120, count=-1))
    events = await _collect(manager)
    assert _switches(events) == [ProviderSwitch("ns/a", "ns/b", "before_first_token", "429")]
    # Waiting 120 s is pointless when the next provider answers now: one attempt only.
    assert primary.state.requests == 1


async def test_wrong_key_fails_over_without_retrying(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    primary.set_api_key("another-key")
    try:
        completion = await manager.complete(_request())
    finally:
        primary.set_api_key(KEYS["a.key"])
    assert completion.provider == "ns/b"
    assert completion.switches[0].reason == "4xx"
    assert primary.state.requests == 1


async def test_invalid_request_is_not_failed_over(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    primary.inject(Fault("status", status=400))
    with pytest.raises(LLMError) as err:
        await manager.complete(_request())
    assert err.value.status == 400
    assert secondary.state.requests == 0 and primary.state.requests == 1


async def test_connect_error_fails_over(primary: FakeUpstream, secondary: FakeUpstream) -> None:
    secondary.state.reset()
    closed = primary.endpoint.replace(str(primary.port), str(free_port()))
    manager = LLMManager(_chain(primary, secondary, endpoint=closed, retry={"maxAttempts": 2}), KEYS.get)
    try:
        events = await _collect(manager)
    finally:
        await manager.aclose()
    assert _switches(events) == [ProviderSwitch("ns/a", "ns/b", "before_first_token", "connect-error")]
    assert _text(events) == "Echo: one two three four five six"


async def test_reset_mid_stream_continues_on_the_next_provider(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    primary.inject(Fault("reset", after_chunks=3))
    failovers = _metric("sentient_failovers_total", provider="ns/a", model="model-a", phase="mid_stream")
    events = await _collect(manager)
    # The caller's stream goes on: the same text, a switch in the middle, no repetition.
    assert _text(events) == "Echo: one two three four five six"
    switch_at = next(i for i, e in enumerate(events) if isinstance(e, ProviderSwitch))
    assert _text(events[:switch_at]) == "Echo: one two "
    assert _switches(events) == [ProviderSwitch("ns/a", "ns/b", "mid_stream", "reset")]
    assert isinstance(events[-1], Completed) and events[-1].provider == "ns/b"
    # The next provider got the partial answer as context.
    messages = secondary.state.bodies[-1]["messages"]
    assert messages[-2] == {"role": "assistant", "content": "Echo: one two "}
    assert messages[-1] == {"role": "user", "content": CONTINUATION_PROMPT}
    assert (
        _metric("sentient_failovers_total", provider="ns/a", model="model-a", phase="mid_stream")
        == failovers + 1
    )
    assert wait_until(lambda: primary.state.streams_aborted == 1)


async def test_stall_mid_stream_hits_the_idle_timeout_and_continues(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    primary.inject(Fault("hang", after_chunks=2))
    events = await _collect(manager)
    assert _switches(events) == [ProviderSwitch("ns/a", "ns/b", "mid_stream", "timeout")]
    assert _text(events) == "Echo: one two three four five six"


async def test_everything_down_raises_a_clear_error_without_secrets(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    primary.inject(Fault("status", status=500, count=-1))
    secondary.inject(Fault("status", status=503, count=-1))
    with pytest.raises(LLMError) as err:
        await _collect(manager)
    assert err.value.status == 502
    message = str(err.value)
    assert "ns/a" in message and "ns/b" in message and "5xx" in message
    for secret in KEYS.values():
        assert secret not in message and secret not in repr(err.value)
        assert secret not in caplog.text


async def test_everything_rate_limited_is_a_429_with_retry_after(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    primary.inject(Fault("status", status=429, retry_after=30, count=-1))
    secondary.inject(Fault("status", status=429, retry_after=10, count=-1))
    with pytest.raises(LLMError) as err:
        await manager.complete(_request())
    assert err.value.status == 429 and err.value.retry_after == 10


async def test_mid_stream_failure_on_the_last_provider_raises_after_the_partial_text(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    primary.inject(Fault("reset", after_chunks=2))
    secondary.inject(Fault("status", status=500, count=-1))
    seen: list[LLMEvent] = []
    with pytest.raises(LLMError) as err:
        async for event in manager.stream(_request()):
            seen.append(event)
    assert _text(seen) == "Echo: one "
    assert err.value.status == 502


@pytest.mark.parametrize("streaming", [True, False])
async def test_connection_dropped_before_the_first_token_is_retried(
    manager: LLMManager, primary: FakeUpstream, secondary: FakeUpstream, streaming: bool
) -> None:
    primary.inject(Fault("reset"))
    retries = _metric("sentient_retries_total", provider="ns/a", model="model-a")
    if streaming:
        events = await _collect(manager)
        assert _switches(events) == [] and _text(events) == "Echo: one two three four five six"
    else:
        assert (await manager.complete(_request())).provider == "ns/a"
    assert _metric("sentient_retries_total", provider="ns/a", model="model-a") == retries + 1
    assert _metric("sentient_provider_errors_total", provider="ns/a", model="model-a", error="reset") >= 1
