"""A WSGI bridge to the runtime: Flask, Django under WSGI, any WSGI server.

The runtime is asynchronous; a WSGI server calls applications in threads. The
bridge runs the runtime on one event loop in a thread of its own (started on
the first request, stopped at interpreter exit or by :meth:`WSGIAgent.close`)
and hands each request to it: the request body is read by the WSGI thread
(bounded by the runtime's body limit), the response comes back through a
bounded queue and is returned as a WSGI iterable, one item per write of the
runtime. So server-sent events stream under every WSGI server that does not
buffer iterables (Werkzeug, gunicorn, waitress, mod_wsgi), one server thread
per open stream; a server that closes the iterable when the client goes away
(they all do at the next write, at the latest at the next heartbeat) cancels
the agent's work as a disconnect does in the standalone runtime.

What the WSGI server owns instead of the runtime: the connection limits on slow
clients (header and body deadlines, header size, keep-alive), and the number of
concurrent streams (its thread count).
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from agent_runtime.adapters.mount import AgentMount, owns
from agent_runtime.http import Message, Scope
from agent_runtime.http.exchange import MAX_BODY_BYTES

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Writes of the runtime that may wait for the WSGI thread before the runtime is slowed down.
_WINDOW = 64
_START_TIMEOUT = 60.0
# Headers a WSGI application must not set: the server frames the response itself.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers"}
    | {"transfer-encoding", "upgrade"}
)
_END = object()


def scope_from_environ(environ: dict[str, Any]) -> Scope:
    """The ASGI HTTP scope of a WSGI request (``root_path`` = ``SCRIPT_NAME``)."""
    root = _unwsgi(environ.get("SCRIPT_NAME", ""))
    path = root + _unwsgi(environ.get("PATH_INFO", "") or "/")
    headers = [
        (key[5:].replace("_", "-").lower().encode("latin-1"), str(value).encode("latin-1"))
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    for key, name in (("CONTENT_TYPE", b"content-type"), ("CONTENT_LENGTH", b"content-length")):
        if environ.get(key):
            headers.append((name, str(environ[key]).encode("latin-1")))
    client_port = environ.get("REMOTE_PORT")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).rpartition("/")[2] or "1.1",
        "method": environ["REQUEST_METHOD"].upper(),
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "root_path": root,
        "path": path,
        "raw_path": path.encode("utf-8"),
        "query_string": str(environ.get("QUERY_STRING", "")).encode("latin-1"),
        "headers": headers,
        "client": (environ.get("REMOTE_ADDR", ""), int(client_port)) if client_port else None,
        "server": (environ.get("SERVER_NAME", ""), int(environ.get("SERVER_PORT") or 0)),
        "state": {},
    }


def _unwsgi(text: str) -> str:
    # WSGI passes paths as bytes decoded as latin-1; ASGI wants them decoded as UTF-8.
    return text.encode("latin-1").decode("utf-8", "replace")


def read_request_body(environ: dict[str, Any], limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, at most ``limit`` + 1 bytes (the runtime answers 413 beyond ``limit``)."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            wanted = int(length)
        except ValueError:
            return b""
        return bytes(stream.read(min(wanted, limit + 1)))
    if not environ.get("wsgi.input_terminated"):
        # No length and no end marker: WSGI servers give an empty body here.
        return b""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class _Exchange:
    """One request handed from a WSGI thread to the runtime's loop, and its response back."""

    def __init__(self, loop: asyncio.AbstractEventLoop, body: bytes) -> None:
        self.loop = loop
        self.body = body
        self.body_sent = False
        self.messages: queue.Queue[Any] = queue.Queue()
        # Created on the loop's thread (see WSGIAgent.__call__).
        self.gone: asyncio.Event | None = None
        self.window: asyncio.Semaphore | None = None

    async def setup(self) -> None:
        self.gone = asyncio.Event()
        self.window = asyncio.Semaphore(_WINDOW)

    async def receive(self) -> Message:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        assert self.gone is not None
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        assert self.window is not None and self.gone is not None
        if self.gone.is_set():
            raise OSError("the WSGI client went away")
        await self.window.acquire()
        self.messages.put(message)

    def consumed(self) -> None:
        """The WSGI thread has taken one message: the runtime may write one more."""
        if self.window is not None:
            self.loop.call_soon_threadsafe(self.window.release)

    def disconnect(self) -> None:
        """The WSGI server closed the response early (client gone)."""
        if self.gone is not None:
            self.loop.call_soon_threadsafe(self._release_all)

    def _release_all(self) -> None:
        assert self.gone is not None and self.window is not None
        self.gone.set()
        # Writes waiting for room go through (nobody reads them); the next one raises.
        for _ in range(_WINDOW):
            self.window.release()


