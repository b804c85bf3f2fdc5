"""A lean, pipelined Redis connection for the limiter's hot path (RESP2 over an asyncio protocol).

Why: through redis-py's asyncio client every admission and every settle paid a pool checkout,
command packing, one ``send()`` of its own and a reply parsed through ``asyncio.StreamReader``:
0.15-0.35 ms of CPU per request, about as much as the rest of the runtime. Here every command
goes onto one connection: the commands written during one event-loop step leave in one
``send()`` at the end of the step, and the replies, which Redis returns in order, are matched to
their callers as they arrive, however many came in one read. A caller that gives up (cancelled)
leaves its reply to be read and dropped, so the connection never desynchronises.

Scope, on purpose: one standalone server reached by a ``redis://`` or ``rediss://`` URL (user,
password and database included, no query options); Sentinel, Cluster and URLs with options keep
redis-py's clients (:func:`lean_address` says which). Errors are redis-py's own exception types,
so callers handle both paths alike: ``ConnectionError``/``TimeoutError`` when the server cannot
answer (the connection is then closed and the next command dials again), ``NoScriptError`` and
``ResponseError`` for error replies.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio.connection import parse_url
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Pending bytes above this size leave at once instead of at the end of the step.
_FLUSH_AT = 64 * 1024
_CRLF = b"\r\n"


@dataclass(frozen=True)
class Address:
    """Where a lean connection goes, from a plain URL; secrets never in repr."""

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False


def lean_address(url: str | None) -> Address | None:
    """The address of ``url`` when the lean connection can serve it, else None (use redis-py)."""
    if not url or not url.startswith(("redis://", "rediss://")):
        return None
    try:
        parsed: dict[str, Any] = dict(parse_url(url))
    except ValueError:
        return None
    tls = parsed.pop("connection_class", None) is not None
    if set(parsed) - {"host", "port", "db", "username", "password"} or "host" not in parsed:
        return None  # query options (timeouts, TLS settings ...): redis-py honours them all
    return Address(
        host=parsed["host"],
        port=int(parsed.get("port") or 6379),
        db=int(parsed.get("db") or 0),
        username=parsed.get("username"),
        password=parsed.get("password"),
        tls=tls,
    )


def encode(args: tuple[str | int | bytes, ...]) -> bytes:
    """One command as a RESP array of bulk strings."""
    if all(type(arg) is not bytes for arg in args):
        # The usual command (ASCII keys, numbers, hex ids): one text, one encode.
        texts = [arg if type(arg) is str else str(arg) for arg in args]
        text = f"*{len(texts)}\r\n" + "".join([f"${len(t)}\r\n{t}\r\n" for t in texts])
        if text.isascii():
            return text.encode()
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _error(message: str) -> Exception:
    """redis-py's exception class for an error reply (the prefixes its own parser maps)."""
    code = message.split(" ", 1)[0]
    if code == "NOSCRIPT":
        return NoScriptError(message)
    if code == "LOADING":
        return BusyLoadingError(message)
    if code == "READONLY":
        return ReadOnlyError(message)
    if code in ("NOAUTH", "WRONGPASS", "NOPERM"):
        return AuthenticationError(message)  # a ConnectionError: Redis counts as unavailable
    return ResponseError(message)


class _Incomplete(Exception):
    """The buffer ends inside a reply."""


