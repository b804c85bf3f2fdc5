"""Error classification and backoff for upstream attempts.

Every failed attempt becomes an :class:`UpstreamError` with one error class:

- ``429``: the provider throttles us (retryable, honours ``Retry-After``);
- ``5xx``: the provider failed (500-599, Anthropic's 529 overloaded, an in-band stream error);
- ``connect-error``: no connection (refused, DNS, TLS handshake);
- ``timeout``: connect, first-token, idle-gap or deadline timeout;
- ``reset``: the connection broke while reading (peer closed, incomplete chunked body, bad frame);
- ``4xx``: anything else the provider refused; never retried.

Classes listed in the provider's ``retry.retryOn`` are retried on the same
provider and trigger failover to the next one; ``4xx`` fails over only for
authentication/authorization and not-found problems (a wrong key or model at
one provider says nothing about the next), while an invalid request stops.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Collection

import httpx

ERROR_CLASSES = ("429", "5xx", "connect-error", "timeout", "reset", "4xx")

# 4xx statuses that are about this provider (key, permissions, model name),
# not about the request: the next provider may well serve it.
_PROVIDER_SCOPED_4XX = frozenset({401, 402, 403, 404, 408, 409})


class UpstreamError(Exception):
    """One failed attempt against one provider; internal to the LLM layer.

    ``detail`` is a short, non-secret description (an upstream error *type*
    at most, never upstream message text, which may echo a key).
    """

    def __init__(
        self,
        error_class: str,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{error_class}: {detail}")
        self.error_class = error_class
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    def retryable(self, retry_on: Collection[str]) -> bool:
        """Whether another attempt on the same provider may succeed."""
        return self.error_class in retry_on

    def fails_over(self, retry_on: Collection[str]) -> bool:
        """Whether the next chain entry should be tried."""
        if self.error_class == "4xx":
            return self.status is None or self.status in _PROVIDER_SCOPED_4XX
        return self.error_class in retry_on


def class_of_status(status: int) -> str:
    """Error class of an HTTP status that is not a success."""
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    if status == 408:
        return "timeout"
    return "4xx"


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


def classify_exception(exc: BaseException) -> UpstreamError:
    """Map an httpx/network exception to an :class:`UpstreamError`."""
    if isinstance(exc, UpstreamError):
        return exc
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return UpstreamError("timeout", name)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError("connect-error", name)
    if isinstance(
        exc,
        httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError | httpx.LocalProtocolError,
    ):
        return UpstreamError("reset", name)
    if isinstance(exc, httpx.TransportError | OSError):
        return UpstreamError("connect-error", name)
    if isinstance(exc, ValueError):
        # Undecodable JSON or a frame we cannot parse: the stream is unusable.
        return UpstreamError("reset", f"invalid response ({name})")
    return UpstreamError("5xx", name)


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