class WSGIAgent:
    """A WSGI application serving one :class:`AgentMount` (mount it with :func:`mount_wsgi`)."""

    def __init__(self, agent: AgentMount) -> None:
        self.agent = agent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> asyncio.AbstractEventLoop:
        """Start the runtime's loop thread and the runtime (once; later calls return the loop)."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="sentient-agent", daemon=True)
                thread.start()
                try:
                    asyncio.run_coroutine_threadsafe(self.agent.startup(), loop).result(_START_TIMEOUT)
                except BaseException:
                    loop.call_soon_threadsafe(loop.stop)
                    thread.join()
                    loop.close()
                    raise
                self._loop, self._thread = loop, thread
                atexit.register(self.close)
            return self._loop

    def close(self) -> None:
        """Drain and stop the runtime, then its loop thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.agent.shutdown(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """WSGI entry point."""
        loop = self.start()
        exchange = _Exchange(loop, read_request_body(environ))
        asyncio.run_coroutine_threadsafe(exchange.setup(), loop).result()
        task = asyncio.run_coroutine_threadsafe(
            self.agent(scope_from_environ(environ), exchange.receive, exchange.send), loop
        )
        task.add_done_callback(lambda _: exchange.messages.put(_END))
        start = _next_message(exchange, task)
        if start is None or start.get("type") != "http.response.start":
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"Internal Server Error"]
        status = int(start["status"])
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in start.get("headers", [])
            if name.decode("latin-1").lower() not in _HOP_BY_HOP
        ]
        start_response(f"{status} {_reason(status)}", headers)
        return _Body(exchange, task)


def _next_message(exchange: _Exchange, task: Future[None]) -> Message | None:
    item = exchange.messages.get()
    if item is _END:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
        return None
    exchange.consumed()
    return item


class _Body:
    """The WSGI response iterable: the runtime's body writes as they come; close() = client gone."""

    def __init__(self, exchange: _Exchange, task: Future[None]) -> None:
        self._exchange = exchange
        self._task = task
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        while not self._done:
            message = _next_message(self._exchange, self._task)
            if message is None:
                self._done = True
                return
            if message.get("type") != "http.response.body":
                continue
            chunk = bytes(message.get("body", b""))
            if not message.get("more_body", False):
                self._done = True
            if chunk:
                yield chunk

    def close(self) -> None:
        """Called by the WSGI server after the last item, or early when the client went away."""
        if not self._done or not self._task.done():
            self._exchange.disconnect()


class WSGIMount:
    """A WSGI app sending ``prefix`` and below to ``agent`` (``SCRIPT_NAME`` moved) and the rest to ``app``.

    At ``/`` the agent takes only the runtime's own paths (``/assist``, ``/live``...).
    """

    def __init__(self, app: WSGIApp, prefix: str, agent: WSGIApp) -> None:
        self.app = app
        self.prefix = "/" + prefix.strip("/")
        self.agent = agent

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """WSGI entry point."""
        path = environ.get("PATH_INFO", "") or "/"
        prefix = self.prefix
        if owns(prefix, path):
            if prefix != "/":
                environ = {
                    **environ,
                    "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + prefix,
                    "PATH_INFO": path[len(prefix) :],
                }
            return self.agent(environ, start_response)
        return self.app(environ, start_response)

    def close(self) -> None:
        """Drain and stop the agent (also done at interpreter exit)."""
        close = getattr(self.agent, "close", None)
        if callable(close):
            close()


def mount_wsgi(app: WSGIApp, prefix: str, agent: WSGIApp) -> WSGIMount:
    """``app`` with ``agent`` (e.g. a :class:`WSGIAgent`) answering under ``prefix``."""
    return WSGIMount(app, prefix, agent)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
