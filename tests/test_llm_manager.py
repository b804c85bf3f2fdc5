"""LLMManager behaviour around the chain: timeouts, deadline, key rotation, cancellation,
reload, provider quota gate, health."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import aclosing
from pathlib import Path

import pytest

from agent_runtime.config import ProviderConfig
from agent_runtime.llm import (
    ChatMessage,
    ChatRequest,
    Completed,
    LLMError,
    LLMManager,
    ProviderSwitch,
    TextDelta,
)
from agent_runtime.testing import FakeUpstream, Fault, run_fake
from agent_runtime.testing.chain import chain_config, fake_provider

ONE_SHOT = {"maxAttempts": 1}


@pytest.fixture(scope="module")
def fake_a() -> Iterator[FakeUpstream]:
    with run_fake("openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_b() -> Iterator[FakeUpstream]:
    with run_fake("anthropic") as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean(fake_a: FakeUpstream, fake_b: FakeUpstream) -> Iterator[None]:
    for fake in (fake_a, fake_b):
        fake.state.reset()
        fake.state.configure({"api_key": None, "latency": 0, "first_token_latency": 0, "tokens": None})
    yield
    for fake in (fake_a, fake_b):
        fake.state.clear_faults()


def _request(text: str = "hello") -> ChatRequest:
    return ChatRequest([ChatMessage("user", text)])


async def _eventually(predicate: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def test_first_token_timeout(fake_a: FakeUpstream) -> None:
    fake_a.state.configure({"first_token_latency": 2.0})
    provider = fake_provider(fake_a, "ns/a", retry=ONE_SHOT, timeouts={"firstToken": "200ms", "idle": "5s"})
    manager = LLMManager(chain_config(provider), lambda _: None)
    try:
        with pytest.raises(LLMError) as err:
            async for _ in manager.stream(_request()):
                pass
    finally:
        await manager.aclose()
    assert err.value.status == 504 and "first-token timeout" in err.value.message


async def test_idle_timeout_between_chunks(fake_a: FakeUpstream) -> None:
    fake_a.inject(Fault("hang", after_chunks=1))
    provider = fake_provider(fake_a, "ns/a", retry=ONE_SHOT, timeouts={"firstToken": "5s", "idle": "200ms"})
    manager = LLMManager(chain_config(provider), lambda _: None)
    seen: list[str] = []
    try:
        with pytest.raises(LLMError) as err:
            async for event in manager.stream(_request()):
                if isinstance(event, TextDelta):
                    seen.append(event.text)
    finally:
        await manager.aclose()
    assert seen == ["Echo: "]
    assert err.value.status == 504 and "idle timeout" in err.value.message


async def test_overall_deadline_is_shared_by_attempts(fake_a: FakeUpstream) -> None:
    fake_a.state.configure({"latency": 0.05, "tokens": 200})
    provider = fake_provider(fake_a, "ns/a", retry={"maxAttempts": 5})
    manager = LLMManager(chain_config(provider), lambda _: None)
    try:
        with pytest.raises(LLMError) as err:
            async for _ in manager.stream(_request(), deadline=time.monotonic() + 0.4):
                pass
    finally:
        await manager.aclose()
    assert err.value.status == 504
    # The deadline ended the request; no retry was started after it.
    assert fake_a.state.requests == 1


async def test_rotated_key_is_used_by_the_next_request(fake_a: FakeUpstream, tmp_path: Path) -> None:
    key_file = tmp_path / "provider.ns.a.apiKey"
    key_file.write_text("sk-old\n")

    def read_file(name: str) -> str | None:
        path = tmp_path / name
        return path.read_text() if path.exists() else None

    fake_a.set_api_key("sk-old")
    provider = fake_provider(fake_a, "ns/a", credential_file=key_file.name, retry=ONE_SHOT)
    manager = LLMManager(chain_config(provider), read_file)
    try:
        assert (await manager.complete(_request())).provider == "ns/a"
        # The upstream rotates, then the mounted file follows: the next request uses the new key.
        fake_a.set_api_key("sk-new")
        key_file.write_text("sk-new")
        assert (await manager.complete(_request())).provider == "ns/a"
        events = [e async for e in manager.stream(_request())]
        assert isinstance(events[-1], Completed)
    finally:
        await manager.aclose()
    assert fake_a.state.keys_seen == {"sk-old": 1, "sk-new": 2}
    assert fake_a.state.auth_failures == 0


async def test_consumer_closing_the_stream_closes_the_upstream_request(fake_a: FakeUpstream) -> None:
    fake_a.state.configure({"latency": 0.02, "tokens": 500})
    manager = LLMManager(chain_config(fake_provider(fake_a, "ns/a")), lambda _: None)
    try:
        received = 0
        async with aclosing(manager.stream(_request())) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    received += 1
                    if received == 3:
                        break
        assert await _eventually(lambda: fake_a.state.streams_aborted == 1)
        assert fake_a.state.streams_completed == 0
        # No verdict on the provider: the breaker stays closed and usable.
        assert manager.snapshot()[0]["breaker"] == "closed"
    finally:
        await manager.aclose()


async def test_cancelled_task_closes_the_upstream_request(fake_a: FakeUpstream) -> None:
    fake_a.state.configure({"latency": 0.02, "tokens": 500})
    manager = LLMManager(chain_config(fake_provider(fake_a, "ns/a")), lambda _: None)
    first = asyncio.Event()

    async def consume() -> None:
        async with aclosing(manager.stream(_request())) as events:
            async for _ in events:
                first.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _eventually(lambda: fake_a.state.streams_aborted == 1)
    finally:
        await manager.aclose()


async def test_reload_swaps_atomically_and_keeps_unchanged_clients(
    fake_a: FakeUpstream, fake_b: FakeUpstream
) -> None:
    fake_a.state.configure({"latency": 0.01, "tokens": 20})
    a = fake_provider(fake_a, "ns/a")
    manager = LLMManager(chain_config(a), lambda _: None)
    try:
        pool = manager._pools.get(manager._snapshot.entries[0].pool_key, retire_after=1)
        async with aclosing(manager.stream(_request())) as events:
            texts: list[str] = []
            async for event in events:
                if isinstance(event, TextDelta):
                    texts.append(event.text)
                    if len(texts) == 1:
                        # Mid-request reload to another chain: this stream stays on the old one.
                        manager.reload(chain_config(fake_provider(fake_b, "ns/b"), a))
                if isinstance(event, Completed):
                    assert event.provider == "ns/a"
        assert len("".join(texts).split()) == 20
        assert manager.config.chain[0].id == "ns/b"
        assert (await manager.complete(_request())).provider == "ns/b"
        # The unchanged upstream kept its connection pool.
        assert manager._pools.get(manager._snapshot.entries[1].pool_key, retire_after=1) is pool
    finally:
        await manager.aclose()


class Gate:
    """A provider quota that refuses some providers."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, int]] = []

    async def acquire(self, provider_id: str, tokens: int) -> bool:
        self.calls.append((provider_id, tokens))
        return provider_id not in self.refuse


