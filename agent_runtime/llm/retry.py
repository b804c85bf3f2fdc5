"""Backoff between attempts on one provider, and the ``Retry-After`` an upstream asks for.

Which failures are retried is decided by the error's type (``errors.py``);
this module says how long to wait before the next attempt.
"""

from __future__ import annotations

import email.utils
import math
import random
import time

import httpx

# The longest wait a provider's Retry-After is taken for (a daily quota's reset, at most).
MAX_RETRY_AFTER_SECONDS = 86_400.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date).

    Also accepts OpenAI's ``retry-after-ms`` style value when given in seconds
    with a fraction. Returns None for absent, unparsable or non-finite values; at most
    :data:`MAX_RETRY_AFTER_SECONDS`.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return _bounded(seconds)


def _bounded(seconds: float) -> float | None:
    # "inf" and "nan" parse as floats but are no wait at all (and crash whatever rounds them);
    # a longer wait than a day is as good as a day (it also reaches callers' Retry-After).
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def retry_after_of(response: httpx.Response) -> float | None:
    """Retry delay an upstream response asks for, preferring the precise ``retry-after-ms``."""
    ms = response.headers.get("retry-after-ms")
    if ms:
        try:
            seconds = _bounded(float(ms) / 1000.0)
        except ValueError:
            seconds = None
        if seconds is not None:
            return seconds
    return parse_retry_after(response.headers.get("retry-after"))


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``attempt`` (1 = the first retry).

    Exponential backoff with full jitter: uniform in ``[0, min(maximum, initial * 2**(attempt-1))]``,
    so that many clients throttled together do not retry in lockstep. A
    ``Retry-After`` from the provider is a floor: retrying earlier is refused anyway.
    """
    ceiling = min(maximum, initial * (2 ** max(0, attempt - 1)))
    delay = (rng or random).uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
