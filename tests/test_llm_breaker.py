"""Circuit breaker: opens after the threshold within the window, half-opens after the cooldown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent_runtime.llm import ChatMessage, ChatRequest, LLMError, LLMManager
from agent_runtime.llm.breaker import CircuitBreaker
from agent_runtime.metrics import REGISTRY
from agent_runtime.testing import FakeUpstream, Fault, run_fake
from agent_runtime.testing.chain import chain_config, fake_provider


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, threshold: int = 3, trials: int = 1) -> CircuitBreaker:
    return CircuitBreaker(
        "ns/p",
        "m",
        failure_threshold=threshold,
        window=10,
        cooldown=5,
        half_open_requests=trials,
        clock=clock,
    )


def _gauge() -> float | None:
    return REGISTRY.get_sample_value("sentient_circuit_breaker_state", {"provider": "ns/p", "model": "m"})


def test_opens_after_threshold_within_window() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(2):
        assert breaker.acquire()
        breaker.record_failure()
    assert breaker.state == "closed"
    clock.now += 11  # the first two failures leave the window
    assert breaker.acquire()
    breaker.record_failure()
    assert breaker.state == "closed"
    for _ in range(2):
        assert breaker.acquire()
        breaker.record_failure()
    assert breaker.state == "open" and _gauge() == 2
    assert not breaker.acquire() and not breaker.available()
    assert breaker.retry_in() == pytest.approx(5)


def test_half_open_after_cooldown_then_closes_on_success() -> None:
    clock = Clock()
    breaker = _breaker(clock, threshold=1, trials=2)
    breaker.acquire()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 5
    assert breaker.state == "half_open" and _gauge() == 1
    assert breaker.acquire() and breaker.acquire()
    assert not breaker.acquire()  # only half_open_requests trials at a time
    breaker.record_success()
    assert breaker.state == "closed" and _gauge() == 0
    assert breaker.acquire()


def test_failed_trial_reopens() -> None:
    clock = Clock()
    breaker = _breaker(clock, threshold=1)
    breaker.acquire()
    breaker.record_failure()
    clock.now += 5
    assert breaker.acquire()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 4.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open"


def test_abandoned_trial_frees_its_slot() -> None:
    clock = Clock()
    breaker = _breaker(clock, threshold=1)
    breaker.acquire()
    breaker.record_failure()
    clock.now += 5
    assert breaker.acquire()
    breaker.record_neutral()
    assert breaker.state == "half_open" and breaker.acquire()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with run_fake("openai") as fake:
        yield fake


async def test_manager_skips_an_open_breaker_and_probes_after_cooldown(fake: FakeUpstream) -> None:
    fake.state.reset()
    clock = Clock()
    provider = fake_provider(
        fake,
        "ns/flaky",
        model="m1",
        retry={"maxAttempts": 1},
        circuitBreaker={"failureThreshold": 2, "window": "60s", "cooldown": "30s", "halfOpenRequests": 1},
    )
    manager = LLMManager(chain_config(provider), lambda _: None, clock=clock)
    request = ChatRequest([ChatMessage("user", "hi")])
    try:
        fake.inject(Fault("status", status=500, count=-1))
        for _ in range(2):
            with pytest.raises(LLMError) as err:
                await manager.complete(request)
            assert err.value.status == 502
        assert manager.snapshot()[0]["breaker"] == "open"
        assert not manager.usable()
        with pytest.raises(LLMError) as err:
            await manager.complete(request)
        # The open breaker refuses without calling the upstream.
        assert err.value.status == 503 and err.value.retry_after == pytest.approx(30)
        assert fake.state.requests == 2

        fake.state.clear_faults()
        clock.now += 30
        assert manager.usable() and manager.snapshot()[0]["breaker"] == "half_open"
        completion = await manager.complete(request)
        assert completion.text == "Echo: hi"
        assert manager.snapshot()[0]["breaker"] == "closed"
    finally:
        await manager.aclose()


async def test_a_changed_credential_closes_that_providers_breaker_at_once(fake: FakeUpstream) -> None:
    fake.state.reset()
    fake.set_api_key("sk-right")
    clock = Clock()
    files = {"a.key": "sk-wrong-a", "b.key": "sk-wrong-b"}
    breaker = {"failureThreshold": 1, "window": "60s", "cooldown": "30s", "halfOpenRequests": 1}
    providers = [
        fake_provider(
            fake,
            f"ns/{name}",
            model="m1",
            credential_file=f"{name}.key",
            retry={"maxAttempts": 1},
            circuitBreaker=breaker,
        )
        for name in ("a", "b")
    ]
    manager = LLMManager(chain_config(*providers), files.get, clock=clock)
    request = ChatRequest([ChatMessage("user", "hi")])
    try:
        with pytest.raises(LLMError):
            await manager.complete(request)
        assert [e["breaker"] for e in manager.snapshot()] == ["open", "open"]
        assert not manager.usable()
        # The mounted key of provider a is corrected; no time passes.
        files["a.key"] = "sk-right"
        assert manager.usable()
        assert [e["breaker"] for e in manager.snapshot()] == ["closed", "open"]
        completion = await manager.complete(request)
        assert (completion.provider, completion.text) == ("ns/a", "Echo: hi")
        # The same content again (a re-sync writing the same key) is no change.
        files["a.key"] = "".join(["sk-", "right"])
        fake.set_api_key("sk-other")
        with pytest.raises(LLMError):
            await manager.complete(request)
        assert [e["breaker"] for e in manager.snapshot()] == ["open", "open"]
    finally:
        fake.set_api_key(None)
        await manager.aclose()
