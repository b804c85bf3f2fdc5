"""A lean HTTP/1.1 keep-alive transport for httpx, on asyncio protocols and httptools.

Why: with httpx's default transport (httpcore + h11, pure Python) one
streamed upstream call cost 2-3 ms of CPU in our measurements, and the pool
polls every idle connection's socket on each request, so the cost grows with
concurrency. This transport parses with httptools (C, already a dependency
of the server side) and keeps idle connections in a LIFO list, which brings
an upstream call to a fraction of that. The httpx client API (requests,
responses, exceptions) stays the same for the rest of the code.

Scope, on purpose: HTTP/1.1 only (what every LLM API serves for SSE), http
and https, no proxies (the manager falls back to httpx's own transport when
a proxy is configured in the environment), no HTTP upgrade.
A connection is reused only when its previous response was read to the end;
a response closed early (client went away) closes its connection, which is
how the upstream learns to stop generating.

Keep-alive: idle connections are closed after ``KEEPALIVE_EXPIRY``, shorter
than common servers keep them. An idle connection that the server closed just
as we reused it (nothing comes back) is dropped and the request goes out on
the next one, or on a new connection; only a new connection's failure is an
error. A request waits at most the ``pool`` timeout for a free slot. Headers
carrying CR, LF or NUL are refused, never written to the wire.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import cast

import certifi
import httptools
import httpx

# Body bytes buffered before the socket stops being read (backpressure).
_HIGH_WATER = 256 * 1024
# Idle connections found closed by the server, per request, before a new one is opened.
_MAX_STALE_REUSES = 4
# Idle connections are closed after this long: below the keep-alive timeout of common
# upstream servers (uvicorn and Node.js 5 s; nginx 75 s), so that we rarely reuse one that
# the server is closing at that very moment.
KEEPALIVE_EXPIRY = 4.0


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, parsing responses as bytes arrive."""

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.used = False
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.head_done = False
        self.message_done = False
        self.got_bytes = False
        self._framed = False
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Feed the parser."""
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response ({type(exc).__name__})"))
            self.close()

    def eof_received(self) -> bool | None:
        """The peer closed its side."""
        self._on_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone."""
        self.closed = True
        self._on_eof()

    def pause_writing(self) -> None:
        """Requests are small; nothing to pause."""

    def resume_writing(self) -> None:
        """See pause_writing."""

    def _on_eof(self) -> None:
        self.closed = True
        if self.message_done:
            return
        if self.head_done and not self._framed:
            # Neither Content-Length nor chunked: the body ends with the connection.
            self.keep_alive = False
            self.on_message_complete()
            return
        self._fail(httpx.RemoteProtocolError("peer closed connection without sending complete message body"))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect a header."""
        self.headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        """The head is complete."""
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        self.head_done = True
        if self.status in (204, 304) or 100 <= self.status < 200:
            self._framed = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        """A piece of the body."""
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        """The response is complete."""
        self.message_done = True
        self._wake()

    # -- used by the transport
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    async def _wait(self, deadline: float | None = None) -> None:
        """Wait for parser progress; ``deadline`` (loop time) raises httpx.ReadTimeout.

        A plain loop timer per wait (and none when data is already buffered) costs
        far less than an ``asyncio.timeout`` block per chunk.
        """
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        timer = loop.call_at(deadline, _expire, waiter) if deadline is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self._error is not None and not self._body and not self.message_done:
            raise self._error

    async def read_head(self, deadline: float | None = None) -> None:
        """Wait for the status line and headers."""
        while not self.head_done:
            await self._wait(deadline)

    async def body_chunks(self, limit: Callable[[], float] | None = None) -> AsyncIterator[bytes]:
        """Body chunks until the message is complete; ``limit()`` gives each wait's deadline."""
        body = self._body
        while True:
            if body:
                # Everything buffered at once: one socket read often holds many small
                # chunked-encoding chunks (SSE events), and each yield costs.
                yield self._take_buffered()
            if self.message_done:
                return
            await self._wait(limit() if limit is not None else None)

    def take_body(self) -> bytes | None:
        """The whole body once the message is complete (what :meth:`body_chunks` gives), else None."""
        return self._take_buffered() if self.message_done else None

    def _take_buffered(self) -> bytes:
        """The buffered body as one piece (empty when none); reading resumes if it was paused."""
        body = self._body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def begin(self) -> None:
        """Prepare for the next request on this connection."""
        self._reset()
        self._parser = httptools.HttpResponseParser(self)

    def close(self) -> None:
        """Close the socket."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout("read timeout"))


class ResponseStream(httpx.AsyncByteStream):
    """The body of one response; returns the connection to the pool when read to the end.

    ``chunks(limit)`` is the fast path for callers that bound every wait themselves.
    """

    def __init__(self, pool: LeanTransport, conn: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._conn = conn
        self._read_timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        limit: Callable[[], float] | None = None
        if self._read_timeout is not None:
            loop, timeout = asyncio.get_running_loop(), self._read_timeout
            limit = lambda: loop.time() + timeout  # noqa: E731
        async for chunk in self.chunks(limit):
            yield chunk

    async def chunks(self, limit: Callable[[], float] | None) -> AsyncGenerator[bytes, None]:
        """The body, each wait for data bounded by ``limit()`` (loop time): httpx.ReadTimeout."""
        try:
            async for chunk in self._conn.body_chunks(limit):
                yield chunk
        except OSError as exc:
            raise httpx.ReadError(type(exc).__name__) from None

    async def read(self) -> bytes:
        """The whole body (one layer, where ``Response.aread()`` stacks four); bound it from outside."""
        # A small answer is usually complete when its head is read: no generator to run then.
        whole = self._conn.take_body()
        if whole is not None:
            return whole
        try:
            chunks = [chunk async for chunk in self._conn.body_chunks(None)]
        except OSError as exc:
            raise httpx.ReadError(type(exc).__name__) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def aclose(self) -> None:
        """Release (complete response, keep-alive) or close (anything else) the connection."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        reusable = conn.message_done and conn.keep_alive and not conn.closed
        self._pool._release(conn, reusable)


