"""One HTTP exchange on plain ASGI: request headers and body, response writers, accounting.

The runtime's routes are plain ASGI callables: Starlette's request/response
objects and middleware would wrap every streamed chunk. An :class:`Exchange`
holds what a route needs from the request (lower-cased headers, a request id)
and writes the response; :class:`Pulse` serialises the writes of a streamed
response and sends heartbeats; :func:`supervise` waits for the work of a
request while watching the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from agent_runtime import metrics, protocol
from agent_runtime.logging import accept_request_id

log = logging.getLogger("agent_runtime.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIHandler = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1 << 20
STATUS_CLIENT_CLOSED = 499
# Headers that carry a credential: a request may hold each at most once.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})


# The ASGI scope extension under which the runtime's own HTTP protocol (http/limits.py) puts a
# :class:`DisconnectWatch` for each request.
DISCONNECT_EXTENSION = "sentient.disconnect"


class DisconnectWatch:
    """Tells the work of one request at once when its client goes away.

    Set by the server's protocol on the request's scope; without it, the client is watched by
    a task reading ``receive()`` (:func:`wait_disconnect`), which costs a task per request.
    """

    __slots__ = ("_callback", "gone")

    def __init__(self) -> None:
        self.gone = False
        self._callback: Callable[[], object] | None = None

    def on_gone(self, callback: Callable[[], object] | None) -> None:
        """Call ``callback`` when the client goes away (now, if it has); None stops watching."""
        self._callback = callback
        if callback is not None and self.gone:
            callback()

    def fire(self) -> None:
        """The client went away (called by the protocol, once)."""
        if self.gone:
            return
        self.gone = True
        callback = self._callback
        if callback is not None:
            callback()


def disconnect_watch(scope: Scope) -> DisconnectWatch | None:
    """The request's :class:`DisconnectWatch`, when its server set one."""
    extensions = scope.get("extensions")
    watch = extensions.get(DISCONNECT_EXTENSION) if extensions else None
    return watch if isinstance(watch, DisconnectWatch) else None


class BodyTooLarge(Exception):
    """The request body exceeds :data:`MAX_BODY_BYTES`."""


class ClientGone(Exception):
    """The client disconnected before the body was read."""


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole request body."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise BodyTooLarge
        return bytes(body)
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


_status_children: dict[tuple[str, int], Any] = {}
_duration_children: dict[str, Any] = {}


def count_request(route: str, status: int, seconds: float) -> None:
    """Count one served request and observe its latency (label children cached: this runs per request)."""
    child = _status_children.get((route, status))
    if child is None:
        child = _status_children[(route, status)] = metrics.REQUESTS.labels(route=route, status=str(status))
    child.inc()
    hist = _duration_children.get(route)
    if hist is None:
        hist = _duration_children[route] = metrics.REQUEST_DURATION.labels(route=route)
    hist.observe(seconds)


class Exchange:
    """One HTTP exchange: headers, request id, response start, accounting."""

    __slots__ = (
        "headers",
        "receive",
        "repeated_credentials",
        "repeated_host",
        "request_id",
        "route",
        "scope",
        "send",
        "started",
        "status",
        "t0",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.route = route
        self.t0 = time.perf_counter()
        self.started = False
        self.status = 200
        headers: dict[str, str] = {}
        repeated = repeated_host = False
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            if key in headers:
                if key in CREDENTIAL_HEADERS:
                    repeated = True
                elif key == "host":
                    repeated_host = True
            headers[key] = value.decode("latin-1")
        self.headers = headers
        # Two credentials in one request are ambiguous (the last would win): the auth path refuses them.
        self.repeated_credentials = repeated
        # So are two Host fields (a proxy in front may have read the other one): refused with 400.
        self.repeated_host = repeated_host
        given = headers.get("x-request-id")
        self.request_id = (accept_request_id(given) if given is not None else None) or protocol.new_ulid()
        if scope.get("http_version") == "1.0":
            # An HTTP/1.0 client cannot read chunked encoding, which the server uses for any
            # response without a length: it gets every response whole, with its length.
            self.send = _WholeResponse(send)

    @property
    def method(self) -> str:
        """The request method."""
        return str(self.scope["method"])

    @property
    def client(self) -> str | None:
        """The peer's address, for the audit log."""
        client = self.scope.get("client")
        return f"{client[0]}" if client else None

    def _head(
        self, content_type: bytes, extra: Mapping[str, str] | None, close: bool, length: int | None
    ) -> list[tuple[bytes, bytes]]:
        """The response's header fields: the type, the request id, then what this response adds."""
        raw = [(b"content-type", content_type), (b"x-request-id", self.request_id.encode())]
        if content_type.startswith(b"text/event-stream"):
            raw.append((b"cache-control", b"no-cache"))
            raw.append((b"x-accel-buffering", b"no"))
        if extra:
            raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items())
        if length is not None:
            raw.append((b"content-length", b"%d" % length))
        if close:
            raw.append((b"connection", b"close"))
        return raw

    async def start(
        self, status: int, content_type: bytes, extra: Mapping[str, str] | None = None, close: bool = False
    ) -> None:
        """Send the status line and headers."""
        self.status = status
        self.started = True
        raw = self._head(content_type, extra, close, None)
        await self.send({"type": "http.response.start", "status": status, "headers": raw})

    async def body(self, data: bytes, more: bool = True) -> None:
        """Send part of the body."""
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def whole(
        self,
        status: int,
        content_type: bytes,
        data: bytes,
        extra: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        """A whole response, with its length."""
        # What start() then body() send, without their two frames: every non-streamed answer.
        self.status = status
        self.started = True
        raw = self._head(content_type, extra, close, len(data))
        await self.send({"type": "http.response.start", "status": status, "headers": raw})
        await self.send({"type": "http.response.body", "body": data, "more_body": False})

    async def json(
        self, status: int, payload: Any, extra: Mapping[str, str] | None = None, close: bool = False
    ) -> None:
        """A whole JSON response."""
        await self.whole(status, b"application/json", protocol.dumps(payload).encode(), extra, close)

    async def raw(self, status: int, content_type: str, data: bytes) -> None:
        """A whole response of any type."""
        await self.whole(status, content_type.encode("latin-1"), data)

    async def sse_error(
        self,
        status: int,
        source: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        extra: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        """A whole /assist response that failed before the agent ran: ``error`` then ``done``."""
        data = protocol.error_and_done(source, message, status, details)
        await self.whole(status, protocol.SSE_CONTENT_TYPE, data, extra, close)

    def finish(self) -> None:
        """Record metrics (and, at debug level, an access log line) for the exchange."""
        seconds = time.perf_counter() - self.t0
        count_request(self.route, self.status, seconds)
        if self.status >= 500:
            log.warning("request failed", extra={"route": self.route, "status": self.status})
        elif log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request served",
                extra={"route": self.route, "status": self.status, "ms": round(seconds * 1000, 2)},
            )


class _WholeResponse:
    """An ASGI ``send`` that holds a response back until its body is complete, then sends it whole."""

    __slots__ = ("_body", "_send", "_start")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._start: Message | None = None
        self._body: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        if message["type"] != "http.response.body" or self._start is None:
            await self._send(message)
            return
        self._body.append(message.get("body", b""))
        if message.get("more_body"):
            return
        data = b"".join(self._body)
        headers = [(k, v) for k, v in self._start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(data)).encode()))
        await self._send({**self._start, "headers": headers})
        await self._send({"type": "http.response.body", "body": data, "more_body": False})