async def test_gate_refusal_fails_over_like_a_429(fake_a: FakeUpstream, fake_b: FakeUpstream) -> None:
    gate = Gate({"ns/a"})
    config = chain_config(fake_provider(fake_a, "ns/a"), fake_provider(fake_b, "ns/b"), maxTokens=100)
    manager = LLMManager(config, lambda _: None, gate)
    try:
        events = [e async for e in manager.stream(_request("x" * 40))]
    finally:
        await manager.aclose()
    assert ProviderSwitch("ns/a", "ns/b", "before_first_token", "rate-limited") in events
    assert fake_a.state.requests == 0
    assert gate.calls == [("ns/a", 111), ("ns/b", 111)]


async def test_all_gates_refusing_is_a_429(fake_a: FakeUpstream) -> None:
    manager = LLMManager(chain_config(fake_provider(fake_a, "ns/a")), lambda _: None, Gate({"ns/a"}))
    try:
        with pytest.raises(LLMError) as err:
            await manager.complete(_request())
    finally:
        await manager.aclose()
    assert err.value.status == 429


async def test_missing_credentials_fail_over_and_show_in_health(
    fake_a: FakeUpstream, fake_b: FakeUpstream
) -> None:
    files = {"b.key": "sk-b-secret"}
    config = chain_config(
        fake_provider(fake_a, "ns/a", credential_file="a.key"),
        fake_provider(fake_b, "ns/b", credential_file="b.key"),
    )
    manager = LLMManager(config, files.get)
    try:
        completion = await manager.complete(_request())
        assert completion.provider == "ns/b" and completion.switches[0].reason == "credentials"
        health = manager.snapshot()
        assert [h["credentials"] for h in health] == ["missing", "present"]
        assert [h["usable"] for h in health] == [False, True]
        assert manager.usable()
        assert "sk-b-secret" not in repr(health)
        files.clear()
        assert not manager.usable()
    finally:
        await manager.aclose()
    assert fake_a.state.requests == 0


async def test_gate_is_asked_before_every_attempt(fake_a: FakeUpstream) -> None:
    fake_a.inject(Fault("status", status=500, count=2))
    gate = Gate(set())
    provider = fake_provider(
        fake_a, "ns/a", retry={"maxAttempts": 3, "initialBackoff": "1ms", "maxBackoff": "5ms"}
    )
    manager = LLMManager(chain_config(provider), lambda _: None, gate)
    try:
        assert (await manager.complete(_request())).provider == "ns/a"
    finally:
        await manager.aclose()
    assert [call[0] for call in gate.calls] == ["ns/a"] * 3


async def test_connect_timeout_fails_over(fake_b: FakeUpstream) -> None:
    # A listener whose backlog is full: the kernel drops further SYNs, so connecting hangs.
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    await asyncio.sleep(0.1)
    stuck = ProviderConfig.model_validate(
        {
            "id": "ns/stuck",
            "type": "openai",
            "endpoint": f"http://127.0.0.1:{port}/v1",
            "model": "m",
            "timeouts": {"connect": "200ms"},
            "retry": ONE_SHOT,
        }
    )
    manager = LLMManager(chain_config(stuck, fake_provider(fake_b, "ns/b")), lambda _: None)
    try:
        completion = await manager.complete(_request())
    finally:
        await manager.aclose()
        for sock in (*fillers, listener):
            sock.close()
    assert completion.provider == "ns/b"
    assert completion.switches == [ProviderSwitch("ns/stuck", "ns/b", "before_first_token", "timeout")]
