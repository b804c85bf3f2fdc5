"""Error classes of the LLM layer, as types.

One failed attempt against one provider is an :class:`UpstreamError`; its
subclass says what happened and how the failover loop treats it, its
``error_class`` string is the label that goes into metrics, logs and
``ProviderSwitch.reason``:

- ``429`` (:class:`Throttled`): the provider throttles us (retryable, honours ``Retry-After``);
- ``5xx`` (:class:`ServerFailed`): the provider failed (500-599, Anthropic's 529, an in-band
  stream error, an unreadable answer);
- ``connect-error`` (:class:`ConnectFailed`): no connection (refused, DNS, TLS handshake);
- ``timeout`` (:class:`TimedOut`): connect, pool, first-token or idle-gap timeout;
  :class:`DeadlineExceeded` is the request's overall deadline, which ends the request;
- ``reset`` (:class:`ConnectionBroken`): the connection broke while reading;
- ``4xx`` (:class:`Refused`): anything else the provider refused; never retried;
- the entry could not be tried at all (:class:`NotAttempted`): ``circuit-open``
  (:class:`CircuitOpen`), ``rate-limited`` (provider quota, :class:`QuotaExhausted`),
  ``credentials`` (:class:`MissingCredentials`), ``config`` (:class:`InvalidProviderConfig`).

Classes listed in the provider's ``retry.retryOn`` are retried on the same
provider and trigger failover to the next one; ``4xx`` fails over only for
authentication/authorization and not-found problems (a wrong key or model at
one provider says nothing about the next), while an invalid request stops.

What the caller sees is an :class:`LLMError` (or one of its subclasses, one
per HTTP status), never upstream text.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import ClassVar

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

    error_class: ClassVar[str] = "5xx"

    def __init__(self, detail: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(f"{self.error_class}: {detail}")
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    def retryable(self, retry_on: Collection[str]) -> bool:
        """Whether another attempt on the same provider may succeed."""
        return self.error_class in retry_on

    def fails_over(self, retry_on: Collection[str]) -> bool:
        """Whether the next chain entry should be tried."""
        return self.error_class in retry_on

    def blames_provider(self, retry_on: Collection[str]) -> bool:
        """Whether the failure counts against the provider's circuit breaker."""
        return True


class Throttled(UpstreamError):
    """HTTP 429 or an in-band rate-limit error."""

    error_class = "429"


class ServerFailed(UpstreamError):
    """The provider failed: 5xx, an in-band stream error or an answer we cannot read."""

    error_class = "5xx"


class ConnectFailed(UpstreamError):
    """No connection: refused, DNS, TLS handshake."""

    error_class = "connect-error"


class TimedOut(UpstreamError):
    """Connect, pool, first-token or idle-gap timeout (or HTTP 408)."""

    error_class = "timeout"


class DeadlineExceeded(TimedOut):
    """The request's overall deadline passed: no further attempt and no failover."""

    def __init__(self, detail: str = "deadline exceeded") -> None:
        super().__init__(detail)

    def retryable(self, retry_on: Collection[str]) -> bool:
        """Never: there is no time left."""
        return False

    def fails_over(self, retry_on: Collection[str]) -> bool:
        """Never: there is no time left for the next provider either."""
        return False


class ConnectionBroken(UpstreamError):
    """The connection broke while reading: peer closed, incomplete body, bad frame."""

    error_class = "reset"


class Refused(UpstreamError):
    """A 4xx answer other than 408 and 429."""

    error_class = "4xx"

    def fails_over(self, retry_on: Collection[str]) -> bool:
        """Only for problems of this provider (key, permission, model), not of the request."""
        return self.status is None or self.status in _PROVIDER_SCOPED_4XX

    def blames_provider(self, retry_on: Collection[str]) -> bool:
        """A refused request says nothing about the provider's health."""
        return self.fails_over(retry_on)


class NotAttempted(UpstreamError):
    """The entry could not be used for this request; the next one may be."""

    def retryable(self, retry_on: Collection[str]) -> bool:
        """Never on the same entry within this request."""
        return False

    def fails_over(self, retry_on: Collection[str]) -> bool:
        """Always."""
        return True


class CircuitOpen(NotAttempted):
    """The entry's circuit breaker is open."""

    error_class = "circuit-open"


class QuotaExhausted(NotAttempted):
    """The provider-side quota (LLMProvider ``limits``) refused the request."""

    error_class = "rate-limited"


class Misconfigured(NotAttempted):
    """Our configuration of the entry is unusable: says nothing about the provider's health."""

    def blames_provider(self, retry_on: Collection[str]) -> bool:
        """Never: the provider was not even called."""
        return False


class MissingCredentials(Misconfigured):
    """The API key file is missing, empty or unusable."""

    error_class = "credentials"


class InvalidProviderConfig(Misconfigured):
    """The provider's configuration cannot be sent (e.g. a line break inside a default header)."""

    error_class = "config"


_BY_CLASS: dict[str, type[UpstreamError]] = {
    cls.error_class: cls
    for cls in (Throttled, ServerFailed, ConnectFailed, TimedOut, ConnectionBroken, Refused)
}


def upstream_error(
    error_class: str, detail: str, *, status: int | None = None, retry_after: float | None = None
) -> UpstreamError:
    """The error of one of the ``ERROR_CLASSES`` named by its label (unknown labels: ``5xx``)."""
    return _BY_CLASS.get(error_class, ServerFailed)(detail, status=status, retry_after=retry_after)


def class_of_status(status: int) -> str:
    """Error class of an HTTP status that is not a success."""
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    if status == 408:
        return "timeout"
    return "4xx"


class LLMError(Exception):
    """Every chain entry failed (or the request itself was refused).

    ``status`` is the HTTP status the caller should see (400 invalid request,
    429 every provider rate-limited, 502 upstream errors, 503 nothing usable,
    504 deadline); the subclasses below carry one each. ``message`` never
    contains upstream text or secrets. ``retry_after`` (seconds) is set when
    waiting would help.
    """

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, message={self.message!r}, retry_after={self.retry_after})"


class _FixedStatus(LLMError):
    status_code: ClassVar[int] = 502

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(self.status_code, message, retry_after)


class RequestRefused(_FixedStatus):
    """The provider refused the request itself (400): another provider would too."""

    status_code = 400


class AllRateLimited(_FixedStatus):
    """Every provider is rate-limited (429)."""

    status_code = 429


class AllFailed(_FixedStatus):
    """Every provider failed (502)."""

    status_code = 502


class NoneUsable(_FixedStatus):
    """No provider could be tried now: breakers open, quotas spent, credentials missing (503)."""

    status_code = 503


class TimedOutOverall(_FixedStatus):
    """The deadline passed, or every provider timed out (504)."""

    status_code = 504


def classify_exception(exc: BaseException) -> UpstreamError:
    """Map an httpx/network exception to an :class:`UpstreamError`."""
    if isinstance(exc, UpstreamError):
        return exc
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return TimedOut(name)
    if isinstance(exc, httpx.ConnectError):
        return ConnectFailed(name)
    if isinstance(
        exc,
        httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError | httpx.LocalProtocolError,
    ):
        return ConnectionBroken(name)
    if isinstance(exc, httpx.TransportError | OSError):
        return ConnectFailed(name)
    if isinstance(exc, ValueError):
        # Undecodable JSON or a frame we cannot parse: the stream is unusable.
        return ConnectionBroken(f"invalid response ({name})")
    return ServerFailed(name)
