"""Load balancing inside a chain step, against real fake upstreams over HTTP: the weighted
spread, least-outstanding with a slow and a fast upstream, lowest-latency converging on the
fast one and re-probing the slow one, failover inside a step and then to the next step.

The balancers themselves are deterministic (no random draw), so the spreads are exact where
the strategy promises exactness and bounded where timing decides."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from agent_runtime.config import LLMRuntimeConfig, ProviderConfig
from agent_runtime.llm import ChatMessage, ChatRequest, LLMManager, ProviderSwitch
from agent_runtime.llm.balance import LowestLatencyBalancer, MemberLoad, WeightBalancer
from agent_runtime.metrics import REGISTRY
from agent_runtime.testing import FakeUpstream, Fault, run_fake
from agent_runtime.testing.chain import fake_provider

KEYS = {"a.key": "sk-a-SECRET", "b.key": "sk-b-SECRET", "c.key": "sk-c-SECRET"}
FAST_RETRY = {"maxAttempts": 1, "initialBackoff": "5ms", "maxBackoff": "50ms"}
TIMEOUTS = {"connect": "1s", "firstToken": "3s", "idle": "3s", "total": "20s"}


@pytest.fixture(scope="module")
def fast() -> Iterator[FakeUpstream]:
    with run_fake("openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def slow() -> Iterator[FakeUpstream]:
    with run_fake("openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def backup() -> Iterator[FakeUpstream]:
    with run_fake("anthropic") as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean(fast: FakeUpstream, slow: FakeUpstream, backup: FakeUpstream) -> Iterator[None]:
    for fake in (fast, slow, backup):
        fake.state.reset()
        fake.state.configure({"latency": 0.0, "first_token_latency": 0.0})
    yield
    for fake in (fast, slow, backup):
        fake.state.clear_faults()
        fake.state.configure({"latency": 0.0, "first_token_latency": 0.0})


def _member(fake: FakeUpstream, ident: str, key: str, **extra: Any) -> ProviderConfig:
    return fake_provider(
        fake, ident, model="m", credential_file=key, retry=FAST_RETRY, timeouts=TIMEOUTS, **extra
    )


def _config(steps: list[dict[str, Any]], *chain: ProviderConfig) -> LLMRuntimeConfig:
    return LLMRuntimeConfig.model_validate({"chain": [p.to_wire() for p in chain], "steps": steps})


def _request() -> ChatRequest:
    return ChatRequest([ChatMessage("user", "one two three four")], max_tokens=4)


def _picks(provider: str, step: str = "0") -> float:
    value = REGISTRY.get_sample_value(
        "sentient_balance_picks_total", {"step": step, "provider": provider, "model": "m"}
    )
    return value or 0.0


async def _complete_many(manager: LLMManager, count: int, concurrency: int = 1) -> list[str]:
    """``count`` non-streamed answers, ``concurrency`` at a time; the provider of each."""
    providers: list[str] = []
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            queue.pop()
            completion = await manager.complete(_request())
            providers.append(completion.provider)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return providers


async def test_weighted_spread_follows_the_weights_exactly(fast: FakeUpstream, slow: FakeUpstream) -> None:
    config = _config(
        [{"size": 2, "strategy": "weight"}],
        _member(fast, "ns/key-a", "a.key", weight=3),
        _member(slow, "ns/key-b", "b.key", weight=1),
    )
    manager = LLMManager(config, KEYS.get)
    before = _picks("ns/key-a"), _picks("ns/key-b")
    try:
        providers = await _complete_many(manager, 40)
    finally:
        await manager.aclose()
    # Smooth weighted round robin: exactly 3:1 over every 4 consecutive picks.
    assert providers.count("ns/key-a") == 30 and providers.count("ns/key-b") == 10
    assert fast.state.requests == 30 and slow.state.requests == 10
    # Each member's own key went to it (several keys of one upstream are several members).
    assert set(fast.state.keys_seen) == {KEYS["a.key"]} and set(slow.state.keys_seen) == {KEYS["b.key"]}
    assert (_picks("ns/key-a") - before[0], _picks("ns/key-b") - before[1]) == (30, 10)
    # Interleaved, not in bursts: never two picks of the light member in a row.
    assert all(not (x == y == "ns/key-b") for x, y in itertools.pairwise(providers))


async def test_least_outstanding_sends_most_requests_to_the_fast_upstream(
    fast: FakeUpstream, slow: FakeUpstream
) -> None:
    slow.state.configure({"first_token_latency": 0.3})
    config = _config(
        [{"size": 2, "strategy": "leastOutstanding"}],
        _member(slow, "ns/slow", "a.key"),
        _member(fast, "ns/fast", "b.key"),
    )
    manager = LLMManager(config, KEYS.get)
    try:
        providers = await _complete_many(manager, 40, concurrency=4)
    finally:
        await manager.aclose()
    # While a slow call is outstanding the fast member has fewer: it takes the bulk.
    assert providers.count("ns/fast") >= 30, providers
    assert providers.count("ns/slow") >= 1
    # Every attempt ended: nothing counted in flight.
    assert (
        REGISTRY.get_sample_value("sentient_upstream_in_flight", {"provider": "ns/slow", "model": "m"}) == 0
    )


async def test_lowest_latency_converges_on_the_fast_upstream_and_reprobes_the_slow_one(
    fast: FakeUpstream, slow: FakeUpstream
) -> None:
    slow.state.configure({"first_token_latency": 0.15})
    config = _config(
        [{"size": 2, "strategy": "lowestLatency", "latencyHalfLife": "50ms", "probeInterval": "400ms"}],
        _member(slow, "ns/slow", "a.key"),
        _member(fast, "ns/fast", "b.key"),
    )
    manager = LLMManager(config, KEYS.get)
    try:
        # Both are tried once (no estimate yet), then the fast one wins.
        first = await _complete_many(manager, 30)
        assert first[:2] == ["ns/slow", "ns/fast"]
        assert first[2:].count("ns/fast") >= len(first) - 2 - 1, first
        # The slow one recovers: a re-probe after probeInterval sees it, and its estimate follows.
        slow.state.configure({"first_token_latency": 0.0})
        slow_before = slow.state.requests
        await asyncio.sleep(0.45)
        after = await _complete_many(manager, 5)
        assert after[0] == "ns/slow"
        assert slow.state.requests > slow_before
        load = manager._snapshot.entries[0].load
        assert load is not None and load.latency is not None and load.latency < 0.1
    finally:
        await manager.aclose()


async def test_failover_inside_the_step_then_to_the_next_step(
    fast: FakeUpstream, slow: FakeUpstream, backup: FakeUpstream
) -> None:
    config = _config(
        [{"size": 2, "strategy": "weight"}, {"size": 1}],
        _member(fast, "ns/key-a", "a.key", weight=1),
        _member(slow, "ns/key-b", "b.key", weight=1),
        _member(backup, "ns/backup", "c.key"),
    )
    manager = LLMManager(config, KEYS.get)
    try:
        # The pick (key-a) fails: the step's other member answers, the next step is not asked.
        fast.inject(Fault("status", status=500))
        events = [e async for e in manager.stream(_request())]
        switches = [e for e in events if isinstance(e, ProviderSwitch)]
        assert [(s.from_id, s.to_id) for s in switches] == [("ns/key-a", "ns/key-b")]
        assert backup.state.requests == 0
        # Both members fail: the next step answers.
        fast.inject(Fault("status", status=500))
        slow.inject(Fault("status", status=500))
        completion = await manager.complete(_request())
        assert completion.provider == "ns/backup"
        assert [(s.from_id, s.to_id) for s in completion.switches] == [
            ("ns/key-b", "ns/key-a"),
            ("ns/key-a", "ns/backup"),
        ]
    finally:
        await manager.aclose()


async def test_an_open_breaker_takes_its_member_out_of_the_spread(
    fast: FakeUpstream, slow: FakeUpstream
) -> None:
    breaker = {"failureThreshold": 1, "window": "60s", "cooldown": "60s", "halfOpenRequests": 1}
    config = _config(
        [{"size": 2, "strategy": "weight"}],
        _member(fast, "ns/key-a", "a.key", circuitBreaker=breaker),
        _member(slow, "ns/key-b", "b.key", circuitBreaker=breaker),
    )
    manager = LLMManager(config, KEYS.get)
    try:
        fast.inject(Fault("status", status=500))
        providers = await _complete_many(manager, 10)
    finally:
        await manager.aclose()
    # key-a failed once (its breaker opened); every answer came from key-b, which is picked first
    # from then on: key-a is not even tried (an open member goes last, and key-b answers).
    assert providers == ["ns/key-b"] * 10
    assert fast.state.requests == 1


def test_a_plain_chain_has_no_steps_and_renders_as_before(fast: FakeUpstream) -> None:
    single = _member(fast, "ns/a", "a.key")
    plain = LLMRuntimeConfig.model_validate({"chain": [single.to_wire()]})
    assert "steps" not in plain.to_wire() and "weight" not in plain.to_wire()["chain"][0]
    manager = LLMManager(_config([{"size": 1}], single), KEYS.get)
    assert manager._snapshot.steps is None and manager._snapshot.entries[0].load is None


def test_steps_must_cover_the_chain(fast: FakeUpstream) -> None:
    with pytest.raises(ValueError, match="add up"):
        _config([{"size": 2}], _member(fast, "ns/a", "a.key"))


def test_smooth_weighted_round_robin_skips_unavailable_members() -> None:
    loads = [MemberLoad("a", "m"), MemberLoad("b", "m"), MemberLoad("c", "m")]
    balancer = WeightBalancer(loads, [5, 1, 1])
    picks = [balancer.order([True, True, True])[0] for _ in range(7)]
    # nginx's smooth sequence for 5:1:1.
    assert picks == [0, 0, 1, 0, 2, 0, 0]
    # a unavailable: b and c alternate; a is last in the failover order.
    assert [balancer.order([False, True, True]) for _ in range(2)] == [[1, 2, 0], [2, 1, 0]]


def test_lowest_latency_prefers_fewer_in_flight_at_equal_latency() -> None:
    now = [0.0]
    loads = [MemberLoad("a", "m"), MemberLoad("b", "m")]
    balancer = LowestLatencyBalancer(loads, [1, 1], probe_interval=10.0, clock=lambda: now[0])
    assert balancer.order([True, True]) == [0, 1]  # never picked: probed in order
    assert balancer.order([True, True]) == [1, 0]
    loads[0].sample(0.1, 0.0)
    loads[1].sample(0.1, 0.0)
    loads[0].in_flight = 3
    assert balancer.order([True, True])[0] == 1
    # After one half-life the old estimate and the new sample count half each.
    loads[1].half_life = 1.0
    loads[1].sample(0.3, 1.0)
    assert loads[1].latency == pytest.approx(0.2)


async def test_a_reload_keeps_the_members_load_and_can_turn_balancing_off(
    fast: FakeUpstream, slow: FakeUpstream
) -> None:
    a, b = _member(fast, "ns/key-a", "a.key"), _member(slow, "ns/key-b", "b.key")
    manager = LLMManager(_config([{"size": 2, "strategy": "lowestLatency"}], a, b), KEYS.get)
    try:
        await manager.complete(_request())
        load = manager._snapshot.entries[0].load
        assert load is not None and load.latency is not None
        manager.reload(_config([{"size": 2, "strategy": "leastOutstanding"}], a, b))
        assert manager._snapshot.entries[0].load is load
        manager.reload(_config([{"size": 1}, {"size": 1}], a, b))
        assert manager._snapshot.steps is None
        assert (await manager.complete(_request())).provider == "ns/key-a"
    finally:
        await manager.aclose()