class Pulse:
    """Writes of one streamed response: serialised by one lock, counted for heartbeats."""

    __slots__ = ("content_type", "count", "ex", "extra", "lock", "status")

    def __init__(
        self,
        ex: Exchange,
        extra: Mapping[str, str] | None = None,
        content_type: bytes = protocol.SSE_CONTENT_TYPE,
    ) -> None:
        self.ex = ex
        self.extra = extra
        self.content_type = content_type
        self.lock = asyncio.Lock()
        self.count = 0
        # Status of the response if it has not started yet when it is first written.
        self.status = 200

    async def _ensure_started(self) -> None:
        if not self.ex.started:
            await self.ex.start(self.status, self.content_type, self.extra)

    async def write(self, data: bytes) -> None:
        """Send one record; the caller holds :attr:`lock` (the ResponseHandler does)."""
        # Runs once per streamed record: _ensure_started() and ex.body() are inlined to spare
        # two coroutine frames per record.
        if not self.ex.started:
            await self.ex.start(self.status, self.content_type, self.extra)
        await self.ex.send({"type": "http.response.body", "body": data, "more_body": True})
        self.count += 1

    async def send(self, data: bytes) -> None:
        """Send one record, taking the lock."""
        async with self.lock:
            await self.write(data)

    async def beat(self) -> None:
        """Send a heartbeat comment."""
        async with self.lock:
            await self._ensure_started()
            await self.ex.body(protocol.HEARTBEAT)

    async def end(self) -> None:
        """Finish the body."""
        async with self.lock:
            await self._ensure_started()
            await self.ex.body(b"", more=False)


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client has gone."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _wake(waiter: asyncio.Future[None], _: object = None) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def supervise(
    ex: Exchange,
    work: asyncio.Task[Any],
    pulse: Pulse | None = None,
    heartbeat: float = 0.0,
) -> bool:
    """Wait for ``work``, sending heartbeats on silence; cancel it when the client goes away.

    Returns True when the client disconnected.
    """
    loop = asyncio.get_running_loop()
    watcher = loop.create_task(wait_disconnect(ex.receive))
    timeout = heartbeat if heartbeat > 0 and pulse is not None else None
    try:
        seen = pulse.count if pulse is not None else 0
        while True:
            if not work.done() and not watcher.done():
                # What asyncio.wait(FIRST_COMPLETED) does, without its sets and bookkeeping:
                # this runs once per request.
                waiter: asyncio.Future[None] = loop.create_future()
                wake = functools.partial(_wake, waiter)
                work.add_done_callback(wake)
                watcher.add_done_callback(wake)
                timer = loop.call_later(timeout, _wake, waiter) if timeout is not None else None
                try:
                    await waiter
                finally:
                    work.remove_done_callback(wake)
                    watcher.remove_done_callback(wake)
                    if timer is not None:
                        timer.cancel()
            if work.done():
                return False
            if watcher.done():
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
                return True
            # A silent interval: an SSE comment keeps proxies and clients from timing out.
            if pulse is not None:
                if pulse.count == seen:
                    await pulse.beat()
                seen = pulse.count
    finally:
        if not watcher.done():
            watcher.cancel()
