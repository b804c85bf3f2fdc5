"""Limits on slow and greedy clients, enforced in the HTTP protocol before any authentication.

uvicorn's httptools protocol has no deadline for receiving a request and no bound on header
size: a client that sends its headers one byte at a time, or 25 MB of a header that never ends,
holds a connection (and the parser's buffer) for as long as it likes. :func:`limited_protocol`
makes a protocol class that adds, per connection:

- a deadline for the request line and headers (from the connection's first moment, then from
  the first byte of each later request on a keep-alive connection): 408 and close;
- a deadline for the body once the headers are in: 408 (when no response was started) and close;
- a bound on the bytes of the request line and headers: 431 and close, before the parser has
  buffered more than one read (at most 256 KiB) beyond the bound;
- a bound on concurrent connections per server: the connection over it is answered 503 and
  closed at once;
- a bound on pipelined requests: uvicorn queues a request that arrives while another is being
  answered and parses the whole read, so one read of small requests queued thousands (hundreds
  of MB from one connection in seconds); past :data:`MAX_PIPELINED` queued the connection closes;
- a deadline on a client that stops reading its answer: once the socket's buffers are full
  (the transport pauses writing), the answer must move on within the body deadline, else the
  connection closes and the request's work (and its upstream call) ends as on a disconnect;
- the idle keep-alive time between requests.

Its writes go through :class:`~agent_runtime.http.coalesce.CoalescingTransport`; the last bytes
of the only response in flight are sent the moment it completes, not at the end of the loop step.

Each refusal is counted in ``sentient_http_refusals_total{reason}``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from agent_runtime import metrics
from agent_runtime.config import ServerLimits, duration_seconds
from agent_runtime.http.coalesce import CoalescingTransport
from agent_runtime.http.exchange import DISCONNECT_EXTENSION, DisconnectWatch, disconnect_watch

HEADER_TIMEOUT = "header_timeout"
BODY_TIMEOUT = "body_timeout"
HEADER_TOO_LARGE = "header_too_large"
TOO_MANY_CONNECTIONS = "too_many_connections"
TOO_MANY_PIPELINED = "too_many_pipelined"
SEND_TIMEOUT = "send_timeout"
REASONS = (
    HEADER_TIMEOUT,
    BODY_TIMEOUT,
    HEADER_TOO_LARGE,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_PIPELINED,
    SEND_TIMEOUT,
)

# Requests a client may send ahead of the one being answered (HTTP/1.1 pipelining; rare in
# practice, and never deep): past this many queued the connection is closed.
MAX_PIPELINED = 16

_REASON_PHRASES = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """:class:`~agent_runtime.config.ServerLimits` in the units the protocol uses."""

    header_timeout: float
    body_timeout: float
    keep_alive_timeout: float
    max_header_bytes: int
    max_connections: int

    @classmethod
    def from_config(cls, limits: ServerLimits) -> ConnectionLimits:
        """Seconds and bytes from the config's durations."""
        return cls(
            header_timeout=duration_seconds(limits.header_timeout),
            body_timeout=duration_seconds(limits.body_timeout),
            keep_alive_timeout=duration_seconds(limits.keep_alive_timeout),
            max_header_bytes=limits.max_header_bytes,
            max_connections=limits.max_connections,
        )


def _refuse_counter(reason: str) -> Any:
    return metrics.HTTP_REFUSALS.labels(reason=reason)


class _Refused(Exception):
    """Raised from a parser callback after a refusal: the parser stops at once (the rest of the
    read, possibly thousands of requests, is never parsed) and the connection is already closing."""


