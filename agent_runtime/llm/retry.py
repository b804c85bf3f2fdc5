"""Backoff between attempts on one provider, and the ``Retry-After`` an upstream asks for.

Which failures are retried is decided by the error's type (``errors.py``);
this module says how long to wait before the next attempt.
"""

from __future__ import annotations

import email.utils
import random
import time

import httpx


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date).

    Also accepts OpenAI's ``retry-after-ms`` style value when given in seconds
    with a fraction. Returns None for absent or unparsable values.
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
    return max(0.0, seconds)


def retry_after_of(response: httpx.Response) -> float | None:
    """Retry delay an upstream response asks for, preferring the precise ``retry-after-ms``."""
    ms = response.headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
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
