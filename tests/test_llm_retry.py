"""Backoff bounds, Retry-After parsing and error classification."""

from __future__ import annotations

import email.utils
import random

import httpx
import pytest

from agent_runtime.llm.errors import (
    ConnectionBroken,
    DeadlineExceeded,
    MissingCredentials,
    Refused,
    ServerFailed,
    Throttled,
    TimedOut,
    class_of_status,
    classify_exception,
    upstream_error,
)
from agent_runtime.llm.retry import backoff_delay, parse_retry_after, retry_after_of


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 8, 20])
def test_full_jitter_stays_within_the_exponential_ceiling(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(2.0, 0.1 * 2 ** (attempt - 1))
    delays = [backoff_delay(attempt, 0.1, 2.0, rng=rng) for _ in range(500)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter spreads over the whole range rather than clustering at the ceiling.
    assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(1)
    assert all(backoff_delay(1, 0.1, 2.0, retry_after=1.5, rng=rng) >= 1.5 for _ in range(100))


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    response = httpx.Response(429, headers={"retry-after-ms": "1500", "retry-after": "9"})
    assert retry_after_of(response) == 1.5
    # Not a number of seconds anyone can wait: ignored; a day at most.
    assert parse_retry_after("inf") is None and parse_retry_after("1e400") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("1e20") == 86_400.0
    odd = httpx.Response(429, headers={"retry-after-ms": "inf", "retry-after": "9"})
    assert retry_after_of(odd) == 9.0


def test_status_classes() -> None:
    assert class_of_status(429) == "429"
    assert class_of_status(500) == class_of_status(503) == class_of_status(529) == "5xx"
    assert class_of_status(408) == "timeout"
    assert class_of_status(400) == class_of_status(401) == "4xx"


def test_exception_classes() -> None:
    request = httpx.Request("POST", "http://x")
    assert classify_exception(httpx.ConnectError("refused", request=request)).error_class == "connect-error"
    assert classify_exception(httpx.ConnectTimeout("slow", request=request)).error_class == "timeout"
    assert classify_exception(httpx.ReadTimeout("slow", request=request)).error_class == "timeout"
    assert classify_exception(TimeoutError()).error_class == "timeout"
    assert classify_exception(httpx.RemoteProtocolError("cut", request=request)).error_class == "reset"
    assert classify_exception(httpx.ReadError("reset by peer", request=request)).error_class == "reset"
    assert classify_exception(ValueError("bad json")).error_class == "reset"


def test_retry_and_failover_rules() -> None:
    retry_on = {"429", "5xx", "connect-error", "timeout", "reset"}
    assert ServerFailed("x").retryable(retry_on)
    assert not Refused("x", status=401).retryable(retry_on)
    assert Refused("x", status=401).fails_over(retry_on)
    assert not Refused("x", status=400).fails_over(retry_on)
    assert not Throttled("x").retryable({"5xx"})
    # The request's deadline ends it: neither another attempt nor another provider.
    assert not DeadlineExceeded().retryable(retry_on) and not DeadlineExceeded().fails_over(retry_on)
    assert DeadlineExceeded().error_class == "timeout"
    # A refused request or our own configuration says nothing about the provider's health.
    assert not Refused("x", status=400).blames_provider(retry_on)
    assert Refused("x", status=401).blames_provider(retry_on)
    assert not MissingCredentials("x").blames_provider(retry_on) and MissingCredentials("x").fails_over(set())


def test_error_classes_from_their_labels() -> None:
    assert isinstance(upstream_error("429", "x"), Throttled)
    assert isinstance(upstream_error("timeout", "x", status=408), TimedOut)
    assert isinstance(upstream_error("reset", "x"), ConnectionBroken)
    assert isinstance(upstream_error("unknown", "x"), ServerFailed)
    assert upstream_error("4xx", "x", status=403).status == 403