def _parse(buf: bytes, pos: int) -> tuple[object, int]:
    """One reply from ``buf`` at ``pos``: (value, next position); raises ``_Incomplete``."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if stop + 2 > len(buf):
            raise _Incomplete
        return buf[end + 2 : stop], stop + 2
    if kind == 58:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # - error
        return _error(buf[pos + 1 : end].decode(errors="replace")), end + 2
    if kind == 42:  # * array
        count = int(buf[pos + 1 : end])
        pos = end + 2
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    raise RedisConnectionError(f"unexpected reply type {chr(kind)!r} from Redis")


class _Protocol(asyncio.Protocol):
    """The socket side: buffers writes until the end of the step, resolves replies in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_scheduled = False
        # (future, when sent) per command awaiting its reply, oldest first.
        self._waiting: deque[tuple[asyncio.Future[object], float]] = deque()
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Redis connection lost: {exc or 'closed by the server'}"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos, size, waiting = 0, len(buf), self._waiting
        try:
            while pos < size:
                value, pos = _parse(buf, pos)
                if not waiting:
                    raise RedisConnectionError("Redis sent a reply nobody asked for")
                future = waiting.popleft()[0]
                if future.done():
                    continue  # its caller gave up (cancelled); the reply is dropped, in order
                if isinstance(value, Exception):
                    future.set_exception(value)
                else:
                    future.set_result(value)
        except _Incomplete:
            pass
        except (RedisConnectionError, ValueError) as exc:
            self._fail(exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(str(exc)))
            return
        self._buf = buf[pos:]

    def send(self, command: bytes) -> asyncio.Future[object]:
        """Queue ``command``; the future gets its reply (or the connection's failure).

        Queued commands leave together at the end of the event-loop step, in order. A command
        on an idle connection (no reply awaited, nothing queued) leaves at once: one request at
        a time, waiting for the end of the step only delays it by a turn of the loop.
        """
        if self.closed:
            raise RedisConnectionError("Redis connection closed")
        future: asyncio.Future[object] = self._loop.create_future()
        now = self._loop.time()
        idle = not self._waiting
        if idle and self._timer is None:
            self._timer = self._loop.call_at(now + self._timeout, self._check_timeout)
        self._waiting.append((future, now))
        self._out.append(command)
        self._out_size += len(command)
        if (idle and not self._flush_scheduled) or self._out_size >= _FLUSH_AT:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)
        return future

    def flush(self) -> None:
        """Write every queued command in one call."""
        self._flush_scheduled = False
        if not self._out or self.transport is None or self.closed:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        self.transport.write(data)

    def _check_timeout(self) -> None:
        # One timer per connection, pushed forward while replies keep coming: no timer per command.
        self._timer = None
        if not self._waiting or self.closed:
            return
        deadline = self._waiting[0][1] + self._timeout
        if self._loop.time() >= deadline:
            self._fail(RedisTimeoutError("Timeout reading from Redis"))
        else:
            self._timer = self._loop.call_at(deadline, self._check_timeout)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(exc)
        self._out.clear()
        self._buf = b""
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        """Close the connection; commands still waiting fail with ``ConnectionError``.

        Queued commands are written first (the transport sends them before it closes), so
        that settles queued in this step are not lost at shutdown.
        """
        self.flush()
        self._fail(RedisConnectionError("Redis connection closed"))


class LeanConnection:
    """One pipelined connection to a standalone Redis, dialled on first use and again after a loss."""

    def __init__(
        self, address: Address, *, socket_timeout: float = 2.0, connect_timeout: float = 2.0
    ) -> None:
        """Nothing is dialled until the first command."""
        self.address = address
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._dialling: asyncio.Future[_Protocol] | None = None
        self._closed = False

    async def execute(self, *args: str | int | bytes) -> object:
        """Send one command and return its reply; re-dialled once when the connection was lost.

        A command whose connection broke before its reply is sent once more on a new
        connection, as redis-py's clients do: for the limiter's scripts a repeat only
        over-counts (admission) or changes nothing (settle).
        """
        command = encode(args)
        for attempt in (0, 1):
            protocol = self._protocol
            if protocol is None or protocol.closed:
                if self._closed:
                    raise RedisConnectionError("Redis connection closed")
                protocol = await self._connect()
            try:
                return await protocol.send(command)
            except (RedisConnectionError, RedisTimeoutError):
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self) -> _Protocol:
        # One dial for every caller that found the connection gone.
        if self._dialling is None:
            self._dialling = asyncio.ensure_future(self._dial())
        dialling = self._dialling
        try:
            return await asyncio.shield(dialling)
        finally:
            if dialling.done() and self._dialling is dialling:
                self._dialling = None

    async def _dial(self) -> _Protocol:
        address, loop = self.address, asyncio.get_running_loop()
        context = ssl.create_default_context() if address.tls else None
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(loop, self._socket_timeout),
                    address.host,
                    address.port,
                    ssl=context,
                    server_hostname=address.host if context is not None else None,
                ),
                self._connect_timeout,
            )
        except (TimeoutError, OSError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {type(exc).__name__}: {exc}") from exc
        try:
            if address.password is not None:
                auth = (address.username, address.password) if address.username else (address.password,)
                await protocol.send(encode(("AUTH", *auth)))
            if address.db:
                await protocol.send(encode(("SELECT", address.db)))
        except BaseException:
            protocol.close()
            raise
        self._protocol = protocol
        return protocol

    async def aclose(self) -> None:
        """Close the connection for good: queued commands are written, waiting callers fail."""
        self._closed = True
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
