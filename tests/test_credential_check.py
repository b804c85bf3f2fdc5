"""Periodic credential checks against the project's fake upstream (real HTTP, checks keys on /models)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from agent_runtime.testing.control import FakeUpstream
from sentient_operator.api.v1alpha1 import LLMProviderSpec
from sentient_operator.credentials.validate import ValidationResult, Validity
from sentient_operator.reconcile.credential_check import Credential, CredentialChecks, validate_credential

GOOD = "sk-check-good"
KEY = ("team", "openai")


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai", api_key=GOOD) as fake:
        yield fake


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def credential(endpoint: str, key: str, fingerprint: str | None = None) -> Credential:
    spec = LLMProviderSpec.model_validate(
        {
            "type": "openai-compatible",
            "endpoint": endpoint,
            "defaultModel": "m",
            "credentials": {"secretRef": {"name": "src", "key": "apiKey"}},
        }
    )
    return Credential(fingerprint or f"fp-{key}", spec, key)


async def test_refused_key_is_one_transition_and_a_good_key_clears_it(upstream: FakeUpstream) -> None:
    clock = Clock()
    checks = CredentialChecks(15.0, 4, clock=clock)
    checks.remember(KEY, credential(upstream.endpoint, "sk-wrong"))
    assert checks.due() == [KEY]
    [(key, previous, result)] = await checks.run_due()
    assert key == KEY and previous is None and result.validity is Validity.UNAUTHORIZED
    conditions = {c["type"]: c for c in checks.conditions(KEY, 3)}
    assert conditions["CredentialsValid"]["reason"] == "Unauthorized"
    assert conditions["Ready"]["status"] == "False"
    assert "sk-wrong" not in str(conditions)
    # Checked: not due again before the interval, and the same verdict is no new transition.
    assert checks.due() == []
    clock.now += 15
    assert checks.due() == [KEY]
    assert await checks.run_due() == []
    # The good key is checked as soon as it is bound (a new fingerprint), whatever the time.
    checks.remember(KEY, credential(upstream.endpoint, GOOD))
    [(_, previous, result)] = await checks.run_due()
    assert previous is not None and previous.validity is Validity.UNAUTHORIZED
    assert result.validity is Validity.VALID
    assert [c["status"] for c in checks.conditions(KEY, 3)] == ["True"]


async def test_revoked_upstream_is_seen_on_the_next_interval(upstream: FakeUpstream) -> None:
    clock = Clock()
    checks = CredentialChecks(15.0, 4, clock=clock)
    checks.remember(KEY, credential(upstream.endpoint, GOOD))
    [(_, _, result)] = await checks.run_due()
    assert result.ok
    upstream.set_api_key("sk-rotated-upstream")
    clock.now += 14
    assert await checks.run_due() == []
    clock.now += 1
    [(_, _, result)] = await checks.run_due()
    assert result.validity is Validity.UNAUTHORIZED


async def test_unreachable_keeps_the_verdict_and_inconclusive_is_not_asked_again(
    upstream: FakeUpstream,
) -> None:
    clock = Clock()
    checks = CredentialChecks(15.0, 4, clock=clock)
    checks.remember(KEY, credential(upstream.endpoint, "sk-wrong"))
    await checks.run_due()
    # The same key, now behind an endpoint that refuses connections: no new verdict.
    checks.remember(KEY, credential("http://127.0.0.1:9/v1", "sk-wrong"))
    clock.now += 15
    assert await checks.run_due() == []
    assert checks.verdicts[KEY].validity is Validity.UNAUTHORIZED
    # An upstream without a models route cannot tell: asked once per credential, not per interval.
    other = ("team", "nomodels")
    checks.remember(other, credential(upstream.base_url + "/nomodels", GOOD))
    await checks.run_due()
    clock.now += 60
    assert other not in checks.due()
    assert other not in checks.verdicts


async def test_interval_zero_checks_only_changed_keys(upstream: FakeUpstream) -> None:
    clock = Clock()
    checks = CredentialChecks(0, 4, clock=clock)
    checks.remember(KEY, credential(upstream.endpoint, GOOD))
    await checks.run_due()
    clock.now += 3600
    assert checks.due() == []
    checks.remember(KEY, credential(upstream.endpoint, "sk-other"))
    assert checks.due() == [KEY]


async def test_concurrency_is_bounded_and_one_call_per_provider() -> None:
    in_flight = 0
    peak = 0
    calls: list[str] = []

    async def slow(cred: Credential) -> ValidationResult:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        calls.append(cred.fingerprint)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return ValidationResult(Validity.VALID, "ok", 200)

    checks = CredentialChecks(15.0, 2, validator=slow)
    for i in range(7):
        checks.remember(("team", f"p{i}"), credential("http://127.0.0.1:9/v1", f"k{i}"))
    await checks.run_due()
    assert peak == 2
    assert sorted(calls) == sorted(f"fp-k{i}" for i in range(7))


async def test_validate_credential_uses_the_spec(upstream: FakeUpstream) -> None:
    assert (await validate_credential(credential(upstream.endpoint, GOOD))).ok


async def test_a_verdict_already_in_the_status_is_no_transition(upstream: FakeUpstream) -> None:
    # After an operator restart (or a new leader) the first check finds what the status says.
    from sentient_operator.reconcile.context import OperatorContext
    from sentient_operator.reconcile.provider import KIND
    from sentient_operator.settings import Settings

    reconciler = OperatorContext(Settings()).providers
    reconciler.bodies[KEY] = {
        "metadata": {"namespace": KEY[0], "name": KEY[1]},
        "status": {"conditions": [{"type": "CredentialsValid", "status": "False", "reason": "Unauthorized"}]},
    }
    reconciler.checks.remember(KEY, credential(upstream.endpoint, "sk-wrong"))
    await reconciler.run_checks()  # no Event (no API call), no status rewrite scheduled
    assert reconciler.checks.verdicts[KEY].validity is Validity.UNAUTHORIZED
    assert not reconciler.controller.queue.pending((KIND, *KEY))
    # Likewise for a good key whose verdict the status already shows.
    reconciler.checks.remember(KEY, credential(upstream.endpoint, GOOD))
    reconciler.bodies[KEY]["status"]["conditions"][0].update(status="True", reason="Valid")
    await reconciler.run_checks()
    assert not reconciler.controller.queue.pending((KIND, *KEY))