async def close_response(response: httpx.Response) -> None:
    """Close ``response``; one of ours directly (``Response.aclose()`` enters a context manager)."""
    stream = response.stream
    if isinstance(stream, ResponseStream):
        response.is_closed = True
        await stream.aclose()
    else:
        await response.aclose()


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connection pool; see the module docstring."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 512,
        max_keepalive: int = 256,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        if isinstance(verify, ssl.SSLContext):
            self._ssl: ssl.SSLContext = verify
        elif verify:
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        else:
            self._ssl = ssl.create_default_context()
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        self._ssl.set_alpn_protocols(["http/1.1"])
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._max_keepalive = max_keepalive
        self._keepalive_expiry = keepalive_expiry
        self._open: set[_Connection] = set()
        # Requests holding a connection slot, and idle connections that the server had
        # closed when we reused them: figures for tests and health.
        self.in_use = 0
        self.stale_reuses = 0

    async def _connect(self, key: tuple[str, str, int], connect_timeout: float | None) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(key),
                    host,
                    port,
                    ssl=self._ssl if scheme == "https" else None,
                    server_hostname=host if scheme == "https" else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("connect timeout") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"connect failed ({type(exc).__name__})") from None
        self._open.add(protocol)
        return protocol

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed or now - conn.idle_since > self._keepalive_expiry:
                conn.close()
                self._open.discard(conn)
                continue
            return conn
        return None

    def _give_back_slot(self) -> None:
        self.in_use -= 1
        self._slots.release()

    def _release(self, conn: _Connection, reusable: bool) -> None:
        self._give_back_slot()
        idle = self._idle.setdefault(conn.key, [])
        if reusable and len(idle) < self._max_keepalive:
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.close()
            self._open.discard(conn)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return once the response head arrived; the body streams.

        Timeouts come from the request's ``timeout`` extension: ``pool`` bounds the wait
        for a free connection slot (httpx.PoolTimeout), ``connect`` the TCP/TLS setup,
        ``read`` the wait for the response head.
        """
        url = request.url
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        # Before a slot is taken: a refused header costs nothing to give back.
        data = self._serialize(request, await request.aread())
        response = await self.send_bytes(
            (scheme, url.host, port), data, request.extensions.get("timeout", {})
        )
        # Set here (httpx's client would set it) so that callers may skip the client.
        response.request = request
        return response

    async def send_bytes(
        self, key: tuple[str, str, int], data: bytes, timeouts: Mapping[str, float | None]
    ) -> httpx.Response:
        """Send one serialized request (head and body, checked by the caller) to ``key``
        (scheme, host, port); returns once the response head arrived, the body streams.

        The hot path of the runtime's own upstream calls: they build the head bytes of a
        chain entry once (``llm/wire.py``) instead of an ``httpx.Request`` per call.
        Timeouts as for :meth:`handle_async_request`.
        """
        conn = await self._start(key, data, timeouts)
        return self._response(conn, timeouts)

    async def send_whole(
        self, key: tuple[str, str, int], data: bytes, timeouts: Mapping[str, float | None]
    ) -> bytes | httpx.Response:
        """Send as :meth:`send_bytes` does, for an answer read whole: a 2xx answer comes back as
        its body, read here and its connection released (no response object, no stream);
        an answer with any other status as :meth:`send_bytes` gives it.

        The body is read without a bound of its own: bound the call from outside.
        """
        conn = await self._start(key, data, timeouts)
        if not 200 <= conn.status < 300:
            return self._response(conn, timeouts)
        reusable = False
        try:
            # A small answer is usually complete with its head: nothing to wait for then.
            body = conn.take_body()
            if body is None:
                chunks = [chunk async for chunk in conn.body_chunks(None)]
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            reusable = conn.message_done and conn.keep_alive and not conn.closed
        except OSError as exc:
            raise httpx.ReadError(type(exc).__name__) from None
        finally:
            self._release(conn, reusable)
        return body

    def _response(self, conn: _Connection, timeouts: Mapping[str, float | None]) -> httpx.Response:
        """The response whose head ``conn`` read; its body streams from ``conn``."""
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=ResponseStream(self, conn, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _start(
        self, key: tuple[str, str, int], data: bytes, timeouts: Mapping[str, float | None]
    ) -> _Connection:
        """Take a connection slot, send ``data`` and read the response head (the slot is given
        back on failure; on success it goes back with the connection, :meth:`_release`)."""
        slots = self._slots
        if slots.locked():
            # Only a full pool pays for a timer; a free slot is taken without suspending.
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in the pool") from None
        else:
            await slots.acquire()
        self.in_use += 1
        try:
            return await self._exchange_head(key, data, timeouts)
        except BaseException:
            self._give_back_slot()
            raise

    async def _exchange_head(
        self, key: tuple[str, str, int], head: bytes, timeouts: Mapping[str, float | None]
    ) -> _Connection:
        """Write the request and read the response head, on an idle connection or a new one.

        An idle connection the server closed as we reused it (it answers nothing) is
        dropped and the next one is tried; a new connection's failure is final. Every
        idle connection can be stale at once (a burst of them outlived the server's
        keep-alive), so the loop ends only on a head or on a new connection's error.
        """
        read_timeout = timeouts.get("read")
        loop = asyncio.get_running_loop()
        stale = 0
        while True:
            # After a few stale ones in a row the rest of the idle list is likely stale too.
            conn = self._take_idle(key) if stale < _MAX_STALE_REUSES else None
            reused = conn is not None
            try:
                if conn is None:
                    conn = await self._connect(key, timeouts.get("connect"))
                conn.begin()
                if conn.transport is None:  # pragma: no cover - set by connection_made
                    raise httpx.ConnectError("connection has no transport")
                conn.transport.write(head)
                await conn.read_head(None if read_timeout is None else loop.time() + read_timeout)
            except httpx.RemoteProtocolError:
                if conn is not None:
                    self._discard(conn)
                if reused and conn is not None and not conn.got_bytes:
                    stale += 1
                    self.stale_reuses += 1
                    continue
                raise
            except BaseException:
                if conn is not None:
                    self._discard(conn)
                raise
            return conn

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    @staticmethod
    def _serialize(request: httpx.Request, body: bytes) -> bytes:
        """The request's bytes; a header carrying CR, LF or NUL is refused (header injection)."""
        target = request.url.raw_path
        raw = request.headers.raw
        lines = [request.method.encode(), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in raw:
            lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        head = b"".join(lines)
        # One pass in C over the whole head instead of three per header: exactly one CR and
        # one LF per line (request line, headers, blank line), and no NUL.
        lines_expected = len(raw) + 2
        if head.count(b"\n") != lines_expected or head.count(b"\r") != lines_expected or b"\0" in head:
            raise httpx.LocalProtocolError("refused a header with a CR, LF or NUL character")
        return head + body

    async def aclose(self) -> None:
        """Close every connection."""
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