def _head_bytes(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """Bytes of a request line and headers as they came (give or take the method and spaces)."""
    return len(url) + 16 + sum(len(name) + len(value) + 4 for name, value in headers)


def limited_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """An httptools protocol class (uvicorn's ``http=``) that enforces ``limits``."""
    counters = {reason: _refuse_counter(reason) for reason in REASONS}

    class LimitedProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with deadlines and size bounds on the request."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Not uvicorn's int setting: a duration may be fractional.
            self.timeout_keep_alive = limits.keep_alive_timeout  # type: ignore[assignment]
            self._reading_headers = True
            self._boundary_in_read = False
            self._header_bytes = 0
            self._deadline: asyncio.TimerHandle | None = None
            # A deadline armed while a read is parsed waits for the end of the read: most requests
            # arrive whole in one read and are disarmed in it, so they never start a loop timer.
            self._in_read = False
            self._wanted: tuple[float, str] | None = None
            # Bytes of the read being parsed: headers ending in it are measured only when it is large.
            self._read_size = 0
            self._stalled: asyncio.TimerHandle | None = None

        # -------------------------------------------------------------- connection

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            # The head and body of a response (and the records of a stream written in one
            # step) leave in one system call (http/coalesce.py).
            super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
            if len(self.connections) > limits.max_connections:
                self._refuse(TOO_MANY_CONNECTIONS, 503)
                return
            self._arm(limits.header_timeout, HEADER_TIMEOUT)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._stalled is not None:
                self._stalled.cancel()
                self._stalled = None
            cycle = self.cycle
            # Where uvicorn marks the request disconnected, its work hears of it at once.
            gone = cycle is not None and not cycle.response_complete
            super().connection_lost(exc)
            if gone and cycle is not None:
                watch = disconnect_watch(cycle.scope)  # type: ignore[arg-type]
                if watch is not None:
                    watch.fire()

        def data_received(self, data: bytes) -> None:
            self._in_read = True
            if self._reading_headers and self._deadline is None and self._wanted is None:
                # The first byte of a request on a kept-alive connection starts its header clock.
                self._arm(limits.header_timeout, HEADER_TIMEOUT)
            self._boundary_in_read = False
            self._read_size = len(data)
            try:
                super().data_received(data)
            finally:
                self._in_read = False
            if self._reading_headers and not self._boundary_in_read and not self.transport.is_closing():
                # The whole read went to unfinished headers (the parser holds it): count it. A read
                # in which a request's headers or body ended (and the next request may have begun)
                # is not counted: the next read is, so the bound holds within one read.
                self._header_bytes += len(data)
                if self._header_bytes > limits.max_header_bytes:
                    self._refuse(HEADER_TOO_LARGE, 431)
            wanted = self._wanted
            if wanted is not None:
                self._wanted = None
                if not self.transport.is_closing():
                    self._deadline = self.loop.call_at(wanted[0], self._expired, wanted[1])

        # -------------------------------------------------------------- parser callbacks

        def on_headers_complete(self) -> None:
            # Headers that ended in the read they began in were never counted in data_received:
            # a read larger than the bound may hold more header bytes than it allows.
            if (
                self._header_bytes + self._read_size > limits.max_header_bytes
                and _head_bytes(self.url, self.headers) > limits.max_header_bytes
            ):
                self._refuse(HEADER_TOO_LARGE, 431)
                raise _Refused
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and len(self.pipeline) >= MAX_PIPELINED:
                # No status line: it would land inside the answer in flight.
                self.pipeline.clear()
                self._refuse(TOO_MANY_PIPELINED, None)
                raise _Refused
            self._reading_headers = False
            self._boundary_in_read = True
            self._header_bytes = 0
            self._arm(limits.body_timeout, BODY_TIMEOUT)
            # Before uvicorn builds the request's cycle (and task) on this scope.
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[DISCONNECT_EXTENSION] = DisconnectWatch()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            if len(self.tasks) <= 1:
                # The only request in flight: its last bytes leave now rather than at the end of
                # the loop step, so what it still does in this step (measure, settle, log) runs
                # after the client has its answer instead of before. With others in flight the
                # end-of-step flush stays: their answers leave together, in fewer and fuller loop
                # iterations (measured: 10% more CPU per request at 16 connections without it).
                self.transport.flush()  # type: ignore[attr-defined]
            super().on_response_complete()

        def on_message_complete(self) -> None:
            self._boundary_in_read = True
            super().on_message_complete()
            # The next bytes on this connection are the next request's headers; until they come,
            # the keep-alive timeout (armed when the response completes) is the bound.
            self._disarm()
            self._reading_headers = True
            self._header_bytes = 0

        # -------------------------------------------------------------- a client that stops reading

        def pause_writing(self) -> None:
            super().pause_writing()
            # The socket's buffers are full: the client has that long to take some of them.
            if self._stalled is None and not self.transport.is_closing():
                self._stalled = self.loop.call_later(limits.body_timeout, self._stopped_reading)

        def resume_writing(self) -> None:
            if self._stalled is not None:
                self._stalled.cancel()
                self._stalled = None
            super().resume_writing()

        def _stopped_reading(self) -> None:
            self._stalled = None
            if not self.transport.is_closing():
                counters[SEND_TIMEOUT].inc()
                # Nothing more can reach this client; what is buffered for it is dropped.
                self.transport.abort()

        # -------------------------------------------------------------- refusals

        def _arm(self, seconds: float, reason: str) -> None:
            self._disarm()
            when = self.loop.time() + seconds
            if self._in_read:
                self._wanted = (when, reason)
            else:
                self._deadline = self.loop.call_at(when, self._expired, reason)

        def _disarm(self) -> None:
            self._wanted = None
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self, reason: str) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self._refuse(reason, 408)

        def _refuse(self, reason: str, status: int | None) -> None:
            counters[reason].inc()
            self._disarm()
            cycle = self.cycle
            # The status line goes out unless it would land inside an answer: while the headers
            # of a later request on a kept-alive connection are read, the cycle is the previous
            # request's, and its answer is complete.
            answering = (
                cycle is not None
                and cycle.response_started
                and not (self._reading_headers and cycle.response_complete)
            )
            if status is not None and not answering:
                phrase = _REASON_PHRASES[status]
                self.transport.write(
                    b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % (status, phrase)
                )
            if cycle is not None and not cycle.response_complete:
                # The route still waiting for the body sees a disconnect, and writes nothing more.
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

    return LimitedProtocol
